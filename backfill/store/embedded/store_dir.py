"""The embedded store's directory, `<data_dir>/clickhouse/`: its files, its owner-only credential and the lock
its one server holds. Shared by the light side every process uses (the package) and the server process."""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from pathlib import Path

from backfill.files import locks
from backfill.store.embedded.guard import STORE_USER, Credential

log = logging.getLogger("backfill.store.embedded")

LOCK_NAME, INFO_NAME, START_LOCK_NAME = "server.lock", "server.json", "start.lock"
CREDENTIALS_NAME = "credentials.json"


class StoreBusy(RuntimeError):
    """Another server already holds the data directory."""


def store_dir(data_dir: Path) -> Path:
    return Path(data_dir).resolve() / "clickhouse"


def make_store_dir(data_dir: Path) -> Path:
    """``<data_dir>/clickhouse``, created owner-only if it is not there yet (an existing one keeps its mode)."""
    path = store_dir(data_dir)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _parse_credential(text: str) -> Credential | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    user, password = (doc.get("user"), doc.get("password")) if isinstance(doc, dict) else (None, None)
    if isinstance(user, str) and isinstance(password, str) and user and password:
        return Credential(user, password)
    return None


def read_credential(data_dir: Path) -> Credential | None:
    """The credential of the data directory's store, for a client; None if there is none (yet) or it is not
    readable by this user (then this user is not the store's owner)."""
    try:
        return _parse_credential((store_dir(data_dir) / CREDENTIALS_NAME).read_text())
    except OSError:
        return None


def ensure_credential(data_dir: Path) -> Credential:
    """The server's credential: the stored one if it is a regular file of this user readable by nobody else,
    else a new random one written owner-only (a credential others could read or plant is not kept)."""
    path = store_dir(data_dir) / CREDENTIALS_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        fd = -1
    except OSError as ex:  # a symlink, or not readable
        log.warning("credential %s unusable (%s): writing a new one", path, ex.strerror)
        fd = -1
    if fd >= 0:
        with os.fdopen(fd) as f:
            st = os.fstat(f.fileno())
            private = stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
            credential = _parse_credential(f.read()) if private else None
        if credential is not None:
            return credential
        log.warning("credential %s is not an owner-only file of this user or is damaged: writing a new one", path)
    credential = Credential(STORE_USER, secrets.token_urlsafe(24))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # whatever the umask
        f.write(json.dumps({"user": credential.user, "password": credential.password}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return credential


def lock_file(path: Path, wait_s: float = 0.0) -> int:
    """Take the exclusive flock on ``path``; returns the fd (close it to release). Raises StoreBusy.

    ``wait_s`` rides out other processes' momentary probes (``_lock_held``) of the same lock.
    """
    fd = locks.acquire(path, wait_s=wait_s, poll_s=0.02)
    if fd is None:
        raise StoreBusy(f"another embedded store server holds {path}")
    return fd
