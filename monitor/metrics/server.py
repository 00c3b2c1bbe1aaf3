"""The HTTP side: `/metrics` (Prometheus text), `/healthz`, `/readyz`, served by the supervisor in a thread.

Off by default; `metrics_addr` (`BACKFILL_METRICS_ADDR`) turns it on: `9464` or `:9464` listens on loopback
only, `0.0.0.0:9464` (or a host) where asked. The supervisor's loop gathers a snapshot every few seconds
(gather.py); a scrape only reads it (collector.py), so it never queries the store or slows the copy.

    /metrics   the snapshot as Prometheus metrics
    /healthz   200 while the supervisor's store answers and its loop is gathering, else 503
    /readyz    503 until the run has caught up (following, caught up or complete), then 200 -- while
               following, only as long as the copy is at most `ready_lag_blocks` behind the safe head
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from backfill.control import Phase
from backfill.errors import ConfigError
from monitor.metrics.collector import SnapshotCollector
from monitor.metrics.gather import gather

log = logging.getLogger("monitor")

READY_PHASES = {Phase.FOLLOWING.value, Phase.CAUGHT_UP.value, Phase.COMPLETE.value}
GATHER_EVERY_S = 2.0
HEALTHY_WITHIN_S = 60.0  # a snapshot older than this: the loop is stuck (or the store has been away as long)


def parse_addr(text: str) -> tuple[str, int]:
    """`9464` / `:9464` -> loopback; `host:9464` as given. ConfigError when it is not an address."""
    host, _, port = text.rpartition(":") if ":" in text else ("", "", text)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"BACKFILL_METRICS_ADDR must be [host:]port (e.g. 127.0.0.1:9464), got {text!r}")
    return host or "127.0.0.1", int(port)


class MetricsServer:
    """The HTTP side: a daemon thread serving the collector's snapshot; `refresh(sup)` from the loop."""

    def __init__(self, addr: str, ready_lag_blocks: int = 600):
        self.host, self.port = parse_addr(addr)
        self.ready_lag_blocks = ready_lag_blocks
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
        self.publish(gather(sup))

    def publish(self, snap: dict[str, Any]) -> None:
        self.collector.snapshot = snap
        self.collector.ready = self.readiness()[0]

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): caught up, and while following no further behind than ready_lag_blocks."""
        snap = self.collector.snapshot
        if not snap or snap["phase"] not in READY_PHASES:
            return False, "backfill not caught up yet"
        if snap["phase"] == Phase.FOLLOWING.value and snap["safe_head"] is not None:
            lag = snap["safe_head"] - snap["copied_to"]
            if lag > self.ready_lag_blocks:
                return False, f"following {lag} blocks behind the safe head (limit {self.ready_lag_blocks})"
        return True, "ready"

    def healthy(self) -> bool:
        snap = self.collector.snapshot
        return bool(snap) and snap["store_up"] and time.time() - snap["at"] < HEALTHY_WITHIN_S

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
                ok, why = metrics.readiness()
                self.answer(200 if ok else 503, f"{why}\n".encode())
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
