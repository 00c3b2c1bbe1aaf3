"""Dedup: make the stored rows what `SELECT … FINAL` shows, partition by partition, and prove it.

ReplacingMergeTree keeps the newest `_version` of a key when a partition merges, but only within that
partition: a copy of a key written with another timestamp month (a bug that zeroed timestamps puts rows
into 1970-01) survives `OPTIMIZE … FINAL` forever. So dedup, over a block range, in each staging table where
some sorting key has more than one raw row (a table where every key has one row, in any partition, has nothing to
merge away and is left as it is; equal raw and FINAL counts would not prove that, since copies of a key in two
partitions both survive FINAL):
1. refuses when a key has two different rows at the same newest version (keeping either would be a guess),
2. deletes the superseded versions of keys whose rows sit in more than one partition,
3. runs `OPTIMIZE TABLE … PARTITION ID … FINAL` on every partition holding rows of the range,
4. verifies: in the range, raw rows = rows after FINAL and no key twice.

On a cluster (docs/cluster.md) the DELETE and the OPTIMIZEs go to the replica this process is connected to, not
ON CLUSTER: the replicated table's own log brings them to the other replicas, and OPTIMIZE returns once this
replica has merged, which is what step 4 reads (backfill/store/cluster.py says why ON CLUSTER would not do).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from backfill.errors import CommandFailed
from backfill.store.client import Store
from backfill.store.digest import KEYS, STAGING_TABLES, key_counts_sql, newest_version_variants_sql

log = logging.getLogger("on_complete")

MAINTENANCE_TABLES = ["transfer_quarantine", "block_timestamps", "backfill_checkpoint"]


class DedupRefused(CommandFailed):
    """A dedup that would lose data or found nothing to do: refused, nothing changed."""


@dataclass
class DedupReport:
    block_range: tuple[int, int]
    partitions: dict[str, list[str]] = field(default_factory=dict)
    superseded_deleted: dict[str, int] = field(default_factory=dict)
    rows_before: dict[str, int] = field(default_factory=dict)
    rows_after: dict[str, int] = field(default_factory=dict)
    final_rows: dict[str, int] = field(default_factory=dict)
    duplicates_after: dict[str, int] = field(default_factory=dict)
    # the tables whose raw rows in the range each have a key of their own: rows, runbook keys, sorting keys
    key_counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """In the range: no key twice after FINAL, and nothing left for FINAL to hide."""
        return not any(self.duplicates_after.values()) and self.rows_after == self.final_rows

    def to_json(self) -> dict[str, Any]:
        return {
            "block_range": list(self.block_range),
            "partitions": self.partitions,
            "superseded_deleted": self.superseded_deleted,
            "rows_before": self.rows_before,
            "rows_after": self.rows_after,
            "rows_final": self.final_rows,
            "duplicates_after": self.duplicates_after,
            "clean": self.clean,
        }


def block_range_of_days(store: Store, first: dt.date, last: dt.date) -> tuple[int, int]:
    plans = [p for p in store.read_plan() if first <= p.day <= last]
    if not plans:
        raise DedupRefused(f"no planned day between {first} and {last}")
    return min(p.start_block for p in plans), max(p.end_block for p in plans)


def block_range_of_partitions(store: Store, partitions: list[str]) -> tuple[int, int]:
    lo, hi = None, None
    for table in STAGING_TABLES:
        a, b, n = store.query_rows(
            f"SELECT min(block_number), max(block_number), count() FROM {table} WHERE _partition_id IN %(p)s",
            {"p": partitions},
        )[0]
        if n:
            lo = a if lo is None else min(lo, a)
            hi = b if hi is None else max(hi, b)
    if lo is None:
        raise DedupRefused(f"no rows in partition(s) {', '.join(partitions)}")
    assert hi is not None  # set together with lo
    return int(lo), int(hi)


def ambiguous_keys(store: Store, table: str, a: int, b: int) -> list[int]:
    """Blocks in [a, b] holding a key with more than one distinct row at its newest version (as the gates judge)."""
    variants = newest_version_variants_sql(table, "WHERE block_number BETWEEN %(a)s AND %(b)s")
    return [
        int(r[0])
        for r in store.query_rows(f"SELECT block_number FROM {variants} WHERE d > 1 LIMIT 1000", {"a": a, "b": b})
    ]


def superseded_split_sql(table: str) -> str:
    """Rows (key..., _version) in [%(a)s, %(b)s] that are older versions of keys whose rows sit in more than one
    partition: what OPTIMIZE … FINAL can never merge away."""
    key = KEYS[table]
    rng = "block_number BETWEEN %(a)s AND %(b)s"
    return (
        f"SELECT {key}, _version FROM {table} WHERE {rng} AND ({key}) IN ("
        f"SELECT {key} FROM {table} WHERE {rng} GROUP BY {key} HAVING uniqExact(_partition_id) > 1) "
        f"AND ({key}, _version) NOT IN (SELECT {key}, max(_version) FROM {table} WHERE {rng} GROUP BY {key})"
    )


def partitions_of_range(store: Store, table: str, a: int, b: int) -> list[str]:
    return [
        r[0]
        for r in store.query_rows(
            f"SELECT DISTINCT _partition_id FROM {table} WHERE block_number BETWEEN %(a)s AND %(b)s ORDER BY 1",
            {"a": a, "b": b},
        )
    ]


def dedup_range(store: Store, a: int, b: int, *, maintenance: bool = True) -> DedupReport:
    """Dedup the staging tables over blocks [a, b] (and, by default, the small bookkeeping tables whole).

    A table whose raw rows in the range each have a key of their own (digest.key_counts_sql, across
    partitions) holds no key twice there: nothing to refuse, delete or merge, so its partitions are not
    rewritten (a clean copy's usual case; the OPTIMIZE of every partition was most of the rebuild's dedup
    time). That count is its check: FINAL keeps a subset of those rows, so it shows no key twice either."""
    report = DedupReport((a, b))
    params = {"a": a, "b": b}
    range_where = "block_number BETWEEN %(a)s AND %(b)s"
    raw: dict[str, int] = {}
    busy: list[str] = []
    for t in STAGING_TABLES:
        row = store.query_rows(key_counts_sql(t, range_where), params)[0]
        raw[t] = int(row[0])
        if int(row[1]) != raw[t]:  # the runbook's key (the sorting key's count is the gates')
            busy.append(t)
        else:
            report.key_counts[t] = (raw[t], int(row[1]), int(row[2]))
    for table in busy:
        _refuse_ambiguous(store, table, a, b)
    for table in STAGING_TABLES:
        report.rows_before[table] = raw[table]
        parts = partitions_of_range(store, table, a, b)
        losers = 0
        if table in busy:
            losers = _merge_away(store, table, parts, report, params)
        else:  # every key one raw row (counted above): nothing for FINAL to fold, no key twice after it
            report.rows_after[table] = report.final_rows[table] = raw[table]
            report.duplicates_after[table] = 0
        report.superseded_deleted[table] = losers
        report.partitions[table] = parts
        log.info(
            "step=dedup table=%s blocks=%d-%d partitions=%s optimized=%s superseded_deleted=%d rows_before=%d "
            "rows_after=%d duplicates_after=%d",
            table,
            a,
            b,
            ",".join(parts) or "-",
            "yes" if table in busy else "no (every key has one row)",
            losers,
            report.rows_before[table],
            report.rows_after[table],
            report.duplicates_after[table],
        )
    if maintenance:
        for table in MAINTENANCE_TABLES:
            store.command(f"OPTIMIZE TABLE {table} FINAL")
    return report


def _merge_away(store: Store, table: str, parts: list[str], report: DedupReport, params: dict[str, int]) -> int:
    """Delete a table's superseded copies stranded in other partitions, OPTIMIZE its partitions, and record
    what is left (rows, rows after FINAL, keys twice after FINAL) in the report; the copies deleted."""
    key, range_where = KEYS[table], "block_number BETWEEN %(a)s AND %(b)s"
    losers = int(store.scalar(f"SELECT count() FROM ({superseded_split_sql(table)})", params))
    if losers:
        store.command(
            f"DELETE FROM {table} WHERE {range_where} AND ({key}, _version) IN ({superseded_split_sql(table)})",
            parameters=params,
        )
    for pid in parts:
        store.command(f"OPTIMIZE TABLE {table} PARTITION ID %(p)s FINAL", parameters={"p": pid})
    report.rows_after[table] = int(store.scalar(f"SELECT count() FROM {table} WHERE {range_where}", params))
    report.final_rows[table] = int(store.scalar(f"SELECT count() FROM {table} FINAL WHERE {range_where}", params))
    report.duplicates_after[table] = int(
        store.scalar(f"SELECT count() - uniqExact(tuple({key})) FROM {table} FINAL WHERE {range_where}", params)
    )
    return losers


def _refuse_ambiguous(store: Store, table: str, a: int, b: int) -> None:
    """DedupRefused when a key in [a, b] has two different rows at its newest version (before anything changes)."""
    bad = ambiguous_keys(store, table, a, b)
    if not bad:
        return
    days = sorted({p.day for p in store.read_plan() for bn in bad if p.start_block <= bn <= p.end_block})
    named = ", ".join(str(d) for d in days[:10]) or "outside the plan"
    raise DedupRefused(
        f"{table}: {len(bad)} key(s) have two different rows at the same newest _version "
        f"on day(s) {named} (first at block {min(bad)}); dedup would keep one at random. "
        f"Fetch those days again with `backfill start --from D1 --to D2 --redo`, then dedup"
    )


def full_range(store: Store) -> tuple[int, int]:
    plans = store.read_plan()
    hi = max([p.end_block for p in plans] + [0])
    for table in STAGING_TABLES:
        hi = max(hi, int(store.scalar(f"SELECT max(block_number) FROM {table}") or 0))
    return 0, hi
