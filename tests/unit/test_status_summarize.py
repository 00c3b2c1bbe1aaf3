"""summarize is pure arithmetic over the rows status gathers: day counts per status, the blocks left, the run's
state, and rates / ETA only while a run is live."""

from __future__ import annotations

import datetime as dt

from backfill.cli.status import summarize

NOW = dt.datetime(2026, 12, 2, 12, 0, 0, tzinfo=dt.UTC).timestamp()
HOST = "box"
RATES = {"rows_per_s": 50.0, "blocks_per_s": 10.0, "window_s": 300.0}
# five days of 100 blocks each: day d is blocks d*100 .. d*100+99
PLAN = [{"day_idx": d, "day": f"2024-01-0{d + 1}", "start_block": d * 100, "end_block": d * 100 + 99} for d in range(5)]


def cp(status: str, next_block: int, *, error: str = "", failures: int = 0, n: int = 1) -> dict:
    return {
        "status": status,
        "next_block": next_block,
        "erc20_count": 10 * n,
        "erc1155_count": 2 * n,
        "quarantined_count": n,
        "skipped_count": 3 * n,
        "requests": 7 * n,
        "rpc_errors": n,
        "compute_units": 100 * n,
        "failures": failures,
        "error": error,
    }


# day 0 complete; day 1 half fetched; day 2 failed at its start; day 3 never started; day 4 running with a
# next_block before its start (counts from the start)
CHECKPOINTS = {
    0: cp("COMPLETE", 100),
    1: cp("RUNNING", 150),
    2: cp("FAILED", 200, error="boom", failures=3, n=2),
    4: cp("RUNNING", 0),
}
REMAINING = 0 + 50 + 100 + 100 + 100


def sup(phase: str, workers: list[tuple[int, int | None]] = ()) -> dict:
    return {
        "pid": 123,
        "phase": phase,
        "started_at": NOW - 3600,
        "updated_at": NOW - 60,
        "ended_at": NOW - 30 if phase == "stopped" else None,
        "workers": [{"shard_id": k, "pid": pid, "restarts": 1, "state": "running"} for k, pid in workers],
    }


def run(supervisor: dict | None, alive: bool, *, rates=RATES, checkpoints=CHECKPOINTS, beats=(), live_pids=()):
    return summarize(
        PLAN,
        checkpoints,
        list(beats),
        supervisor,
        alive,
        rates,
        {},
        NOW,
        None,
        live_worker_pids=set(live_pids),
        host=HOST,
    )


def beat(worker_id: int, pid: int, day_idx: int) -> dict:
    return {
        "host": HOST,
        "worker_id": worker_id,
        "pid": pid,
        "day_idx": day_idx,
        "last_batch": "1-2",
        "rows": 5,
        "updated_at": NOW - 2.25,
    }


def test_a_live_run_counts_days_by_status_and_the_blocks_left():
    s = run(sup("running", [(0, 11)]), True)
    assert s["run"]["state"] == "running"
    assert (s["days_total"], s["days_complete"], s["days_running"], s["days_interrupted"]) == (5, 1, 2, 0)
    assert (s["days_failed"], s["days_pending"]) == (1, 1)
    assert s["percent"] == 20.0
    assert s["remaining_blocks"] == REMAINING


def test_a_live_run_has_its_rates_and_an_eta_from_blocks_per_second():
    s = run(sup("running", [(0, 11)]), True)
    assert (s["rows_per_s"], s["blocks_per_s"], s["window_s"]) == (50.0, 10.0, 300.0)
    assert s["eta_s"] == REMAINING // 10
    assert run(sup("running"), True, rates={**RATES, "blocks_per_s": 3.0})["eta_s"] == round(REMAINING / 3.0)


def test_a_live_run_without_pace_has_no_eta_and_with_nothing_left_eta_zero():
    assert run(sup("running"), True, rates={"blocks_per_s": 0.0})["eta_s"] is None
    done = {d: cp("COMPLETE", d * 100 + 100) for d in range(5)}
    s = run(sup("running"), True, checkpoints=done)
    assert (s["eta_s"], s["remaining_blocks"], s["percent"], s["days_complete"]) == (0, 0, 100.0, 5)


def test_without_a_live_run_running_days_are_interrupted_and_there_are_no_rates_or_eta():
    s = run(sup("stopped"), False)
    assert s["run"]["state"] == "stopped" and s["run"]["resume"] == "backfill start"
    assert s["run"]["since"] == NOW - 30
    assert (s["days_running"], s["days_interrupted"], s["days_complete"], s["days_pending"]) == (0, 2, 1, 1)
    assert s["remaining_blocks"] == REMAINING  # the blocks left do not depend on liveness
    assert s["eta_s"] is None
    assert (s["rows_per_s"], s["blocks_per_s"], s["window_s"]) == (None, None, None)


def test_a_supervisor_gone_in_an_active_phase_is_a_dead_run_with_no_workers():
    s = run(sup("running", [(0, 11)]), False, beats=[beat(0, 11, 1)])
    assert s["run"]["state"] == "dead"
    assert s["run"]["resume"] == "backfill start"
    assert s["run"]["workers"] == 0
    assert s["supervisor"]["alive"] is False and "workers" not in s["supervisor"]
    assert s["days_interrupted"] == 2 and s["days_running"] == 0
    assert s["eta_s"] is None and s["blocks_per_s"] is None
    assert s["workers"] == []  # pid 11 is not a live worker process


def test_no_supervisor_at_all_is_no_run_yet():
    s = run(None, False)
    assert s["run"]["state"] == "none" and s["run"]["resume"] is None and s["run"]["since"] is None
    assert s["days_interrupted"] == 2 and s["eta_s"] is None


def test_workers_carry_their_date_and_slot_and_unsupervised_ones_say_so():
    live = run(sup("running", [(0, 11)]), True, beats=[beat(0, 11, 1)])
    assert live["run"]["workers"] == 1
    assert live["workers"] == [
        {
            "worker_id": 0,
            "pid": 11,
            "day_idx": 1,
            "last_batch": "1-2",
            "rows": 5,
            "heartbeat_age_s": 2.2,
            "restarts": 1,
            "state": "running",
            "day": "2024-01-02",
        }
    ]
    orphan = run(sup("running", [(0, 11)]), False, beats=[beat(0, 11, 4)], live_pids={11})
    assert [(w["state"], w["restarts"], w["day"]) for w in orphan["workers"]] == [("not supervised", 0, "2024-01-05")]


def test_failed_days_and_the_checkpoint_totals():
    s = run(sup("running"), True)
    assert s["failed_days"] == [{"day_idx": 2, "day": "2024-01-03", "error": "boom", "failures": 3}]
    # day 2 counts twice (n=2), the other three once
    assert s["checkpoint_rows"] == {"erc20": 50, "erc1155": 10, "quarantined": 5, "skipped_erc721": 15}
    assert s["rpc"] == {"requests": 35, "errors": 5, "compute_units": 500, "endpoints": []}
    assert s["store"] == {"reachable": True, "error": None, "run_view": None}
