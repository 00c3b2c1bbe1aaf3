"""A fleet spread over hosts, simulated on this one: pods of a Kubernetes Indexed Job as processes running
`backfill worker` with JOB_COMPLETION_INDEX=0..N-1, each with a data directory of its own, against one store
server (`backfill db serve`, reached through CLICKHOUSE_URL). The store is the only shared state: one plan,
every transfer of the chain exactly once after FINAL, one rebuild, and a second worker on a live shard refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backfill.errors import StoreUnavailable
from tests.integration.harness import (
    Chain,
    assert_exact,
    backfill,
    clean_env,
    store_rows,
    store_url,
    supervisor_state,
    wait_for,
    wait_run_finished,
)
from tests.integration.test_store_outages import (
    _configured_store,
    _listening,
    free_port,
    log_text,
    no_tracebacks,
    windows_written,
)
from tests.support.truth import ground_truth

pytestmark = pytest.mark.slow


@pytest.fixture
def store_server(tmp_path: Path) -> Iterator[str]:
    """A `backfill db serve` of its own directory: the CLICKHOUSE_URL every pod is given."""
    port, server_dir = free_port(), tmp_path / "server"
    proc = subprocess.Popen(
        [sys.executable, "-m", "backfill.cli.app", "db", "serve", "--port", str(port)],
        env=clean_env(BACKFILL_DATA_DIR=str(server_dir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _listening(port), 60, "the store server to listen")
        yield store_url(server_dir, f"127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(30)


def pod(
    chain: Chain, url: str, pod_dir: Path, index: int | None, shards: int, *args: str, **env: str
) -> subprocess.Popen:
    environ = clean_env(
        BACKFILL_DATA_DIR=str(pod_dir), CLICKHOUSE_URL=url, ETHEREUM_RPC_URLS=chain.url, SHARDS=str(shards), **env
    )
    if index is not None:
        environ["JOB_COMPLETION_INDEX"] = str(index)
    return subprocess.Popen(
        [sys.executable, "-m", "backfill.cli.app", "worker", *args],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_indexed_pods_copy_the_chain_exactly_with_one_plan_and_one_rebuild(
    chain: Chain, store_server: str, tmp_path: Path
) -> None:
    dates = ["--from", chain.first_day, "--to", chain.day(5), "--confirmations", "0"]
    pods = [pod(chain, store_server, tmp_path / f"pod{k}", k, 3, *dates) for k in range(3)]
    outs = [p.communicate(timeout=600) for p in pods]
    for k, (p, (_, err)) in enumerate(zip(pods, outs)):
        assert p.returncode == 0, f"pod {k}: {err[-3000:]}"
    store = _configured_store(store_server)
    try:
        plan = store.read_plan()
        assert [p.day.isoformat() for p in plan][0] == chain.first_day and len(plan) == 6
        truth = ground_truth(chain.url, chain.day_blocks([p.day.isoformat() for p in plan]))
        erc20, erc1155 = store_rows(store)
        assert len(erc20) == len(set(erc20)) == len(truth.erc20) and set(erc20) == truth.erc20
        assert len(erc1155) == len(set(erc1155)) == len(truth.erc1155) and set(erc1155) == truth.erc1155
        assert all(cp["status"] == "COMPLETE" for cp in store.checkpoints().values())
        # each day fetched by its own shard's pod, once: one attempt per day
        assert {d: int(cp["attempts"]) for d, cp in store.checkpoints().items()} == dict.fromkeys(range(6), 1)
        assert store.meta_get("last_rebuild") is not None
    finally:
        store.close()
    rebuilt = [k for k in range(3) if "event=on_complete_start" in on_complete_log(tmp_path / f"pod{k}")]
    assert len(rebuilt) == 1, rebuilt  # however many pods finished, one rebuilt


def on_complete_log(pod_dir: Path) -> str:
    path = pod_dir / "backfill" / "on-complete.log"
    return path.read_text() if path.exists() else ""


def test_a_second_worker_on_a_live_shard_is_refused_in_one_line(
    chain: Chain, store_server: str, tmp_path: Path
) -> None:
    # the first is still copying when the second starts: every day of the chain (it is killed at the end); over
    # four days it could finish while the second, on a loaded machine, was still starting
    slow = {"BACKFILL_RPC_MAX_RPS": "3", "BACKFILL_LEASE_TTL_S": "6"}
    first = pod(
        chain,
        store_server,
        tmp_path / "a",
        0,
        2,
        "--from",
        chain.first_day,
        "--to",
        chain.last_day,
        "--confirmations",
        "0",
        **slow,
    )
    try:
        wait_for(lambda: leased(store_server), 120, "the first worker to hold its shard")
        second = pod(chain, store_server, tmp_path / "b", None, 2, "--shard-id", "0", **slow)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 7, err[-2000:]
        refused = [line for line in err.splitlines() if "event=refused" in line]
        assert len(refused) == 1 and "shard 0 of 2 is already being copied by pid" in refused[0], err[-2000:]
        assert first.poll() is None  # the first goes on
    finally:
        first.kill()  # (its graceful stop is another test's subject)
        first.communicate(timeout=120)


def leased(url: str) -> bool:
    try:
        store = _configured_store(url)
    except StoreUnavailable:  # the first worker has not created the database yet
        return False
    try:
        if not store.scalar("EXISTS TABLE leases"):
            return False
        return bool(store.scalar("SELECT count() FROM leases FINAL WHERE name = 'shard/2/0' AND released = 0"))
    finally:
        store.close()


def test_a_pod_without_an_index_or_a_plan_says_what_it_needs(chain: Chain, store_server: str, tmp_path: Path) -> None:
    no_index = pod(chain, store_server, tmp_path / "x", None, 2)
    _, err = no_index.communicate(timeout=120)
    assert no_index.returncode == 2 and err.strip().splitlines() == [
        "error: backfill worker needs --shard-id (or JOB_COMPLETION_INDEX, as a Kubernetes Indexed Job sets it)"
    ]
    out_of_range = pod(chain, store_server, tmp_path / "y", 5, 2)
    _, err = out_of_range.communicate(timeout=120)
    assert out_of_range.returncode == 2 and "--shard-id must be 0..1 with --shards 2, got 5" in err


# -- two hosts' supervisors, each with its own data directory and half of the shards ------------------------
HOST_RUN = {
    "BACKFILL_WINDOW_BLOCKS": "400",
    "BACKFILL_GETLOGS_BLOCKS": "100",
    "BACKFILL_STALL_GRACE_S": "2",
    "BACKFILL_LEASE_TTL_S": "15",
}


def host_start(
    chain: Chain, url: str, data_dir: Path, share: str, shards: int = 4, last: str | None = None, **env: str
) -> None:
    out = backfill(
        [
            "start",
            "--from",
            chain.first_day,
            "--to",
            last or chain.last_day,
            "--confirmations",
            "0",
            "--shard-ids",
            share,
        ],
        data_dir,
        chain,
        shards=shards,
        extra_env={"CLICKHOUSE_URL": url, "BACKFILL_HOST_NAME": data_dir.name, **HOST_RUN, **env},
    )
    assert out.returncode == 0, out.stderr


def fleet_of(host: Path, url: str) -> dict:
    """status --json's fleet: hosts and their shards, and the shards with days left and no live worker."""
    env = {"CLICKHOUSE_URL": url, "BACKFILL_HOST_NAME": host.name}
    return json.loads(backfill(["status", "--json"], host, extra_env=env).stdout).get("fleet") or {}


def worker_processes(data_dir: Path) -> list[int]:
    """The worker processes of a data directory that are still alive (by their pid files)."""
    import psutil

    alive = []
    for pid_file in (data_dir / "backfill").glob("worker-*.pid"):
        try:
            if psutil.Process(int(pid_file.read_text())).status() != psutil.STATUS_ZOMBIE:
                alive.append(int(pid_file.read_text()))
        except (psutil.Error, ValueError, OSError):
            pass
    return alive


def complete_versions(store) -> dict[int, int]:
    """How many times each day was checkpointed COMPLETE (every version, not FINAL): 1 = never fetched again."""
    return dict(
        store.query_rows("SELECT day_idx, count() FROM backfill_checkpoint WHERE status = 'COMPLETE' GROUP BY day_idx")
    )


def assert_fleet_exact(chain: Chain, url: str, hosts: list[Path]) -> None:
    store = _configured_store(url)
    try:
        assert_exact(store, chain)
        assert all(cp["status"] == "COMPLETE" for cp in store.checkpoints().values())
        assert set(complete_versions(store).values()) == {1}, complete_versions(store)
        assert store.meta_get("last_rebuild") is not None
    finally:
        store.close()
    starts = sum(log_text(h, "on-complete.log").count("event=on_complete_start") for h in hosts)
    assert starts == 1, [log_text(h, "on-complete.log")[-2000:] for h in hosts]  # one rebuild for the plan
    for host in hosts:
        no_tracebacks(host)


def test_two_hosts_split_the_shards_and_one_survives_a_kill_9_of_its_supervisor(
    chain: Chain, store_server: str, tmp_path: Path
) -> None:
    a, b = tmp_path / "host-a", tmp_path / "host-b"
    paced = {"BACKFILL_RPC_MAX_RPS": "20", "BACKFILL_LEASE_TTL_S": "6"}  # long enough a run to kill one host
    host_start(chain, store_server, a, "0/2", last=chain.day(5), **paced)
    host_start(chain, store_server, b, "1/2", last=chain.day(5), **paced)
    try:
        wait_for(lambda: windows_written(a) >= 3, 120, "host a to copy")
        os.kill(int(supervisor_state(a)["pid"]), signal.SIGKILL)  # host a's supervisor dies; its workers follow
        wait_for(lambda: not worker_processes(a), 60, "host a's workers to exit")
        # host b's status shows the shards of host a that wait, once their leases have lapsed
        wait_for(lambda: 0 in fleet_of(b, store_server).get("no_worker", []), 60, "host b's status to show it")
        assert set(fleet_of(b, store_server)["no_worker"]) <= {0, 2}, fleet_of(b, store_server)
        host_start(chain, store_server, a, "0/2", last=chain.day(5), **paced)  # host a comes back
        for host in (a, b):
            state = wait_run_finished(host, 400)
            assert state["phase"] in ("complete", "shards_done"), state
        assert_fleet_exact(chain, store_server, [a, b])
        assert "ids=0,2" in log_text(a, "monitor.log") and "ids=1,3" in log_text(b, "monitor.log")
    finally:
        for host in (a, b):
            backfill(["stop"], host, extra_env={"CLICKHOUSE_URL": store_server})


def test_a_rescale_on_one_host_is_applied_by_both(chain: Chain, store_server: str, tmp_path: Path) -> None:
    a, b = tmp_path / "host-a", tmp_path / "host-b"
    # a paid plan's pace: the run lasts long enough to be rescaled (at 20 calls/s a host could finish its three
    # days before the other had written two windows, and then there was no run left to rescale)
    paced = {"BACKFILL_RPC_MAX_RPS": "8"}
    host_start(chain, store_server, a, "0/2", last=chain.day(5), **paced)
    host_start(chain, store_server, b, "1/2", last=chain.day(5), **paced)
    try:
        wait_for(lambda: windows_written(a) >= 2 and windows_written(b) >= 2, 120, "both hosts to copy")
        scaled = backfill(["scale", "6"], a, extra_env={"CLICKHOUSE_URL": store_server})
        assert scaled.returncode == 0, scaled.stderr
        wait_for(lambda: "event=rescale from=4 to=6 source=fleet" in log_text(b, "monitor.log"), 60, "host b")
        for host in (a, b):
            wait_run_finished(host, 400)
        assert_fleet_exact(chain, store_server, [a, b])
        store = _configured_store(store_server)
        try:  # the last days were copied by workers of the new count, on both hosts
            shards = {int(cp["worker_id"]): int(cp["shards"]) for cp in store.checkpoints().values()}
        finally:
            store.close()
        assert 6 in shards.values()
    finally:
        for host in (a, b):
            backfill(["stop"], host, extra_env={"CLICKHOUSE_URL": store_server})
