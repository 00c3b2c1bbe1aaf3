"""Corruptions a finished run can suffer (a bad migration, a buggy writer), applied with plain SQL."""

from __future__ import annotations

from backfill.chain.planner import DayPlan
from backfill.store.client import Store
from backfill.store.digest import STAGING_TABLES


def delete_rows(store: Store, plan: DayPlan, keep_every: int = 2) -> int:
    """Lose rows inside one day (every other block's rows), as a bad migration would."""
    before = int(
        store.scalar(
            "SELECT count() FROM erc20_transfers_staging FINAL WHERE block_number BETWEEN %(a)s AND %(b)s",
            {"a": plan.start_block, "b": plan.end_block},
        )
    )
    store.client.command(
        "ALTER TABLE erc20_transfers_staging DELETE WHERE block_number BETWEEN %(a)s AND %(b)s "
        "AND block_number %% %(k)s = 0 SETTINGS mutations_sync = 2",
        parameters={"a": plan.start_block, "b": plan.end_block, "k": keep_every},
    )
    after = int(
        store.scalar(
            "SELECT count() FROM erc20_transfers_staging FINAL WHERE block_number BETWEEN %(a)s AND %(b)s",
            {"a": plan.start_block, "b": plan.end_block},
        )
    )
    assert after < before
    return before - after


def zero_timestamps(store: Store, plan: DayPlan) -> None:
    """Overwrite a day with damaged copies: same keys, a newer _version, block_timestamp 0."""
    for table in STAGING_TABLES:
        store.client.command(
            f"INSERT INTO {table} SELECT * REPLACE (toDateTime(0, 'UTC') AS block_timestamp, _version + 1 AS _version) "
            f"FROM {table} FINAL WHERE block_number BETWEEN %(a)s AND %(b)s",
            parameters={"a": plan.start_block, "b": plan.end_block},
        )


def same_version_duplicate(store: Store, plan: DayPlan) -> None:
    """A second row for one key at the same _version, with another value."""
    store.client.command(
        "INSERT INTO erc20_transfers_staging SELECT * REPLACE (value + 1 AS value) FROM erc20_transfers_staging FINAL "
        "WHERE block_number BETWEEN %(a)s AND %(b)s ORDER BY block_number, log_index LIMIT 1",
        parameters={"a": plan.start_block, "b": plan.end_block},
    )


def malformed_address(store: Store, plan: DayPlan) -> None:
    """A newer version of one row whose from_address lost its 0x prefix and case (the 'empty ids' kind of bug)."""
    store.client.command(
        "INSERT INTO erc20_transfers_staging SELECT * REPLACE (upper(substring(from_address, 3)) AS from_address, "
        "_version + 1 AS _version) FROM erc20_transfers_staging FINAL WHERE block_number BETWEEN %(a)s AND %(b)s "
        "ORDER BY block_number, log_index LIMIT 1",
        parameters={"a": plan.start_block, "b": plan.end_block},
    )


def raw_digest_outside(store: Store, a: int, b: int) -> dict[str, tuple[int, int]]:
    """Rows (every version, no FINAL) outside blocks [a, b], per table: (count, hash) — to prove nothing there moved."""
    from backfill.store.digest import row_hash_sql

    out = {}
    for table in STAGING_TABLES:
        n, h = store.query_rows(
            f"SELECT count(), sum({row_hash_sql(table)}) FROM {table} WHERE block_number NOT BETWEEN %(a)s AND %(b)s",
            {"a": a, "b": b},
        )[0]
        out[table] = (int(n), int(h or 0))
    return out
