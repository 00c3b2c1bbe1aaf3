"""The fleet survives itself: killed and stalled workers, re-sharding, a killed supervisor, the on-complete rebuild."""

from __future__ import annotations

import json
import os
import random
import signal
import time

import orjson
import psutil
import pytest

from tests.integration.harness import (
    Chain,
    assert_exact,
    backfill,
    checkpoint_history,
    complete_days,
    live_workers,
    open_store,
    supervisor_state,
    wait_beating,
    wait_for,
    wait_run_finished,
)
from tests.support.proxy import Fault, RpcProxy

pytestmark = pytest.mark.slow

WINDOW_BLOCKS = 400  # small windows: many checkpoints, a run long enough to interfere with
SLOW_RUN = {
    "BACKFILL_WINDOW_BLOCKS": str(WINDOW_BLOCKS),
    "BACKFILL_GETLOGS_BLOCKS": "100",
    "BACKFILL_MAX_DAY_ATTEMPTS": "100",
    "BACKFILL_STALL_GRACE_S": "2",
}
SLOW_GETLOGS_S = 2.0  # a slow provider: a window takes at least this long, so a run outlasts what a test does to it


def slow_provider(chain: Chain) -> RpcProxy:
    """A provider that answers every eth_getLogs truly but SLOW_GETLOGS_S late (planning is not slowed): a run
    through it is still going when a test's faults land; `set_faults([])` lets it finish at full speed."""
    return RpcProxy(chain.url, Fault("TIMEOUT", delay_s=SLOW_GETLOGS_S))


def start(chain: Chain, data_dir, shards: int, days: int | None = None, rpc_url: str | None = None, **env: str):
    last = chain.day((days or chain.days) - 1)
    result = backfill(
        ["start", "--from", chain.first_day, "--to", last, "--confirmations", "0"],
        data_dir,
        chain,
        shards=shards,
        extra_env={**SLOW_RUN, **env},
        rpc_urls=rpc_url,
    )
    assert result.returncode == 0, result.stderr
    return result


def duplicated_blocks(store) -> int:
    """Blocks with a row written more than once: where killed work was redone (dedup not yet run)."""
    return store.scalar(
        "SELECT count(DISTINCT block_number) FROM (SELECT block_number, log_index, batch_index, count() AS c FROM "
        "(SELECT block_number, log_index, 0 AS batch_index FROM erc20_transfers_staging UNION ALL "
        " SELECT block_number, log_index, batch_index FROM erc1155_transfers_staging) "
        "GROUP BY block_number, log_index, batch_index HAVING c > 1)"
    )


def test_killed_workers_lose_nothing_and_at_most_one_window_each(chain: Chain, run_dir):
    kills = 4
    with slow_provider(chain) as rpc:  # every kill lands in a running run
        start(chain, run_dir, shards=3, rpc_url=rpc.url, BACKFILL_ON_COMPLETE="0")
        store = open_store(run_dir)
        rng = random.Random(42)
        for _ in range(kills):
            shard, pid = rng.choice(sorted(wait_for(lambda: live_workers(run_dir), 60, "running workers").items()))
            time.sleep(rng.uniform(0.0, 0.6))  # jitter, not synchronisation: kills land at different points of a window
            os.kill(pid, signal.SIGKILL)
            wait_for(
                lambda: live_workers(run_dir).get(shard) not in (None, pid), 60, f"worker {shard} to be relaunched"
            )
        assert len(complete_days(store)) < chain.days, "the run ended before the kills: they proved nothing"
        rpc.set_faults([])  # the provider is fast again: the run finishes
        state = wait_run_finished(run_dir)
    assert state["phase"] == "complete", state
    assert len(complete_days(store)) == chain.days
    assert_exact(store, chain)
    # work redone per kill is at most one window of blocks
    print(
        f"kills={kills} duplicated_blocks={duplicated_blocks(store)} restarts={sum(w['restarts'] for w in state['workers'])}"
    )
    assert duplicated_blocks(store) <= kills * WINDOW_BLOCKS
    restarts = sum(w["restarts"] for w in state["workers"])
    assert restarts >= kills


def test_stalled_worker_is_replaced_within_the_stall_limit(chain: Chain, run_dir):
    stall_s = 3.0
    start(chain, run_dir, shards=2, BACKFILL_STALL_S=str(stall_s))
    workers = wait_for(lambda: len(live_workers(run_dir)) == 2 and live_workers(run_dir), 30, "two workers")
    shard, pid = sorted(workers.items())[0]
    wait_beating(run_dir, shard, pid)
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait_for(lambda: live_workers(run_dir).get(shard) not in (None, pid), 60, "a replacement worker")
        replaced_after = time.monotonic() - stopped_at
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    # judged by the stall limit: a beat is due every stall_s / 2; generous for a loaded machine, far below any
    # other limit (a default stall_s is 300 s)
    assert replaced_after <= 3 * stall_s, replaced_after
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, (
        "the stalled worker must be gone before its replacement owns its days"
    )
    state = wait_run_finished(run_dir)
    assert state["phase"] == "complete", state
    store = open_store(run_dir)
    assert_exact(store, chain)
    log = (run_dir / "backfill" / "monitor.log").read_text()
    assert f"worker={shard} pid={pid}" in log and "stalled=" in log and "action=restart" in log


def test_rescale_2_4_1_refetches_no_complete_day(chain: Chain, run_dir):
    with slow_provider(chain) as rpc:  # both rescales land before the run's end
        start(chain, run_dir, shards=2, rpc_url=rpc.url, BACKFILL_ON_COMPLETE="0")
        store = open_store(run_dir)
        marks = []
        for shards in (4, 1):
            wait_for(lambda: len(complete_days(store)) >= len(marks) * 3 + 2, 180, "some days COMPLETE")
            marks.append((time.time(), complete_days(store)))
            out = backfill(["scale", str(shards)], run_dir)
            assert out.returncode == 0, out.stderr
            wait_for(
                lambda: (
                    supervisor_state(run_dir).get("wanted_shards") == shards
                    and sum(1 for w in supervisor_state(run_dir).get("workers", []) if w["shards"] == shards) == shards
                ),
                60,
                f"{shards} workers",
            )
        assert len(complete_days(store)) < chain.days, "the run ended before the last rescale"
        rpc.set_faults([])
        state = wait_run_finished(run_dir)
    assert state["phase"] == "complete", state
    assert_exact(store, chain)
    history = checkpoint_history(store)
    for at, done in marks:
        for day in done:
            writes_after = [r for r in history if r[0] == day and r[2].timestamp() > at + 1e-3 and True]
            assert writes_after == [], f"day {day} was COMPLETE before the rescale and was fetched again"
    assert all(sum(1 for r in history if r[0] == d and r[1] == "COMPLETE") == 1 for d in range(chain.days))
    assert duplicated_blocks(store) <= 2 * 2 * WINDOW_BLOCKS  # in-flight windows at each rescale, at most


def test_killed_supervisor_resumes_without_refetching_and_no_second_fleet(chain: Chain, run_dir):
    start(chain, run_dir, shards=2, BACKFILL_ON_COMPLETE="0")
    store = open_store(run_dir)
    wait_for(lambda: len(live_workers(run_dir)) == 2, 30, "two workers")
    # a second start while running talks to the running supervisor
    first = supervisor_state(run_dir)["pid"]
    again = start(chain, run_dir, shards=2)
    assert "already active" in again.stdout
    assert supervisor_state(run_dir)["pid"] == first

    def workers_of() -> list:
        """Live worker processes of this data directory (other tests' workers come and go meanwhile)."""
        found = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if "workers.worker" in " ".join(p.info["cmdline"] or []) and str(run_dir) in p.environ().get(
                    "BACKFILL_DATA_DIR", ""
                ):
                    found.append(p)
            except psutil.Error:
                continue
        return found

    assert len(workers_of()) <= 2

    wait_for(lambda: len(complete_days(store)) >= 3, 60, "some days COMPLETE")
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not workers_of(), 30, "orphaned workers to stop by themselves")
    done_before, killed_at = complete_days(store), time.time()
    start(chain, run_dir, shards=2)
    state = wait_run_finished(run_dir)
    assert state["phase"] == "complete" and state["pid"] != first
    history = checkpoint_history(store)
    for day in done_before:
        assert [r for r in history if r[0] == day and r[2].timestamp() > killed_at] == [], day
    assert_exact(store, chain)


def test_on_complete_rebuild_runs_exactly_once_and_status_matches_tables(chain: Chain, run_dir):
    days = 4
    start(chain, run_dir, shards=2, days=days)
    state = wait_run_finished(run_dir)
    assert state["phase"] == "complete"
    snapshots = sorted(run_dir.glob("post_rebuild_snapshot_*.json"))
    assert len(snapshots) == 1
    snap = json.loads(snapshots[0].read_text())
    store = open_store(run_dir)
    assert snap["days"]["total"] == days and snap["days"]["complete"] == days
    assert snap["rows"]["erc20_transfers_staging"] == store.scalar("SELECT count() FROM erc20_transfers_staging FINAL")
    assert snap["status"] == "ok" and snap["gates"]["passed"] and snap["audit"]["passed"]
    assert snap["dedup"]["duplicates_after"] == {"erc20_transfers_staging": 0, "erc1155_transfers_staging": 0}
    # after the rebuild's dedup, the runbook's raw queries are exact without FINAL
    assert store.scalar("SELECT count() - uniqExact(tuple(tx_hash, log_index)) FROM erc20_transfers_staging") == 0

    again = backfill(["start", "--foreground"], run_dir, chain, extra_env=SLOW_RUN)
    assert again.returncode == 0, again.stderr
    assert len(list(run_dir.glob("post_rebuild_snapshot_*.json"))) == 1, "the rebuild runs once per completed plan"
    log = (run_dir / "backfill" / "on-complete.log").read_text()
    assert log.count("event=on_complete_done") == 1 and "reason=already_rebuilt" in log

    out = backfill(["status", "--json"], run_dir)
    assert out.returncode == 0, out.stderr
    status = orjson.loads(out.stdout)
    assert status["days_total"] == days and status["days_complete"] == days and status["percent"] == 100.0
    assert status["checkpoint_rows"]["erc20"] == store.scalar("SELECT count() FROM erc20_transfers_staging FINAL")
    assert status["checkpoint_rows"]["erc1155"] == store.scalar("SELECT count() FROM erc1155_transfers_staging FINAL")
    assert status["table_rows"]["erc20_transfers_staging"]["rows_after_dedup"] == status["checkpoint_rows"]["erc20"]
    assert status["remaining_blocks"] == 0 and status["failed_days"] == []
    assert status["supervisor"]["alive"] is False


def test_failing_days_become_failed_with_their_error_and_retry_failed_brings_them_back(chain: Chain, run_dir):
    from tests.support.proxy import Fault, RpcProxy

    with RpcProxy(chain.url, Fault("P1", rate=1.0)) as proxy:  # the key was disabled: every getLogs answers 401
        env = {**SLOW_RUN, "BACKFILL_MAX_DAY_ATTEMPTS": "2", "BACKFILL_ON_COMPLETE": "0"}
        failed_run = backfill(
            ["start", "--foreground", "--from", chain.first_day, "--to", chain.day(3), "--confirmations", "0"],
            run_dir,
            rpc_urls=proxy.url,
            shards=1,
            extra_env=env,
        )
        assert failed_run.returncode != 0
        assert len(failed_run.stderr.strip().splitlines()) == 1, failed_run.stderr
        store = open_store(run_dir)
        failed = {d: cp for d, cp in store.checkpoints().items() if cp["status"] == "FAILED"}
        assert failed, "a day whose fetch keeps failing must end FAILED"
        assert all("API key disabled" in cp["error"] and cp["failures"] >= 2 for cp in failed.values())
        status = orjson.loads(backfill(["status", "--json"], run_dir).stdout)
        assert {f["day_idx"] for f in status["failed_days"]} == set(failed)

        proxy.set_faults([])  # the provider is back
        out = backfill(["retry-failed"], run_dir)
        assert out.returncode == 0 and f"{len(failed)} FAILED days put back" in out.stdout
        ok = backfill(["start", "--foreground"], run_dir, rpc_urls=proxy.url, shards=1, extra_env=env)
        assert ok.returncode == 0, ok.stderr
    assert len(complete_days(store)) == 4
    assert_exact(store, chain)
