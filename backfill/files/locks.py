"""File locks (fcntl.flock on a lock file): the one way a process says "this data directory / store / step is
mine". A lock dies with its process, so a killed holder never leaves a stale lock behind. The fd returned is
the lock: close it to release."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


def open_lock_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def try_flock(fd: int, shared: bool = False) -> bool:
    """Take the lock on an open lock file without waiting; False when another process holds it."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def acquire(path: Path, shared: bool = False, wait_s: float = 0.0, poll_s: float = 0.05) -> int | None:
    """The lock on `path` (its fd), waiting up to `wait_s` for it; None (nothing left open) when not had."""
    fd = open_lock_file(path)
    deadline = time.monotonic() + wait_s
    while not try_flock(fd, shared):
        if time.monotonic() >= deadline:
            os.close(fd)
            return None
        time.sleep(poll_s)
    return fd


def is_held(path: Path) -> bool:
    """Does a live process hold the lock on `path` (exclusively)? Asked without taking it for long."""
    if not path.exists():
        return False
    fd = open_lock_file(path)
    try:
        if try_flock(fd, shared=True):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)
