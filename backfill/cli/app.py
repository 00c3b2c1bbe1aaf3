"""Command line: parse, call a library function, render. No business logic here."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click
import orjson

from backfill import exitcodes
from backfill.errors import CommandFailed, Interrupted, RpcError, UserError
from backfill.redact import scrub
from backfill.settings import Settings, load_settings, secret_bearing_values

log = logging.getLogger("backfill")

# What a Ctrl-C leaves, per command (the line is `stopped by Ctrl-C; <this>`, exit 130). A command that is not
# named here changed nothing a Ctrl-C can leave half done.
CTRL_C_LEAVES = {
    "start": "progress is checkpointed, `backfill start` resumes",
    "follow": "progress is checkpointed, `backfill follow` goes on from it",
    "sync": "progress is checkpointed, the next `backfill sync` goes on from it",
    "verify": "no result was recorded (an audit records its days when all are recounted)",
    "rebuild": "production is unchanged; `backfill rebuild` runs it again",
    "promote": "production is unchanged (a swap, once begun, is finished first); `backfill promote` starts again",
    "rollback": "nothing was rolled back (a swap, once begun, is finished first)",
    "dedup": "what it removed was superseded; `backfill dedup` again finishes it",
    "retry-failed": "some FAILED days may be put back already; run it again",
}


def _settings(**flags: Any) -> Settings:
    settings = load_settings({k: v for k, v in flags.items() if v is not None})
    if settings.host_name:  # from backfill.toml: this process and those it starts go by it too
        os.environ["BACKFILL_HOST_NAME"] = settings.host_name
    return settings


def ctrl_c_line(command: str | None) -> str:
    """The one line a Ctrl-C ends `command` with."""
    leaves = CTRL_C_LEAVES.get(command or "")
    return "stopped by Ctrl-C" + (f"; {leaves}" if leaves else "")


def _command_name() -> str | None:
    ctx = click.get_current_context(silent=True)
    return ctx.info_name if ctx is not None else None


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A user mistake ends as one clear line on stderr and its exit code (backfill/exitcodes.py), no traceback;
    so does a Ctrl-C (exit 130)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as exc:  # a graceful stop by Ctrl-C: what was kept, what carries on
            click.echo(str(exc), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo(ctrl_c_line(_command_name()), err=True)
            sys.exit(exitcodes.INTERRUPTED)
        except UserError as exc:  # a config's problems come together, one a line
            for line in scrub(str(exc), secret_bearing_values()).splitlines():
                click.echo(f"error: {line}", err=True)
            sys.exit(exc.exit_code)
        except RpcError as exc:  # a provider condition that outlasted the retries: what it was, what to do
            click.echo(f"error: {scrub(rpc_error_line(exc), secret_bearing_values())}", err=True)
            sys.exit(exitcodes.PROVIDER)

    return wrapper


def rpc_error_line(exc: RpcError) -> str:
    """One line for an RPC failure: the endpoint (its label, never its key), what it answered, what to do."""
    from backfill.chain.provider_errors import NoEndpoint, QuotaExhausted

    where = getattr(exc, "endpoint", None)
    what = f"RPC endpoint {where}: {exc}" if where else f"RPC: {exc}"
    if isinstance(exc, QuotaExhausted):
        hint = (
            "its quota is used up: wait for it to reset, raise the plan, or add another endpoint to ETHEREUM_RPC_URLS"
        )
    elif isinstance(exc, NoEndpoint):
        hint = "wait for the endpoints to recover, or add another endpoint to ETHEREUM_RPC_URLS"
    else:
        hint = "check the endpoint (or add another to ETHEREUM_RPC_URLS) and run the command again"
    return f"{what[:400]}; {hint}"


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Runtime files (logs, embedded store). Default ./data; env BACKFILL_DATA_DIR.",
)


class LazyGroup(click.Group):
    """Subcommands imported only when used (click's documented lazy-loading pattern), so `backfill start` does
    not pay for the devnet generator's imports. The commands that drive the fleet and the rebuild (start, gates,
    verify, rebuild, dedup, promote, rollback, backups) belong to `monitor/`, which sits above this package:
    they are named in pyproject.toml's `backfill.commands` entry points (as Flask's CLI finds its plugins), so
    this package never imports `monitor`."""

    lazy = {"devnet": ("backfill.cli.devnet", "devnet")}

    @functools.cached_property
    def plugins(self) -> dict[str, Any]:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group="backfill.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy, *self.plugins})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, attr = self.lazy[name]
            return getattr(importlib.import_module(module), attr)
        if name in self.plugins:
            return self.plugins[name].load()
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        # A Ctrl-C in a command without `user_errors` (devnet): one line and 130, not click's "Aborted!" and 1.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(ctrl_c_line(ctx.invoked_subcommand), err=True)
            sys.exit(exitcodes.INTERRUPTED)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backfill")
def main() -> None:
    """Copy ERC-20 and ERC-1155 transfers of an EVM chain into ClickHouse, exactly.

    Exit codes: 0 ok, 1 failed at its job or gates failed, 2 usage or config, 3 RPC provider, 4 wrong chain,
    5 store unreachable, 6 SQL refused by ClickHouse, 130 Ctrl-C (README: Exit codes)."""
    from backfill.files.oplog import setup_command_logging

    setup_command_logging()


def _params(options: list[Callable[..., Any]]) -> list[click.Parameter]:
    """The click parameters a list of option decorators declares (their names are the settings')."""

    def probe() -> None: ...

    for option in options:
        option(probe)
    return list(getattr(probe, "__click_params__", []))


def settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options that change a run's settings: `start`, `sync` and `follow` take them, `config` shows what
    they make. The command receives them gathered as `flags` (setting name -> value, None when not given)."""
    options = [
        click.option("--from", "from_date", help="First UTC day, e.g. 2024-01-01."),
        click.option("--to", "to_date", help="Last UTC day (inclusive). Default: the day of the safe head."),
        click.option("--shards", type=int, default=None, help="Worker processes. Env SHARDS."),
        click.option(
            "--shard-ids",
            default=None,
            help="The shards this host runs, when hosts share a fleet: 0-5, 0,2,4 or a share 1/3 (k % 3 == 1). "
            "Default: all. Env BACKFILL_SHARD_IDS.",
        ),
        click.option("--rpc-url", "rpc_urls", multiple=True, help="RPC endpoint (repeatable). Env ETHEREUM_RPC_URLS."),
        click.option(
            "--confirmations", type=int, default=None, help="Blocks behind the head the copy stops at (default 12)."
        ),
        click.option(
            "--finality-depth",
            type=int,
            default=None,
            help="Blocks behind the head that may still be reorganised (default: the chain's, e.g. 64 on Ethereum).",
        ),
        click.option("--window-blocks", type=int, default=None, help="The most blocks a killed worker can lose."),
        click.option("--stall-s", type=float, default=None, help="Heartbeat age after which a worker is restarted."),
        click.option(
            "--promote/--no-promote",
            "auto_promote",
            default=None,
            help="Promote staging into production when the rebuild passes (default: auto_promote setting, off).",
        ),
        data_dir_option,
    ]
    names = [o.name for o in _params(options)]

    @functools.wraps(fn)
    def gathered(**kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in names}
        flags["rpc_urls"] = flags["rpc_urls"] or None  # no --rpc-url given: the environment's or the file's
        return fn(flags=flags, **kwargs)

    for option in reversed(options):
        gathered = option(gathered)
    return gathered


@main.command("config")
@settings_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def config(flags: dict[str, Any], as_json: bool) -> None:
    """The effective settings and where each came from (flag, environment, backfill.toml, default); keys in
    RPC URLs and the ClickHouse password redacted. A bad config is reported whole (exit 2)."""
    from backfill.settings import effective_settings

    rows = effective_settings(flags)
    if as_json:
        doc = {r.name: {"value": r.value, "source": str(r.source), "origin": r.source.kind} for r in rows}
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    shown = [(r.name, _config_value(r.value), str(r.source)) for r in rows]
    widths = [max(len(row[i]) for row in shown) for i in (0, 1)]
    for name, value, source in shown:
        click.echo(f"{name:<{widths[0]}}  {value:<{widths[1]}}  {source}".rstrip())


def _config_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--watch",
    is_flag=True,
    help="Refresh every few seconds until Ctrl-C (piped, or with --json: a new "
    "frame each time, JSON one document a line).",
)
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes (--watch).")
@data_dir_option
@user_errors
def status(as_json: bool, watch: bool, interval: float, data_dir: Path | None) -> None:
    """Days done / total, rows, rates, ETA, workers (pid, day, heartbeat age, restarts), FAILED days.

    The run is named first (running, complete, stopped, dead: killed or crashed). When the store cannot be
    reached, what supervisor.json and the processes tell is shown, and --watch recovers when it is back."""
    from backfill.cli.data_dir import require_store
    from backfill.cli.status import StatusReader
    from backfill.cli.status_render import render

    settings = _settings(data_dir=data_dir)
    require_store(settings)  # connecting would create a store (and start a server) in a directory without one
    reader = StatusReader(settings)
    try:
        if as_json and not watch:
            click.echo(orjson.dumps(reader.read(), option=orjson.OPT_INDENT_2).decode())
            return
        from rich.console import Console

        console = Console()
        if not watch:
            console.print(render(reader.read()))
            return
        from rich.live import Live

        try:
            if as_json or not console.is_terminal:  # a pipe or a file: one frame after another, never redrawn
                while True:
                    summary = reader.read(dedup=False)
                    if as_json:
                        click.echo(orjson.dumps(summary).decode())
                    else:
                        console.print(render(summary))
                        console.print()
                    sys.stdout.flush()
                    time.sleep(interval)
            with Live(render(reader.read(dedup=False)), console=console, refresh_per_second=2) as live:
                while True:
                    time.sleep(interval)
                    live.update(render(reader.read(dedup=False)))
        except KeyboardInterrupt:
            raise Interrupted(
                "stopped by Ctrl-C; only the watching stopped (a run goes on until `backfill stop`)"
            ) from None
    finally:
        reader.close()


@main.command()
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for the workers.")
@data_dir_option
@user_errors
def stop(timeout: float, data_dir: Path | None) -> None:
    """Graceful stop: workers finish their batch, checkpoint, exit; then the supervisor exits."""
    import os
    import signal

    import psutil

    from backfill import control

    settings = _settings(data_dir=data_dir)
    sup = control.running_supervisor(settings.log_dir)
    if not sup:
        click.echo("no run is active")
        return
    pid = int(sup["pid"])
    os.kill(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout=timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        raise CommandFailed(
            f"the supervisor (pid {pid}) is still stopping after {timeout:.0f}s; see {settings.log_dir / 'monitor.log'}"
        ) from None
    click.echo(f"stopped (supervisor pid {pid}); progress is checkpointed, `backfill start` resumes")


@main.command()
@click.argument("shards", type=int)
@data_dir_option
@user_errors
def scale(shards: int, data_dir: Path | None) -> None:
    """Change the number of workers of the active run, live (same as SHARDS=N backfill start)."""
    from backfill import control

    settings = _settings(data_dir=data_dir, shards=shards)
    if not control.running_supervisor(settings.log_dir):
        raise UserError(f"no run is active; start one with SHARDS={shards} backfill start")
    control.request(settings.log_dir, shards=shards)
    click.echo(f"asked the supervisor to run {shards} workers; COMPLETE days are not fetched again")


@main.command("retry-failed")
@data_dir_option
@user_errors
def retry_failed(data_dir: Path | None) -> None:
    """Put FAILED days back (failures reset); an active run picks them up, else run `backfill start`."""
    from backfill import control
    from backfill.dates import day_list
    from backfill.store.client import Store

    settings = _settings(data_dir=data_dir)
    store = Store.connect(settings)
    failed = sorted(k for k, cp in store.checkpoints().items() if cp["status"] == "FAILED")
    for day_idx in failed:
        store.update_checkpoint(day_idx, status="RUNNING", failures=0, error="")
    if failed and control.running_supervisor(settings.log_dir):
        control.request(settings.log_dir)
    dates = {p.day_idx: p.day for p in store.read_plan()} if failed else {}
    click.echo(f"{len(failed)} FAILED days put back" + (f": {day_list(failed, dates)}" if failed else ""))


@main.command()
@click.argument("worker")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (tail -F).")
@click.option("-n", "--lines", type=int, default=50, show_default=True, help="Lines to show from the end.")
@data_dir_option
@user_errors
def logs(worker: str, follow: bool, lines: int, data_dir: Path | None) -> None:
    """Show a worker's log (`backfill logs 3 -f`), or `monitor`, `gates`, `on-complete`."""
    import os

    from backfill.cli.data_dir import require_logs

    settings = _settings(data_dir=data_dir)
    require_logs(settings)
    name = f"worker-{worker}.log" if worker.isdigit() else f"{worker}.log"
    path = settings.log_dir / name
    if not path.exists() and not follow:
        raise UserError(f"no log {path}")
    os.execvp("tail", ["tail", "-n", str(lines), *(["-F"] if follow else []), str(path)])


@main.command()
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "tsv", "json"]),
    default="table",
    show_default=True,
    help="Output: a table for people, tab-separated with a header line, or a JSON array of objects.",
)
@data_dir_option
@user_errors
def sql(query: str, fmt: str, data_dir: Path | None) -> None:
    """Run ad-hoc SQL against the configured store (embedded or CLICKHOUSE_URL).

    A statement ClickHouse refuses is its own error text on one line, exit 6."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from backfill.errors import SqlRefused
    from backfill.store.client import Store
    from backfill.store.sql_errors import server_error

    if not query.strip():
        raise UserError("no SQL given")
    store = Store.connect(_settings(data_dir=data_dir))
    try:
        result = store.query(query, idempotent=False)
    except ClickHouseError as exc:
        line = server_error(str(exc))
        if "UNKNOWN_TABLE" in line and re.search(r"\b(erc20|erc1155)_transfers\b(?!_)", line):
            line += (
                " — production tables are made by `backfill promote` (or `start --promote`); until then "
                "the copy is in erc20_transfers_staging / erc1155_transfers_staging"
            )
        raise SqlRefused(line) from None
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
    """Serve the embedded store in the foreground; its lines (the URL first) on stderr, until Ctrl-C / SIGTERM or
    `backfill db stop`."""
    from backfill.cli.data_dir import shown
    from backfill.files.oplog import setup_logging
    from backfill.store.embedded import StoreBusy, serve, server_url

    settings = _settings(data_dir=data_dir)
    setup_logging(None)  # a server in the terminal says where it listens (the command's logging showed none of it)
    try:
        serve(settings.data_dir, port=port, allow_external=settings.embedded_allow_external)
    except StoreBusy:  # e.g. the on-demand server an earlier command started (it stops after 30 idle minutes)
        url = server_url(settings.data_dir)
        raise UserError(
            f"the embedded store of {shown(settings.data_dir)} is already served"
            f"{f' at {url}' if url else ''}; `backfill db stop` stops that server"
        ) from None


@db.command("credentials")
@click.option("--curl", "as_curl", is_flag=True, help="Print a ready curl command line instead.")
@click.option("--json", "as_json", is_flag=True, help="Print {url, user, password} as JSON.")
@data_dir_option
@user_errors
def db_credentials(as_curl: bool, as_json: bool, data_dir: Path | None) -> None:
    """Print how other clients reach the embedded store: its URL, user and password (starts it if needed).

    The port changes when an on-demand server restarts (`backfill db serve --port P` keeps one). A password on a
    command line is visible to other local users in `ps`: in scripts, prefer reading it from --json."""
    import shlex

    from backfill.store.embedded import client_access

    settings = _settings(data_dir=data_dir)
    if settings.clickhouse_url:
        raise UserError("CLICKHOUSE_URL is set: the store is that server, and its credential is in that URL")
    try:
        url, credential = client_access(settings.data_dir)
    except PermissionError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        click.echo(orjson.dumps({"url": url, "user": credential.user, "password": credential.password}).decode())
    elif as_curl:
        auth = shlex.quote(f"{credential.user}:{credential.password}")
        click.echo(f"curl -sS -u {auth} {shlex.quote(url + '/')} --data-binary 'SELECT 1'")
    else:
        click.echo(f"url       {url}\nuser      {credential.user}\npassword  {credential.password}")


@db.command("stop")
@data_dir_option
@user_errors
def db_stop(data_dir: Path | None) -> None:
    """Stop the embedded store server of the data directory (refused while a run uses it)."""
    from backfill import control
    from backfill.cli.data_dir import require_store, shown
    from backfill.store.embedded import stop_server

    settings = _settings(data_dir=data_dir)
    require_store(settings, embedded=True)
    sup = control.running_supervisor(settings.log_dir)
    if sup and not settings.store.url:  # its supervisor would only start it again
        raise UserError(f"a run is active (supervisor pid {sup['pid']}) and uses this store; `backfill stop` first")
    where = shown(settings.data_dir)
    click.echo(
        f"stopped the embedded store of {where}"
        if stop_server(settings.data_dir)
        else f"the embedded store of {where} was not running"
    )


if __name__ == "__main__":
    main()
