"""Leases against the real engine: claimants racing from processes of their own get one holder, a lapsed
holder is fenced, a released lease is free at once, a dead process's claim does not block its successor, and
a shard of another count is a rival."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from backfill.store.embedded import stop_server
from backfill.store.leases import LeaseHeld, claim, live_claims
from tests.integration.harness import open_store


@pytest.fixture
def data_dir(tmp_path: Path):
    path = tmp_path / "data"
    open_store(path).close()  # the store and its schema
    yield path
    stop_server(path)


def race(data_dir: str, name: str, start_at: float, results) -> None:  # a process of its own
    store = open_store(Path(data_dir))
    try:
        time.sleep(max(0.0, start_at - time.time()))
        try:
            lease = claim(store, name, 30)
            results.put(("won", lease.holder))
            time.sleep(3)  # hold it while the others read
        except LeaseHeld as exc:
            results.put(("held", exc.holder.holder))
    finally:
        store.close()


def test_claimants_racing_from_six_processes_get_one_holder(data_dir: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + 6  # after every process has connected
    procs = [ctx.Process(target=race, args=(str(data_dir), "shard/4/1", start_at, results)) for _ in range(6)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    winners = [holder for kind, holder in outcomes if kind == "won"]
    assert len(winners) == 1, outcomes
    assert {holder for kind, holder in outcomes if kind == "held"} == set(winners)  # every loser names the winner


def test_a_lapsed_holder_is_fenced_and_the_next_claimant_wins(data_dir: Path) -> None:
    store = open_store(data_dir)
    try:
        first = claim(store, "plan", 3, holder="a:1:x")
        assert first.valid()
        time.sleep(3.5)  # not renewed for longer than its ttl (a stopped process)
        assert not first.valid() and first.renew() is False  # it knows, and does not come back to life
        second = claim(store, "plan", 3, holder="b:2:y")
        assert second.valid() and [c.holder for c in live_claims(store, "plan")] == ["b:2:y"]
        second.release()
        third = claim(store, "plan", 3, holder="c:3:z")  # released: free at once
        assert third.holder == "c:3:z"
    finally:
        store.close()


def test_a_claim_of_a_dead_process_of_this_host_does_not_block(data_dir: Path) -> None:
    store = open_store(data_dir)
    try:
        claim(store, "shard/2/0", 60, pid_alive=lambda pid: True)
        with pytest.raises(LeaseHeld):
            claim(store, "shard/2/0", 60, pid_alive=lambda pid: True)
        successor = claim(store, "shard/2/0", 60, pid_alive=lambda pid: False)  # the holder's pid is gone
        assert successor.valid()
    finally:
        store.close()


def test_a_shard_of_another_count_claimed_first_is_a_rival(data_dir: Path) -> None:
    store = open_store(data_dir)
    try:
        old = claim(store, "shard/4/1", 60, rivals="shard/", pid_alive=lambda pid: True)
        claim(store, "shard/4/2", 60, rivals="shard/", pid_alive=lambda pid: True)  # same count: no rival
        with pytest.raises(LeaseHeld) as refused:
            claim(store, "shard/6/1", 60, rivals="shard/", pid_alive=lambda pid: True)
        assert refused.value.rival and refused.value.holder.name == "shard/4/1"
        old.release()
        with pytest.raises(LeaseHeld):  # shard/4/2 is still live
            claim(store, "shard/6/1", 60, rivals="shard/", pid_alive=lambda pid: True)
    finally:
        store.close()
