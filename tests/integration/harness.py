"""Helpers for end-to-end tests: run the CLI as a user would, read the store back."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backfill.settings import load_settings
from backfill.store.client import Store

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Chain:
    url: str
    start: dt.date
    days: int
    summary: dict[str, Any]

    def day(self, i: int) -> str:
        return (self.start + dt.timedelta(days=i)).isoformat()

    @property
    def first_day(self) -> str:
        return self.day(0)

    @property
    def last_day(self) -> str:
        return self.day(self.days - 1)

    def day_blocks(self, dates: list[str] | None = None) -> list[dict[str, Any]]:
        """The devnet's own record of the days it mined (day_idx, date, first_block, last_block), all or those
        of the given ISO dates: the ground truth's days, independent of the tool's planner."""
        days = self.summary["days"]
        if dates is None:
            return list(days)
        # the set-up day: genesis (23:00 the day before start_date) and the contract deployments, up to day 0
        setup = {
            "day_idx": -1,
            "date": (self.start - dt.timedelta(days=1)).isoformat(),
            "first_block": 0,
            "last_block": days[0]["first_block"] - 1,
        }
        by_date = {d["date"]: d for d in [setup, *days]}
        return [by_date[date] for date in dates]


def clean_env(**extra: str) -> dict[str, str]:
    # the terminal's width is not inherited either (pytest-xdist's processes set one): output is as piped
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SHARDS", "ETHEREUM_RPC_URLS", "CLICKHOUSE_URL", "BACKFILL_DATA_DIR", "COLUMNS", "LINES")
        and not k.startswith("BACKFILL_")
    }
    env.update(extra)
    return env


def backfill(
    args: list[str],
    data_dir: Path,
    chain: Chain | None = None,
    *,
    shards: int | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 600,
    rpc_urls: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run `backfill ARGS` in a fresh process with settings from the environment, like an operator."""
    env = clean_env(BACKFILL_DATA_DIR=str(data_dir))
    if chain is not None or rpc_urls is not None:
        env["ETHEREUM_RPC_URLS"] = rpc_urls if rpc_urls is not None else chain.url  # type: ignore[union-attr]
    if shards is not None:
        env["SHARDS"] = str(shards)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "backfill.cli.app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or data_dir.parent,
    )


def store_url(data_dir: Path, url: str, database: str = "backfill") -> str:
    """A CLICKHOUSE_URL for the embedded store of `data_dir` served at `url` (by itself or through a proxy):
    with the credential its server keeps beside the data."""
    from backfill.store.embedded import read_credential

    credential = read_credential(data_dir)
    assert credential is not None, f"no credential in {data_dir}"
    host = url.removeprefix("http://").rstrip("/")
    return f"http://{credential.user}:{credential.password}@{host}/{database}"


def open_store(data_dir: Path) -> Store:
    return Store.connect(load_settings({"data_dir": data_dir}, env={}, toml_path=data_dir / "none.toml"))


def store_rows(store: Store) -> tuple[list[tuple], list[tuple]]:
    """Staging rows after FINAL, as the same tuples the ground truth uses."""
    erc20 = store.query_rows(
        "SELECT block_number, toUnixTimestamp(block_timestamp), tx_hash, log_index, token_address, from_address, "
        "to_address, value FROM erc20_transfers_staging FINAL"
    )
    erc1155 = store.query_rows(
        "SELECT block_number, toUnixTimestamp(block_timestamp), tx_hash, log_index, batch_index, token_address, operator, "
        "from_address, to_address, token_id, value FROM erc1155_transfers_staging FINAL"
    )
    return [tuple(r) for r in erc20], [tuple(r) for r in erc1155]


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll a condition until it is truthy or the deadline passes (no sleeps as synchronisation)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def supervisor_state(data_dir: Path) -> dict[str, Any]:
    from backfill import control

    return control.read_json(control.state_path(data_dir / "backfill")) or {}


def live_workers(data_dir: Path) -> dict[int, int]:
    """shard_id -> pid of the workers the supervisor reports running."""
    return {w["shard_id"]: w["pid"] for w in supervisor_state(data_dir).get("workers", []) if w.get("pid")}


def wait_beating(data_dir: Path, shard: int, pid: int, timeout: float = 120) -> None:
    """Wait until worker `pid` of `shard` has written a heartbeat: it has started, and from now on it is judged
    by stall_s (before its first beat it has a start-up allowance)."""
    store = open_store(data_dir)
    try:
        wait_for(
            lambda: store.scalar(
                "SELECT count() FROM worker_heartbeats FINAL WHERE worker_id = %(k)s AND pid = %(p)s",
                {"k": shard, "p": pid},
            ),
            timeout,
            f"a heartbeat of worker {shard} pid {pid}",
            0.25,
        )
    finally:
        store.close()


def wait_run_finished(data_dir: Path, timeout: float = 300) -> dict[str, Any]:
    """Wait until the detached supervisor of data_dir has exited; its last state."""
    import psutil

    from backfill import control

    wait_for(lambda: control.running_supervisor(data_dir / "backfill") is None, timeout, "the supervisor to exit", 0.25)
    state = supervisor_state(data_dir)
    pid = state.get("pid")
    if pid:
        wait_for(
            lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
            30,
            "the supervisor process to end",
        )
    return state


def complete_days(store: Store) -> set[int]:
    return {d for d, cp in store.checkpoints().items() if cp["status"] == "COMPLETE"}


def checkpoint_history(store: Store) -> list[tuple]:
    """Every checkpoint version ever written (before OPTIMIZE merges them): (day_idx, status, updated_at)."""
    return [tuple(r) for r in store.query_rows("SELECT day_idx, status, updated_at FROM backfill_checkpoint")]


def assert_exact(store: Store, chain: Chain) -> None:
    from tests.support.truth import ground_truth

    dates = {p.day_idx: p.day.isoformat() for p in store.read_plan()}  # which days the run covers, by date
    truth = ground_truth(chain.url, chain.day_blocks(sorted(dates.values())))
    erc20, erc1155 = store_rows(store)
    assert len(erc20) == len(set(erc20)) and len(erc1155) == len(set(erc1155)), "duplicates after FINAL"
    assert set(erc20) == truth.erc20, (len(truth.erc20 - set(erc20)), len(set(erc20) - truth.erc20))
    assert set(erc1155) == truth.erc1155, (len(truth.erc1155 - set(erc1155)), len(set(erc1155) - truth.erc1155))
    counts = {dates[d]: (cp["erc20_count"], cp["erc1155_count"]) for d, cp in store.checkpoints().items()}
    assert counts == truth.per_date
