"""`backfill devnet ...`: run or (re)build the local anvil chain. Thin: the logic is in devnet.py."""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from backfill.devnet import node as dn
from backfill.devnet.generate import DAY_S, MIN_BLOCKS_PER_DAY


def _chain_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--days", default=10, show_default=True, type=click.IntRange(1), help="Simulated UTC days."),
        click.option(
            "--blocks-per-day",
            default=2000,
            show_default=True,
            type=click.IntRange(MIN_BLOCKS_PER_DAY, DAY_S),
            help="Blocks mined in each simulated day.",
        ),
        click.option("--seed", default=7, show_default=True, type=int, help="Generator seed."),
        click.option(
            "--start",
            "start",
            default="2024-01-01",
            show_default=True,
            type=click.DateTime(["%Y-%m-%d"]),
            help="UTC date of day 0.",
        ),
        click.option(
            "--heavy-day", type=int, default=None, help="Day with >10,000 logs, -1 for none [default: days/2]."
        ),
        click.option("--empty-days", default=None, help="Comma-separated days without logs [default: 2,days-2]."),
        click.option(
            "--state",
            "state_path",
            default="data/devnet/state.json",
            show_default=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="Saved chain (anvil --load-state) + <name>.meta.json.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _params(
    days: int, blocks_per_day: int, seed: int, start: dt.datetime, heavy_day: int | None, empty_days: str | None
) -> dn.DevnetParams:
    params = dn.DevnetParams.with_defaults(start.date(), days, blocks_per_day, seed)
    if heavy_day is not None:
        params = dn.DevnetParams(
            params.start_date,
            days,
            blocks_per_day,
            seed,
            heavy_day if heavy_day >= 0 else None,
            params.empty_days - {heavy_day},
        )
    if empty_days is not None:
        try:
            empty = frozenset(int(d) for d in empty_days.split(",") if d.strip())
        except ValueError:
            raise click.BadParameter(f"not a list of day numbers: {empty_days!r}", param_hint="--empty-days") from None
        params = dn.DevnetParams(params.start_date, days, blocks_per_day, seed, params.heavy_day, empty)
    try:
        params.validate()
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    return params


@click.group("devnet")
def devnet() -> None:
    """Local anvil chain with N simulated UTC days of ERC-20 / ERC-1155 transfers."""


@devnet.command("up")
@_chain_options
@click.option("--port", default=8545, show_default=True, type=click.IntRange(0, 65535), help="0 = any free port.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line {url, loaded, summary}.")
def up(port: int, as_json: bool, state_path: Path, **chain: Any) -> None:
    """Serve the chain (reloading the saved state when it matches) until Ctrl-C / SIGTERM."""
    params = _params(**chain)
    try:
        t0 = time.monotonic()
        node, summary, loaded = dn.start_devnet(params, state_path, port=port or None)
    except dn.DevnetError as e:
        raise click.ClickException(str(e)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        how = f"loaded {state_path}" if loaded else f"generated and saved {state_path}"
        if as_json:
            click.echo(json.dumps({"url": node.url, "loaded": loaded, "summary": summary}), nl=True)
        else:
            click.echo(f"{node.url}  ({how} in {time.monotonic() - t0:.1f}s)")
            click.echo(dn.summary_line(summary))
        while not stop.wait(0.5):
            if node.poll() is not None:
                raise click.ClickException(f"anvil exited with code {node.poll()}; log: {node.log_path}")
    finally:
        node.stop()


@devnet.command("generate")
@_chain_options
@click.option("--force", is_flag=True, help="Rebuild even if the saved state matches.")
def generate(force: bool, state_path: Path, **chain: Any) -> None:
    """(Re)build the saved state file and exit."""
    params = _params(**chain)
    if force:
        dn.meta_path(state_path).unlink(missing_ok=True)
    t0 = time.monotonic()
    try:
        summary = dn.ensure_state(params, state_path)
    except dn.DevnetError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{state_path} ready in {time.monotonic() - t0:.1f}s")
    click.echo(dn.summary_line(summary))
