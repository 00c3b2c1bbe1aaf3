"""The files through which commands talk to a running supervisor, in the data directory.

supervisor.lock  held (fcntl) by the live supervisor: one per data directory
supervisor.json  its state, rewritten every tick: pid, phase, wanted shards, workers, the store's health
control.json     what commands want: {"shards": N, "seq": k}; the supervisor applies it on SIGHUP / next tick
start.lock       held by a `backfill start` from its first check until its run is handed over (a new
                 supervisor is up, or the running one was told), so two starts take effect one after the
                 other; a supervisor holds it shared while it exits, so no start talks to one that is leaving
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

from backfill.errors import CommandFailed
from backfill.files import locks
from backfill.files.atomic import read_json, write_json_atomic


class Phase(str, enum.Enum):
    """What the supervisor is doing, as `supervisor.json` says it (a str: the file and `status --json` keep the
    same words). A live supervisor is starting, running, rescaling, stopping or rebuilding; the rest are the
    phases it ends in."""

    STARTING = "starting"
    RUNNING = "running"
    RESCALING = "rescaling"
    STOPPING = "stopping"
    REBUILDING = "rebuilding"
    FOLLOWING = "following"  # caught up, polling the head for new blocks (`backfill follow`)
    STOPPED = "stopped"
    COMPLETE = "complete"
    CAUGHT_UP = "caught_up"  # every day copied as far as the chain allows; the last ones OPEN until final
    SHARDS_DONE = "shards_done"  # this host's shards are done (--shard-ids); other hosts' shards still copy
    FINISHED_WITH_FAILURES = "finished_with_failures"
    REBUILD_FAILED = "rebuild_failed"
    HALTED = "halted"

    def __str__(self) -> str:
        return self.value


# A day no worker has more to do for in this run: COMPLETE, FAILED, or OPEN (copied as far as the chain allows)
SETTLED_STATUSES = ("COMPLETE", "OPEN", "FAILED")
FLEET_SHARDS = "fleet_shards"  # backfill_meta: the shard count every host's supervisor applies

ENDED_PHASES = frozenset(
    {
        Phase.COMPLETE,
        Phase.CAUGHT_UP,
        Phase.SHARDS_DONE,
        Phase.STOPPED,
        Phase.FINISHED_WITH_FAILURES,
        Phase.REBUILD_FAILED,
        Phase.HALTED,
    }
)


def lock_path(log_dir: Path) -> Path:
    return log_dir / "supervisor.lock"


def state_path(log_dir: Path) -> Path:
    return log_dir / "supervisor.json"


def control_path(log_dir: Path) -> Path:
    return log_dir / "control.json"


def try_lock(log_dir: Path) -> int | None:
    """The supervisor lock's fd if we got it, None if another live supervisor holds it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    fd = locks.acquire(lock_path(log_dir))
    if fd is None:
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def start_lock_path(log_dir: Path) -> Path:
    return log_dir / "start.lock"


@contextlib.contextmanager
def start_lock(log_dir: Path, on_wait: Callable[[str], Any] | None = None, timeout_s: float = 600.0) -> Iterator[None]:
    """Serialise `backfill start`s of one data directory (see start.lock above)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    fd = locks.open_lock_file(start_lock_path(log_dir))
    try:
        deadline = time.monotonic() + timeout_s
        told = False
        while not locks.try_flock(fd):
            if not told and on_wait is not None:
                on_wait("another `backfill start` of this data directory is handing over its run; waiting for it")
                told = True
            if time.monotonic() > deadline:
                raise CommandFailed(
                    f"another `backfill start` held {start_lock_path(log_dir)} for "
                    f"{timeout_s:.0f}s; try again when it has handed over its run"
                )
            time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def hold_exit_lock(log_dir: Path) -> int | None:
    """For a supervisor about to exit: the start lock held shared (close the fd after releasing the supervisor
    lock), or None when a start is in progress right now: then it must not exit, that start has news for it."""
    return locks.acquire(start_lock_path(log_dir), shared=True)


def start_in_progress(log_dir: Path) -> bool:
    fd = hold_exit_lock(log_dir)
    if fd is None:
        return True
    os.close(fd)
    return False


def running_supervisor(log_dir: Path) -> dict[str, Any] | None:
    """State of the live supervisor of this data directory, or None (lock free, or its pid is gone)."""
    if not locks.is_held(lock_path(log_dir)):
        return None
    try:
        pid = int(lock_path(log_dir).read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    state = read_json(state_path(log_dir)) or {}
    if state.get("pid") != pid:
        state = {"pid": pid, "phase": Phase.STARTING}
    return state if pid and psutil.pid_exists(pid) else None


def request(log_dir: Path, **wanted: Any) -> dict[str, Any]:
    """Record what a command wants and poke the supervisor (SIGHUP) if one runs."""
    doc = read_json(control_path(log_dir)) or {}
    doc.update(wanted)
    doc["seq"] = int(doc.get("seq", 0)) + 1
    doc["at"] = time.time()
    write_json_atomic(control_path(log_dir), doc)
    sup = running_supervisor(log_dir)
    if sup:
        os.kill(int(sup["pid"]), signal.SIGHUP)
    return doc
