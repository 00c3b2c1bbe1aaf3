"""Session fixtures: one generated anvil chain (reloaded from a saved state), and a finished 3-shard run."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from backfill.devnet.node import Anvil, DevnetParams, saved_summary, start_devnet
from tests.integration.harness import Chain, backfill, open_store

CHAIN_PARAMS = DevnetParams.with_defaults(dt.date(2024, 1, 1), days=10, blocks_per_day=2000, seed=7)

# Fixtures that make a backfill run (or a directory for one): a test that needs one, directly or through another
# fixture, is slow whatever its module says, so that `-m 'not slow'` runs no backfill at all.
RUN_FIXTURES = frozenset({"finished_run", "finished_template", "run_copy", "run_dir"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RUN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def chain_state(tmp_path_factory) -> Path:
    """Generate the test chain once per session and save it; later nodes load it in about a second."""
    path = tmp_path_factory.mktemp("devnet") / "state.json"
    node, _, _ = start_devnet(CHAIN_PARAMS, path)
    node.stop()
    return path


@pytest.fixture(scope="session")
def chain(chain_state) -> Chain:
    node, summary, _ = start_devnet(CHAIN_PARAMS, chain_state)
    try:
        yield Chain(url=node.url, start=CHAIN_PARAMS.start_date, days=CHAIN_PARAMS.days, summary=summary)
    finally:
        node.stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data")
    yield path
    from backfill.store.embedded import stop_server

    stop_server(path)


@pytest.fixture(scope="module")
def finished_run(chain, data_dir):
    """`SHARDS=3 backfill start` over the whole chain, as an operator runs it."""
    result = backfill(
        ["start", "--foreground", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
        data_dir,
        chain,
        shards=3,
    )
    assert result.returncode == 0, result.stderr
    store = open_store(data_dir)
    yield result, store
    store.close()


@pytest.fixture(scope="session")
def finished_template(chain, tmp_path_factory) -> Path:
    """A finished 2-shard run over the whole chain, the rebuild not yet run, its store stopped. Tests that
    corrupt, promote or redo work on a copy of it (`run_copy`), which costs a copy instead of a run."""
    from backfill.store.embedded import stop_server

    path = tmp_path_factory.mktemp("template") / "data"
    result = backfill(
        ["start", "--foreground", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
        path,
        chain,
        shards=2,
        extra_env={"BACKFILL_ON_COMPLETE": "0"},
    )
    assert result.returncode == 0, result.stderr
    stop_server(path)
    return path


@pytest.fixture
def run_copy(finished_template, tmp_path) -> Path:
    """A private copy of the finished run's data directory (store, logs, state)."""
    import shutil

    from backfill.store.embedded import stop_server

    dest = tmp_path / "data"
    shutil.copytree(finished_template, dest, symlinks=True)
    # the engine's Atomic database links metadata to its store by absolute path: point the copy at itself
    src = str(finished_template.resolve())
    for link in dest.rglob("*"):
        if link.is_symlink() and os.readlink(link).startswith(src):
            target = os.readlink(link).replace(src, str(dest.resolve()), 1)
            link.unlink()
            link.symlink_to(target)
    yield dest
    stop_server(dest)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A data directory for one detached run; whatever the test left running is killed afterwards."""
    import signal

    import psutil

    from backfill import control
    from backfill.store.embedded import stop_server

    path = tmp_path / "data"
    yield path
    sup = control.running_supervisor(path / "backfill")
    if sup:
        os.kill(int(sup["pid"]), signal.SIGKILL)
    for pid_file in (path / "backfill").glob("worker-*.pid"):
        try:
            psutil.Process(int(pid_file.read_text())).kill()
        except (psutil.Error, ValueError):
            pass
    stop_server(path)


@pytest.fixture
def tip_chain(chain_state: Path) -> Iterator[Chain]:
    """The session's chain on a node of this test alone that keeps state history: it may be grown and forked."""
    summary = saved_summary(CHAIN_PARAMS, chain_state)
    assert summary is not None
    node = Anvil(load_state=chain_state, prune_history=False).start()
    try:
        yield Chain(url=node.url, start=CHAIN_PARAMS.start_date, days=CHAIN_PARAMS.days, summary=summary)
    finally:
        node.stop()
