"""`backfill gates [--strict] [--json]`: run the quality gates; the exit code is the verdict."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from backfill import exitcodes
from backfill.cli.app import _settings, data_dir_option, user_errors

if TYPE_CHECKING:
    from monitor.gates.judge import GateReport

STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


@click.command("gates")
@click.option(
    "--strict", is_flag=True, help="The threshold set for promotion (default: relaxed, as while backfilling)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@data_dir_option
@user_errors
def gates(strict: bool, as_json: bool, data_dir: Path | None) -> None:
    """Data-quality gates over the staging tables. Exit 0 when no gate failed (warnings allowed), 1 otherwise
    (docs/gates.md).

    Results are also written to the gate_results table and data/backfill/gates.log."""
    from backfill.cli.data_dir import require_store
    from backfill.store.client import Store
    from monitor.gates.judge import run_gates, thresholds

    settings = _settings(data_dir=data_dir)
    level = "strict" if strict else "relaxed"
    thresholds(settings.gates, level)  # a typo in backfill.toml is reported before the store is touched
    require_store(settings)  # connecting would create a store (and start a server) in a directory without one
    store = Store.connect(settings)
    report = run_gates(store, settings, level, source="cli")
    if as_json:
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        from rich.console import Console

        console = Console()
        console.print(gates_table(report))
        # plain lines, one per gate that did not pass, naming its days whole; at a terminal long ones wrap
        # between words, piped each stays one line (grep)
        for r in report.results:
            if r.verdict != "pass":
                click.echo(wrapped(report.line(r), line_width()))
        click.echo(f"{report.level} gates {'passed' if report.passed else 'FAILED'}")
    sys.exit(exitcodes.OK if report.passed else exitcodes.GATES_FAILED)


def gates_table(report: GateReport) -> Any:
    """gate, verdict, what it found and what it allows, in words; fits 80 columns with every word whole (the
    days are named in the lines below the table, whole)."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"{report.level} gates (run {report.run_id})", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    table.add_column("gate", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("found", ratio=1)
    table.add_column("limit", ratio=1)
    for r in report.results:
        table.add_row(r.gate, f"[{STYLE[r.verdict]}]{r.verdict}[/]", r.value_text, r.limit_text)
    return table


def line_width() -> int:
    """The terminal's width (or COLUMNS); 0 when the output goes to a pipe or a file."""
    return shutil.get_terminal_size(fallback=(0, 0)).columns


def wrapped(line: str, width: int) -> str:
    """A long line broken between words (never inside one), continuation lines indented; width 0: as it is."""
    if not width or len(line) <= width:
        return line
    return textwrap.fill(
        line, width=max(40, width), subsequent_indent="    ", break_long_words=False, break_on_hyphens=False
    )
