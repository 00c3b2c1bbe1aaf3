"""Command line: parse, call a library function, render. No business logic here."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click
import orjson

from backfill.errors import UserError
from backfill.redact import scrub
from backfill.settings import Settings, load_settings

log = logging.getLogger("backfill")


def _settings(**flags: Any) -> Settings:
    return load_settings({k: v for k, v in flags.items() if v is not None})


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A user mistake ends as one clear line on stderr and a non-zero exit, no traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {scrub(str(exc), _secrets())}", err=True)
            sys.exit(exc.exit_code)
    return wrapper


def _secrets() -> list[str]:
    import os

    urls = [u for u in os.environ.get("ETHEREUM_RPC_URLS", "").split(",") if u]
    return urls + [os.environ.get("CLICKHOUSE_URL", "")]


data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                               help="Runtime files (logs, embedded store). Default ./data; env BACKFILL_DATA_DIR.")


class LazyGroup(click.Group):
    """Subcommand groups imported only when used (click's documented lazy-loading pattern), so
    `backfill start` does not pay for the devnet generator's imports."""

    lazy = {"devnet": ("backfill.devnet_cli", "devnet")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, attr = self.lazy[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backfill")
def main() -> None:
    """Copy ERC-20 and ERC-1155 transfers of an EVM chain into ClickHouse, exactly."""


@main.command()
@click.option("--from", "from_date", help="First UTC day, e.g. 2024-01-01.")
@click.option("--to", "to_date", help="Last UTC day (inclusive). Default: the day of the safe head.")
@click.option("--shards", type=int, default=None, help="Worker processes. Env SHARDS.")
@click.option("--rpc-url", "rpc_urls", multiple=True, help="RPC endpoint (repeatable). Env ETHEREUM_RPC_URLS.")
@click.option("--confirmations", type=int, default=None, help="Blocks behind the head treated as unsafe (default 12).")
@click.option("--window-blocks", type=int, default=None, help="Blocks per checkpoint (the most a kill can lose).")
@click.option("--foreground", is_flag=True, default=False, help="Run in this terminal until done.")
@data_dir_option
@user_errors
def start(from_date: str | None, to_date: str | None, shards: int | None, rpc_urls: tuple[str, ...],
          confirmations: int | None, window_blocks: int | None, foreground: bool, data_dir: Path | None) -> None:
    """Plan the days and run the workers until every day is COMPLETE."""
    from backfill.logs import setup_logging
    from backfill.run import start_run

    settings = _settings(from_date=from_date, to_date=to_date, shards=shards, rpc_urls=rpc_urls or None,
                         confirmations=confirmations, window_blocks=window_blocks, data_dir=data_dir,
                         foreground=foreground)
    setup_logging(settings.log_dir / "monitor.log", also_stderr=False)
    summary = start_run(settings, echo=click.echo)
    _render_status(summary)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@data_dir_option
@user_errors
def status(as_json: bool, data_dir: Path | None) -> None:
    """Days done / total, rows, per-worker heartbeat age."""
    from backfill.status import collect
    from backfill.store import Store

    store = Store.connect(_settings(data_dir=data_dir))
    summary = collect(store)
    if as_json:
        click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    else:
        _render_status(summary)


def _render_status(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cp = summary["checkpoint_rows"]
    console.print(f"days: {summary['days_complete']}/{summary['days_total']} complete ({summary['percent']}%), "
                  f"{summary['days_running']} running, {summary['days_failed']} failed")
    console.print(f"rows (checkpointed): erc20={cp['erc20']} erc1155={cp['erc1155']} quarantined={cp['quarantined']} "
                  f"skipped_erc721={cp['skipped_erc721']}")
    console.print("rows (tables, before dedup): " + " ".join(f"{k}={v}" for k, v in summary["table_rows"].items()))
    if summary["workers"]:
        table = Table("worker", "pid", "day", "last batch", "rows", "heartbeat age (s)")
        for w in summary["workers"]:
            table.add_row(str(w["worker_id"]), str(w["pid"]), str(w["day_idx"]), w["last_batch"], str(w["rows"]),
                          str(w["heartbeat_age_s"]))
        console.print(table)
    for f in summary["failed_days"]:
        console.print(f"[red]FAILED day {f['day_idx']}: {f['error']}[/red]")


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table")
@data_dir_option
@user_errors
def sql(query: str, fmt: str, data_dir: Path | None) -> None:
    """Run ad-hoc SQL against the configured store (embedded or CLICKHOUSE_URL)."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from backfill.store import Store

    store = Store.connect(_settings(data_dir=data_dir))
    try:
        result = store.client.query(query)
    except ClickHouseError as exc:
        raise UserError(str(exc).strip().splitlines()[0][:500]) from None
    names, rows = list(result.column_names), result.result_rows
    if fmt == "json":
        click.echo(orjson.dumps([dict(zip(names, r)) for r in rows], default=str).decode())
    elif fmt == "tsv":
        click.echo("\t".join(names))
        for r in rows:
            click.echo("\t".join(str(v) for v in r))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*names)
        for r in rows:
            table.add_row(*(str(v) for v in r))
        Console().print(table)


@main.group()
def db() -> None:
    """The embedded store (chDB served over ClickHouse's HTTP interface)."""


@db.command("serve")
@click.option("--port", type=int, default=0, help="Port on 127.0.0.1 (0 = any free port).")
@data_dir_option
@user_errors
def db_serve(port: int, data_dir: Path | None) -> None:
    """Serve the embedded store in the foreground."""
    from backfill.embedded import serve

    settings = _settings(data_dir=data_dir)
    serve(settings.data_dir, port=port)


@db.command("stop")
@data_dir_option
@user_errors
def db_stop(data_dir: Path | None) -> None:
    """Stop the embedded store server of the data directory."""
    from backfill.embedded import stop_server

    stop_server(_settings(data_dir=data_dir).data_dir)


if __name__ == "__main__":
    main()
