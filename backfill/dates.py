"""Days as people read them: dates, a run of consecutive dates folded into a range (`2024-01-05..2024-01-07`).

The tables key days by `day_idx`; people think in dates. Every list of days a person reads (status, gates,
audit, promote, rebuild) goes through `day_list`, so they all read alike and paste into `verify --days`.
Log lines for operators keep `day=<idx>` (a greppable key). Pure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

FOLD_FROM = 3  # consecutive dates shown as a range from this many on (two read better as two dates)
DayDate = dt.date | str


def as_date(value: DayDate) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def fold(dates: Iterable[DayDate]) -> list[str]:
    """Sorted, distinct dates as items: a date, or `first..last` for FOLD_FROM or more consecutive dates."""
    ordered = sorted({as_date(d) for d in dates})
    runs: list[list[dt.date]] = []
    for d in ordered:
        if runs and (d - runs[-1][-1]).days == 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    items: list[str] = []
    for run in runs:
        if len(run) >= FOLD_FROM:
            items.append(f"{run[0].isoformat()}..{run[-1].isoformat()}")
        else:
            items.extend(d.isoformat() for d in run)
    return items


def day_list(days: Iterable[int], dates: Mapping[int, DayDate], limit: int = 20) -> str:
    """day_idx values as dates, folded: `2024-01-03, 2024-01-05..2024-01-07`. A day whose date is not known
    stays `day 12`. After `limit` items: `(+N more days)`. "" for no day."""
    days = list(dict.fromkeys(days))
    known = [d for d in days if dates.get(d) is not None]
    items = fold(dates[d] for d in known) + [f"day {d}" for d in sorted(set(days) - set(known))]
    if len(items) <= limit:
        return ", ".join(items)
    shown = items[:limit]
    return ", ".join(shown) + f" (+{len(days) - _count(shown)} more days)"


def _count(items: Iterable[str]) -> int:
    """How many days the items of `day_list` stand for."""
    n = 0
    for item in items:
        first, sep, last = item.partition("..")
        n += (as_date(last) - as_date(first)).days + 1 if sep else 1
    return n


def date_of(dates: Mapping[int, DayDate], day_idx: int | None) -> str | None:
    """The ISO date of a day_idx, None when it is not a planned day (a worker between days: -1)."""
    value = dates.get(day_idx) if day_idx is not None else None
    return as_date(value).isoformat() if value is not None else None
