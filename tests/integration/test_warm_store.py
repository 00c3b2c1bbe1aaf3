"""A warm worker's early store connection (workers/worker.py `connect_early`), against real embedded stores:
used only when the hand-over names the store it reached, and never a reason to start one."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path

from backfill.settings import Settings, load_settings
from backfill.store.embedded import server_alive, stop_server
from tests.integration.harness import open_store
from workers import early_store, worker


def _settings(data_dir: Path) -> Settings:
    return load_settings({"data_dir": data_dir}, env={}, toml_path=data_dir / "none.toml")


def _handed(early: early_store.EarlyStore | None) -> Future:
    future: Future = Future()
    future.set_result(early)
    return future


def test_a_worker_handed_another_store_than_its_early_one_writes_to_the_handed_one(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    stores = [open_store(a), open_store(b)]  # both servers up, their schemas made
    try:
        stores[0].meta_set("which", "a")
        stores[1].meta_set("which", "b")
        early = early_store.open_early(_settings(a))
        assert early is not None
        stop = threading.Event()
        got = asyncio.run(worker._connect(_settings(b), "worker=0", stop, _handed(early)))
        assert got is not None and got is not early.store
        assert got.meta_get("which") == "b"
        got.close()
        # the early connection to the handed store is the worker's own, with the worker's stop and log context
        same = early_store.open_early(_settings(b))
        assert same is not None
        taken = asyncio.run(worker._connect(_settings(b), "worker=1", stop, _handed(same)))
        assert taken is same.store and taken.abandon is stop and taken.outage.context == "worker=1 "
        assert taken.meta_get("which") == "b"
        taken.close()
    finally:
        for store in stores:
            store.close()
        stop_server(a)
        stop_server(b)


def test_a_warm_worker_starts_no_store_and_connects_after_the_hand_over(tmp_path: Path):
    data = tmp_path / "data"
    assert early_store.open_early(_settings(data)) is None  # no server up: no early connection...
    assert not data.exists() and not server_alive(data)  # ...and none started, nothing written
    try:
        store = open_store(data)  # the server comes up later (the command starts it)
        store.meta_set("which", "data")
        got = asyncio.run(worker._connect(_settings(data), "worker=0", threading.Event(), _handed(None)))
        assert got is not None and got.meta_get("which") == "data"
        got.close()
        store.close()
    finally:
        stop_server(data)
