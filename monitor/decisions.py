"""The supervisor's reap/restart decisions, as pure functions: what was observed (an exit code, a heartbeat's
age, a slot's restart history) and the clock go in, a verdict comes out. The supervisor loop acts on the
verdicts (signals, spawns, checkpoint writes, log lines); nothing here touches a process or the store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from monitor.backoff import restart_delay
from workers import exitcodes

QUICK_S = 30.0
MAX_QUICK_CRASHES = 5
STARTUP_ALLOWANCE_S = 60.0  # a worker not yet beating is judged stalled after max(stall_s, this)
KILLED_HOLD_S = 3600.0  # a killed worker's stopping_since is moved this far ahead: it is not killed again


# -- a worker exited ---------------------------------------------------------------------------
class ExitKind(enum.Enum):
    STALLED = "stalled"  # we stopped it for a stall: blame its day, restart with backoff
    ASKED_TO_STOP = "asked_to_stop"  # we sent TERM (rescale, stop): nothing to do
    DONE = "done"  # exit 0: no days left for this shard
    HALT_FLEET = "halt_fleet"  # a config error or the wrong chain: stop every worker, halt the run
    HELD = "held"  # another live worker (another host's) has the shard: try again after a lease's ttl
    RESTART = "restart"  # anything else: restart with backoff, within the budget


@dataclass(frozen=True)
class ExitVerdict:
    kind: ExitKind
    blame: str | None = None  # the failure to count against the worker's day, when there is one
    why: str = ""  # the restart's reason, as logged
    crashed: bool = False  # counts towards a crash loop (a restart within QUICK_S of the start)


def judge_exit(code: int, stall_reason: str | None, stopping: bool) -> ExitVerdict:
    """What an exited worker's code (and what we had asked of it) means, in the order the checks apply."""
    if stall_reason:
        return ExitVerdict(ExitKind.STALLED, blame=stall_reason, why=f"stalled ({stall_reason})")
    if stopping:
        return ExitVerdict(ExitKind.ASKED_TO_STOP)
    if code == exitcodes.OK:
        return ExitVerdict(ExitKind.DONE)
    if code in exitcodes.HALT_FLEET:
        return ExitVerdict(ExitKind.HALT_FLEET)
    if code == exitcodes.LEASE:  # another live worker has the shard (or had it while ours lapsed): not a crash
        return ExitVerdict(ExitKind.HELD, why="shard lease held elsewhere or lapsed")
    # killed by a signal we did not send (OOM killer, operator): blame its day
    blame = f"worker killed by signal {-code}" if code < 0 else None
    return ExitVerdict(ExitKind.RESTART, blame=blame, why=f"exit {code}", crashed=code > 0)


# -- a restart -----------------------------------------------------------------------------------
class RestartKind(enum.Enum):
    BACKOFF = "backoff"  # start again after `delay_s`
    CRASH_LOOP = "crash loop"  # MAX_QUICK_CRASHES quick crashes in a row: halt the fleet
    BUDGET_EXHAUSTED = "restart budget exhausted"  # more restarts than the budget: halt the fleet


@dataclass(frozen=True)
class RestartVerdict:
    kind: RestartKind
    restarts: int  # the slot's restart count, this one included
    quick_crashes: int  # consecutive quick crashes, this one included (0 when this was not one)
    delay_s: float = 0.0


def judge_restart(
    restarts: int, quick_crashes: int, crashed: bool, started_at: float, now: float, budget: int
) -> RestartVerdict:
    """The next restart of a slot that has had `restarts` so far: a backoff, or the reason to halt."""
    restarts += 1
    quick = crashed and now - started_at < QUICK_S
    quick_crashes = quick_crashes + 1 if quick else 0
    if quick_crashes >= MAX_QUICK_CRASHES:
        return RestartVerdict(RestartKind.CRASH_LOOP, restarts, quick_crashes)
    if restarts > budget:
        return RestartVerdict(RestartKind.BUDGET_EXHAUSTED, restarts, quick_crashes)
    return RestartVerdict(RestartKind.BACKOFF, restarts, quick_crashes, restart_delay(restarts))


# -- heartbeats ------------------------------------------------------------------------------------
def stall_check_due(now: float, last_check: float, stall_s: float) -> bool:
    """Heartbeats are looked at every second, or every stall_s/4 when the stall limit is smaller."""
    return now - last_check >= min(1.0, stall_s / 4)


def stop_overdue(now_mono: float, stopping_since: float, grace_s: float) -> bool:
    """A worker sent TERM that has not exited within the grace is KILLed."""
    return now_mono - stopping_since > grace_s


@dataclass(frozen=True)
class Stall:
    age_s: float  # seconds since the last sign of life
    limit_s: float  # the limit it went past


def judge_heartbeat(
    now: float, started_at: float, store_back_at: float, beat_at: float | None, stall_s: float
) -> Stall | None:
    """A Stall when a running worker's last sign of life is older than its limit, else None.

    The last sign of life is its start, the store's return from an outage (no beat could land while it was
    away) or its own latest beat (`beat_at`, None before its first). Before its first beat a worker is starting
    (imports, the store, the endpoints' heads): on a busy machine that can take longer than a small stall
    limit, and judging it then restarts it forever, so it gets max(stall_s, STARTUP_ALLOWANCE_S)."""
    last = max(started_at, store_back_at)
    if beat_at is not None:
        last = max(last, beat_at)
    limit = stall_s if beat_at is not None else max(stall_s, STARTUP_ALLOWANCE_S)
    age = now - last
    if age <= limit:
        return None
    return Stall(age, limit)


# -- a day's failures -------------------------------------------------------------------------------
def day_failure(failures: int, status: str, max_attempts: int) -> tuple[int, str]:
    """One more failure of a day: its new failure count and status (FAILED at the attempts limit)."""
    failures += 1
    return failures, "FAILED" if failures >= max_attempts else status
