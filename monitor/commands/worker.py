"""`backfill worker`: one worker in the foreground, for a container or a host of a fleet spread over machines.

    backfill worker --shards 12 --shard-id 3 [--from D --to D]
    JOB_COMPLETION_INDEX=3 backfill worker --shards 12      (a Kubernetes Indexed Job's pod: the index is the id)

The store (CLICKHOUSE_URL) is the only shared state. With --from/--to the plan is made once per database: the
workers take the `plan` lease in turn, the first plans, the others find the days planned and reuse them. The
shard's lease keeps a second live worker off it (exit 7, one line naming the holder). When the worker's days
are done and every planned day is settled, it runs the rebuild if no other process runs it (the `rebuild`
lease), once per completed plan. Exit codes: the CLI's table (README); 0 once the shard's days are done.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import click

from backfill.cli.app import _settings, settings_options, user_errors
from backfill.control import SETTLED_STATUSES
from backfill.errors import ConfigError, UserError
from backfill.settings import Settings
from backfill.store.client import Store

INDEX_ENV = "JOB_COMPLETION_INDEX"


def shard_of(shard_id: int | None, env: dict[str, str], shards: int) -> int:
    """--shard-id, else $JOB_COMPLETION_INDEX; within 0..shards-1 (ConfigError otherwise)."""
    if shard_id is None:
        text = env.get(INDEX_ENV)
        if text is None:
            raise ConfigError(f"backfill worker needs --shard-id (or {INDEX_ENV}, as a Kubernetes Indexed Job sets it)")
        if not text.strip().isdigit():
            raise ConfigError(f"{INDEX_ENV} (environment): must be a shard id 0..{shards - 1}, got {text!r}")
        shard_id = int(text)
    if not 0 <= shard_id < shards:
        raise ConfigError(f"--shard-id must be 0..{shards - 1} with --shards {shards}, got {shard_id}")
    return shard_id


class NoPlan(UserError):
    """No plan in the database and no dates to make one."""


def plan_once(settings: Settings) -> None:
    """Plan the days (start's checks and planning, under the `plan` lease: one planner at a time, each after
    the first finds the days planned)."""
    from monitor.commands.start import _prepare, _survey

    chain = asyncio.run(_survey(settings))
    store = Store.connect(settings)
    try:
        asyncio.run(_prepare(settings, chain, lambda: store))  # under the `plan` lease
    finally:
        store.close()


def require_plan(settings: Settings) -> None:
    store = Store.connect(settings)
    try:
        if not store.day_count():
            raise NoPlan("no plan in the database: give --from (and --to) to plan it; the first worker plans")
    finally:
        store.close()


@click.command()
@click.option("--shard-id", type=int, default=None, help=f"This worker's shard, 0..shards-1. Default: ${INDEX_ENV}.")
@settings_options
@user_errors
def worker(flags: dict[str, Any], shard_id: int | None) -> None:
    """Run one worker of the fleet in the foreground (a container's entry point): copy the shard's days, then
    exit 0. Other hosts run the other shards against the same CLICKHOUSE_URL."""
    settings = _settings(**flags, foreground=True)
    shard = shard_of(shard_id, dict(os.environ), settings.shards)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    if settings.from_date:
        plan_once(settings)
    else:
        require_plan(settings)
    from workers.worker import main as worker_main

    code = worker_main(["--shard", str(shard), "--shards", str(settings.shards), "--log-stderr"])
    if code == 0:
        rebuild_if_last(settings)
    raise SystemExit(code)


def rebuild_if_last(settings: Settings) -> None:
    """Every planned day settled: the rebuild, unless it ran for this plan already or runs elsewhere."""
    if not settings.on_complete:
        return
    from monitor.rebuild import run_on_complete_once

    store = Store.connect(settings)
    try:
        counts = store.checkpoint_status_counts()
        settled = sum(int(counts.get(s, 0)) for s in SETTLED_STATUSES)
        if settled < store.day_count() or counts.get("FAILED"):
            return
        run_on_complete_once(store, settings)
    finally:
        store.close()
