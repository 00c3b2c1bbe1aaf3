"""The metrics' cardinality does not grow with history: the snapshot gathered from a real store (the embedded
engine) holding a 60-day and a 1,048-day plan, with checkpoints, heartbeats, RPC usage with errors of every
kind, gate and audit results, serves the same series; only workers and endpoints add series."""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backfill.chain.planner import DayPlan
from backfill.store.client import Store, now_utc
from backfill.store.embedded import stop_server
from backfill.store.records import Checkpoint
from monitor.metrics.collector import SnapshotCollector
from monitor.metrics.gather import gather
from tests.integration.harness import open_store

ERROR_KINDS = {"Transient": 5, "range": 2, "batch": 1, "quota": 1, "behind": 3, "Fatal": 1, "DamagedAnswer": 2}


def fill(store: Store, days: int, workers: int, endpoints: int) -> None:
    start = dt.date(2021, 1, 1)
    plan = [DayPlan(i, start + dt.timedelta(days=i), i * 1000, i * 1000 + 999) for i in range(days)]
    store.write_plan(plan)
    done = [
        Checkpoint(
            p.day_idx,
            "COMPLETE",
            p.end_block + 1,
            10,
            5,
            0,
            0,
            p.day_idx % workers,
            workers,
            1,
            0,
            "",
            3,
            0,
            60,
            "a",
            now_utc(),
        )
        for p in plan[:-2]
    ]
    store.write_checkpoints(done + [dataclasses.replace(done[0], day_idx=days - 2, status="RUNNING")])
    for w in range(workers):
        store.heartbeat(w, 1000 + w, w, "x", 0)
        usage = [
            {
                "endpoint": f"rpc{e}.example/v2/***",
                "requests": 50,
                "errors": dict(ERROR_KINDS),
                "compute_units": 900,
                "parked": False,
                "rps": 4.0,
                "limit_answers": 3,
                "waits": 2,
                "waited_s": 1.5,
                "damaged": 2,
            }
            for e in range(endpoints)
        ]
        store.record_rpc_usage(w, 1000 + w, usage)
    store.query_rows(  # a gate run, and an audit run over every day
        "INSERT INTO gate_results SELECT 'g', now64(6), 'relaxed', g, 'pass', 0, 0, [], '' "
        "FROM (SELECT arrayJoin(['coverage', 'integrity', 'continuity']) AS g)"
    )
    store.query_rows(
        f"INSERT INTO audit_results (run_id, run_at, day_idx, day, verdict) SELECT 'a', now64(6), number, "
        f"toDate('2021-01-01') + number, if(number = 3, 'mismatch', 'ok') FROM numbers({days})"
    )


def served(store: Store, workers: int) -> set[tuple[str, tuple]]:
    slots = {w: SimpleNamespace(shard_id=w, proc=object(), restarts=0) for w in range(workers)}
    sup = SimpleNamespace(
        store=store, slots=slots, host=socket.gethostname(), follower=None, phase="running", started=0.0
    )
    collector = SnapshotCollector()
    collector.snapshot = gather(sup)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text) for s in f.samples}


def series_of(tmp_path: Path, days: int, workers: int = 12, endpoints: int = 3) -> set[tuple[str, tuple]]:
    data_dir = tmp_path / f"d{days}-{workers}-{endpoints}"
    store = open_store(data_dir)
    try:
        fill(store, days, workers, endpoints)
        return served(store, workers)
    finally:
        store.close()
        stop_server(data_dir)


def test_the_series_do_not_grow_with_the_days(tmp_path: Path) -> None:
    sixty, long_history = series_of(tmp_path, 60), series_of(tmp_path, 1048)
    assert sixty == long_history  # the same series, whatever the history's length
    assert len(sixty) < 300, len(sixty)
    names = {name for name, _ in sixty}
    assert {"backfill_audit_days", "backfill_rpc_errors_total", "backfill_worker_day_index"} <= names
    classes = {dict(labels)["class"] for name, labels in sixty if name == "backfill_rpc_errors_total"}
    assert classes == {"transient", "range_too_large", "batch_too_large", "quota", "behind", "fatal", "damaged"}


def test_only_workers_and_endpoints_add_series(tmp_path: Path) -> None:
    small = series_of(tmp_path, 60, workers=2, endpoints=1)
    big = series_of(tmp_path, 60, workers=12, endpoints=3)
    per_worker = 5  # running, restarts, heartbeat age, day index, day timestamp
    per_endpoint = 6 + 7  # requests, limit answers, waits, wait seconds, compute units, parked; 7 error classes
    assert len(big) - len(small) == 10 * per_worker + 2 * per_endpoint
