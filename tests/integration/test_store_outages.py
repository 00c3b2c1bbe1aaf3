"""A store that goes away and comes back: the run rides it out and ends exact, and says so in its logs.

The store is read back only after the run has ended: a test that opened it meanwhile would start the
embedded server itself and hide whether the supervisor does.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backfill.store.embedded import _read_info, stop_server
from tests.integration.harness import (
    Chain,
    assert_exact,
    backfill,
    clean_env,
    open_store,
    store_url,
    wait_for,
    wait_run_finished,
)

pytestmark = pytest.mark.slow

SLOW_RUN = {"BACKFILL_WINDOW_BLOCKS": "400", "BACKFILL_GETLOGS_BLOCKS": "100", "BACKFILL_STALL_GRACE_S": "2"}


def log_text(data_dir: Path, name: str) -> str:
    path = data_dir / "backfill" / name
    return path.read_text() if path.exists() else ""


def windows_written(data_dir: Path) -> int:
    return sum(
        log_text(data_dir, p.name).count("event=window") + log_text(data_dir, p.name).count("event=complete")
        for p in (data_dir / "backfill").glob("worker-*.log")
    )


def no_tracebacks(data_dir: Path) -> None:
    for path in (data_dir / "backfill").glob("*.log"):
        text = path.read_text()
        assert "Traceback" not in text, (
            f"{path.name} holds a traceback:\n{text[text.index('Traceback') - 300 :][:2000]}"
        )


def ended_exact(store, chain: Chain, data_dir: Path) -> None:
    """What a ridden-out outage must leave: the chain's rows exactly, no FAILED day, no traceback in any log."""
    try:
        assert_exact(store, chain)
        failed = {d: cp["error"] for d, cp in store.checkpoints().items() if cp["status"] == "FAILED"}
        assert not failed, failed
    finally:
        store.close()
    no_tracebacks(data_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_embedded_store_killed_twice_the_run_finishes_by_itself_exact(chain: Chain, run_dir):
    out = backfill(
        ["start", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
        run_dir,
        chain,
        shards=2,
        extra_env=SLOW_RUN,
    )
    assert out.returncode == 0, out.stderr
    killed = []
    for n in (1, 2):
        wait_for(lambda: windows_written(run_dir) >= 6 * n, 120, f"{6 * n} windows written")
        pid = int((_read_info(run_dir) or {})["pid"])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        wait_for(
            lambda: log_text(run_dir, "monitor.log").count("event=store_server_restarted") >= n,
            60,
            "the supervisor to restart the store server",
        )
    state = wait_run_finished(run_dir, 400)
    assert state["phase"] == "complete", state
    assert int((_read_info(run_dir) or {})["pid"]) not in killed
    ended_exact(open_store(run_dir), chain, run_dir)
    workers = "".join(log_text(run_dir, p.name) for p in (run_dir / "backfill").glob("worker-*.log"))
    assert "event=store_down" in workers and "event=store_back" in workers  # the outage, as a state, logged


def test_a_configured_server_stopped_for_20s_and_started_again_on_its_port(chain: Chain, run_dir, tmp_path):
    """CLICKHOUSE_URL points at a `backfill db serve` on a fixed port: stopped for 20 s, started again. Nobody
    restarts a configured server: the run waits for it, then goes on."""
    port = free_port()
    server_dir = tmp_path / "server"
    env = clean_env(BACKFILL_DATA_DIR=str(server_dir))

    def serve() -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backfill.cli.app", "db", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _listening(port), 60, "the store server to listen")
        return proc

    server = serve()
    url = {"CLICKHOUSE_URL": store_url(server_dir, f"127.0.0.1:{port}"), **SLOW_RUN}
    try:
        out = backfill(
            ["start", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
            run_dir,
            chain,
            shards=2,
            extra_env=url,
        )
        assert out.returncode == 0, out.stderr
        wait_for(lambda: windows_written(run_dir) >= 6, 120, "6 windows written")
        server.terminate()
        server.wait(30)
        down_at = time.monotonic()
        time.sleep(20)
        mid = backfill(["status", "--json"], run_dir, extra_env=url)  # the store is away: status says so, exit 0
        assert mid.returncode == 0, mid.stderr
        assert '"reachable": false' in mid.stdout, mid.stdout
        server = serve()
        state = wait_run_finished(run_dir, 400)
        assert state["phase"] == "complete", state
        monitor = log_text(run_dir, "monitor.log")
        assert "event=store_down" in monitor and "event=store_back" in monitor
        down_s = [float(x) for x in re.findall(r"event=store_back .*?down_s=([\d.]+)", monitor)]
        assert down_s and max(down_s) >= 15, monitor[-3000:]
        assert time.monotonic() - down_at > 20
        ended_exact(_configured_store(url["CLICKHOUSE_URL"]), chain, run_dir)
    finally:
        server.terminate()
        server.wait(30)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _configured_store(clickhouse_url: str):
    from backfill.settings import load_settings
    from backfill.store.client import Store

    settings = load_settings({}, env={"CLICKHOUSE_URL": clickhouse_url}, toml_path=Path("/nonexistent.toml"))
    return Store.connect(settings, create=False)


def test_too_many_parts_and_lost_answers_slow_the_run_and_it_ends_exact(chain: Chain, run_dir, tmp_path):
    """ClickHouse pushes back on the staging inserts (TOO_MANY_PARTS, then memory limits) for a while, and drops
    a few answers after carrying the insert out: the workers slow down, nothing fails, the copy is exact."""
    from backfill.store.embedded import ensure_server
    from tests.support.store_proxy import StoreFault, StoreProxy

    upstream = ensure_server(tmp_path / "server")
    staging = ("erc20_transfers_staging", "erc1155_transfers_staging")
    try:
        with StoreProxy(upstream) as proxy:
            url = {"CLICKHOUSE_URL": store_url(tmp_path / "server", f"127.0.0.1:{proxy.port}"), **SLOW_RUN}
            out = backfill(
                ["start", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
                run_dir,
                chain,
                shards=2,
                extra_env=url,
            )
            assert out.returncode == 0, out.stderr
            wait_for(lambda: windows_written(run_dir) >= 4, 120, "4 windows written")
            proxy.configure(
                faults=[
                    StoreFault("too_many_parts", tables=staging, until=time.monotonic() + 8),
                    StoreFault("memory_limit", tables=staging, count=4),
                ]
            )
            proxy.reset_next(4, tables=("erc20_transfers_staging", "backfill_checkpoint"))
            state = wait_run_finished(run_dir, 400)
            assert state["phase"] == "complete", state
            refused = proxy.refused()
            assert refused["too_many_parts"] >= 3 and refused["memory_limit"] == 4, refused
            assert proxy.resets() >= 1
            workers = "".join(log_text(run_dir, p.name) for p in (run_dir / "backfill").glob("worker-*.log"))
            assert "event=store_backpressure " in workers and "event=store_backpressure_over" in workers
            ended_exact(_configured_store(url["CLICKHOUSE_URL"]), chain, run_dir)
    finally:
        stop_server(tmp_path / "server")


@pytest.mark.parametrize("how", ["supervisor_gone", "supervisor_gone_before_it_looked", "sigterm"])
def test_a_worker_waiting_for_its_first_store_contact_stops_when_told_or_orphaned(tmp_path: Path, how):
    """A worker that starts while the store is away waits for it (its supervisor restarts the embedded server);
    but when the supervisor is gone, or it is told to stop, it must not wait for ever."""
    data_dir = tmp_path / "data"
    env = clean_env(BACKFILL_DATA_DIR=str(data_dir), ETHEREUM_RPC_URLS="http://127.0.0.1:9")
    worker = [sys.executable, "-m", "workers.worker", "--shard", "0", "--shards", "1"]
    log = data_dir / "backfill" / "worker-0.log"
    log.parent.mkdir(parents=True)  # as the supervisor leaves it
    if how == "supervisor_gone":  # a parent that dies under it, as a killed supervisor does
        parent = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import subprocess, sys, time; "
                f"p = subprocess.Popen({worker!r}); print(p.pid, flush=True); time.sleep(600)",
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        pid = int(parent.stdout.readline())
        wait_for(lambda: "event=store_down" in (log.read_text() if log.exists() else ""), 60, "the worker waiting")
        parent.kill()
        parent.wait()
    elif how == "supervisor_gone_before_it_looked":  # killed right after the spawn: the worker is born an orphan
        gone = subprocess.Popen(["true"])
        gone.wait()
        proc = subprocess.Popen([*worker, "--parent", str(gone.pid)], env=env)
        pid = proc.pid
        assert proc.wait(timeout=60) == 0
    else:
        proc = subprocess.Popen(worker, env=env)
        pid = proc.pid
        wait_for(lambda: "event=store_down" in (log.read_text() if log.exists() else ""), 60, "the worker waiting")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    wait_for(lambda: not _alive(pid), 30, "the waiting worker to exit")
    text = log.read_text()
    assert "event=stopped reason=stop_before_start store=unreachable" in text, text[-1500:]
    assert "Traceback" not in text


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
