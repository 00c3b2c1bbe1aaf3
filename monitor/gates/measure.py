"""What the gates measure, read from the store in a fixed number of grouped queries whatever the number of
days: plain data for the pure judging in monitor.gates.judge."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backfill.store import digest, fingerprints
from backfill.store.client import Store

HASH_RE = "^0x[0-9a-f]{64}$"
ADDRESS_RE = "^0x[0-9a-f]{40}$"
SORT_KEYS = digest.SORT_KEYS


# -- what is measured ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Day:
    day_idx: int
    day: dt.date
    start_block: int
    end_block: int
    status: str  # PENDING when the day has no checkpoint yet


@dataclass(frozen=True)
class Fingerprint:
    counts: tuple[int, int]  # erc20, erc1155
    hashes: tuple[str, str]
    completed_at: dt.datetime


@dataclass
class Measurements:
    """Everything the gates judge, as plain data. per_day: check -> day_idx -> offending rows/blocks/keys."""

    days: dict[int, Day]
    checkpoint_counts: dict[int, tuple[int, int]] = field(default_factory=dict)  # COMPLETE days
    store_counts: dict[int, tuple[int, int]] = field(default_factory=dict)  # rows after FINAL
    store_hashes: dict[int, tuple[str, str]] = field(default_factory=dict)
    fingerprints: dict[int, Fingerprint] = field(default_factory=dict)
    audits: dict[int, tuple[str, dt.datetime]] = field(default_factory=dict)  # latest verdict, run_at
    final_duplicates: dict[str, int] = field(default_factory=dict)  # table -> count() - uniqExact(key)
    per_day: dict[str, dict[int, int]] = field(default_factory=dict)

    def of(self, check: str) -> dict[int, int]:
        return {d: n for d, n in self.per_day.get(check, {}).items() if n}

    @property
    def complete(self) -> set[int]:
        return {d for d, day in self.days.items() if day.status == "COMPLETE"}


@dataclass
class Known:
    """What the caller read of the staging tables moments before, with no staging row of a final day written
    since (the rebuild, after its dedup and fingerprints steps, under its lease): the gates take it instead of
    reading it again. digests: day_idx -> table -> (rows, hash) after FINAL, as fingerprinted ({}: no rows);
    key_counts: table -> the whole table's raw rows, runbook keys and sorting keys (digest.key_counts_sql)."""

    digests: fingerprints.DayDigests = field(default_factory=dict)
    key_counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def final_days_only(m: Measurements) -> Measurements:
    """The measurements without the OPEN days at the plan's end (copied to the safe head, not final yet): what
    the rebuild judges, builds from and promotes while the chain's last days are still open. An OPEN day is
    only ever at the end of the plan, so the days kept are a whole prefix."""
    open_tail: set[int] = set()
    for d in sorted(m.days, reverse=True):
        if m.days[d].status != "OPEN":
            break
        open_tail.add(d)
    if not open_tail:
        return m

    def keep(per: dict[int, Any]) -> dict[int, Any]:
        return {d: v for d, v in per.items() if d not in open_tail}

    return Measurements(
        days=keep(m.days),
        checkpoint_counts=keep(m.checkpoint_counts),
        store_counts=keep(m.store_counts),
        store_hashes=keep(m.store_hashes),
        fingerprints=keep(m.fingerprints),
        audits=keep(m.audits),
        final_duplicates=m.final_duplicates,
        per_day={check: keep(per) for check, per in m.per_day.items()},
    )


# -- measuring (I/O) -----------------------------------------------------------------------------------------
def _rows_source() -> str:
    """Both staging tables after FINAL, one row per transfer row: block, timestamp, malformed flags, joined
    with its block's timestamp row (`has_bt` = 0 when there is none)."""

    def part(table: str, addresses: list[str]) -> str:
        bad_addr = " OR ".join(f"NOT match({a}, %(addr)s)" for a in addresses)
        return (
            f"SELECT block_number, block_timestamp AS ts, NOT match(tx_hash, %(hash)s) AS bad_tx, "
            f"({bad_addr}) AS bad_addr FROM {table} FINAL"
        )

    union = (
        part("erc20_transfers_staging", ["token_address", "from_address", "to_address"])
        + " UNION ALL "
        + part("erc1155_transfers_staging", ["token_address", "operator", "from_address", "to_address"])
    )
    return (
        f"(SELECT u.block_number AS block_number, u.ts AS ts, u.bad_tx AS bad_tx, u.bad_addr AS bad_addr, "
        f"b.timestamp AS bts, b.has AS has_bt FROM ({union}) AS u LEFT JOIN "
        f"(SELECT block_number, timestamp, 1 AS has FROM block_timestamps FINAL) AS b "
        f"ON b.block_number = u.block_number)"
    )


def _to_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _measure_rows(store: Store, params: dict[str, Any], put: Callable[[str, Any, Any], None]) -> None:
    """Per day: transfer rows with a missing, wrong or pre-genesis timestamp, malformed hashes and addresses."""
    rows_sql = (
        f"SELECT day_idx, countIf(ts = 0), countIf(has_bt = 1 AND ts != 0 AND ts != bts), "
        f"countIf(ts != 0 AND toUnixTimestamp(ts) < %(g)s), countIf(bad_tx), countIf(bad_addr), "
        f"uniqExactIf(block_number, has_bt = 0) FROM "
        f"{digest.day_of_block_join(_rows_source(), 'block_number, ts, bad_tx, bad_addr, bts, has_bt')} "
        f"GROUP BY day_idx"
    )
    for d, zero, mismatch, early, bad_tx, bad_addr, missing in store.query_rows(rows_sql, params):
        put("zero_timestamp_rows", d, zero)
        put("timestamp_mismatch_rows", d, mismatch)
        put("rows_before_genesis", d, early)
        put("malformed_tx_hash", d, bad_tx)
        put("malformed_address", d, bad_addr)
        put("missing_timestamp_blocks", d, missing)


def _measure_blocks(
    store: Store, params: dict[str, Any], days: dict[int, Day], put: Callable[[str, Any, Any], None]
) -> None:
    """Per day: block timestamps outside their day, going backwards, before genesis; malformed block hashes."""
    blocks = (
        "(SELECT block_number, timestamp, block_hash, lagInFrame(timestamp) OVER "
        "(ORDER BY block_number ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev FROM block_timestamps FINAL)"
    )
    blocks_sql = (
        f"SELECT day_idx, toDate(timestamp) AS date, count(), countIf(timestamp < prev), "
        f"countIf(NOT match(block_hash, %(hash)s)), countIf(toUnixTimestamp(timestamp) < %(g)s) FROM "
        f"{digest.day_of_block_join(blocks, 'block_number, timestamp, block_hash, prev')} "
        f"GROUP BY day_idx, date"
    )
    for d, date, n, backwards, bad_hash, early in store.query_rows(blocks_sql, params):
        if int(d) in days and date != days[int(d)].day:
            put("blocks_outside_day", d, n)
        put("blocks_backwards", d, backwards)
        put("malformed_block_hash", d, bad_hash)
        put("blocks_before_genesis", d, early)


def _measure_duplicates(
    store: Store, m: Measurements, put: Callable[[str, Any, Any], None], key_counts: dict[str, tuple[int, int, int]]
) -> None:
    """Duplicate keys after FINAL, ambiguous and exact copies at the newest version, quarantined rows.

    A table whose raw rows each have a key of their own (both keys: the runbook's and the sorting key) has
    none of these (digest.key_counts_sql): one scan proves it, and the three that would find them are not run
    (the usual case after dedup, where they were two thirds of the gates' time). `key_counts`: that scan's
    answer per table where the caller has it already (the rebuild's dedup ran it over the whole table)."""
    for table, key in digest.KEYS.items():
        rows, keys, sort_keys = key_counts.get(table) or store.query_rows(digest.key_counts_sql(table))[0]
        if int(rows) == int(keys) == int(sort_keys):
            m.final_duplicates[table] = 0
            continue
        m.final_duplicates[table] = int(store.scalar(f"SELECT count() - uniqExact({key}) FROM {table} FINAL") or 0)
        dup_rows = (
            f"(SELECT arrayJoin(bns) AS block_number FROM (SELECT groupArray(block_number) AS bns "
            f"FROM {table} FINAL GROUP BY {key} HAVING count() > 1))"
        )
        dup_sql = f"SELECT day_idx, count() FROM {digest.day_of_block_join(dup_rows, 'block_number')} GROUP BY day_idx"
        for d, n in store.query_rows(dup_sql):
            put("duplicate_key_rows", d, n)
        # Dedup keeps one row per sorting key, the newest _version: several different rows at that version
        # leave the survivor to chance; identical copies are harmless.
        versions = digest.newest_version_variants_sql(table)
        versions_sql = (
            f"SELECT day_idx, countIf(d > 1), sumIf(n - 1, d = 1) FROM "
            f"{digest.day_of_block_join(versions, 'block_number, n, d')} GROUP BY day_idx"
        )
        for d, ambiguous, copies in store.query_rows(versions_sql):
            put("ambiguous_keys", d, ambiguous)
            put("exact_copies", d, copies)

    quarantine = digest.day_of_block_join("transfer_quarantine FINAL", "block_number")
    for d, n in store.query_rows(f"SELECT day_idx, count() FROM {quarantine} GROUP BY day_idx"):
        put("quarantined", d, n)


def read_audits(store: Store) -> dict[int, tuple[str, dt.datetime]]:
    """day_idx -> the latest audit's verdict of the day and when it ran."""
    return {
        int(d): (str(v), _to_utc(at))
        for d, v, at in store.query_rows(
            "SELECT day_idx, argMax(verdict, run_at), max(run_at) FROM audit_results GROUP BY day_idx"
        )
    }


def store_digests(store: Store, days: list[int], known: fingerprints.DayDigests) -> fingerprints.DayDigests:
    """day_idx -> table -> (rows, hash) of the store now, for the days with rows: those of `known` as given,
    the other `days` read (all of them in one grouped query per table when nothing is known)."""
    out = {d: tables for d, tables in known.items() if tables}
    rest = [d for d in days if d not in known]
    if rest:
        out.update(fingerprints.current_digests(store, rest if known else None))
    return out


def measure(store: Store, known: Known | None = None) -> Measurements:
    """Read everything the gates judge: a fixed number of grouped queries, whatever the number of days; what
    `known` holds, and the digests of days fingerprinted here, are taken as they are, not read again."""
    known = known or Known()
    fresh = {**known.digests, **fingerprints.record_fingerprints(store)}
    cps = store.checkpoints()
    status = {d: str(cp["status"]) for d, cp in cps.items()}
    days = {
        p.day_idx: Day(p.day_idx, p.day, p.start_block, p.end_block, status.get(p.day_idx, "PENDING"))
        for p in store.read_plan()
    }
    m = Measurements(days=days)
    m.checkpoint_counts = {
        d: (int(cp["erc20_count"]), int(cp["erc1155_count"])) for d, cp in cps.items() if cp["status"] == "COMPLETE"
    }
    for d, tables in store_digests(store, list(days), fresh).items():
        n20, h20 = tables.get("erc20_transfers_staging", (0, 0))
        n1155, h1155 = tables.get("erc1155_transfers_staging", (0, 0))
        m.store_counts[d] = (n20, n1155)
        m.store_hashes[d] = (digest.fmt_hash(h20), digest.fmt_hash(h1155))
    m.fingerprints = {
        d: Fingerprint(
            (int(r["erc20_count"]), int(r["erc1155_count"])),
            (str(r["erc20_hash"]), str(r["erc1155_hash"])),
            _to_utc(r["completed_at"]),
        )
        for d, r in fingerprints.recorded(store).items()
    }
    m.audits = read_audits(store)
    genesis = store.meta_get("genesis_timestamp")
    params = {"hash": HASH_RE, "addr": ADDRESS_RE, "g": int(float(genesis)) if genesis else 0}
    per = m.per_day

    def put(check: str, d: Any, n: Any) -> None:
        if n:
            per.setdefault(check, {})[int(d)] = per.get(check, {}).get(int(d), 0) + int(n)

    _measure_rows(store, params, put)
    _measure_blocks(store, params, days, put)
    _measure_duplicates(store, m, put, known.key_counts)
    return m


# -- running and recording -----------------------------------------------------------------------------------
