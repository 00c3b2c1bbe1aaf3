"""The on-complete rebuild, run beside the supervisor's loop: the loop keeps ticking (the dashboard refreshes,
`stop` and new days are heard, the store is watched) while the pipeline's steps run in a thread with a
connection of their own that waits out store outages.

    run = OnCompleteRun(settings); run.start()
    run.step        # the step in progress ("audit"), for status
    run.stop("stop requested")   # before the next step; a step other than promotion is cut short
    run.outcome     # None while it runs, then ("complete" | "rebuild_failed" | "stopped", message)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from backfill.errors import StoreUnavailable
from backfill.settings import Settings
from backfill.store.client import Store

log = logging.getLogger("monitor")


class OnCompleteRun:
    def __init__(self, settings: Settings):
        self.s = settings
        self.step: str | None = "starting"
        self.outcome: tuple[str, str] | None = None
        self.exc: BaseException | None = None
        self._stop_reason: str | None = None
        self._store: Store | None = None
        self._thread = threading.Thread(target=self._run, name="on-complete", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def stop(self, reason: str) -> None:
        """Stop before the next step. The step in progress is cut short (its store calls give up) unless it is
        the promotion, which is allowed to finish: a swap is not left half done."""
        if self._stop_reason is None:
            self._stop_reason = reason
            log.info("event=rebuild_stop_requested reason=%r step=%s", reason, self.step)
        if self._store is not None and self.step != "promote":
            self._store.abandon.set()
            self._store.closing.set()

    def _on_step(self, name: str | None) -> None:
        self.step = name
        if self._store is None or not self._stop_reason:
            return
        if name == "snapshot":  # a few quick queries: how far it got is recorded, a stop or not
            self._store.abandon.clear()
            self._store.closing.clear()
        elif name != "promote":
            self._store.abandon.set()
            self._store.closing.set()

    def _run(self) -> None:
        from monitor.rebuild import RebuildFailed, RebuildStopped, run_on_complete_once

        try:
            self._store = Store.connect(
                self.s,
                create=False,
                start_embedded=False,
                patience_s=None,
                connect_patience_s=None,
                context="on_complete",
            )
            run_on_complete_once(self._store, self.s, on_step=self._on_step, should_stop=lambda: self._stop_reason)
            self.outcome = ("complete", "")
        except RebuildStopped as exc:
            self.outcome = ("stopped", str(exc))
        except RebuildFailed as exc:
            # a step cut short by a stop fails like any other; it was the stop, not the data
            self.outcome = ("stopped", self._stop_reason) if self._stop_reason else ("rebuild_failed", str(exc))
            self.exc = exc
        except StoreUnavailable as exc:
            self.outcome = ("stopped", self._stop_reason) if self._stop_reason else ("rebuild_failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug in a step: the supervisor reports it and stays up
            log.exception("event=rebuild_crash step=%s", self.step)
            self.outcome = ("rebuild_failed", f"{type(exc).__name__}: {exc}")
        finally:
            self.step = None
            if self._store is not None:
                self._store.close()

    def snapshot(self) -> dict[str, Any]:
        return {"rebuild_step": self.step}
