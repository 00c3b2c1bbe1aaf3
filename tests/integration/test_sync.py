"""`backfill sync`, as cron runs it: on a chain that grows between runs and whose tip forks.

The truth is the oracle's decoding of the chain's own logs (tests/support/truth.py) over the days the devnet
and `grow` record having mined, never the tool's plan.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from backfill.store.embedded import stop_server
from tests.integration.harness import Chain, backfill, open_store, store_rows
from tests.support.chain_ops import grow, reorg
from tests.support.mined import NEXT_DAY, MinedDays, assert_equals_chain, assert_equals_chain_from

pytestmark = pytest.mark.slow


def sync(chain: Chain, data_dir: Path, *args: str, env: dict[str, str] | None = None):
    return backfill(["sync", *args], data_dir, chain, shards=2, extra_env=env, timeout=600)


def statuses(data_dir: Path) -> dict[str, tuple[str, Any]]:
    """date -> (status, updated_at) of every planned day."""
    store = open_store(data_dir)
    try:
        dates = {p.day_idx: p.day.isoformat() for p in store.read_plan()}
        return {dates[d]: (cp["status"], cp["updated_at"]) for d, cp in store.checkpoints().items()}
    finally:
        store.close()


def test_sync_copies_what_the_chain_added_and_nothing_twice(tip_chain: Chain, tmp_path: Path) -> None:
    chain, data_dir, mined = tip_chain, tmp_path / "data", MinedDays(tip_chain)
    try:
        first = sync(chain, data_dir, "--from", chain.first_day, "--confirmations", "0")
        assert first.returncode == 0, first.stderr
        lines = first.stdout.strip().splitlines()
        assert len(lines) == 1, first.stdout  # one line for the cron mail
        # the chain's last block opens the day after the generated ones: that day is not over, so it is OPEN
        assert lines[0].startswith("sync: 11 new days planned"), lines
        assert f"10 of 11 days COMPLETE, OPEN: {NEXT_DAY}" in lines[0], lines
        assert_equals_chain(data_dir, chain, mined)
        state = json.loads((data_dir / "backfill" / "supervisor.json").read_text())
        assert state["phase"] == "caught_up", state
        gates = backfill(["gates", "--strict"], data_dir, chain)
        assert gates.returncode == 1 and f"{NEXT_DAY} OPEN" in gates.stdout, gates.stdout  # not called complete
        before = statuses(data_dir)

        # the chain grows by two UTC days (and closes the second at the next midnight)
        grown = grow(chain.url, chain.summary, NEXT_DAY, days=2, blocks_per_day=30, seed=5)
        mined.grown(grown)
        second = sync(chain, data_dir, "--confirmations", "0")
        assert second.returncode == 0, second.stderr
        day_after = (NEXT_DAY + dt.timedelta(days=2)).isoformat()
        assert second.stdout.startswith("sync: 2 new days planned"), second.stdout
        assert f"12 of 13 days COMPLETE, OPEN: {day_after}" in second.stdout, second.stdout
        assert_equals_chain(data_dir, chain, mined)
        after = statuses(data_dir)
        complete_before = {d: v for d, v in before.items() if v[0] == "COMPLETE"}
        assert {d: after[d] for d in complete_before} == complete_before, "a COMPLETE day was fetched again"
        assert after[NEXT_DAY.isoformat()][0] == "COMPLETE"  # the day that was open got its blocks and is over
        status = json.loads(backfill(["status", "--json"], data_dir, chain).stdout)
        assert (status["days_open"], status["open_days"]) == (1, [day_after]), status
        snapshot = json.loads(sorted(data_dir.glob("post_rebuild_snapshot_*.json"))[-1].read_text())
        assert snapshot["status"] == "ok" and snapshot["days"]["open"] == [day_after], snapshot["days"]
        assert_balances_of_final_days(data_dir, chain, mined, grown[-1]["last_block"])
        derived_log = (data_dir / "backfill" / "on-complete.log").read_text()
        assert 'mode="incremental from block' in derived_log, "the second sync rebuilt the balances from all rows"
    finally:
        stop_server(data_dir)


def assert_balances_of_final_days(data_dir: Path, chain: Chain, mined: MinedDays, final_block: int) -> None:
    """The derived balances equal a recomputation from the oracle's rows of the final days (the OPEN day's rows
    are not in them yet)."""
    from tests.integration.test_rebuild import expected_balances
    from tests.support.truth import Truth, ground_truth

    truth = ground_truth(chain.url, mined.rows())
    final = Truth(
        erc20={r for r in truth.erc20 if r[0] <= final_block},
        erc1155={r for r in truth.erc1155 if r[0] <= final_block},
        rejected=0,
        logs=[],
        per_day={},
        per_date={},
    )
    want20, want1155 = expected_balances(final)
    store = open_store(data_dir)
    try:
        got20 = {
            (t, w): int(b) for t, w, b in store.query_rows("SELECT token_address, wallet, balance FROM erc20_balances")
        }
        got1155 = {
            (t, int(i), w): int(b)
            for t, i, w, b in store.query_rows("SELECT token_address, token_id, wallet, balance FROM erc1155_balances")
        }
    finally:
        store.close()
    assert got20 == want20
    assert got1155 == want1155


def test_a_second_sync_while_one_runs_does_nothing(tip_chain: Chain, tmp_path: Path) -> None:
    from backfill.files import locks

    chain, data_dir = tip_chain, tmp_path / "data"
    try:
        first = sync(chain, data_dir, "--from", chain.day(8), "--confirmations", "0", env={"BACKFILL_ON_COMPLETE": "0"})
        assert first.returncode == 0, first.stderr
        held = locks.acquire(data_dir / "backfill" / "sync.lock")  # as a sync in progress holds it
        assert held is not None
        try:
            second = sync(chain, data_dir, "--confirmations", "0")
        finally:
            import os

            os.close(held)
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == "sync skipped: another `backfill sync` of this data directory is running"
    finally:
        stop_server(data_dir)


def test_the_first_sync_needs_a_first_day(tip_chain: Chain, tmp_path: Path) -> None:
    try:
        result = sync(tip_chain, tmp_path / "data", "--confirmations", "0")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "error: nothing is planned yet: give --from (e.g. --from 2024-01-01)"
        ], result.stderr
    finally:
        stop_server(tmp_path / "data")  # the command opened the store to find no plan: it is not left serving


def reorg_env(depth: int) -> dict[str, str]:
    return {"BACKFILL_FINALITY_DEPTH": str(depth), "BACKFILL_ON_COMPLETE": "0"}


def synced_with_open_tip(chain: Chain, data_dir: Path, mined: MinedDays, finality_depth: int) -> None:
    """A day of 30 blocks mined on this node (so that a fork can replace them), not closed, then synced from the
    chain's ninth day with no confirmations: its tip is above the final head and tracked."""
    mined.grown(grow(chain.url, chain.summary, NEXT_DAY, days=1, blocks_per_day=30, seed=9, close=False), False)
    first = sync(chain, data_dir, "--from", chain.day(8), "--confirmations", "0", env=reorg_env(finality_depth))
    assert first.returncode == 0, first.stderr


def forked_rows(line: str) -> int:
    return int(line.split("rows_removed=")[1].split()[0])


def test_a_fork_of_the_copied_tip_is_repaired_by_the_next_sync(tip_chain: Chain, tmp_path: Path) -> None:
    chain, data_dir, mined = tip_chain, tmp_path / "data", MinedDays(tip_chain)
    try:
        synced_with_open_tip(chain, data_dir, mined, finality_depth=8)
        assert_equals_chain_from(data_dir, chain, mined, chain.day(8))
        forked = reorg(chain.url, chain.summary, depth=4, seed=3)
        assert forked["old_logs"] and forked["new_logs"]
        second = sync(chain, data_dir, "--confirmations", "0", env=reorg_env(8))
        assert second.returncode == 0, second.stderr
        assert_equals_chain_from(data_dir, chain, mined, chain.day(8))  # orphaned rows gone, the new ones there
        log = (data_dir / "backfill" / "monitor.log").read_text()
        lines = [line for line in log.splitlines() if "event=reorg " in line]
        assert len(lines) == 1 and "depth=4 " in lines[0], lines
        a, b = forked["blocks"]
        assert f"blocks={a}-{b} " in lines[0], lines
        shown = " ".join(backfill(["status"], data_dir, chain).stdout.split())  # the repair, not only the log
        assert f"reorgs: 1 repaired, {forked_rows(lines[0])} rows removed; last at " in shown, shown
        assert f"depth 4, blocks {a}-{b} (ancestor {a - 1})" in shown, shown
        repaired = json.loads(backfill(["status", "--json"], data_dir, chain).stdout)["quality"]["reorgs"]
        assert (repaired["repaired"], repaired["last"]["depth"], repaired["last"]["first"]) == (1, 4, a)
    finally:
        stop_server(data_dir)


def test_a_fork_deeper_than_the_finality_depth_stops_with_one_line(tip_chain: Chain, tmp_path: Path) -> None:
    chain, data_dir, mined = tip_chain, tmp_path / "data", MinedDays(tip_chain)
    try:
        synced_with_open_tip(chain, data_dir, mined, finality_depth=3)
        store = open_store(data_dir)
        before = [sorted(rows) for rows in store_rows(store)]
        store.close()
        forked = reorg(chain.url, chain.summary, depth=6, seed=4)
        second = sync(chain, data_dir, "--confirmations", "0", env=reorg_env(3))
        assert second.returncode == 4, (second.stdout, second.stderr)
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and "forked deeper than the finality depth (3 blocks)" in err[0], err
        # 4 tip hashes recorded (head - 3 .. head): all changed, the lowest (the final anchor) too
        assert f"block {forked['blocks'][0] + 2} was " in err[0], err
        store = open_store(data_dir)
        assert [sorted(rows) for rows in store_rows(store)] == before, "nothing was removed"
        store.close()
    finally:
        stop_server(data_dir)
