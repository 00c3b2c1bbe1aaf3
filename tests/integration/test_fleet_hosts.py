"""A fleet spread over hosts, simulated on this one: pods of a Kubernetes Indexed Job as processes running
`backfill worker` with JOB_COMPLETION_INDEX=0..N-1, each with a data directory of its own, against one store
server (`backfill db serve`, reached through CLICKHOUSE_URL). The store is the only shared state: one plan,
every transfer of the chain exactly once after FINAL, one rebuild, and a second worker on a live shard refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backfill.errors import StoreUnavailable
from tests.integration.harness import Chain, clean_env, store_rows, store_url, wait_for
from tests.integration.test_store_outages import _configured_store, _listening, free_port
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


def pod(chain: Chain, url: str, pod_dir: Path, index: int | None, shards: int, *args: str, **env: str) -> subprocess.Popen:
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
    slow = {"BACKFILL_RPC_MAX_RPS": "4", "BACKFILL_LEASE_TTL_S": "20"}  # the first is still copying
    first = pod(chain, store_server, tmp_path / "a", 0, 2, "--from", chain.first_day, "--to", chain.last_day,
                "--confirmations", "0", **slow)
    try:
        wait_for(lambda: leased(store_server), 120, "the first worker to hold its shard")
        second = pod(chain, store_server, tmp_path / "b", None, 2, "--shard-id", "0", **slow)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 7, err[-2000:]
        refused = [line for line in err.splitlines() if "event=refused" in line]
        assert len(refused) == 1 and "shard 0 of 2 is already being copied by pid" in refused[0], err[-2000:]
        assert first.poll() is None  # the first goes on
    finally:
        first.terminate()
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
