"""`backfill follow`: the supervisor keeps the copy current on a chain that grows and forks under it.

The chain is a node of the test's own; blocks are mined while the run follows, a worker is killed with -9
while following, the tip is forked; the tables must end equal to the chain as it is then (the oracle's
decoding of its logs), the run must stay visible in status, and `backfill stop` must end it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from backfill.store.embedded import stop_server
from tests.integration.harness import Chain, backfill, live_workers, supervisor_state, wait_for
from tests.support.chain_ops import grow, mine_block, reorg
from tests.support.mined import NEXT_DAY, MinedDays, assert_equals_chain_from

pytestmark = pytest.mark.slow
ENV = {"BACKFILL_FINALITY_DEPTH": "8", "BACKFILL_FOLLOW_POLL_S": "0.5", "BACKFILL_ON_COMPLETE": "0"}


def follow(chain: Chain, data_dir: Path, first: str) -> None:
    started = backfill(["follow", "--from", first, "--confirmations", "0"], data_dir, chain, shards=2, extra_env=ENV)
    assert started.returncode == 0, started.stderr
    wait_for(lambda: supervisor_state(data_dir).get("phase") == "following", 180, "the run to follow the head")


def equal_to_chain(data_dir: Path, chain: Chain, mined: MinedDays, first: str) -> bool:
    try:
        assert_equals_chain_from(data_dir, chain, mined, first)
        return True
    except AssertionError:
        return False


def status(data_dir: Path, chain: Chain) -> dict[str, Any]:
    result = backfill(["status", "--json"], data_dir, chain)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_follow_copies_new_blocks_survives_a_kill_repairs_a_fork_and_stops(tip_chain: Chain, tmp_path: Path) -> None:
    chain, data_dir, mined = tip_chain, tmp_path / "data", MinedDays(tip_chain)
    first = chain.day(9)
    rows = grow(chain.url, chain.summary, NEXT_DAY, days=1, blocks_per_day=20, seed=11, close=False)
    assert rows[0]["last_block"] > rows[0]["first_block"]
    mined.grown(rows, closed=False)
    try:
        follow(chain, data_dir, first)
        wait_for(lambda: equal_to_chain(data_dir, chain, mined, first), 120, "the backfill to equal the chain")

        # blocks arrive while following; one worker is killed with -9 while it copies

        errors: list[BaseException] = []

        def mine() -> None:
            try:
                for i in range(12):
                    mined.grown([mine_block(chain.url, chain.summary, step_s=30, seed=100 + i)], closed=False)
                    time.sleep(0.4)
            except BaseException as exc:  # the test fails with it below
                errors.append(exc)

        miner = threading.Thread(target=mine)
        miner.start()
        killed: list[int] = []
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for pid in live_workers(data_dir).values():
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
                except ProcessLookupError:  # it finished its blocks a moment ago
                    pass
            time.sleep(0.02)
        miner.join()
        assert not errors, errors
        assert killed, "no worker was seen running while blocks arrived"
        wait_for(lambda: equal_to_chain(data_dir, chain, mined, first), 120, "the new blocks to be copied")
        monitor_log = (data_dir / "backfill" / "monitor.log").read_text()
        assert f"pid={killed[0]} " in monitor_log and "action=restart" in monitor_log, "the kill was not handled"

        # the tip forks: 4 blocks replaced by others with other transfers
        forked = reorg(chain.url, chain.summary, depth=4, seed=21)
        assert forked["old_logs"] and forked["new_logs"]
        wait_for(lambda: equal_to_chain(data_dir, chain, mined, first), 120, "the fork to be repaired")
        reorgs = [
            line for line in (data_dir / "backfill" / "monitor.log").read_text().splitlines() if "event=reorg " in line
        ]
        assert len(reorgs) == 1 and "depth=4 " in reorgs[0], reorgs

        # still alive and honest: following, the last day OPEN, the supervisor's state fresh
        seen = status(data_dir, chain)
        assert seen["run"]["state"] == "running" and seen["supervisor"]["phase"] in ("following", "running"), seen
        assert seen["days_open"] == 1 and seen["open_days"] == [NEXT_DAY.isoformat()], seen
        assert time.time() - float(supervisor_state(data_dir)["updated_at"]) < 10

        stopped = backfill(["stop"], data_dir, chain)
        assert stopped.returncode == 0, stopped.stderr
        wait_for(lambda: supervisor_state(data_dir).get("phase") == "stopped", 60, "the run to stop")
        after = status(data_dir, chain)["run"]
        assert (after["state"], after["resume"]) == ("stopped", "backfill follow"), after
    finally:
        stop_server(data_dir)


def test_a_fork_deeper_than_the_finality_depth_halts_the_following_run(tip_chain: Chain, tmp_path: Path) -> None:
    chain, data_dir, mined = tip_chain, tmp_path / "data", MinedDays(tip_chain)
    first = chain.day(9)
    mined.grown(grow(chain.url, chain.summary, NEXT_DAY, days=1, blocks_per_day=20, seed=12, close=False), False)
    try:
        follow(chain, data_dir, first)
        wait_for(lambda: equal_to_chain(data_dir, chain, mined, first), 120, "the backfill to equal the chain")
        reorg(chain.url, chain.summary, depth=12, seed=22)
        state = wait_for(
            lambda: (s := supervisor_state(data_dir)).get("phase") == "halted" and s, 60, "the run to halt"
        )
        assert "forked deeper than the finality depth (8 blocks)" in state["message"], state
        assert "forked deeper than the finality depth" in status(data_dir, chain)["run"]["last_error"]
    finally:
        stop_server(data_dir)


def test_follow_behind_a_rate_limited_keyed_provider_stays_exact_and_keeps_the_key_secret(
    tip_chain: Chain, tmp_path: Path
) -> None:
    """A hosted provider that allows 15 calls a second and answers 429 above it, with a key in its URL: the
    following run paces itself, copies every new block, repairs a fork, and the key appears nowhere."""
    from tests.support.proxy import RpcProxy

    chain, data_dir, mined = tip_chain, tmp_path / "data", MinedDays(tip_chain)
    first = chain.day(9)
    key = "k3yS3cr3tF0ll0w5678abcdef"
    mined.grown(grow(chain.url, chain.summary, NEXT_DAY, days=1, blocks_per_day=20, seed=13, close=False), False)
    with RpcProxy(chain.url, rate_limit_rps=15) as proxy:
        url = proxy.url_with_key(key)
        try:
            started = backfill(
                ["follow", "--from", first, "--confirmations", "0"],
                data_dir,
                rpc_urls=url,
                shards=2,
                extra_env=ENV,
            )
            assert started.returncode == 0, started.stderr
            wait_for(lambda: supervisor_state(data_dir).get("phase") == "following", 180, "the run to follow")
            for i in range(6):
                mined.grown([mine_block(chain.url, chain.summary, step_s=30, seed=200 + i)], closed=False)
                time.sleep(0.3)
            reorg(chain.url, chain.summary, depth=4, seed=23)
            wait_for(lambda: equal_to_chain(data_dir, chain, mined, first), 180, "the copy to equal the chain")
            calls, refused = len(proxy.calls()), proxy.limit_answers()
            assert refused <= 0.15 * calls, (refused, calls)  # it paced itself rather than hammering the limit
            shown = backfill(["status", "--json"], data_dir, rpc_urls=url).stdout
            assert json.loads(shown)["supervisor"]["phase"] in ("following", "running")
        finally:
            backfill(["stop"], data_dir, rpc_urls=url)
            stop_server(data_dir)
    files = [p for p in data_dir.rglob("*") if p.is_file() and p.suffix in (".log", ".json", ".stderr")]
    leaked = [str(p.name) for p in files if key in p.read_text(errors="replace")]
    assert not leaked and key not in shown, leaked
