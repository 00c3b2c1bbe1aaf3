"""`backfill sync`: bring the copy up to the chain's safe head once, then end: the command for cron.

    first run     backfill sync --from 2024-01-01     (plans from that day to the safe head's day)
    later runs    backfill sync                       (carries the stored plan on to the safe head's day)

What one run does, in order: the checks of `backfill start` (endpoints, chain, dates); the days not planned
yet, up to the safe head's day, are planned; a day left OPEN last time gets its new blocks or, once its end is
final, becomes COMPLETE; the fleet copies in this process (no dashboard); the rebuild runs over the final days
(`on_complete`); one summary line is printed for the cron mail. Exit codes are those of `start` (README). A
second sync of the same data directory while one runs does nothing and says so in one line (exit 0); a sync
while a `backfill start` run is active hands the new days to that run.
"""

from __future__ import annotations

import os
import time
from typing import Any

import click

from backfill.cli.app import _settings, settings_options, user_errors
from backfill.cli.data_dir import holds_store
from backfill.files import locks
from backfill.settings import Settings
from backfill.store.client import Store
from monitor.commands.start import start_run

SYNC_LOCK = "sync.lock"


@click.command()
@settings_options
@user_errors
def sync(flags: dict[str, Any]) -> None:
    """Copy what the chain has added since the last run, up to its safe head, then rebuild; one summary line.

    The first sync takes --from; later ones carry the stored plan on. For cron: overlapping syncs do not
    collide (the second does nothing), exit 0 when the copy is current (its last days may be OPEN)."""
    settings = _settings(**flags, foreground=True)
    from backfill.files.oplog import setup_logging

    setup_logging(settings.log_dir / "monitor.log", log_format=settings.log_format)
    # before the first sync there is nothing to collide with (and a refused first sync must create nothing)
    lock_fd = locks.acquire(settings.log_dir / SYNC_LOCK) if settings.log_dir.is_dir() else None
    if settings.log_dir.is_dir() and lock_fd is None:
        click.echo("sync skipped: another `backfill sync` of this data directory is running")
        return
    try:
        before = totals(settings)
        t0 = time.monotonic()
        said: list[str] = []
        summary = start_run(
            settings, shards_explicit="shards" in settings.explicit, echo=said.append, to_head=True, dashboard=False
        )
        if summary is None:  # handed to the run that is active, or stopped by `backfill stop`
            click.echo("sync: " + (said[-1] if said else "nothing done"))
            return
        click.echo(sync_line(before, summary, settings, time.monotonic() - t0))
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def totals(settings: Settings) -> dict[str, int]:
    """Days planned and rows checkpointed before the sync (all 0 before the first one)."""
    if not holds_store(settings):
        return {"days": 0, "rows": 0}
    store = Store.connect(settings)
    try:
        cps = store.checkpoints().values()
        return {"days": store.day_count(), "rows": sum(int(c["erc20_count"]) + int(c["erc1155_count"]) for c in cps)}
    finally:
        store.close()


def sync_line(before: dict[str, int], summary: dict[str, Any], settings: Settings, seconds: float) -> str:
    """`sync: 2 new days planned, 805 rows copied in 12.3s; 11 days COMPLETE, OPEN: 2024-01-12; rebuild ok`."""
    rows = summary["checkpoint_rows"]
    copied = rows["erc20"] + rows["erc1155"] - before["rows"]
    new_days = summary["days_total"] - before["days"]
    opened = f"OPEN: {', '.join(summary['open_days'])}" if summary.get("open_days") else "none OPEN"
    promoted = summary.get("run", {}).get("promoted")
    rebuild = "rebuild ok" + (", production promoted" if promoted else "") if settings.on_complete else "rebuild off"
    return (
        f"sync: {new_days} new day{'' if new_days == 1 else 's'} planned, {copied} rows copied in {seconds:.1f}s; "
        f"{summary['days_complete']} of {summary['days_total']} days COMPLETE, {opened}; {rebuild}"
    )
