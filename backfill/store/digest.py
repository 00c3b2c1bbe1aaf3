"""Content hashes of a day's rows, computed the same way in SQL (the store) and in Python (a recount from RPC).

A row's canonical text is its fields joined by '|' (numbers in decimal, the timestamp as Unix seconds); its
hash is the first 8 bytes of the MD5 of that text, read little-endian; a day's hash is the exact sum of its
rows' hashes (order-free, and a duplicated row changes it), printed as 32 hex digits. Two days with the same
count and hash hold the same rows.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

# The fields of each table in canonical order, as SQL expressions.
CANON_FIELDS: dict[str, list[str]] = {
    "erc20_transfers_staging": [
        "toString(block_number)",
        "toString(log_index)",
        "tx_hash",
        "token_address",
        "from_address",
        "to_address",
        "toString(value)",
        "toString(toUnixTimestamp(block_timestamp))",
    ],
    "erc1155_transfers_staging": [
        "toString(block_number)",
        "toString(log_index)",
        "toString(batch_index)",
        "tx_hash",
        "token_address",
        "operator",
        "from_address",
        "to_address",
        "toString(token_id)",
        "toString(value)",
        "toString(toUnixTimestamp(block_timestamp))",
    ],
}
STAGING_TABLES = list(CANON_FIELDS)
KEYS = {"erc20_transfers_staging": "tx_hash, log_index", "erc1155_transfers_staging": "tx_hash, log_index, batch_index"}
# ReplacingMergeTree collapses rows by the sorting key (schema.py), not by the runbook's (tx_hash, log_index).
SORT_KEYS = {
    "erc20_transfers_staging": "block_number, log_index",
    "erc1155_transfers_staging": "block_number, log_index, batch_index",
}


def newest_version_variants_sql(table: str, where: str = "") -> str:
    """Subquery: per sorting key with more than one row at its newest _version, `block_number`, those rows `n`
    and their distinct contents `d`. d > 1: dedup would keep one at random; d = 1: harmless exact copies."""
    sort_key = SORT_KEYS[table]
    return (
        f"(SELECT block_number, argMax(n, v) AS n, argMax(d, v) AS d FROM "
        f"(SELECT {sort_key}, _version AS v, count() AS n, uniqExact({row_hash_sql(table)}) AS d "
        f"FROM {table} {where} GROUP BY {sort_key}, _version) GROUP BY {sort_key} HAVING n > 1)"
    )


def key_counts_sql(table: str, where: str = "") -> str:
    """SELECT of a staging table's raw rows (no FINAL), their distinct runbook keys and their distinct sorting
    keys. Rows = keys = sorting keys: no key is held twice, so FINAL (which keeps a subset of the rows) shows
    none twice either, and nothing needs merging. Keys are counted by their 64-bit hashes: a collision can only
    make a key look repeated, which sends the table to the full check, never hide one."""
    return (
        f"SELECT count(), uniqExact(cityHash64({KEYS[table]})), uniqExact(cityHash64({SORT_KEYS[table]})) "
        f"FROM {table}{f' WHERE {where}' if where else ''}"
    )


def row_hash_sql(table: str) -> str:
    """SQL expression: the row's hash as UInt128 (so sums never wrap)."""
    parts = ", '|', ".join(CANON_FIELDS[table])
    return f"toUInt128(reinterpretAsUInt64(MD5(concat({parts}))))"


def day_of_block_join(source: str, columns: str = "*") -> str:
    """`source` (a subquery or table with block_number) with the planned day of each block as `day_idx`.

    An ASOF join on the days' start blocks: rows outside every planned day are dropped."""
    return (
        f"(SELECT r.*, d.day_idx AS day_idx FROM (SELECT {columns}, 0 AS _z FROM {source}) AS r "
        f"ASOF JOIN (SELECT day_idx, start_block, end_block, 0 AS _z FROM backfill_days FINAL) AS d "
        f"ON r._z = d._z AND r.block_number >= d.start_block WHERE r.block_number <= d.end_block)"
    )


def per_day_digest_sql(table: str, final: bool = True, in_range: bool = False) -> str:
    """day_idx, rows, hash (UInt128 sum) of every planned day with rows in `table`; with in_range, only rows
    between %(a)s and %(b)s (block numbers) are read."""
    src = f"{table} FINAL" if final else table
    if in_range:
        src += " WHERE block_number BETWEEN %(a)s AND %(b)s"
    return (
        f"SELECT day_idx, count() AS n, sum(h) AS h FROM "
        f"{day_of_block_join(src, f'block_number, {row_hash_sql(table)} AS h')} GROUP BY day_idx"
    )


def range_digest_sql(table: str, final: bool = True) -> str:
    """rows, hash of `table` between %(a)s and %(b)s (block numbers, inclusive)."""
    return (
        f"SELECT count(), sum({row_hash_sql(table)}) FROM {table}{' FINAL' if final else ''} "
        f"WHERE block_number BETWEEN %(a)s AND %(b)s"
    )


def fmt_hash(value: int | None) -> str:
    return f"{int(value or 0):032x}"


def _h(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "little")


def erc20_row_text(row: tuple) -> str:
    """row = (block_number, unix_ts, tx_hash, log_index, token, from, to, value), the ground truth's shape."""
    bn, ts, tx, li, token, frm, to, value = row
    return f"{bn}|{li}|{tx}|{token}|{frm}|{to}|{value}|{ts}"


def erc1155_row_text(row: tuple) -> str:
    """row = (block_number, unix_ts, tx_hash, log_index, batch_index, token, operator, from, to, id, value)."""
    bn, ts, tx, li, bi, token, op, frm, to, token_id, value = row
    return f"{bn}|{li}|{bi}|{tx}|{token}|{op}|{frm}|{to}|{token_id}|{value}|{ts}"


def digest_rows(rows: Iterable[tuple], standard: str) -> tuple[int, int]:
    """(count, hash) of rows in the ground-truth shape of `standard` ('erc20' or 'erc1155')."""
    text = erc20_row_text if standard == "erc20" else erc1155_row_text
    n = total = 0
    for row in rows:
        n += 1
        total += _h(text(row))
    return n, total
