"""The supervisor: one loop that reaps workers, judges heartbeats, applies the wanted shard count, keeps the
embedded store server alive, and runs the on-complete rebuild (in a thread) when every day is COMPLETE.
Signals only set flags the loop reads (TERM/INT = graceful stop, HUP = re-read what commands want). Only
`reconcile` starts or stops workers.

A round reads: reap -> judge (heartbeats) -> reconcile -> hooks -> sleep. What an exit or a stale heartbeat
means is decided by the pure functions of monitor.decisions; what runs beside the fleet (fingerprints of
COMPLETE days, the periodic relaxed gates, the on-complete rebuild, the foreground dashboard) sits behind the
hooks of monitor.hooks.

A store outage is a state of the loop, not an error: its store calls do not wait (patience 0), so a tick
that cannot reach the store skips what needs it, judges no heartbeat (none can land), and tries again next
tick; heartbeats are judged from the moment the store is back.

    python -m monitor.supervisor          (what `backfill start` launches, detached)
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import psutil

from backfill import control, exitcodes
from backfill.control import FLEET_SHARDS, SETTLED_STATUSES, Phase
from backfill.settings import Settings, load_settings
from backfill.shards import parse_shard_ids
from backfill.store.client import Store, StoreOutage
from backfill.store.records import Heartbeat, host_name
from monitor import decisions
from monitor.decisions import QUICK_S, ExitKind, RestartKind
from monitor.hooks import SupervisorHooks
from monitor.on_complete import OnCompleteRun
from monitor.warm import WORKER_COMMAND, WarmPool

if TYPE_CHECKING:
    from monitor.follow import Follower
    from monitor.metrics.server import MetricsServer

log = logging.getLogger("monitor")

ALREADY_RUNNING = 75  # exit code of a supervisor that found another one holding the lock
TICK_S = 0.5
FLEET_CHECK_S = 5.0
STORE_CHECK_S = 1.0  # how often the embedded store server's process is looked at
STORE_TIMEOUT_S = 20.0  # the supervisor's store calls: a hung store must not freeze the loop for minutes


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
    def __init__(self, settings: Settings, store: Store, hooks: SupervisorHooks | None = None):
        self.s = settings
        self.store = store
        self.log_dir = settings.log_dir
        self.wanted = settings.shards
        self.shard_set = parse_shard_ids(settings.shard_ids)  # the shards of this host (all, listed, a share)
        self.last_fleet_check = 0.0
        self.slots: dict[int, Slot] = {}
        self.phase = Phase.STARTING
        self.stopping = False
        self.interrupted = False  # the stop came from SIGINT (Ctrl-C in the terminal of a foreground run)
        self.reload = True
        self.control_seq = -1
        self.hooks = hooks if hooks is not None else SupervisorHooks(settings)
        self.started = time.time()
        self.host = host_name()
        self.last_stall_check = 0.0
        self.message = ""
        self.rebuild: OnCompleteRun | None = None
        self.warm: WarmPool | None = None  # workers importing ahead of their shard (a foreground start's)
        # the follower and the metrics server (the RPC client, prometheus_client: ~0.1 s of imports) are
        # imported only by a run that has them
        self.follower: Follower | None = None
        if settings.follow:
            from monitor.follow import Follower

            self.follower = Follower(settings, on_done=self.wake)
        self.metrics: MetricsServer | None = None
        if settings.metrics_addr:
            from monitor.metrics.server import MetricsServer

            self.metrics = MetricsServer(settings.metrics_addr, settings.ready_lag_blocks)
        self.rebuild_checked = False  # following: whether the rebuild was considered since the last copy
        self.last_store_check = 0.0
        self.exit_lock_fd: int | None = None  # the start lock, held shared while we exit (control.hold_exit_lock)
        # Self-pipe: signals (a worker's exit, stop, reload) end the tick's sleep at once instead of after TICK_S.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._old_handlers: dict[int, Any] = {}

    # -- signals only set flags ---------------------------------------------------------
    def install_signals(self) -> None:
        def flag(*names: str) -> Callable[..., None]:
            def handler(*_: Any) -> None:
                for name in names:
                    setattr(self, name, True)
                self.wake()

            return handler

        for sig, names in (
            (signal.SIGTERM, ("stopping",)),
            (signal.SIGINT, ("stopping", "interrupted")),
            (signal.SIGHUP, ("reload",)),
            (signal.SIGCHLD, ()),
        ):
            self._old_handlers[sig] = signal.signal(sig, flag(*names))

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
        """Run until every day is COMPLETE (or FAILED) and the rebuild has run, or a stop. Returns the final phase."""
        self.kill_leftover_workers()
        if self.metrics is not None:
            self.metrics.start()
        self.join_fleet()
        self.phase = Phase.RUNNING
        log.info(
            "event=supervisor_start pid=%d shards=%d ids=%s stall_s=%s",
            os.getpid(),
            self.wanted,
            self.shard_set.describe(self.wanted),
            self.s.stall_s,
        )
        try:
            while True:
                if self.reload:
                    self.reload = False
                    self.read_control()
                self.reap()
                self.keep_store_alive()
                if self.stopping:
                    return self.stop_run()
                try:
                    ended = self.tick()
                except StoreOutage:  # logged once by the store; stall judgement waits for it to come back
                    ended = None
                if ended:
                    return ended
                self.write_state()
                self.refresh_metrics()
                self.hooks.after_round(self)
                self.sleep_tick()
        finally:
            self.write_state()

    def refresh_metrics(self) -> None:
        """The snapshot /metrics serves (monitor/metrics/); during a store outage only its store state moves."""
        if self.metrics is None:
            return
        try:
            self.metrics.refresh(self)
        except StoreOutage:
            if self.metrics.collector.snapshot:  # the last numbers, marked: the store is away
                self.metrics.publish({**self.metrics.collector.snapshot, "store_up": False})
        except Exception as exc:  # noqa: BLE001 - bookkeeping for the scraper must never stop the fleet
            log.warning("event=metrics_gather_failed error=%r action=serve_last_numbers", str(exc)[:300])

    def tick(self) -> str | None:
        """The part of a round that needs the store: judge heartbeats, reconcile, the hooks. A final phase when
        the run has ended."""
        self.check_stalls()
        if self.rebuild is not None:
            return self.follow_rebuild()
        self.reconcile()
        self.hooks.on_tick(self)
        tally = self.finished()
        if tally is None:
            return None
        return self.finish(tally)

    def stop_run(self) -> str:
        self.phase = Phase.STOPPING
        self.write_state()
        if self.rebuild is not None:
            self.rebuild.stop("stop requested")
            # a promotion in progress is waited for, however long: production is never left half swapped
            while not self.rebuild.join(self.s.stall_grace_s + 30) and self.rebuild.step == "promote":
                log.info("event=stop_waits_for_promotion")
            if self.rebuild.alive():
                log.warning(
                    "event=rebuild_abandoned step=%s reason='stop requested' production=unchanged", self.rebuild.step
                )
            self.message = (
                "the on-complete rebuild stopped before its end (stop requested); `backfill start` runs it again"
            )
        self.stop_all("stop requested")
        self.phase = Phase.STOPPED
        return self.phase

    def read_control(self) -> None:
        doc = control.read_json(control.control_path(self.log_dir)) or {}
        if int(doc.get("seq", -1)) == self.control_seq:
            return
        self.control_seq = int(doc.get("seq", -1))
        shards = doc.get("shards")
        if isinstance(shards, int) and shards >= 1 and shards != self.wanted:
            log.info("event=rescale from=%d to=%d", self.wanted, shards)
            self.wanted = shards
            self.publish_shards()
        # new days or retried FAILED days: workers that finished must look again
        for slot in self.slots.values():
            slot.done = False
        if self.rebuild is not None:  # new work while rebuilding: stop the pipeline, fetch, rebuild after
            try:
                tally = self.tally()
            except StoreOutage:
                tally = None
            if tally is None or settled(tally) < tally["days"]:
                self.rebuild.stop("new days to fetch")

    # -- children -------------------------------------------------------------------------
    def spawn(self, slot: Slot) -> None:
        env = {**os.environ, **self.s.to_env(), "SHARDS": str(slot.shards)}
        argv = ["--shard", str(slot.shard_id), "--shards", str(slot.shards), "--parent", str(os.getpid())]
        stderr_path = self.log_dir / f"worker-{slot.shard_id}.stderr"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        warm = self.warm.take(argv, env, stderr_path) if self.warm is not None else None
        if warm is not None:
            slot.proc = warm
        else:
            with open(stderr_path, "ab") as err:
                slot.proc = subprocess.Popen(
                    [*WORKER_COMMAND, *argv], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
                )
        slot.started_at = time.time()
        slot.stopping_since = None
        slot.stall_reason = None
        log.info(
            "worker=%d pid=%d event=spawn shards=%d restarts=%d started=%s",
            slot.shard_id,
            slot.proc.pid,
            slot.shards,
            slot.restarts,
            "warm" if warm is not None else "cold",
        )

    def reap(self) -> None:
        for slot in list(self.slots.values()):
            if slot.proc is None:
                continue
            code = slot.proc.poll()
            if code is None:
                continue
            pid = slot.proc.pid
            slot.proc = None
            self.act_on_exit(slot, pid, code)

    def act_on_exit(self, slot: Slot, pid: int, code: int) -> None:
        verdict = decisions.judge_exit(code, slot.stall_reason, slot.stopping_since is not None)
        if verdict.kind is ExitKind.ASKED_TO_STOP:
            log.info("worker=%d pid=%d event=exit code=%d reason=asked_to_stop", slot.shard_id, pid, code)
            slot.stopping_since = None
        elif verdict.kind is ExitKind.DONE:
            slot.done = True
            log.info("worker=%d pid=%d event=exit code=0 status=no_days_left", slot.shard_id, pid)
        elif verdict.kind is ExitKind.HALT_FLEET:
            self.stop_all("halt")
            raise FleetHalted(
                f"worker {slot.shard_id} stopped the run (exit {code}); see "
                f"{self.log_dir / f'worker-{slot.shard_id}.log'}",
                code,
            )
        elif verdict.kind is ExitKind.HELD:  # not a failure: no restart counted; look again after a lease's ttl
            slot.next_start = time.monotonic() + self.s.lease_ttl_s
            log.warning(
                "worker=%d pid=%d event=exit code=%d reason=shard_held_elsewhere action=try_again in_s=%g",
                slot.shard_id,
                pid,
                code,
                self.s.lease_ttl_s,
            )
        else:  # STALLED or RESTART
            if verdict.blame:
                self.blame(slot, pid, verdict.blame)
            self.schedule_restart(slot, verdict.why, crashed=verdict.crashed)

    def schedule_restart(self, slot: Slot, why: str, crashed: bool = False) -> None:
        verdict = decisions.judge_restart(
            slot.restarts, slot.quick_crashes, crashed, slot.started_at, time.time(), self.s.restart_budget
        )
        slot.restarts, slot.quick_crashes = verdict.restarts, verdict.quick_crashes
        if verdict.kind is RestartKind.CRASH_LOOP:
            self.stop_all(verdict.kind.value)
            raise FleetHalted(
                f"worker {slot.shard_id} crashed {slot.quick_crashes} times in a row within {QUICK_S:g}s "
                f"of starting; last: {why}; see {self.log_dir / f'worker-{slot.shard_id}.log'}"
            )
        if verdict.kind is RestartKind.BUDGET_EXHAUSTED:
            self.stop_all(verdict.kind.value)
            raise FleetHalted(
                f"worker {slot.shard_id} restarted {slot.restarts - 1} times; last: {why}; see "
                f"{self.log_dir / f'worker-{slot.shard_id}.log'}"
            )
        delay = verdict.delay_s
        slot.next_start = time.monotonic() + delay
        log.warning(
            "worker=%d event=exit reason=%r action=restart in_s=%.1f restarts=%d",
            slot.shard_id,
            why,
            delay,
            slot.restarts,
        )

    def blame(self, slot: Slot, pid: int, reason: str) -> None:
        try:
            self.blame_day(slot, pid, reason)
        except StoreOutage:  # the day's failure cannot be written now; the restarted worker resumes it anyway
            log.warning(
                "worker=%d pid=%d event=blame_skipped reason=store_unreachable error=%r", slot.shard_id, pid, reason
            )

    def blame_day(self, slot: Slot, pid: int, reason: str) -> None:
        """A worker that died or stalled counts as one failure of the day it was on (FAILED at the limit)."""
        hb = self.heartbeats().get(slot.shard_id)
        if not hb or hb.pid != pid or hb.day_idx < 0:
            return
        day_idx = int(hb.day_idx)
        cp = self.store.checkpoints().get(day_idx)
        if cp is None:
            plan = {p.day_idx: p for p in self.store.read_plan()}.get(day_idx)
            if plan is None:
                return
            self.store.write_checkpoint(
                day_idx=day_idx,
                status="RUNNING",
                next_block=plan.start_block,
                erc20_count=0,
                erc1155_count=0,
                quarantined_count=0,
                skipped_count=0,
                worker_id=slot.shard_id,
                shards=slot.shards,
                attempts=1,
                failures=0,
            )
            cp = self.store.checkpoints()[day_idx]
        if cp["status"] == "COMPLETE":
            return
        failures, status = decisions.day_failure(int(cp["failures"]), cp["status"], self.s.max_day_attempts)
        self.store.update_checkpoint(day_idx, failures=failures, status=status, error=reason[:500])
        level = logging.ERROR if status == "FAILED" else logging.WARNING
        log.log(
            level,
            "worker=%d day=%d event=day_error failures=%d/%d status=%s error=%r",
            slot.shard_id,
            day_idx,
            failures,
            self.s.max_day_attempts,
            status,
            reason,
        )

    def heartbeats(self) -> dict[int, Heartbeat]:
        return self.store.heartbeats(self.host)

    def check_stalls(self) -> None:
        now = time.time()
        if not decisions.stall_check_due(now, self.last_stall_check, self.s.stall_s):
            return
        self.last_stall_check = now
        beats = None
        for slot in self.slots.values():
            if slot.proc is None:
                continue
            if slot.stopping_since is not None:
                if decisions.stop_overdue(time.monotonic(), slot.stopping_since, self.s.stall_grace_s):
                    log.error(
                        "worker=%d pid=%d event=kill reason=no_exit_after_term grace_s=%s",
                        slot.shard_id,
                        slot.proc.pid,
                        self.s.stall_grace_s,
                    )
                    slot.proc.kill()
                    slot.stopping_since = time.monotonic() + decisions.KILLED_HOLD_S  # killed: do not kill again
                continue
            if beats is None:
                beats = self.heartbeats()
            hb = beats.get(slot.shard_id)
            beat_at = hb.last_update() if hb is not None and hb.pid == slot.proc.pid else None
            stall = decisions.judge_heartbeat(
                now, slot.started_at, self.store.outage.recovered_at, beat_at, self.s.stall_s
            )
            if stall is None:
                continue
            age, limit = stall.age_s, stall.limit_s
            try:
                stopped = psutil.Process(slot.proc.pid).status() == psutil.STATUS_STOPPED
            except psutil.Error:
                stopped = False
            day = int(hb.day_idx) if hb is not None and hb.pid == slot.proc.pid else -1
            slot.stall_reason = f"no heartbeat for {age:.0f}s (limit {limit:g}s)"
            log.warning(
                "worker=%d pid=%d day=%d stalled=%.0fs limit=%gs process=%s action=restart",
                slot.shard_id,
                slot.proc.pid,
                day,
                age,
                limit,
                "stopped" if stopped else "running",
            )
            if stopped:  # a stopped process cannot exit gracefully: KILL at once
                slot.proc.kill()
                slot.stopping_since = time.monotonic() + decisions.KILLED_HOLD_S
            else:
                slot.proc.terminate()
                slot.stopping_since = time.monotonic()

    # -- the embedded store ------------------------------------------------------------------
    def keep_store_alive(self) -> None:
        """Restart the embedded store server when its process is gone (killed, crashed, OOM): same data
        directory, a new port in server.json, where every client looks again when it reconnects."""
        if self.s.store.url or time.monotonic() - self.last_store_check < STORE_CHECK_S:
            return
        self.last_store_check = time.monotonic()
        from backfill.store import embedded

        if embedded.server_alive(self.s.data_dir):
            return
        t0 = time.monotonic()
        log.warning("event=store_server_gone data_dir=%s action=restart", self.s.data_dir)
        try:
            url = embedded.ensure_server(self.s.data_dir, timeout_s=60)
        except Exception as exc:  # noqa: BLE001 - logged with what happens next; the next round tries again
            log.error(
                "event=store_server_restart_failed error=%r action=retry_in_s=5 log=%s",
                str(exc)[:300],
                self.log_dir / "store.log",
            )
            self.last_store_check = time.monotonic() + 5
            return
        log.info("event=store_server_restarted url=%s seconds=%.1f", url, time.monotonic() - t0)

    # -- the one place that starts and stops workers ------------------------------------
    def my_ids(self) -> list[int]:
        """The shard ids this host runs at the wanted count (`--shard-ids`; all of them by default)."""
        return self.shard_set.ids(self.wanted)

    def publish_shards(self) -> None:
        """The fleet's shard count, for the supervisors of other hosts (a rescale applied everywhere)."""
        self.store.meta_set(FLEET_SHARDS, str(self.wanted))

    def join_fleet(self) -> None:
        """The shard count at the start. A supervisor of every shard is the whole fleet: its count is the
        fleet's. One of some shards (`--shard-ids`) applies the count the fleet already runs, if any, so a host
        restarted with an old SHARDS never scales the others back (`backfill scale N` changes it for all)."""
        self.last_fleet_check = time.monotonic()  # the count is known now: the loop reads it again later
        if self.shard_set.everything:
            self.publish_shards()
            return
        fleet = self.store.meta_get(FLEET_SHARDS)
        if not (fleet and fleet.isdigit()):
            self.publish_shards()
        elif int(fleet) != self.wanted:
            log.warning(
                "event=fleet_shards shards=%s given=%d action=apply_fleet hint='backfill scale N changes it for all'",
                fleet,
                self.wanted,
            )
            self.wanted = int(fleet)

    def follow_fleet_shards(self) -> None:
        """Every FLEET_CHECK_S: a shard count another host's supervisor was given is this host's too."""
        now = time.monotonic()
        if now - self.last_fleet_check < FLEET_CHECK_S:
            return
        self.last_fleet_check = now
        text = self.store.meta_get(FLEET_SHARDS)
        if text and text.isdigit() and int(text) >= 1 and int(text) != self.wanted:
            log.info("event=rescale from=%d to=%d source=fleet", self.wanted, int(text))
            self.wanted = int(text)
            for slot in self.slots.values():
                slot.done = False

    def reconcile(self) -> None:
        # A shard-count change: stop every worker of the old count first, so no day is ever owned by two live
        # processes; the new generation starts when the old one has exited, resuming from the checkpoints.
        # Across hosts the shard leases keep that order (workers/lease.py: a new count waits for the old one).
        self.follow_fleet_shards()
        mine = set(self.my_ids())
        old = [s for s in self.slots.values() if s.shards != self.wanted or s.shard_id not in mine]
        if old:
            self.phase = Phase.RESCALING
            for slot in old:
                if slot.proc is not None and slot.stopping_since is None:
                    slot.proc.terminate()
                    slot.stopping_since = time.monotonic()
            if any(s.proc is not None for s in old):
                return
            for slot in old:
                del self.slots[slot.shard_id]
            log.info("event=rescaled shards=%d", self.wanted)
        self.phase = Phase.RUNNING
        now = time.monotonic()
        for k in sorted(mine):
            slot = self.slots.setdefault(k, Slot(k, self.wanted))
            if slot.proc is None and not slot.done and now >= slot.next_start:
                self.spawn(slot)

    def stop_all(self, why: str) -> None:
        live = [(s, s.proc) for s in self.slots.values() if s.proc is not None]
        for slot, proc in live:
            proc.terminate()
            slot.stopping_since = time.monotonic()
        deadline = time.monotonic() + self.s.stall_grace_s + 30
        for slot, proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker=%d pid=%d event=kill reason=%r", slot.shard_id, proc.pid, why)
                proc.kill()
                proc.wait()
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

    # -- the end ---------------------------------------------------------------------------
    def tally(self) -> dict[str, int]:
        days = self.store.day_count()
        statuses = self.store.checkpoint_status_counts()
        return {
            "days": days,
            "complete": int(statuses.get("COMPLETE", 0)),
            "failed": int(statuses.get("FAILED", 0)),
            "open": int(statuses.get("OPEN", 0)),  # copied to the safe head, not final yet: done for this run
        }

    def finished(self) -> dict[str, int] | None:
        """When every worker has finished, the day tally; None while work remains. A host running some of the
        shards is finished when its own days are settled: the tally then counts the days left `elsewhere`."""
        mine = self.my_ids()
        if (mine and not self.slots) or not all(s.done for s in self.slots.values()) or sorted(self.slots) != mine:
            return None
        tally = self.tally()
        if self.follower is not None:
            return tally  # following: the poller and follow_head decide what is left to do
        if settled(tally) < tally["days"]:
            if not self.shard_set.everything and self.own_days_settled():
                return {**tally, "elsewhere": tally["days"] - settled(tally)}
            for slot in self.slots.values():  # days appeared (a new plan): look again
                slot.done = False
            return None
        return tally

    def copying(self) -> bool:
        """Whether a worker of this host is still at work (a slot not done)."""
        return any(not slot.done for slot in self.slots.values())

    def own_days_settled(self) -> bool:
        """Every planned day of this host's shards COMPLETE, OPEN or FAILED."""
        mine = set(self.my_ids())
        checkpoints = self.store.checkpoints()
        return all(
            p.day_idx in checkpoints and checkpoints[p.day_idx]["status"] in SETTLED_STATUSES
            for p in self.store.read_plan()
            if p.day_idx % self.wanted in mine
        )

    def may_exit(self) -> bool:
        """Hold the start lock shared for the way out; False when a `backfill start` is handing us news (new
        days, a shard count): then we stay and hear it."""
        if self.exit_lock_fd is None:
            self.exit_lock_fd = control.hold_exit_lock(self.log_dir)
        if self.exit_lock_fd is None:
            return False
        if self.reload:  # a request arrived after all: release and go on
            os.close(self.exit_lock_fd)
            self.exit_lock_fd = None
            return False
        return True

    def finish(self, tally: dict[str, int]) -> str | None:
        if tally["failed"]:
            if not self.may_exit():
                return None
            self.phase = Phase.FINISHED_WITH_FAILURES
            self.message = (
                f"{tally['failed']} of {tally['days']} days FAILED: `backfill retry-failed`, then `backfill start`"
            )
            log.error(
                "event=finished days=%d complete=%d failed=%d next='backfill retry-failed, then backfill start'",
                tally["days"],
                tally["complete"],
                tally["failed"],
            )
            return self.phase
        if self.follower is not None:
            return self.follow_head(tally)
        if tally.get("elsewhere"):
            return self.shards_done(tally)
        if not self.s.on_complete:
            if not self.may_exit():
                return None
            log.info(
                "event=finished days=%d complete=%d open=%d rebuild=off",
                tally["days"],
                tally["complete"],
                tally["open"],
            )
            self.phase, self.message = self.caught_up_or_complete(tally)
            return self.phase
        if control.start_in_progress(self.log_dir):
            return None  # a start is adding days: rebuild after those
        log.info(
            "event=finished days=%d complete=%d open=%d action=rebuild",
            tally["days"],
            tally["complete"],
            tally["open"],
        )
        self.phase = Phase.REBUILDING
        self.rebuild = self.hooks.on_all_complete(self)
        return None

    def shards_done(self, tally: dict[str, int]) -> str | None:
        """This host's shards are done, other hosts' are not: end here; the host finishing last rebuilds."""
        if not self.may_exit():
            return None
        self.phase = Phase.SHARDS_DONE
        self.message = (
            f"this host's shards ({self.shard_set.describe(self.wanted)} of {self.wanted}) are done; "
            f"{tally['elsewhere']} days are left to other hosts' shards, and the host that finishes last runs "
            "the rebuild"
        )
        log.info(
            "event=finished scope=shards ids=%s shards=%d days=%d left_elsewhere=%d action=exit",
            self.shard_set.describe(self.wanted),
            self.wanted,
            tally["days"],
            tally["elsewhere"],
        )
        return self.phase

    def follow_head(self, tally: dict[str, int]) -> str | None:
        """Following, with no worker running: a poll's result is handed to the workers of the days it found
        work in; with nothing left to copy, rebuild when days became final, else poll the head again. Only one
        thing at a time: no poll while workers copy or the rebuild runs, no rebuild while a poll may plan."""
        follower = self.follower
        assert follower is not None
        if follower.forked is not None:
            self.stop_all("deep fork")
            raise FleetHalted(str(follower.forked), exitcodes.WRONG_CHAIN)
        self.phase = Phase.FOLLOWING
        result = follower.take()
        if follower.polling():
            return None
        if result is not None and result.work:
            self.hand_out(result.work, f"head={result.head} safe_head={result.safe_head} final={result.final_head}")
            return None
        if settled(tally) < tally["days"]:  # days from elsewhere (a `start` told us, a retry-failed)
            self.hand_out(list(range(self.wanted)), "reason=new_days")
            return None
        if self.s.on_complete and not self.rebuild_checked:
            self.rebuild_checked = True
            from monitor.rebuild import rebuild_due

            if rebuild_due(self.store):
                log.info("event=follow_rebuild reason='days became final'")
                self.phase = Phase.REBUILDING
                self.rebuild = self.hooks.on_all_complete(self)
                return None
        if follower.due(time.monotonic()):
            follower.start()
        return None

    def hand_out(self, days: list[int], why: str) -> None:
        """The workers owning these days (day_idx; shard = day_idx mod shards) start again."""
        owners = {day % self.wanted for day in days} & set(self.my_ids())
        for slot in self.slots.values():
            slot.done = slot.done and slot.shard_id not in owners
        self.rebuild_checked = False
        self.phase = Phase.RUNNING
        self.wake()  # the workers start in the next round, at once
        log.info("event=follow_work days=%s %s", ",".join(map(str, days[:10])), why)

    def caught_up_or_complete(self, tally: dict[str, int]) -> tuple[Phase, str]:
        """The phase of a run whose days are all done: COMPLETE, or CAUGHT_UP while days at the head are OPEN."""
        if not tally["open"]:
            return Phase.COMPLETE, ""
        return Phase.CAUGHT_UP, (
            f"{tally['open']} day(s) at the chain head OPEN: copied to the safe head, not final yet; "
            "`backfill sync` completes them"
        )

    def follow_rebuild(self) -> str | None:
        """While the rebuild runs: nothing to do but wait. When it ends: the final phase, or back to running
        when new days came in meanwhile."""
        assert self.rebuild is not None
        if self.rebuild.outcome is None:
            return None
        outcome, text = self.rebuild.outcome
        self.rebuild = None
        tally = self.tally()
        if settled(tally) < tally["days"]:
            log.info("event=rebuild_superseded outcome=%s reason='new days to fetch' action=run_then_rebuild", outcome)
            self.phase = Phase.RUNNING
            for slot in self.slots.values():
                slot.done = False
            return None
        if self.follower is not None and outcome == "complete":
            self.phase, self.message = Phase.FOLLOWING, ""
            return None
        if not self.may_exit():
            self.phase = Phase.RUNNING
            return None
        if outcome == "complete":
            self.phase, self.message = self.caught_up_or_complete(tally)
        elif outcome == "stopped":
            self.phase = Phase.STOPPED
            self.message = f"the on-complete rebuild stopped before its end ({text}); `backfill start` runs it again"
        else:
            self.phase = Phase.REBUILD_FAILED
            self.message = (
                f"the on-complete rebuild stopped at {text}; production is unchanged. See "
                f"{self.log_dir / 'on-complete.log'}; fix, then `backfill rebuild`"
            )
            log.error("event=rebuild_failed error=%r action=stopped_before_promotion", text[:300])
        return self.phase

    def write_state(self, ended: bool = False) -> None:
        control.write_json_atomic(
            control.state_path(self.log_dir),
            {
                "pid": os.getpid(),
                "phase": self.phase,
                "wanted_shards": self.wanted,
                "shard_ids": self.s.shard_ids,  # "" = every shard: this host is the whole fleet
                "started_at": self.started,
                "updated_at": time.time(),
                "message": self.message,
                "ended_at": time.time() if ended else None,
                "stopped_by": ("SIGINT" if self.interrupted else "SIGTERM")
                if self.phase == Phase.STOPPED and self.stopping
                else None,
                "rebuild_step": self.rebuild.step if self.rebuild is not None else None,
                "follow": self.follower.view() if self.follower is not None else None,
                "store": self.store.outage.state(),
                "workers": [
                    {
                        "shard_id": s.shard_id,
                        "shards": s.shards,
                        "pid": s.proc.pid if s.proc else None,
                        "restarts": s.restarts,
                        "done": s.done,
                        "state": "stopping"
                        if s.stopping_since is not None
                        else ("running" if s.proc else ("done" if s.done else "waiting")),
                    }
                    for s in sorted(self.slots.values(), key=lambda s: s.shard_id)
                ],
            },
        )


def settled(tally: dict[str, int]) -> int:
    """Days this run has nothing more to do for: COMPLETE, FAILED, or OPEN (copied as far as the chain allows)."""
    return tally["complete"] + tally["failed"] + tally["open"]


def open_store(settings: Settings) -> Store:
    """The supervisor's connection: the embedded server started first when it is down; patience 0, as an
    outage is a state the loop handles (see the module doc), not a wait inside a call."""
    if not settings.store.url:
        from backfill.store.embedded import ensure_server

        ensure_server(settings.data_dir)
    store = Store.connect(
        settings,
        create=False,
        start_embedded=False,
        patience_s=0.0,
        connect_patience_s=60.0,
        context="monitor",
        timeout_s=STORE_TIMEOUT_S,
    )
    store.warm_up()  # the insert column types in one read (not a DESCRIBE before the first insert of each table)
    return store


def supervise(
    settings: Settings,
    on_tick: Callable[[Supervisor], None] | None = None,
    lock_fd: int | None = None,
    warm: WarmPool | None = None,
    connecting: Future[Store] | None = None,
) -> str:
    """Take the data directory's supervisor lock (or use lock_fd, taken by the caller) and run; raises
    FleetHalted, or AlreadyRunning via exit code. connecting: `open_store` begun by the caller (a foreground
    start, while it plans); connected again here if that failed."""
    fd = lock_fd if lock_fd is not None else control.try_lock(settings.log_dir)
    if fd is None:
        raise FleetHalted("a supervisor is already running for this data directory", ALREADY_RUNNING)
    store = _opened(connecting) or open_store(settings)
    sup = Supervisor(settings, store, SupervisorHooks(settings, after_round=on_tick))
    sup.warm = warm
    sup.install_signals()
    try:
        return sup.run()
    except FleetHalted as exc:
        sup.phase = Phase.HALTED
        sup.message = str(exc)
        log.error("event=halted reason=%r", str(exc))
        raise
    finally:
        if sup.follower is not None:
            sup.follower.on_done = None  # a poll ending now must not write to the wake pipe once it is closed
        sup.restore_signals()
        sup.write_state(ended=True)
        if sup.follower is not None:
            sup.follower.close()
        if sup.metrics is not None:
            sup.metrics.stop()
        store.close()
        os.close(fd)
        if sup.exit_lock_fd is not None:
            os.close(sup.exit_lock_fd)


def _opened(connecting: Future[Store] | None) -> Store | None:
    """The connection begun ahead, None when there is none or it failed (the store may have been away)."""
    if connecting is None:
        return None
    try:
        return connecting.result()
    except Exception as exc:  # noqa: BLE001 - connected again at once, which reports what is still wrong
        log.info("event=store_connect_ahead_failed error=%r action=connect_again", str(exc)[:200])
        return None


def main() -> int:
    from backfill.files.oplog import setup_logging

    settings = load_settings()
    setup_logging(settings.log_dir / "monitor.log", log_format=settings.log_format)
    try:
        phase = supervise(settings)
    except FleetHalted as exc:
        return exc.exit_code
    except Exception:
        log.exception("event=supervisor_crash")
        return 1
    return (
        0 if phase in (Phase.COMPLETE, Phase.CAUGHT_UP, Phase.STOPPED) else 1
    )  # finished_with_failures, rebuild_failed: 1


if __name__ == "__main__":
    sys.exit(main())
