"""The embedded store: one local process owns chDB for ``<data_dir>/clickhouse/`` and serves it over
ClickHouse's HTTP interface on 127.0.0.1, so workers, the CLI, clickhouse-connect and curl can all use
it at once (chDB allows one process per data directory). Only that server process imports chDB
(``backfill.store.embedded.server`` and its ``embedded_engine``); this module is the light side every other
process uses.

    url = ensure_server(data_dir)      # find the live server or start one detached; returns its URL
    server_alive(data_dir)             # does a process serve it? (the supervisor restarts a dead one)
    stop_server(data_dir)              # SIGTERM and wait: data durable, server.json removed
    read_credential(data_dir)          # the user and password every request but /ping must present
    python -m backfill.store.embedded --data-dir D [--port P]    # serve in the foreground

The server serves its owner only: on first start it writes a random credential to
``<data_dir>/clickhouse/credentials.json`` (mode 0600, the directory 0700 when it creates it), which the
project's own clients read (``backfill.store.client``) and ``backfill db credentials`` prints for other clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from backfill.files import locks
from backfill.store.embedded.guard import Credential
from backfill.store.embedded.store_dir import (  # noqa: F401  (the package's API)
    CREDENTIALS_NAME,
    INFO_NAME,
    LOCK_NAME,
    START_LOCK_NAME,
    StoreBusy,
    ensure_credential,
    lock_file,
    make_store_dir,
    read_credential,
    store_dir,
)

log = logging.getLogger("backfill.store.embedded")

_SPAWNED: list[subprocess.Popen] = []

# A server started on demand by a command stops after this long without a request (a run keeps it busy).
IDLE_EXIT_S = 1800.0


def serve(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    threads: int | None = None,
    idle_exit_s: float | None = None,
    allow_external: bool = False,
) -> None:
    """Serve ``<data_dir>/clickhouse`` until SIGTERM/SIGINT (or idle_exit_s without a request). Raises StoreBusy
    if already served. ``allow_external``: run statements that reach outside the store (files, URLs, other
    servers); refused by default (``backfill.store.embedded.guard``)."""
    from backfill.store.embedded.server import serve_async

    if not logging.getLogger().handlers:  # start/stop/failed-query lines need somewhere to go
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    asyncio.run(
        serve_async(
            Path(data_dir), host, port, threads or max(4, 2 * (os.cpu_count() or 1)), idle_exit_s, allow_external
        )
    )


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    for proc in _SPAWNED:
        if proc.pid == pid:
            proc.poll()  # reap our own exited child so it does not linger as a zombie
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - NoSuchProcess, AccessDenied, no psutil
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _lock_held(path: Path) -> bool:
    if not path.parent.is_dir():  # no store in this data directory (yet)
        return False
    try:
        os.close(lock_file(path))
        return False
    except StoreBusy:
        return True


def server_alive(data_dir: Path) -> bool:
    """Whether a server process holds the data directory (its lock): cheap, and true while it is busy."""
    return _lock_held(store_dir(data_dir) / LOCK_NAME)


def _read_info(data_dir: Path) -> dict | None:
    try:
        return json.loads((store_dir(data_dir) / INFO_NAME).read_text())
    except (OSError, ValueError):
        return None


def server_url(data_dir: Path, ping_timeout_s: float = 2.0) -> str | None:
    """The URL of a live server for ``data_dir`` (server.json present, pid alive, /ping ok), else None."""
    info = _read_info(data_dir)
    if not info or not _pid_alive(int(info.get("pid", 0))):
        return None
    try:
        with urllib.request.urlopen(f"{info['url']}/ping", timeout=ping_timeout_s) as resp:
            return info["url"] if resp.read() == b"Ok.\n" else None
    except OSError:
        return None


def _spawn(data_dir: Path, log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])  # so `-m backfill.store.embedded` imports this package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-P",  # not the working directory first on sys.path: a `backfill/` folder there must not shadow us
                "-m",
                "backfill.store.embedded",
                "--data-dir",
                str(data_dir),
                "--idle-exit-s",
                str(IDLE_EXIT_S),
            ],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
        )
    _SPAWNED.append(proc)
    return proc


def ensure_server(data_dir: Path, timeout_s: float = 30) -> str:
    """Return the URL of the live server for ``data_dir``, starting one detached if there is none."""
    data_dir = Path(data_dir).resolve()
    deadline = time.monotonic() + timeout_s
    if url := server_url(data_dir):
        return url
    path = make_store_dir(data_dir)
    start_fd = locks.open_lock_file(path / START_LOCK_NAME)
    try:
        while not locks.try_flock(start_fd):  # one starter at a time; the others wait here and then find the server
            if time.monotonic() > deadline:
                raise TimeoutError(f"embedded store for {data_dir}: not ready in {timeout_s}s")
            time.sleep(0.05)
        proc, log_path = None, data_dir / "backfill" / "store.log"
        while time.monotonic() < deadline:
            if url := server_url(data_dir):
                return url
            if not _lock_held(path / LOCK_NAME):  # nobody serves the directory (any more)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"embedded store server exited ({proc.returncode}); see {log_path}")
                if proc is None:
                    proc = _spawn(data_dir, log_path)
            time.sleep(0.05)
        raise TimeoutError(f"embedded store for {data_dir} not ready after {timeout_s}s; see {log_path}")
    finally:
        os.close(start_fd)


def client_access(data_dir: Path) -> tuple[str, Credential]:
    """The URL of the data directory's server (started if none runs) and the credential to present to it."""
    url = ensure_server(data_dir)
    credential = read_credential(data_dir)
    if credential is None:
        raise PermissionError(f"cannot read {store_dir(data_dir) / CREDENTIALS_NAME}: only the store's owner can")
    return url, credential


def stop_server(data_dir: Path, timeout_s: float = 30) -> bool:
    """SIGTERM the server of ``data_dir`` and wait until it has exited. False if none was running."""
    path = store_dir(data_dir)
    if not _lock_held(path / LOCK_NAME):
        return False  # no process holds the directory (a left-over server.json is stale)
    try:
        pid = int((path / LOCK_NAME).read_text().split()[0])  # written by the lock holder
    except (OSError, ValueError, IndexError):
        pid = int((_read_info(data_dir) or {}).get("pid", 0))
    if not pid or not _pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"embedded store server pid {pid} did not stop within {timeout_s}s")
        time.sleep(0.05)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backfill.store.embedded", description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True, type=Path, help="the store lives in DATA_DIR/clickhouse")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    ap.add_argument("--threads", type=int, default=None, help="chDB worker threads (default max(4, 2*cores))")
    ap.add_argument("--idle-exit-s", type=float, default=None, help="stop after this long without a request")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from backfill.errors import ConfigError
    from backfill.settings import load_settings

    try:  # the environment / backfill.toml of whoever started the server (a command, `backfill db serve`)
        allow_external = load_settings({"data_dir": args.data_dir}).embedded_allow_external
    except ConfigError as ex:  # another setting is wrong: its command says so; the store stays closed
        log.warning("settings not readable (%s): statements reaching outside the store stay refused", ex)
        allow_external = False
    try:
        serve(args.data_dir, args.host, args.port, args.threads, args.idle_exit_s, allow_external)
    except StoreBusy as ex:
        log.error("not started: %s", ex)
        return 3
    return 0
