"""Day fingerprints: for every COMPLETE day, what the store held when it completed (counts and a content hash
per table, see backfill.store.digest) and the endpoints that served its logs. Gates compare the store with them
cheaply; the audit compares them with a recount from RPC; a mismatch names the day."""

from __future__ import annotations

import logging
from typing import Any

from backfill.chain.planner import DayPlan
from backfill.store import digest, schema
from backfill.store.client import Store, now_utc

log = logging.getLogger(__name__)

DayDigests = dict[int, dict[str, tuple[int, int]]]  # day_idx -> table -> (rows, hash) after FINAL

BULK_DAYS = 20  # more days than this to fingerprint: one grouped query per table instead of one per day


def stale_days(store: Store) -> list[tuple[int, Any, str]]:
    """COMPLETE days without a fingerprint, or completed again (a redo) since theirs: (day_idx, completed_at, endpoints)."""
    rows = store.query_rows(
        "SELECT c.day_idx, c.updated_at, c.endpoints FROM "
        "(SELECT day_idx, status, updated_at, endpoints FROM backfill_checkpoint FINAL) AS c "
        "LEFT JOIN (SELECT day_idx, completed_at FROM day_fingerprints FINAL) AS f ON f.day_idx = c.day_idx "
        "WHERE c.status = 'COMPLETE' AND (f.day_idx != c.day_idx OR c.updated_at > f.completed_at) ORDER BY c.day_idx"
    )
    return [(int(r[0]), r[1], str(r[2])) for r in rows]


def current_digests(store: Store, days: list[int] | None = None) -> DayDigests:
    """day_idx -> table -> (rows, hash) of the store now (after FINAL). Days without rows are absent."""
    out: DayDigests = {}
    plan = {p.day_idx: p for p in store.read_plan()}
    if days is not None and len(days) <= BULK_DAYS:
        for d in days:
            if d in plan and (found := day_digests(store, plan[d])):
                out[d] = found
        return out
    wanted = set(days) if days is not None else None
    chosen = [plan[d] for d in wanted or () if d in plan]
    params = {"a": min(p.start_block for p in chosen), "b": max(p.end_block for p in chosen)} if chosen else None
    for table in digest.STAGING_TABLES:
        for d, n, h in store.query_rows(digest.per_day_digest_sql(table, in_range=params is not None), params):
            if wanted is None or int(d) in wanted:
                out.setdefault(int(d), {})[table] = (int(n), int(h or 0))
    return out


def day_digests(store: Store, plan: DayPlan) -> dict[str, tuple[int, int]]:
    """table -> (rows, hash) of one day of the store now (after FINAL); tables without rows are absent."""
    out: dict[str, tuple[int, int]] = {}
    if plan.end_block < plan.start_block:
        return out
    for table in digest.STAGING_TABLES:
        n, h = store.query_rows(digest.range_digest_sql(table), {"a": plan.start_block, "b": plan.end_block})[0]
        if n:
            out[table] = (int(n), int(h or 0))
    return out


def record_fingerprints(store: Store) -> DayDigests:
    """Fingerprint the days that need it; returns what was recorded, day_idx -> table -> (rows, hash) (a day
    without rows maps to {}): the store's digests of those days as it is now, which a caller measuring the same
    rows next (the rebuild's gates) need not read again."""
    todo = stale_days(store)
    if not todo:
        return {}
    digests = current_digests(store, [d for d, _, _ in todo])
    rows = []
    stamp = now_utc()
    for day_idx, completed_at, endpoints in todo:
        got = digests.get(day_idx, {})
        n20, h20 = got.get("erc20_transfers_staging", (0, 0))
        n1155, h1155 = got.get("erc1155_transfers_staging", (0, 0))
        rows.append((day_idx, n20, n1155, digest.fmt_hash(h20), digest.fmt_hash(h1155), endpoints, completed_at, stamp))
    store.insert("day_fingerprints", rows, schema.FINGERPRINT_COLUMNS)
    log.info("event=fingerprinted days=%d first=%d last=%d", len(rows), rows[0][0], rows[-1][0])
    return {day_idx: digests.get(day_idx, {}) for day_idx, _, _ in todo}


def recorded(store: Store) -> dict[int, dict[str, Any]]:
    """day_idx -> the latest fingerprint row."""
    rows = store.named_rows(f"SELECT {', '.join(schema.FINGERPRINT_COLUMNS)} FROM day_fingerprints FINAL")
    return {int(r["day_idx"]): r for r in rows}
