"""A warm worker (monitor/warm.py) is a cold one started early: what it is handed is what it runs with."""

from __future__ import annotations

import os
import time
from pathlib import Path

from monitor.warm import WarmPool
from workers import exitcodes


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "BACKFILL_DATA_DIR": str(tmp_path / "data"),
        "ETHEREUM_RPC_URLS": "http://127.0.0.1:9",
        **extra,
    }


def test_a_warm_worker_runs_with_the_environment_and_stderr_it_is_handed(tmp_path: Path):
    # started with a good environment, handed a bad setting: the worker it becomes must refuse that setting
    pool = WarmPool(1, _env(tmp_path))
    try:
        err = tmp_path / "worker-0.stderr"
        proc = pool.take(["--shard", "0", "--shards", "1"], _env(tmp_path, BACKFILL_GETLOGS_BLOCKS="abc"), err)
        assert proc is not None
        assert proc.wait(timeout=60) == exitcodes.CONFIG
        assert err.read_text().strip() == "error: BACKFILL_GETLOGS_BLOCKS (environment): must be an integer, got 'abc'"
        # its arguments are the handed ones too
        err2 = tmp_path / "worker-1.stderr"
        assert pool.take(["--shard", "1", "--shards", "1"], _env(tmp_path), err2) is None  # the pool had one
    finally:
        pool.close()


def test_a_dead_warm_worker_is_not_handed_a_shard(tmp_path: Path):
    pool = WarmPool(2, _env(tmp_path))
    try:
        pool.procs[0].kill()
        pool.procs[0].wait()
        err = tmp_path / "worker-0.stderr"
        proc = pool.take(["--shard", "0", "--shards", "x"], _env(tmp_path), err)
        assert proc is not None and proc.returncode is None  # the live one, not the dead one
        assert proc.wait(timeout=60) == 2  # argparse's refusal of the handed arguments
        assert "--shards: invalid int value: 'x'" in err.read_text()
        assert pool.procs == []
    finally:
        pool.close()


def test_workers_nobody_took_exit_when_the_pool_closes(tmp_path: Path):
    pool = WarmPool(2, _env(tmp_path))
    procs = list(pool.procs)
    t0 = time.monotonic()
    pool.close()
    assert [p.returncode for p in procs] == [0, 0]
    assert time.monotonic() - t0 < 5  # they left on the end of stdin, they were not killed
    assert not (tmp_path / "data").exists()  # and wrote nothing
