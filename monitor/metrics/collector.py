"""The snapshot as Prometheus metric families (pure: no I/O; tested over hand-made snapshots).

Names follow Prometheus conventions: a `backfill_` prefix, base units (seconds, blocks, rows), `_total` for
counters (prometheus_client appends it), label sets bounded by construction: a day's status, a table, a
worker slot, an endpoint's redacted label, an error class from a fixed list, a gate, an audit verdict, a
rebuild step, a phase. Never a day, a block or a message.
"""

from __future__ import annotations

import re
import time
from importlib.metadata import version as _version
from typing import Any, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backfill.control import Phase

VERSION = _version("backfill")  # the installed distribution's (a `backfill/` folder in the cwd cannot shadow it)

# The RPC client's error counters (an exception's class name, or a kind the endpoint pool names) -> the class
# label; anything else is `other`, so a new exception class cannot grow the label set.
ERROR_CLASSES = {
    "Transient": "transient",
    "Fatal": "fatal",
    "DamagedAnswer": "damaged",
    "QuotaExhausted": "quota",
    "quota": "quota",
    "RangeTooLarge": "range_too_large",
    "range": "range_too_large",
    "BatchTooLarge": "batch_too_large",
    "batch": "batch_too_large",
    "behind": "behind",
    "RateLimited": "rate_limited",
    "NoEndpoint": "no_endpoint",
}
STEP = re.compile(r"^[a-z0-9_]{1,40}$")  # a rebuild step's name as a label (the pipeline's own names)


def error_classes(kinds: dict[str, int], total: int) -> dict[str, int]:
    """An endpoint's errors by class; errors recorded without a kind (older rows) are `other`."""
    out: dict[str, int] = {}
    for kind, n in kinds.items():
        label = ERROR_CLASSES.get(kind, "other")
        out[label] = out.get(label, 0) + int(n)
    unkinded = int(total) - sum(out.values())
    if unkinded > 0:
        out["other"] = out.get("other", 0) + unkinded
    return out


def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


class SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = {}
        self.ready = False

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        info = GaugeMetricFamily("backfill_build_info", "The running version", labels=["version"])
        info.add_metric([VERSION], 1)
        yield info
        if not snap:
            return
        yield from progress_metrics(snap)
        yield from worker_metrics(snap)
        yield from endpoint_metrics(snap)
        yield from verdict_metrics(snap)
        yield from reorg_metrics(snap)
        yield gauge("backfill_ready", "1 while /readyz answers 200", int(self.ready))
        yield gauge("backfill_store_up", "1 while the store answers", int(snap["store_up"]))
        yield gauge("backfill_snapshot_age_seconds", "Age of these numbers", time.time() - snap["at"])


def progress_metrics(snap: dict[str, Any]) -> Iterable[Metric]:
    phase = GaugeMetricFamily("backfill_phase", "The supervisor's phase (1 for the current one)", labels=["phase"])
    for p in Phase:
        phase.add_metric([p.value], 1 if snap["phase"] == p.value else 0)
    yield phase
    days = GaugeMetricFamily("backfill_days", "Planned days by status", labels=["status"])
    for status, n in snap["days"].items():
        days.add_metric([status.lower()], n)
    yield days
    rows = GaugeMetricFamily("backfill_rows", "Rows copied, as checkpointed, by table", labels=["table"])
    for table, n in snap["rows"].items():
        rows.add_metric([table], n)
    yield rows
    yield gauge("backfill_copied_block", "The highest block checkpointed", snap["copied_to"])
    pace = snap["progress"]
    yield gauge("backfill_remaining_blocks", "Planned blocks not fetched yet", pace["remaining_blocks"])
    yield gauge("backfill_rows_per_second", "Rows copied per second over the last 5 minutes", pace["rows_per_s"])
    yield gauge("backfill_blocks_per_second", "Blocks copied per second over the last 5 minutes", pace["blocks_per_s"])
    if pace["eta_s"] is not None:  # no pace, no ETA: a missing series, not a made-up number
        yield gauge(
            "backfill_eta_seconds", "Seconds until the planned blocks are copied, at the current pace", pace["eta_s"]
        )
    for key, name, text in (
        ("head", "backfill_chain_head_block", "The chain's head at the last poll (following)"),
        ("safe_head", "backfill_safe_head_block", "Head minus confirmations at the last poll"),
        ("final_head", "backfill_final_head_block", "The highest final block at the last poll"),
    ):
        if snap[key] is not None:
            yield gauge(name, text, snap[key])
    if snap["safe_head"] is not None:
        lag = max(0, snap["safe_head"] - snap["copied_to"])
        yield gauge("backfill_lag_blocks", "Blocks below the safe head not copied yet", lag)


def worker_metrics(snap: dict[str, Any]) -> Iterable[Metric]:
    running = GaugeMetricFamily("backfill_worker_running", "1 while the slot's process runs", labels=["worker"])
    restarts = CounterMetricFamily("backfill_worker_restarts", "Restarts of the slot", labels=["worker"])
    age = GaugeMetricFamily("backfill_worker_heartbeat_age_seconds", "Age of the last heartbeat", labels=["worker"])
    day = GaugeMetricFamily(
        "backfill_worker_day_index", "The plan's index of the day the worker is on", labels=["worker"]
    )
    day_ts = GaugeMetricFamily(
        "backfill_worker_day_timestamp_seconds", "Midnight UTC of the day the worker is on", labels=["worker"]
    )
    for shard, w in sorted(snap["workers"].items()):
        running.add_metric([str(shard)], int(w["running"]))
        restarts.add_metric([str(shard)], w["restarts"])
        for family, key in ((age, "heartbeat_age_s"), (day, "day_idx"), (day_ts, "day_ts")):
            if w.get(key) is not None:
                family.add_metric([str(shard)], w[key])
    yield from (running, restarts, age, day, day_ts)


def endpoint_metrics(snap: dict[str, Any]) -> Iterable[Metric]:
    labels = ["endpoint"]
    families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
        "requests": CounterMetricFamily("backfill_rpc_requests", "RPC requests", labels=labels),
        "limited": CounterMetricFamily("backfill_rpc_limit_answers", "Calls refused for the rate", labels=labels),
        "waits": CounterMetricFamily("backfill_rpc_limit_waits", "Requests that waited for the budget", labels=labels),
        "waited_s": CounterMetricFamily(
            "backfill_rpc_limit_wait_seconds", "Time requests waited for the endpoint's budget", labels=labels
        ),
        "compute_units": CounterMetricFamily("backfill_rpc_compute_units", "Estimated compute units", labels=labels),
        "parked": GaugeMetricFamily("backfill_rpc_parked", "1 while the endpoint is parked", labels=labels),
    }
    errors = CounterMetricFamily(
        "backfill_rpc_errors", "RPC requests that failed, by class", labels=["endpoint", "class"]
    )
    for e in snap["endpoints"]:
        for key, family in families.items():
            family.add_metric([str(e["endpoint"])], float(e.get(key) or 0))
        for cls, n in sorted(error_classes(e.get("error_kinds", {}), int(e["errors"] or 0)).items()):
            errors.add_metric([str(e["endpoint"]), cls], n)
    yield from families.values()
    yield errors


def verdict_metrics(snap: dict[str, Any]) -> Iterable[Metric]:
    gates = GaugeMetricFamily("backfill_gate_passing", "1 when the gate's latest verdict is not fail", labels=["gate"])
    for gate, verdict in snap["gates"].items():
        gates.add_metric([gate], 0 if verdict == "fail" else 1)
    yield gates
    audit = snap.get("audit")
    if audit:
        days = GaugeMetricFamily("backfill_audit_days", "Days of the latest audit by verdict", labels=["verdict"])
        for verdict in sorted(set(audit["days"]) | {"ok", "mismatch", "error"}):
            days.add_metric([verdict], audit["days"].get(verdict, 0))
        yield days
        yield gauge(
            "backfill_audit_passing",
            "1 when the latest audit found no mismatch",
            int(not audit["days"].get("mismatch")),
        )
        yield gauge("backfill_audit_last_run_timestamp_seconds", "When the latest audit ran", audit["at"])
    rebuild = snap.get("rebuild")
    if rebuild:
        steps = GaugeMetricFamily(
            "backfill_rebuild_step_duration_seconds", "Each step's duration in the last rebuild", labels=["step"]
        )
        for step, seconds in rebuild.get("durations_s", {}).items():
            if STEP.match(step):
                steps.add_metric([step], float(seconds))
        yield steps
        yield gauge(
            "backfill_rebuild_last_success", "1 when the last rebuild ended ok", int(rebuild.get("status") == "ok")
        )
        yield gauge("backfill_rebuild_last_run_timestamp_seconds", "When the last rebuild ended", rebuild.get("at", 0))


def reorg_metrics(snap: dict[str, Any]) -> Iterable[Metric]:
    yield CounterMetricFamily("backfill_reorgs", "Forks of the copied tip repaired", value=snap["reorgs"])
    yield CounterMetricFamily(
        "backfill_reorg_rows_removed", "Transfer rows removed by fork repairs", value=snap["reorg_rows_removed"]
    )
    last = snap.get("last_reorg")
    if last:
        yield gauge("backfill_reorg_last_depth_blocks", "Blocks replaced by the last fork repaired", last["depth"])
        yield gauge("backfill_reorg_last_timestamp_seconds", "When the last fork was repaired", last["at"])
