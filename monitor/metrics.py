"""What a monitoring stack scrapes: `/metrics` (Prometheus text), `/healthz`, `/readyz`, served by the supervisor.

Off by default; `metrics_addr` (`BACKFILL_METRICS_ADDR`) turns it on: `9464` or `:9464` listens on loopback
only, `0.0.0.0:9464` (or a host) where asked. The numbers are those the fleet already records in the store
(checkpoints, heartbeats, RPC usage), gathered by the supervisor's loop every few seconds into a snapshot
(`gather`, I/O) that the HTTP thread only reads: a scrape never queries the store or slows the copy, and
every worker process is counted, whatever process it is. Labels are bounded: a day's status, a table, a worker
slot, an endpoint's redacted label, a phase; never a day or a block.

    /metrics   the snapshot as Prometheus metrics (`backfill_` prefix, base units, `_total` counters)
    /healthz   200 while the supervisor's store answers, else 503
    /readyz    503 until the run has caught up (following, caught up or complete), then 200
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version as _version
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backfill.control import Phase
from backfill.errors import ConfigError

log = logging.getLogger("monitor")

VERSION = _version("backfill")  # the installed distribution's (a `backfill/` folder in the cwd cannot shadow it)
READY_PHASES = {Phase.FOLLOWING, Phase.CAUGHT_UP, Phase.COMPLETE}
STATUSES = ("PENDING", "RUNNING", "OPEN", "COMPLETE", "FAILED")
GATHER_EVERY_S = 2.0


def parse_addr(text: str) -> tuple[str, int]:
    """`9464` / `:9464` -> loopback; `host:9464` as given. ConfigError when it is not an address."""
    host, _, port = text.rpartition(":") if ":" in text else ("", "", text)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"BACKFILL_METRICS_ADDR must be [host:]port (e.g. 127.0.0.1:9464), got {text!r}")
    return host or "127.0.0.1", int(port)


def gather(sup: Any) -> dict[str, Any]:
    """The snapshot, from the supervisor's store and its own state (called in its loop)."""
    store = sup.store
    checkpoints = store.checkpoints().values()
    statuses = Counter(str(c["status"]) for c in checkpoints)
    days = store.day_count()
    counted = sum(statuses.values())
    now = time.time()
    beats = store.heartbeats(sup.host)
    follow = sup.follower.view() if sup.follower is not None else {}
    return {
        "at": now,
        "phase": str(sup.phase),
        "days": {**{s: int(statuses.get(s, 0)) for s in STATUSES}, "PENDING": max(0, days - counted)},
        "rows": {
            "erc20": sum(int(c["erc20_count"]) for c in checkpoints),
            "erc1155": sum(int(c["erc1155_count"]) for c in checkpoints),
            "quarantined": sum(int(c["quarantined_count"]) for c in checkpoints),
        },
        "copied_to": max((int(c["next_block"]) - 1 for c in checkpoints), default=-1),
        "workers": {
            slot.shard_id: {
                "running": slot.proc is not None,
                "restarts": slot.restarts,
                "heartbeat_age_s": (now - beats[slot.shard_id].last_update())
                if slot.shard_id in beats and slot.proc is not None
                else None,
            }
            for slot in sup.slots.values()
        },
        "endpoints": [
            {"endpoint": r[0], "requests": r[1], "errors": r[2], "compute_units": r[3], "parked": r[4], "limited": r[6]}
            for r in store.rpc_usage_by_endpoint()
        ],
        "head": follow.get("head"),
        "safe_head": follow.get("safe_head"),
        "final_head": follow.get("final_head"),
        "store_up": bool(store.outage.state()["reachable"]),
        "gates": {
            str(gate): str(verdict)
            for gate, verdict in store.query_rows(
                "SELECT gate, argMax(verdict, run_at) FROM gate_results GROUP BY gate ORDER BY gate"
            )
        },
        "reorgs": int(store.meta_get("reorgs") or 0),
        "reorg_rows_removed": int(store.meta_get("reorg_rows_removed") or 0),
    }


class SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = {}

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        info = GaugeMetricFamily("backfill_build_info", "The running version", labels=["version"])
        info.add_metric([VERSION], 1)
        yield info
        if not snap:
            return
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
        yield GaugeMetricFamily("backfill_copied_block", "The highest block checkpointed", value=snap["copied_to"])
        for key, name, text in (
            ("head", "backfill_chain_head_block", "The chain's head at the last poll (following)"),
            ("safe_head", "backfill_safe_head_block", "Head minus confirmations at the last poll"),
            ("final_head", "backfill_final_head_block", "The highest final block at the last poll"),
        ):
            if snap[key] is not None:
                yield GaugeMetricFamily(name, text, value=snap[key])
        if snap["safe_head"] is not None:
            lag = max(0, snap["safe_head"] - snap["copied_to"])
            yield GaugeMetricFamily("backfill_lag_blocks", "Blocks below the safe head not copied yet", value=lag)
        yield from self.worker_metrics(snap)
        yield from self.endpoint_metrics(snap)
        gates = GaugeMetricFamily(
            "backfill_gate_passing", "1 when the gate's latest verdict is not fail", labels=["gate"]
        )
        for gate, verdict in snap["gates"].items():
            gates.add_metric([gate], 0 if verdict == "fail" else 1)
        yield gates
        yield CounterMetricFamily("backfill_reorgs", "Forks of the copied tip repaired", value=snap["reorgs"])
        yield CounterMetricFamily(
            "backfill_reorg_rows_removed", "Transfer rows removed by fork repairs", value=snap["reorg_rows_removed"]
        )
        yield GaugeMetricFamily("backfill_store_up", "1 while the store answers", value=int(snap["store_up"]))
        yield GaugeMetricFamily("backfill_snapshot_age_seconds", "Age of these numbers", value=time.time() - snap["at"])

    @staticmethod
    def worker_metrics(snap: dict[str, Any]) -> Iterable[Metric]:
        running = GaugeMetricFamily("backfill_worker_running", "1 while the slot's process runs", labels=["worker"])
        restarts = CounterMetricFamily("backfill_worker_restarts", "Restarts of the slot", labels=["worker"])
        age = GaugeMetricFamily("backfill_worker_heartbeat_age_seconds", "Age of the last heartbeat", labels=["worker"])
        for shard, w in sorted(snap["workers"].items()):
            running.add_metric([str(shard)], int(w["running"]))
            restarts.add_metric([str(shard)], w["restarts"])
            if w["heartbeat_age_s"] is not None:
                age.add_metric([str(shard)], w["heartbeat_age_s"])
        yield from (running, restarts, age)

    @staticmethod
    def endpoint_metrics(snap: dict[str, Any]) -> Iterable[Metric]:
        labels = ["endpoint"]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "requests": CounterMetricFamily("backfill_rpc_requests", "RPC requests", labels=labels),
            "errors": CounterMetricFamily("backfill_rpc_errors", "RPC requests that failed", labels=labels),
            "limited": CounterMetricFamily("backfill_rpc_limit_answers", "Calls refused for the rate", labels=labels),
            "compute_units": CounterMetricFamily(
                "backfill_rpc_compute_units", "Estimated compute units", labels=labels
            ),
            "parked": GaugeMetricFamily("backfill_rpc_parked", "1 while the endpoint is parked", labels=labels),
        }
        for e in snap["endpoints"]:
            for key, family in families.items():
                family.add_metric([str(e["endpoint"])], float(e[key] or 0))
        yield from families.values()


class MetricsServer:
    """The HTTP side: a daemon thread serving the collector's snapshot; `refresh(sup)` from the loop."""

    def __init__(self, addr: str):
        self.host, self.port = parse_addr(addr)
        self.collector = SnapshotCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.last_gather = 0.0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        try:
            server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        except OSError as exc:  # the port is taken, the host not ours: the run goes on, without metrics
            log.error(
                "event=metrics_failed addr=%s:%d error=%r action=run_without_metrics", self.host, self.port, str(exc)
            )
            return
        server.daemon_threads = True
        self.server = server
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        log.info("event=metrics_serving url=http://%s:%d/metrics", self.host, server.server_address[1])

    def refresh(self, sup: Any) -> None:
        now = time.monotonic()
        if now - self.last_gather < GATHER_EVERY_S:
            return
        self.last_gather = now
        self.collector.snapshot = gather(sup)

    def ready(self) -> bool:
        snap = self.collector.snapshot
        return bool(snap) and snap["phase"] in {p.value for p in READY_PHASES}

    def healthy(self) -> bool:
        snap = self.collector.snapshot
        return bool(snap) and snap["store_up"] and time.time() - snap["at"] < 60

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _handler(metrics: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self.answer(200, generate_latest(metrics.registry), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/healthz":
                ok = metrics.healthy()
                self.answer(200 if ok else 503, b"ok\n" if ok else b"store unreachable or loop stalled\n")
            elif path == "/readyz":
                ok = metrics.ready()
                self.answer(200 if ok else 503, b"ready\n" if ok else b"backfill not caught up yet\n")
            else:
                self.answer(404, b"not found: /metrics, /healthz, /readyz\n")

        def answer(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - scrapes are not worth a log line
            pass

    return Handler
