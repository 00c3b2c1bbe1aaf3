"""What the supervisor runs beside the fleet, behind hooks it calls at fixed points of its loop (in the manner
of gunicorn's server hooks), so the loop itself only reaps, judges and reconciles:

    on_tick(sup)          every round that reaches the store, after reconcile: every few seconds while workers
                          copy, fingerprint newly COMPLETE days (not once they are all done: the run's end does
                          not wait for FINAL digests of its last days; the rebuild's fingerprints step, or the
                          next audit, records them), and every gates_interval_s the relaxed gates: each in a
                          thread of its own, one run at a time, so a slow check never delays a worker's reaping
                          or a stall verdict
    on_all_complete(sup)  every day is COMPLETE: start the on-complete rebuild (in a thread); returns it
    after_round(sup)      every round, after the state file is written (the foreground dashboard)

`SupervisorHooks` is the one place they are wired.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Protocol

from backfill.settings import Settings
from backfill.store.client import Store, StoreOutage
from monitor.on_complete import OnCompleteRun

log = logging.getLogger("monitor")

FINGERPRINT_EVERY_S = 5.0


class Fleet(Protocol):
    """What a hook sees of the supervisor (monitor.supervisor.Supervisor)."""

    store: Store

    def copying(self) -> bool:
        """Whether a worker of this host is still at work."""
        ...


class SupervisorHooks:
    def __init__(self, settings: Settings, after_round: Callable[[Any], None] | None = None):
        self.s = settings
        self.dashboard = after_round
        self.last_fingerprints = 0.0
        self.last_gates = time.monotonic()
        self.gates_thread: threading.Thread | None = None
        self.fingerprint_thread: threading.Thread | None = None

    def on_tick(self, sup: Fleet) -> None:
        now = time.monotonic()
        if now - self.last_fingerprints >= FINGERPRINT_EVERY_S and sup.copying() and _idle(self.fingerprint_thread):
            self.last_fingerprints = now
            self.fingerprint_thread = _beside("fingerprints", self.record_fingerprints, sup.store)
        interval = self.s.gates_interval_s
        if interval and now - self.last_gates >= interval and _idle(self.gates_thread):
            self.last_gates = now
            self.gates_thread = _beside("gates", run_relaxed_gates, self.s)

    def record_fingerprints(self, store: Store) -> None:
        from backfill.store.fingerprints import record_fingerprints

        try:
            record_fingerprints(store)
        except StoreOutage as exc:  # the loop's own calls meet the outage and make it its state
            log.info("event=fingerprints_deferred reason=%r action=retry_later", exc.reason)
        except Exception as exc:  # bookkeeping must not stop the fleet; the rebuild records them again
            log.warning("event=fingerprints_failed error=%r action=retry_later", str(exc)[:300])

    def on_all_complete(self, sup: Fleet) -> OnCompleteRun:
        rebuild = OnCompleteRun(self.s)
        rebuild.start()
        return rebuild

    def after_round(self, sup: Fleet) -> None:
        if self.dashboard:
            self.dashboard(sup)


def _idle(thread: threading.Thread | None) -> bool:
    """No run of this kind going on (one at a time)."""
    return thread is None or not thread.is_alive()


def _beside(name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
    """`target(*args)` on a daemon thread of its own, beside the loop."""
    thread = threading.Thread(target=target, args=args, daemon=True, name=name)
    thread.start()
    return thread


def run_relaxed_gates(settings: Settings) -> None:
    """One relaxed gates run, with its own connection: results to gate_results and gates.log."""
    from monitor.gates.judge import run_gates

    try:
        store = Store.connect(settings, create=False)
        try:
            report = run_gates(store, settings, "relaxed", source="supervisor")
        finally:
            store.close()
        log.info("event=gates level=relaxed passed=%s failed=%s", report.passed, ",".join(report.failed_days()) or "-")
    except Exception as exc:
        log.warning("event=gates_failed_to_run error=%r action=retry_next_interval", str(exc)[:300])
