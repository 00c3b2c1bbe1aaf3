"""`backfill promote`, `backfill rollback`, `backfill backups list|prune`: parse, call monitor.promote, render."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from backfill import exitcodes
from backfill.cli.app import _settings, data_dir_option, user_errors

if TYPE_CHECKING:
    from monitor.promote import PromotionReport


def _print_report(report: PromotionReport) -> None:
    for line in report.lines():
        click.echo(line)
    click.echo(
        f"{report.action} done in {report.seconds:.1f}s: {len(report.tables)} tables verified (rows and checksum)"
    )


@click.command()
@click.option("--skip-gates", is_flag=True, help="Promote without running the strict gates first (not advised).")
@data_dir_option
@user_errors
def promote(skip_gates: bool, data_dir: Path | None) -> None:
    """Strict gates, then: verified backups of production, production built from staging FINAL, an atomic swap
    (the previous production kept as <table>_old), verification after the swap."""
    from backfill.store.client import Store
    from monitor.promote import promote as run_promote
    from monitor.promote import promotion_log

    settings = _settings(data_dir=data_dir)
    store = Store.connect(settings)
    with promotion_log(settings):
        from monitor.promote import log

        if skip_gates:
            click.secho(
                "WARNING: --skip-gates: the strict gates were NOT run; promoting unchecked data",
                err=True,
                fg="yellow",
                bold=True,
            )
            log.warning("event=gates_skipped flag=--skip-gates")
        else:
            from monitor.gates.judge import run_gates

            gates = run_gates(store, settings, "strict", source="promote")
            if not gates.passed:
                from backfill.cli.status import INTERRUPTED_HINT, run_is_live, show_day_statuses
                from monitor.commands.gates import line_width, wrapped

                live, raw = run_is_live(settings.log_dir), gates.lines()
                shown = [show_day_statuses(line, live) for line in raw]
                width = line_width()
                for line in shown:
                    click.echo(wrapped(line, width), err=True)
                if shown != raw:  # RUNNING days with no run: say what carries them on
                    click.echo(wrapped(INTERRUPTED_HINT, width), err=True)
                click.echo("promotion refused: the strict gates failed; nothing changed", err=True)
                log.error("event=promote_refused reason=strict_gates_failed production=untouched")
                sys.exit(exitcodes.GATES_FAILED)
            log.info("event=gates_passed level=strict")
    from monitor.rebuild import final_block

    _print_report(run_promote(store, settings, through_block=final_block(store)))  # the final days only


@click.command()
@data_dir_option
@user_errors
def rollback(data_dir: Path | None) -> None:
    """Put back the production the last promotion replaced, verified against that promotion's backup."""
    from backfill.store.client import Store
    from monitor.promote import rollback as run_rollback

    settings = _settings(data_dir=data_dir)
    _print_report(run_rollback(Store.connect(settings), settings))


@click.group()
def backups() -> None:
    """The dated backups promotions take of production."""


@backups.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@data_dir_option
@user_errors
def backups_list(as_json: bool, data_dir: Path | None) -> None:
    """Every backup: table, created (UTC), rows, checksum, verified."""
    from dataclasses import asdict

    from backfill.store.client import Store
    from monitor.promote import list_backups

    found = list_backups(Store.connect(_settings(data_dir=data_dir)))
    if as_json:
        click.echo(orjson.dumps([asdict(b) for b in found], option=orjson.OPT_INDENT_2).decode())
        return
    width = max([len(b.table) for b in found] + [5])
    click.echo(f"{'table':<{width}}  {'created (UTC)':<26}  {'rows':>10}  {'checksum':<32}  verified")
    for b in found:
        click.echo(
            f"{b.table:<{width}}  {b.created:%Y-%m-%d %H:%M:%S.%f}  {'-' if b.rows is None else b.rows:>10}  "
            f"{b.checksum or '-':<32}  {'yes' if b.verified else 'NO'}"
        )
    click.echo(f"{len(found)} backups")


@backups.command("prune")
@click.option("--older-than", "older_than", required=True, help="Age, e.g. 30d, 12h, 90m (0d = every backup).")
@data_dir_option
@user_errors
def backups_prune(older_than: str, data_dir: Path | None) -> None:
    """Drop the backups at least this old."""
    from backfill.store.client import Store
    from monitor.promote import exclusive, parse_age, promotion_log, prune_backups

    age = parse_age(older_than)
    settings = _settings(data_dir=data_dir)
    store = Store.connect(settings)
    with promotion_log(settings), exclusive(settings):
        dropped = prune_backups(store, age)
    for b in dropped:
        click.echo(f"dropped {b.table} (created {b.created:%Y-%m-%d %H:%M:%S} UTC, rows {b.rows})")
    click.echo(f"{len(dropped)} backups older than {older_than} dropped")
