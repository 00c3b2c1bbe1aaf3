"""Status never lies about a run that is not running: pure summaries over hand-written inputs, and the last
error of monitor.log."""

from __future__ import annotations

import datetime as dt
import io
import json

from rich.console import Console

from backfill.cli.status import (
    last_error,
    read_last_error,
    run_state,
    show_day_statuses,
    shown_day_status,
    summarize,
    summarize_offline,
)
from backfill.cli.status_render import render

NOW = dt.datetime(2026, 12, 1, 22, 26, 0, tzinfo=dt.UTC).timestamp()
ENDED = dt.datetime(2026, 12, 1, 22, 10, 4, tzinfo=dt.UTC).timestamp()
HOST = "box"
RATES = {"rows_per_s": 273.3, "blocks_per_s": 10.0, "window_s": 300.0}
PLAN = [{"day_idx": d, "start_block": d * 100, "end_block": d * 100 + 99} for d in range(5)]


def checkpoint(status: str, next_block: int, failures: int = 0, error: str = "") -> dict:
    return {
        "status": status,
        "next_block": next_block,
        "erc20_count": 10,
        "erc1155_count": 1,
        "quarantined_count": 0,
        "skipped_count": 0,
        "requests": 5,
        "rpc_errors": 0,
        "compute_units": 50,
        "failures": failures,
        "error": error,
    }


# days 0-1 COMPLETE, 2-4 RUNNING halfway
CHECKPOINTS = {
    0: checkpoint("COMPLETE", 100),
    1: checkpoint("COMPLETE", 200),
    2: checkpoint("RUNNING", 250),
    3: checkpoint("RUNNING", 350),
    4: checkpoint("RUNNING", 450),
}


def heartbeat(worker_id: int, pid: int, host: str = HOST, age_s: float = 958.6) -> dict:
    return {
        "host": host,
        "worker_id": worker_id,
        "pid": pid,
        "day_idx": 2 + worker_id,
        "last_batch": "a-b",
        "rows": 100,
        "updated_at": NOW - age_s,
    }


def supervisor(phase: str, workers: list[tuple[int, int | None]] = (), **extra) -> dict:
    return {
        "pid": 123,
        "phase": phase,
        "wanted_shards": len(workers) or 3,
        "started_at": ENDED - 3600,
        "updated_at": ENDED,
        "message": "",
        "workers": [
            {
                "shard_id": k,
                "shards": len(workers),
                "pid": pid,
                "restarts": 0,
                "done": False,
                "state": "running" if pid else "waiting",
            }
            for k, pid in workers
        ],
        **extra,
    }


def summary(sup: dict | None, alive: bool, beats: list[dict] = (), live_pids=(), checkpoints=CHECKPOINTS, **kw) -> dict:
    return summarize(
        PLAN,
        checkpoints,
        list(beats),
        sup,
        alive,
        RATES,
        {"erc20_transfers_staging": {"rows": 1}},
        NOW,
        [],
        live_worker_pids=set(live_pids),
        host=HOST,
        **kw,
    )


def text(s: dict) -> str:
    out = io.StringIO()
    Console(file=out, width=400, color_system=None).print(render(s))
    return out.getvalue()


def test_a_killed_supervisor_is_dead_with_no_eta_rates_running_days_or_workers():
    s = summary(
        supervisor("running", [(0, 501), (1, 502), (2, 503)]),
        alive=False,
        beats=[heartbeat(0, 501), heartbeat(1, 502), heartbeat(2, 503)],
        last_error="2026-12-01T22:10:03.000Z ERROR event=supervisor_crash: RuntimeError: boom",
    )
    assert s["run"]["state"] == "dead" and s["run"]["since"] == ENDED and s["run"]["resume"] == "backfill start"
    assert s["eta_s"] is None and s["rows_per_s"] is None and s["blocks_per_s"] is None
    assert s["days_running"] == 0 and s["days_interrupted"] == 3 and s["remaining_blocks"] == 150
    assert s["workers"] == []
    out = text(s)
    assert out.splitlines()[0].startswith("run: NOT RUNNING since 2026-12-01 22:10:04 UTC (killed or crashed)")
    assert "last error: 2026-12-01T22:10:03.000Z ERROR event=supervisor_crash: RuntimeError: boom" in out
    assert "resume: backfill start" in out
    assert "3 interrupted" in out and "running," not in out.splitlines()[1]
    assert "rate: - (not running)" in out and "ETA -" in out and "273.3" not in out
    assert "workers: none running" in out
    assert json.loads(json.dumps(s))["eta_s"] is None


def test_a_live_worker_left_by_a_dead_supervisor_is_still_shown():
    s = summary(
        supervisor("running", [(0, 501), (1, 502)]),
        alive=False,
        beats=[heartbeat(0, 501), heartbeat(1, 502), heartbeat(1, 502, host="other")],
        live_pids={502},
    )
    assert [(w["worker_id"], w["pid"], w["state"]) for w in s["workers"]] == [(1, 502, "not supervised")]


def test_a_running_run_keeps_its_rates_eta_and_running_days():
    s = summary(
        supervisor("running", [(0, 501), (1, 502), (2, 503)]),
        alive=True,
        beats=[heartbeat(0, 501, age_s=2), heartbeat(1, 502, age_s=2)],
    )
    assert s["run"]["state"] == "running" and s["run"]["workers"] == 3 and s["run"]["resume"] is None
    assert s["days_running"] == 3 and s["days_interrupted"] == 0
    assert s["rows_per_s"] == 273.3 and s["eta_s"] == 15
    assert text(s).splitlines()[0] == "run: running (pid 123, phase running, 3 workers)"


def test_heartbeat_rows_of_an_earlier_fleet_are_dropped():
    # scale 3 -> stop -> start with 2 shards: row 2 is a ghost; row 1 carries the pid of an earlier process
    beats = [
        heartbeat(0, 601, age_s=1),
        heartbeat(1, 502, age_s=900),
        heartbeat(2, 32046, age_s=900),
        heartbeat(3, 700, host="other", age_s=1),
    ]
    s = summary(supervisor("running", [(0, 601), (1, 602)]), alive=True, beats=beats)
    assert [(w["worker_id"], w["pid"], w["state"]) for w in s["workers"]] == [(0, 601, "running")]
    assert "32046" not in text(s)


def test_a_slot_without_a_pid_yet_keeps_its_last_heartbeat():
    s = summary(supervisor("running", [(0, None)]), alive=True, beats=[heartbeat(0, 501, age_s=5)])
    assert [(w["worker_id"], w["state"]) for w in s["workers"]] == [(0, "waiting")]


def test_a_stopped_run_says_stopped_and_how_to_resume():
    s = summary(supervisor("stopped", [(0, None)], ended_at=ENDED + 1), alive=False, beats=[heartbeat(0, 501)])
    assert s["run"]["state"] == "stopped" and s["run"]["since"] == ENDED + 1
    assert s["days_running"] == 0 and s["days_interrupted"] == 3 and s["workers"] == []
    first = text(s).splitlines()[0]
    assert first == "run: stopped at 2026-12-01 22:10:05 UTC — resume: backfill start"
    assert "supervisor: not running" in text(s)


def test_a_complete_run_says_whether_production_was_promoted():
    done = {d: checkpoint("COMPLETE", PLAN[d]["end_block"] + 1) for d in range(5)}
    promoted = summary(supervisor("complete"), alive=False, checkpoints=done, promoted=True)
    assert promoted["run"] | {"since": None} == {
        "state": "complete",
        "since": None,
        "last_error": None,
        "resume": None,
        "promoted": True,
        "hint": None,
        "workers": 0,
    }
    assert text(promoted).splitlines()[0] == "run: complete at 2026-12-01 22:10:04 UTC — production promoted"
    not_yet = summary(supervisor("complete"), alive=False, checkpoints=done, promoted=False)
    assert not_yet["run"]["promoted"] is False and not_yet["run"]["hint"] == "backfill promote"
    assert text(not_yet).splitlines()[0].endswith("— not promoted: backfill promote")
    assert not_yet["eta_s"] is None and not_yet["remaining_blocks"] == 0


def test_each_ended_phase_names_the_command_that_carries_on():
    assert (
        summary(supervisor("finished_with_failures"), False)["run"]["resume"]
        == "backfill retry-failed, then backfill start"
    )
    failed = summary(supervisor("rebuild_failed"), False, last_error="x ERROR step=audit")
    assert failed["run"]["resume"] == "backfill rebuild"
    assert "rebuild failed at" in text(failed) and "resume: backfill rebuild" in text(failed)
    assert summary(supervisor("halted"), False)["run"]["resume"] == "backfill start"
    assert run_state(None, False) == "none"
    assert run_state({"pid": 9, "phase": "rebuilding"}, False) == "dead"
    assert run_state({"pid": 9, "phase": "stopping"}, True) == "running"


def test_rebuilding_shows_its_step_and_an_unreachable_store_the_run_waits_for():
    sup = supervisor(
        "rebuilding",
        rebuild_step="audit",
        store={"reachable": False, "down_since": NOW - 42, "error": "connection refused"},
    )
    out = text(summary(sup, alive=True))
    assert out.splitlines()[0] == "run: running (pid 123, phase rebuilding, step audit, 0 workers)"
    assert ("store: unreachable for 42s (since 22:25:18 UTC): connection refused; the run waits for it") in out


def test_a_store_that_cannot_be_reached_still_shows_the_run():
    sup = supervisor("running", [(0, 501)])
    s = summarize_offline(sup, False, "cannot use ClickHouse at embedded store of data: connection refused", NOW)
    assert s["store"] == {
        "reachable": False,
        "run_view": None,
        "error": "cannot use ClickHouse at embedded store of data: connection refused",
    }
    assert s["run"]["state"] == "dead" and "days_total" not in s and s["workers"] == []
    out = text(s)
    assert out.splitlines()[0].startswith("run: NOT RUNNING since")
    assert "store: unreachable: cannot use ClickHouse at embedded store of data: connection refused" in out
    json.dumps(s)


def test_the_store_is_reported_reachable_when_status_reached_it():
    assert summary(supervisor("running"), alive=True)["store"]["reachable"] is True


def test_running_days_without_a_live_run_are_shown_interrupted():
    assert shown_day_status("RUNNING", run_live=False) == "INTERRUPTED"
    assert shown_day_status("RUNNING", run_live=True) == "RUNNING"
    assert shown_day_status("FAILED", run_live=False) == "FAILED"
    line = "FAIL coverage: days not COMPLETE: 2 (at most 0 allowed): 2024-01-04 RUNNING, 2024-01-05 PENDING"
    assert show_day_statuses(line, run_live=False) == line.replace("RUNNING", "INTERRUPTED")
    assert show_day_statuses(line, run_live=True) == line
    older = "FAIL coverage: days not COMPLETE: 2 (threshold 0): day 3 (2024-01-04) RUNNING, day 4 PENDING"
    assert show_day_statuses(older, run_live=False) == older.replace("RUNNING", "INTERRUPTED")


def test_the_last_error_of_monitor_log_is_redacted_and_one_line(tmp_path):
    log = tmp_path / "monitor.log"
    log.write_text(
        "2026-12-01T20:00:00.000Z ERROR event=old_run_error\n"
        "2026-12-01T22:00:00.000Z INFO event=supervisor_start pid=123 shards=3\n"
        "2026-12-01T22:05:00.000Z ERROR worker=1 day=3 event=day_error error='https://eth.example/v2/KEY123 said 500'\n"
        "2026-12-01T22:10:03.000Z ERROR event=supervisor_crash\n"
        "Traceback (most recent call last):\n"
        '  File "monitor/supervisor.py", line 1, in main\n'
        "    raise RuntimeError('https://eth.example/v2/KEY123 gone')\n"
        "RuntimeError: https://eth.example/v2/KEY123 gone\n"
        "2026-12-01T22:10:03.500Z INFO event=after\n"
    )
    since = ENDED - 3600 + 1  # 22:10:05 - 1h: the run started at 21:10
    got = read_last_error(log, since=since)
    assert got == ("2026-12-01T22:10:03.000Z ERROR event=supervisor_crash: RuntimeError: https://eth.example/*** gone")
    assert "KEY123" not in got and "\n" not in got
    lines = log.read_text().splitlines()[:3]
    assert last_error(lines, since) == (
        "2026-12-01T22:05:00.000Z ERROR worker=1 day=3 event=day_error error='https://eth.example/*** said 500'"
    )
    assert last_error(lines[:2], since) is None  # the old run's error is not this run's
    assert len(last_error(["2026-12-01T22:05:00.000Z ERROR " + "x" * 500]) or "") == 300
    assert read_last_error(tmp_path / "missing.log") is None


# -- days as dates, 80 columns -----------------------------------------------------------------------------------
DATED_PLAN = [{**p, "day": f"2024-01-0{p['day_idx'] + 1}"} for p in PLAN]


def test_workers_and_failed_days_carry_their_date_beside_day_idx():
    failed = {**CHECKPOINTS, 4: checkpoint("FAILED", 400, failures=3, error="boom")}
    s = summarize(
        DATED_PLAN,
        failed,
        [heartbeat(0, 501), {**heartbeat(1, 502), "day_idx": -1}],
        supervisor("running", [(0, 501), (1, 502)]),
        True,
        RATES,
        {},
        NOW,
        [],
        host=HOST,
    )
    assert [(w["day_idx"], w["day"]) for w in s["workers"]] == [(2, "2024-01-03"), (-1, None)]
    assert s["failed_days"] == [{"day_idx": 4, "day": "2024-01-05", "error": "boom", "failures": 3}]
    out = text(s)
    assert "FAILED 2024-01-05 after 3 failures: boom" in out and "FAILED day" not in out
    json.dumps(s)


def narrow(s: dict, width: int = 80) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(render(s))
    return out.getvalue().splitlines()


def busy_summary() -> dict:
    """A large run: long numbers, several endpoints and tables, 7-digit pids, gates and audit findings."""
    beats = [{**heartbeat(k, 4194301 + k), "rows": 12345678, "last_batch": "61200000-61209999"} for k in range(3)]
    s = summarize(
        DATED_PLAN,
        {
            **CHECKPOINTS,
            4: checkpoint(
                "FAILED", 400, 3, "RangeTooLarge: query returned more than 10000 results; limited to a 10,000 range"
            ),
        },
        beats,
        supervisor("running", [(k, 4194301 + k) for k in range(3)]),
        True,
        {"rows_per_s": 12345.6, "blocks_per_s": 1234.56, "window_s": 300.0},
        {
            "erc20_transfers_staging": {"rows": 1234567890, "rows_after_dedup": 1234567000},
            "erc1155_transfers_staging": {"rows": 123456789, "rows_after_dedup": 123456789},
            "transfer_quarantine": {"rows": 12345, "rows_after_dedup": 12345},
        },
        NOW,
        [
            {
                "endpoint": "eth-mainnet.g.alchemy.com#0",
                "requests": 12345678,
                "errors": 123,
                "compute_units": 1,
                "parked": False,
                "rps": 24.5,
                "limit_answers": 1234,
                "waits": 12345,
                "waited_s": 1234.5,
                "waiting_now": True,
            },
            {
                "endpoint": "rpc.ankr.com#1",
                "requests": 1234567,
                "errors": 12,
                "compute_units": 1,
                "parked": True,
                "rps": 0.0,
                "limit_answers": 0,
                "waits": 0,
                "waited_s": 0.0,
                "waiting_now": False,
            },
        ],
        host=HOST,
    )
    s["quality"] = {
        "gates": {
            "run_at": "2024-02-01 12:00:00.123",
            "level": "relaxed",
            "failed": {"coverage": [1, 2, 3]},
            "warned": {"empty_days": [2, 4]},
            "failed_dates": {"coverage": ["2024-01-02", "2024-01-03", "2024-01-04"]},
            "warned_dates": {"empty_days": ["2024-01-03", "2024-01-05"]},
        },
        "audit": {"run_at": "2024-02-01 12:00:00", "days": 5, "not_ok": [3], "not_ok_dates": ["2024-01-04"]},
    }
    return s


def test_at_80_columns_no_line_is_longer_and_no_word_is_cut():
    s = busy_summary()
    lines = narrow(s)
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    words = [
        "erc20_transfers_staging",
        "erc1155_transfers_staging",
        "transfer_quarantine",
        "2024-01-03",
        "2024-01-05",
        "2024-01-02..2024-01-04",
        "4194301",
        "61200000-61209999",
        "12345678",
        "eth-mainnet.g.alchemy.com#0",
    ]
    for word in words:
        assert any(word in line for line in lines), (word, "\n".join(lines))
    assert not any("…" in line for line in lines), "\n".join(lines)


def test_dedup_is_one_short_line_per_table_and_each_endpoint_its_own_line():
    lines = narrow(busy_summary())
    dedup = [line for line in lines if line.startswith("dedup: ")]
    assert [line.split()[1] for line in dedup] == [
        "erc20_transfers_staging",
        "erc1155_transfers_staging",
        "transfer_quarantine",
    ]
    assert dedup[0] == "dedup: erc20_transfers_staging   1234567890 rows, 1234567000 after FINAL"
    assert sum(line.startswith("rpc: ") for line in lines) == 3


def test_the_worker_table_names_days_by_date():
    lines = narrow(busy_summary())
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["worker", "pid"])
    first = lines[header + 2].split()
    assert first[:5] == ["0", "4194301", "running", "2024-01-03", "61200000-61209999"], lines[header:]


def test_a_store_on_a_filesystem_that_makes_parts_costly_is_named_in_status():
    s = summary(supervisor("running"), alive=True)
    assert "journalled filesystem" not in text(s)  # nothing said of a store on a good filesystem
    s["store"]["slow_filesystem"] = "ext4 (/dev/vda at /, no journal)"
    line = next(x for x in text(s).splitlines() if x.startswith("store: on "))
    assert line.startswith("store: on ext4 (/dev/vda at /, no journal): every part is slow to create here")
    json.dumps(s)
