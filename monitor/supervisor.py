"""The supervisor: one loop that reaps workers, judges heartbeats, applies the wanted shard count, and
runs the on-complete rebuild when every day is COMPLETE. Signals only set flags the loop reads
(TERM/INT = graceful stop, HUP = re-read what commands want). Only `reconcile` starts or stops workers.

    python -m monitor.supervisor          (what `backfill start` launches, detached)
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import psutil

from backfill.settings import Settings, load_settings
from backfill.store import Store
from monitor import control
from monitor.backoff import restart_delay
from workers import exitcodes

log = logging.getLogger("monitor")

ALREADY_RUNNING = 75  # exit code of a supervisor that found another one holding the lock
TICK_S = 0.5
QUICK_S = 30.0
MAX_QUICK_CRASHES = 5
FINGERPRINT_EVERY_S = 5.0


@dataclass
class Slot:
    """One worker process the supervisor is responsible for."""

    shard_id: int
    shards: int
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_crashes: int = 0  # consecutive exits within QUICK_S of the start: a crash loop, not bad luck
    next_start: float = 0.0
    done: bool = False
    stopping_since: float | None = None  # we sent TERM (stall, rescale or stop)
    stall_reason: str | None = None


class FleetHalted(Exception):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class Supervisor:
    def __init__(self, settings: Settings, store: Store, on_tick: Callable[["Supervisor"], None] | None = None):
        self.s = settings
        self.store = store
        self.log_dir = settings.log_dir
        self.wanted = settings.shards
        self.slots: dict[int, Slot] = {}
        self.phase = "starting"
        self.stopping = False
        self.reload = True
        self.control_seq = -1
        self.on_tick = on_tick
        self.started = time.time()
        self.host = socket.gethostname()
        self.last_stall_check = 0.0
        self.message = ""
        self.last_fingerprints = 0.0
        self.last_gates = time.monotonic()
        self.gates_thread: threading.Thread | None = None
        # Self-pipe: signals (a worker's exit, stop, reload) end the tick's sleep at once instead of after TICK_S.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._old_handlers: dict[int, Any] = {}

    # -- signals only set flags ---------------------------------------------------------
    def install_signals(self) -> None:
        def flag(name: str | None) -> Callable[..., None]:
            def handler(*_: Any) -> None:
                if name:
                    setattr(self, name, True)
                self.wake()
            return handler

        for sig, name in ((signal.SIGTERM, "stopping"), (signal.SIGINT, "stopping"), (signal.SIGHUP, "reload"),
                          (signal.SIGCHLD, None)):
            self._old_handlers[sig] = signal.signal(sig, flag(name))

    def restore_signals(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # pipe full (already woken) or closed
            pass

    def sleep_tick(self) -> None:
        """Sleep TICK_S, or less when a signal arrives (a worker exited: reap it now, not half a second later)."""
        try:
            ready, _, _ = select.select([self._wake_r], [], [], TICK_S)
            if ready:
                os.read(self._wake_r, 4096)
        except (OSError, ValueError):
            time.sleep(TICK_S)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> str:
        """Run until every day is COMPLETE (or FAILED), or a stop. Returns the final phase."""
        self.kill_leftover_workers()
        self.phase = "running"
        log.info("event=supervisor_start pid=%d shards=%d stall_s=%s", os.getpid(), self.wanted, self.s.stall_s)
        try:
            while True:
                if self.reload:
                    self.reload = False
                    self.read_control()
                self.reap()
                self.check_stalls()
                if self.stopping:
                    self.phase = "stopping"
                    self.write_state()
                    self.stop_all("stop requested")
                    self.phase = "stopped"
                    return self.phase
                self.reconcile()
                self.quality_checks()
                finished = self.finished()
                if finished:
                    return self.finish(finished)
                self.write_state()
                if self.on_tick:
                    self.on_tick(self)
                self.sleep_tick()
        finally:
            self.write_state()

    def read_control(self) -> None:
        doc = control.read_json(control.control_path(self.log_dir)) or {}
        if int(doc.get("seq", -1)) == self.control_seq:
            return
        self.control_seq = int(doc.get("seq", -1))
        shards = doc.get("shards")
        if isinstance(shards, int) and shards >= 1 and shards != self.wanted:
            log.info("event=rescale from=%d to=%d", self.wanted, shards)
            self.wanted = shards
        # new days or retried FAILED days: workers that finished must look again
        for slot in self.slots.values():
            slot.done = False

    # -- children -------------------------------------------------------------------------
    def spawn(self, slot: Slot) -> None:
        env = {**os.environ, **self.s.to_env(), "SHARDS": str(slot.shards)}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"worker-{slot.shard_id}.stderr", "ab") as err:
            slot.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.worker", "--shard", str(slot.shard_id), "--shards", str(slot.shards)],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        slot.started_at = time.time()
        slot.stopping_since = None
        slot.stall_reason = None
        log.info("worker=%d pid=%d event=spawn shards=%d restarts=%d", slot.shard_id, slot.proc.pid, slot.shards,
                 slot.restarts)

    def reap(self) -> None:
        for slot in list(self.slots.values()):
            if slot.proc is None:
                continue
            code = slot.proc.poll()
            if code is None:
                continue
            pid = slot.proc.pid
            slot.proc = None
            if slot.stall_reason:
                self.blame_day(slot, pid, slot.stall_reason)
                self.schedule_restart(slot, f"stalled ({slot.stall_reason})")
            elif slot.stopping_since is not None:
                log.info("worker=%d pid=%d event=exit code=%d reason=asked_to_stop", slot.shard_id, pid, code)
                slot.stopping_since = None
            elif code == exitcodes.OK:
                slot.done = True
                log.info("worker=%d pid=%d event=exit code=0 status=no_days_left", slot.shard_id, pid)
            elif code in exitcodes.HALT_FLEET:
                self.stop_all("halt")
                raise FleetHalted(f"worker {slot.shard_id} stopped the run (exit {code}); see "
                                  f"{self.log_dir / f'worker-{slot.shard_id}.log'}", code)
            else:
                if code < 0:  # killed by a signal we did not send (OOM killer, operator): blame its day
                    self.blame_day(slot, pid, f"worker killed by signal {-code}")
                self.schedule_restart(slot, f"exit {code}", crashed=code > 0)

    def schedule_restart(self, slot: Slot, why: str, crashed: bool = False) -> None:
        slot.restarts += 1
        quick = crashed and time.time() - slot.started_at < QUICK_S
        slot.quick_crashes = slot.quick_crashes + 1 if quick else 0
        if slot.quick_crashes >= MAX_QUICK_CRASHES:
            self.stop_all("crash loop")
            raise FleetHalted(f"worker {slot.shard_id} crashed {slot.quick_crashes} times in a row within {QUICK_S:g}s "
                              f"of starting; last: {why}; see {self.log_dir / f'worker-{slot.shard_id}.log'}")
        if slot.restarts > self.s.restart_budget:
            self.stop_all("restart budget exhausted")
            raise FleetHalted(f"worker {slot.shard_id} restarted {slot.restarts - 1} times; last: {why}; see "
                              f"{self.log_dir / f'worker-{slot.shard_id}.log'}")
        delay = restart_delay(slot.restarts)
        slot.next_start = time.monotonic() + delay
        log.warning("worker=%d event=exit reason=%r action=restart in_s=%.1f restarts=%d", slot.shard_id, why, delay,
                    slot.restarts)

    def blame_day(self, slot: Slot, pid: int, reason: str) -> None:
        """A worker that died or stalled counts as one failure of the day it was on (FAILED at the limit)."""
        hb = self.heartbeats().get(slot.shard_id)
        if not hb or int(hb["pid"]) != pid or int(hb["day_idx"]) < 0:
            return
        day_idx = int(hb["day_idx"])
        cp = self.store.checkpoints().get(day_idx)
        if cp is None:
            plan = {p.day_idx: p for p in self.store.read_plan()}.get(day_idx)
            if plan is None:
                return
            self.store.write_checkpoint(day_idx=day_idx, status="RUNNING", next_block=plan.start_block, erc20_count=0,
                                        erc1155_count=0, quarantined_count=0, skipped_count=0, worker_id=slot.shard_id,
                                        shards=slot.shards, attempts=1, failures=0)
            cp = self.store.checkpoints()[day_idx]
        if cp["status"] == "COMPLETE":
            return
        failures = int(cp["failures"]) + 1
        status = "FAILED" if failures >= self.s.max_day_attempts else cp["status"]
        self.store.update_checkpoint(day_idx, failures=failures, status=status, error=reason[:500])
        level = logging.ERROR if status == "FAILED" else logging.WARNING
        log.log(level, "worker=%d day=%d event=day_error failures=%d/%d status=%s error=%r", slot.shard_id, day_idx,
                failures, self.s.max_day_attempts, status, reason)

    def heartbeats(self) -> dict[int, dict[str, Any]]:
        rows = self.store.client.query(
            "SELECT worker_id, pid, day_idx, last_batch, rows, updated_at FROM worker_heartbeats FINAL "
            "WHERE host = %(h)s", parameters={"h": self.host}).named_results()
        return {int(r["worker_id"]): r for r in rows}

    def check_stalls(self) -> None:
        now = time.time()
        if now - self.last_stall_check < min(1.0, self.s.stall_s / 4):
            return
        self.last_stall_check = now
        beats = None
        for slot in self.slots.values():
            if slot.proc is None:
                continue
            if slot.stopping_since is not None:
                if time.monotonic() - slot.stopping_since > self.s.stall_grace_s:
                    log.error("worker=%d pid=%d event=kill reason=no_exit_after_term grace_s=%s", slot.shard_id,
                              slot.proc.pid, self.s.stall_grace_s)
                    slot.proc.kill()
                    slot.stopping_since = time.monotonic() + 3600  # killed: do not kill again
                continue
            if beats is None:
                beats = self.heartbeats()
            hb = beats.get(slot.shard_id)
            last = slot.started_at
            if hb and int(hb["pid"]) == slot.proc.pid:
                last = max(last, hb["updated_at"].replace(tzinfo=dt.timezone.utc).timestamp())
            age = now - last
            if age <= self.s.stall_s:
                continue
            try:
                stopped = psutil.Process(slot.proc.pid).status() == psutil.STATUS_STOPPED
            except psutil.Error:
                stopped = False
            day = int(hb["day_idx"]) if hb and int(hb["pid"]) == slot.proc.pid else -1
            slot.stall_reason = f"no heartbeat for {age:.0f}s (limit {self.s.stall_s:g}s)"
            log.warning("worker=%d pid=%d day=%d stalled=%.0fs limit=%gs process=%s action=restart", slot.shard_id,
                        slot.proc.pid, day, age, self.s.stall_s, "stopped" if stopped else "running")
            if stopped:  # a stopped process cannot exit gracefully: KILL at once
                slot.proc.kill()
                slot.stopping_since = time.monotonic() + 3600
            else:
                slot.proc.terminate()
                slot.stopping_since = time.monotonic()

    # -- the one place that starts and stops workers ------------------------------------
    def reconcile(self) -> None:
        # A shard-count change: stop every worker of the old count first, so no day is ever owned by two live
        # processes; the new generation starts when the old one has exited, resuming from the checkpoints.
        old = [s for s in self.slots.values() if s.shards != self.wanted]
        if old:
            self.phase = "rescaling"
            for slot in old:
                if slot.proc is not None and slot.stopping_since is None:
                    slot.proc.terminate()
                    slot.stopping_since = time.monotonic()
            if any(s.proc is not None for s in old):
                return
            for slot in old:
                del self.slots[slot.shard_id]
            log.info("event=rescaled shards=%d", self.wanted)
        self.phase = "running"
        now = time.monotonic()
        for k in range(self.wanted):
            slot = self.slots.setdefault(k, Slot(k, self.wanted))
            if slot.proc is None and not slot.done and now >= slot.next_start:
                self.spawn(slot)

    def stop_all(self, why: str) -> None:
        live = [s for s in self.slots.values() if s.proc is not None]
        for slot in live:
            slot.proc.terminate()
            slot.stopping_since = time.monotonic()
        deadline = time.monotonic() + self.s.stall_grace_s + 30
        for slot in live:
            try:
                slot.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker=%d pid=%d event=kill reason=%r", slot.shard_id, slot.proc.pid, why)
                slot.proc.kill()
                slot.proc.wait()
            slot.proc = None
        log.info("event=workers_stopped reason=%r count=%d", why, len(live))

    def kill_leftover_workers(self) -> None:
        """Workers of a previous supervisor (e.g. one killed with -9) must be gone before ours start."""
        for pid_file in self.log_dir.glob("worker-*.pid"):
            try:
                proc = psutil.Process(int(pid_file.read_text()))
                if "workers.worker" not in " ".join(proc.cmdline()):
                    continue
            except (psutil.Error, ValueError, OSError):
                continue
            log.warning("pid=%d event=leftover_worker action=terminate file=%s", proc.pid, pid_file.name)
            proc.terminate()
            try:
                proc.wait(timeout=self.s.stall_grace_s + 30)
            except psutil.TimeoutExpired:
                proc.kill()

    # -- quality while running ---------------------------------------------------------------
    def quality_checks(self) -> None:
        """Fingerprint newly COMPLETE days (cheap, every few seconds) and run the relaxed gates every
        gates_interval_s in a thread of their own, so a slow check never delays a stall verdict."""
        now = time.monotonic()
        if now - self.last_fingerprints >= FINGERPRINT_EVERY_S:
            self.last_fingerprints = now
            from backfill.fingerprints import record_fingerprints

            try:
                record_fingerprints(self.store)
            except Exception as exc:  # bookkeeping must not stop the fleet; the rebuild records them again
                log.warning("event=fingerprints_failed error=%r action=retry_later", str(exc)[:300])
        interval = self.s.gates_interval_s
        if interval and now - self.last_gates >= interval and not (self.gates_thread and self.gates_thread.is_alive()):
            self.last_gates = now
            self.gates_thread = threading.Thread(target=run_relaxed_gates, args=(self.s,), daemon=True,
                                                 name="gates")
            self.gates_thread.start()

    # -- the end ---------------------------------------------------------------------------
    def finished(self) -> dict[str, int] | None:
        """When every worker has finished, the day tally; None while work remains."""
        if not self.slots or not all(s.done for s in self.slots.values()) or len(self.slots) != self.wanted:
            return None
        days = int(self.store.scalar("SELECT count() FROM backfill_days FINAL") or 0)
        statuses = dict(self.store.query_rows("SELECT status, count() FROM backfill_checkpoint FINAL GROUP BY status"))
        complete, failed = int(statuses.get("COMPLETE", 0)), int(statuses.get("FAILED", 0))
        if complete + failed < days:  # days appeared (a new plan): look again
            for slot in self.slots.values():
                slot.done = False
            return None
        return {"days": days, "complete": complete, "failed": failed}

    def finish(self, tally: dict[str, int]) -> str:
        if tally["failed"]:
            self.phase = "finished_with_failures"
            log.error("event=finished days=%d complete=%d failed=%d next='backfill retry-failed, then backfill start'",
                      tally["days"], tally["complete"], tally["failed"])
            return self.phase
        log.info("event=finished days=%d complete=%d", tally["days"], tally["complete"])
        if self.s.on_complete:
            from monitor.rebuild import run_on_complete_once

            from monitor.rebuild import RebuildFailed

            self.phase = "rebuilding"
            self.write_state()
            try:
                run_on_complete_once(self.store, self.s)
            except RebuildFailed as exc:
                self.phase = "rebuild_failed"
                self.message = (f"the on-complete rebuild stopped at {exc}; production is unchanged. See "
                                f"{self.log_dir / 'on-complete.log'}; fix, then `backfill rebuild`")
                log.error("event=rebuild_failed step=%s error=%r action=stopped_before_promotion", exc.step,
                          exc.message[:300])
                return self.phase
        self.phase = "complete"
        return self.phase

    def write_state(self) -> None:
        control.write_json_atomic(control.state_path(self.log_dir), {
            "pid": os.getpid(), "phase": self.phase, "wanted_shards": self.wanted, "started_at": self.started,
            "updated_at": time.time(), "message": self.message,
            "workers": [{"shard_id": s.shard_id, "shards": s.shards, "pid": s.proc.pid if s.proc else None,
                         "restarts": s.restarts, "done": s.done,
                         "state": "stopping" if s.stopping_since is not None else
                                  ("running" if s.proc else ("done" if s.done else "waiting"))}
                        for s in sorted(self.slots.values(), key=lambda s: s.shard_id)],
        })


def run_relaxed_gates(settings: Settings) -> None:
    """One relaxed gates run, with its own connection: results to gate_results and gates.log."""
    from monitor.gates import run_gates

    try:
        store = Store.connect(settings, create=False)
        try:
            report = run_gates(store, settings, "relaxed", source="supervisor")
        finally:
            store.close()
        log.info("event=gates level=relaxed passed=%s failed=%s", report.passed,
                 ",".join(report.failed_days()) or "-")
    except Exception as exc:
        log.warning("event=gates_failed_to_run error=%r action=retry_next_interval", str(exc)[:300])


def supervise(settings: Settings, on_tick: Callable[[Supervisor], None] | None = None) -> str:
    """Take the data directory's supervisor lock and run; raises FleetHalted, or AlreadyRunning via exit code."""
    fd = control.try_lock(settings.log_dir)
    if fd is None:
        raise FleetHalted("a supervisor is already running for this data directory", ALREADY_RUNNING)
    store = Store.connect(settings, create=False)
    sup = Supervisor(settings, store, on_tick)
    sup.install_signals()
    try:
        return sup.run()
    except FleetHalted as exc:
        sup.phase = "halted"
        sup.message = str(exc)
        log.error("event=halted reason=%r", str(exc))
        raise
    finally:
        sup.restore_signals()
        sup.write_state()
        store.close()
        os.close(fd)


def main() -> int:
    from backfill.logs import setup_logging

    settings = load_settings()
    setup_logging(settings.log_dir / "monitor.log")
    try:
        phase = supervise(settings)
    except FleetHalted as exc:
        return exc.exit_code
    except Exception:
        log.exception("event=supervisor_crash")
        return 1
    return 0 if phase in ("complete", "stopped") else 1  # finished_with_failures, rebuild_failed: 1


if __name__ == "__main__":
    sys.exit(main())
