"""What a data directory holds, asked before a command touches it: a read-only command (status, gates, logs,
db stop) on a directory that holds no run says so in one line and creates nothing (no directory, no embedded
server, no log file); a path that cannot be a data directory (a file, no permission) is one line too."""

from __future__ import annotations

import os
from pathlib import Path

from backfill.errors import UserError
from backfill.settings import Settings

STORE_DIR = "clickhouse"  # the embedded store (backfill.store.embedded.store_dir), without importing its module
HINT = "give --data-dir (or BACKFILL_DATA_DIR) the data directory of a run"


class NoBackfillData(UserError):
    """The data directory holds nothing of a run yet, or cannot be one."""


def shown(path: Path) -> Path:
    return path.absolute()


def check_usable(data_dir: Path, create: bool = False) -> bool:
    """Whether the data directory exists; raises NoBackfillData when the path cannot be one (a file, or under
    one; a directory this user cannot read or enter; with `create`, one that cannot be made). A path that does
    not exist yet is usable: start creates it."""
    try:
        if not data_dir.exists():
            above = next((p for p in data_dir.absolute().parents if p.exists()), None)
            if above is not None and not above.is_dir():
                raise NoBackfillData(f"{shown(data_dir)} cannot be a directory: {above} is a file; {HINT}")
            if create and above is not None and not os.access(above, os.W_OK | os.X_OK):
                raise PermissionError(13, f"permission denied to create it in {above}")
            return False
        if not data_dir.is_dir():
            raise NoBackfillData(f"{shown(data_dir)} is not a directory; {HINT}")
        if not os.access(data_dir, os.R_OK | os.X_OK | (os.W_OK if create else 0)):
            raise PermissionError(13, "permission denied")
    except OSError as exc:  # the path or one of its parents cannot be read
        raise NoBackfillData(
            f"cannot {'use' if create else 'read'} the data directory {shown(data_dir)}: "
            f"{(exc.strerror or str(exc)).lower()}; {HINT}"
        ) from None
    return True


def _missing(data_dir: Path, what: str) -> NoBackfillData:
    return NoBackfillData(
        f"no backfill data in {shown(data_dir)} (no {what} there yet); start one with: backfill start"
    )


def holds_store(settings: Settings) -> bool:
    """Whether the settings' store may already exist: a configured server, or an embedded store in the data
    directory (its chain is then checked before anything else is refused)."""
    try:
        return bool(settings.store.url) or (settings.data_dir / STORE_DIR).is_dir()
    except OSError:
        return False


def require_store(settings: Settings, embedded: bool = False) -> None:
    """Before a read-only command connects to the store: the embedded store must exist in the data directory
    (connecting would create one). A configured server (CLICKHOUSE_URL) needs nothing there, unless `embedded`
    (db stop: the command is about the embedded store)."""
    exists = check_usable(settings.data_dir)
    if settings.store.url and not embedded:
        return
    try:
        has_store = exists and (settings.data_dir / STORE_DIR).is_dir()
    except OSError:
        has_store = False
    if not has_store:
        raise _missing(settings.data_dir, "store")


def require_logs(settings: Settings) -> None:
    """Before `backfill logs`: the data directory must hold the run's log folder."""
    exists = check_usable(settings.data_dir)
    try:
        has_logs = exists and settings.log_dir.is_dir()
    except OSError:
        has_logs = False
    if not has_logs:
        raise _missing(settings.data_dir, "logs")
