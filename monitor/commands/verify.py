"""`backfill verify`: recount days from RPC and compare them with the store (library: monitor/audit/recount.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import orjson

from backfill import exitcodes
from backfill.cli.app import _settings, data_dir_option, user_errors
from backfill.errors import UserError


@click.command("verify")
@click.option("--days", "days_text", default=None, help="Dates and ranges: 2024-01-03,2024-01-05..2024-01-07.")
@click.option(
    "--sample",
    type=click.IntRange(min=0),
    default=None,
    help="Random COMPLETE days to recount (default: audit_sample, 3; added to --days when both are given).",
)
@click.option(
    "--day-logs",
    "audit_day_logs",
    type=click.IntRange(min=0),
    default=None,
    help="A sampled day of more rows is recounted over a random span of its blocks holding about this many "
    "(default: audit_day_logs, 40000; 0 = whole days). Listed days and --all are recounted whole.",
)
@click.option("--all", "all_days", is_flag=True, default=False, help="Every COMPLETE day.")
@click.option("--seed", type=int, default=None, help="Seed of the --sample draw (default: random, logged).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--rpc-url", "rpc_urls", multiple=True, help="RPC endpoint (repeatable). Env ETHEREUM_RPC_URLS.")
@data_dir_option
@user_errors
def verify(
    days_text: str | None,
    sample: int | None,
    audit_day_logs: int | None,
    all_days: bool,
    seed: int | None,
    as_json: bool,
    rpc_urls: tuple[str, ...],
    data_dir: Path | None,
) -> None:
    """Recount COMPLETE days straight from RPC (another endpoint than the one that filled each day, where there
    is one that can; else that one, said so) and compare counts and a content hash with the store and the day's
    fingerprint. A difference is recounted again on other endpoints before it is called a mismatch.

    Exit 0 when every audited day is ok, 1 otherwise. Row versions not yet deduplicated are shown side by side."""
    from backfill.store.client import Store
    from monitor.audit.recount import day_indices, parse_days, run_audit

    logging.getLogger().addHandler(logging.NullHandler())  # log lines go to audit.log, not the terminal
    if days_text is not None:
        parse_days(days_text)  # a typo is reported before anything is opened
    settings = _settings(rpc_urls=rpc_urls or None, data_dir=data_dir, audit_day_logs=audit_day_logs)
    store = Store.connect(settings)
    days = day_indices(days_text, store.read_plan()) if days_text is not None else None
    report = run_audit(store, settings, days=days, sample=sample, all_days=all_days, seed=seed, source="cli")
    if not report.results:
        raise UserError(
            "no COMPLETE day to audit"
            + (f" (not COMPLETE: {len(report.skipped)} of the days asked for)" if report.skipped else "")
        )
    if as_json:
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        for line in report.lines():
            click.echo(line)
        if report.skipped:
            from backfill.dates import day_list

            dates = {p.day_idx: p.day for p in store.read_plan()}
            click.echo(f"not COMPLETE, not audited: {day_list(report.skipped, dates)}")
        click.echo(click.style(report.summary(), fg="green" if report.passed else "red"))
    raise SystemExit(exitcodes.OK if report.passed else exitcodes.FAILED)
