"""`backfill gates [--strict] [--json]`: run the quality gates; the exit code is the verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from backfill.cli import _settings, data_dir_option, user_errors

EXIT_PASSED, EXIT_FAILED = 0, 1
STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


@click.command("gates")
@click.option("--strict", is_flag=True,
              help="The threshold set for promotion (default: relaxed, as while backfilling).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@data_dir_option
@user_errors
def gates(strict: bool, as_json: bool, data_dir: Path | None) -> None:
    """Data-quality gates over the staging tables. Exit 0 when no gate failed (warnings allowed), 1 otherwise.

    Results are also written to the gate_results table and data/backfill/gates.log."""
    from backfill.data_dir import require_store
    from backfill.store import Store
    from monitor.gates import run_gates, thresholds

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
        from rich.table import Table

        from monitor.gates import fmt_value

        table = Table("gate", "verdict", "value", "threshold", "days",
                      title=f"{report.level} gates (run {report.run_id})")
        for r in report.results:
            table.add_row(r.gate, f"[{STYLE[r.verdict]}]{r.verdict}[/]", fmt_value(r.value),
                          fmt_value(r.threshold), report.day_names(r.days, limit=6))
        Console().print(table)
        # plain lines, one per gate that did not pass, so the days can be read (and grepped) whole
        for r in report.results:
            if r.verdict != "pass":
                click.echo(f"{r.verdict.upper()} {r.gate}: days {report.day_names(r.days) or '-'} — {r.detail}")
        click.echo(f"{report.level} gates {'passed' if report.passed else 'FAILED'}")
    sys.exit(EXIT_PASSED if report.passed else EXIT_FAILED)
