"""The files through which commands talk to a running supervisor, in the data directory.

supervisor.lock  held (fcntl) by the live supervisor: one per data directory
supervisor.json  its state, rewritten every tick: pid, phase, wanted shards, workers
control.json     what commands want: {"shards": N, "seq": k}; the supervisor applies it on SIGHUP / next tick
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil


def lock_path(log_dir: Path) -> Path:
    return log_dir / "supervisor.lock"


def state_path(log_dir: Path) -> Path:
    return log_dir / "supervisor.json"


def control_path(log_dir: Path) -> Path:
    return log_dir / "control.json"


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def try_lock(log_dir: Path) -> int | None:
    """The supervisor lock's fd if we got it, None if another live supervisor holds it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(log_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def running_supervisor(log_dir: Path) -> dict[str, Any] | None:
    """State of the live supervisor of this data directory, or None (lock free, or its pid is gone)."""
    if not lock_path(log_dir).exists():
        return None
    fd = os.open(lock_path(log_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    try:
        pid = int(lock_path(log_dir).read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    state = read_json(state_path(log_dir)) or {}
    if state.get("pid") != pid:
        state = {"pid": pid, "phase": "starting"}
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
