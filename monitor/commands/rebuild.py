"""`backfill rebuild` (the on-complete pipeline by hand) and `backfill dedup` (one partition or date range)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import click
import orjson

from backfill.cli.app import _settings, data_dir_option, user_errors
from backfill.errors import CommandFailed, ConfigError, Interrupted, UserError


class RebuildStopped(CommandFailed):
    """The rebuild (or a dedup) stopped before its end; production is unchanged."""


@click.command("rebuild")
@click.option(
    "--promote/--no-promote",
    "promote",
    default=None,
    help="Promote when every step passed (default: the auto_promote setting, off).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
@data_dir_option
@user_errors
def rebuild(promote: bool | None, as_json: bool, data_dir: Path | None) -> None:
    """Dedup -> audit -> strict gates -> derived tables -> your *.sql -> promotion -> snapshot, stopping at the
    first failure before anything replaces production."""
    from backfill import control
    from backfill.store.client import Store
    from monitor.rebuild import RebuildFailed, run_by_hand

    settings = _settings(data_dir=data_dir)
    if control.running_supervisor(settings.log_dir):
        raise UserError("a run is active for this data directory; it rebuilds by itself when the last day lands")
    store = Store.connect(settings)
    step: list[str | None] = [None]
    try:
        report = run_by_hand(store, settings, promote=promote, on_step=lambda name: step.__setitem__(0, name))
    except RebuildFailed as exc:
        raise RebuildStopped(
            f"rebuild stopped at {exc}; production is unchanged (log: {settings.log_dir / 'on-complete.log'})"
        ) from None
    except KeyboardInterrupt:  # a promotion's swap is never cut (backfill/ctrl_c.py): production is as it was
        if step[0] == "snapshot":
            raise Interrupted(
                "stopped by Ctrl-C while writing the snapshot; every step had run (see "
                f"{settings.log_dir / 'on-complete.log'})"
            ) from None
        at = f" at step {step[0]}" if step[0] else ""
        raise Interrupted(f"stopped by Ctrl-C{at}; production is unchanged; `backfill rebuild` runs it again") from None
    if as_json:
        click.echo(orjson.dumps(report, default=str, option=orjson.OPT_INDENT_2).decode())
        return
    durations = ", ".join(f"{k} {v:.1f}s" for k, v in report["durations_s"].items())
    click.echo(f"rebuild ok: {durations}")
    click.echo(f"snapshot: {settings.data_dir / report['snapshot']}")


_PARTITION = re.compile(r"^\d{6}$")


@click.command("dedup")
@click.option("--partition", "partitions", multiple=True, help="A month partition like 202601 (repeatable).")
@click.option("--from", "from_date", help="First UTC day of a range to dedup.")
@click.option("--to", "to_date", help="Last UTC day of the range (inclusive).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@data_dir_option
@user_errors
def dedup(
    partitions: tuple[str, ...], from_date: str | None, to_date: str | None, as_json: bool, data_dir: Path | None
) -> None:
    """OPTIMIZE … FINAL per partition (and remove superseded copies left in other partitions), then verify."""
    from backfill.store.client import Store
    from monitor.dedup import block_range_of_days, block_range_of_partitions, dedup_range

    if bool(partitions) == bool(from_date or to_date):
        raise ConfigError("give --partition YYYYMM (repeatable) or --from/--to dates, one of the two")
    bad = [p for p in partitions if not _PARTITION.match(p)]
    if bad:
        raise ConfigError(f"--partition takes a month like 202601, got {bad[0]!r}")
    settings = _settings(data_dir=data_dir)
    store = Store.connect(settings)
    if partitions:
        a, b = block_range_of_partitions(store, list(partitions))
    else:
        try:
            first = dt.date.fromisoformat(from_date or to_date or "")
            last = dt.date.fromisoformat(to_date or from_date or "")
        except ValueError:
            raise ConfigError(f"--from/--to must be dates like 2024-01-31, got {from_date!r}/{to_date!r}") from None
        if first > last:
            raise ConfigError(f"--from {first} is after --to {last}")
        a, b = block_range_of_days(store, first, last)
    report = dedup_range(store, a, b)
    if as_json:
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        for table in report.rows_before:
            click.echo(
                f"{table}: blocks {a}-{b}, partitions {','.join(report.partitions[table]) or '-'}: rows "
                f"{report.rows_before[table]} -> {report.rows_after[table]} (superseded copies removed: "
                f"{report.superseded_deleted[table]}), duplicates after FINAL: {report.duplicates_after[table]}"
            )
    if not report.clean:
        raise RebuildStopped("dedup did not leave the range clean (see above)")
    if not as_json:
        click.echo("verified: every key once, nothing left for FINAL to hide")
