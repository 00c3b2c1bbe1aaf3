"""Derived tables the rebuild builds from the deduplicated staging tables, and the operator's own SQL steps.

Built in: net flows and balances per wallet and token, for both standards. Each is built under a `_next`
name and swapped in with EXCHANGE TABLES, so readers see the old table or the new one, never half of one.

Amounts follow EVM arithmetic: sums are modulo 2^256 and `balance` is `received - sent` read as a signed
256-bit number. The zero address shows minus what was minted to others plus what was burnt.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from backfill.store.client import Store

log = logging.getLogger("on_complete")


def _flows(src: str, keys: str) -> str:
    """Every transfer as two legs: what the receiver got and what the sender gave, per `keys`."""
    return (
        f"SELECT {keys}, to_address AS wallet, value AS received, toUInt256(0) AS sent, 1 AS n_in, 0 AS n_out, "
        f"block_number FROM {src} FINAL UNION ALL "
        f"SELECT {keys}, from_address, toUInt256(0), value, 0, 1, block_number FROM {src} FINAL"
    )


def _balances_sql(src: str, keys: str) -> str:
    return (
        f"INSERT INTO {{name}} SELECT {keys}, wallet, sum(received) - sum(sent), sum(received), sum(sent), "
        f"sum(n_in), sum(n_out), min(block_number), max(block_number) FROM ({_flows(src, keys)}) "
        f"GROUP BY {keys}, wallet"
    )


_BALANCE_COLUMNS = """
            wallet String,
            balance Int256,
            received UInt256,
            sent UInt256,
            transfers_in UInt64,
            transfers_out UInt64,
            first_block UInt64,
            last_block UInt64"""

# name -> (CREATE with {name}, INSERT with {name})
DERIVED: dict[str, tuple[str, str]] = {
    "erc20_balances": (
        "CREATE TABLE {name} (token_address String," + _BALANCE_COLUMNS + ") "
        "ENGINE = MergeTree ORDER BY (token_address, wallet)",
        _balances_sql("erc20_transfers_staging", "token_address"),
    ),
    "erc1155_balances": (
        "CREATE TABLE {name} (token_address String, token_id UInt256," + _BALANCE_COLUMNS + ") "
        "ENGINE = MergeTree ORDER BY (token_address, token_id, wallet)",
        _balances_sql("erc1155_transfers_staging", "token_address, token_id"),
    ),
}


class SqlStepFailed(Exception):
    pass


def table_exists(store: Store, name: str) -> bool:
    return bool(
        store.scalar(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = %(n)s", {"n": name}
        )
    )


def swap_in(store: Store, next_name: str, name: str) -> None:
    """Make `next_name` the table `name`, atomically when there is one already."""
    if table_exists(store, name):
        store.command(f"EXCHANGE TABLES {next_name} AND {name}", idempotent=False)
        store.command(f"DROP TABLE IF EXISTS {next_name}")
    else:
        store.command(f"RENAME TABLE {next_name} TO {name}", idempotent=False)


def build_derived(store: Store) -> dict[str, int]:
    """Build every built-in derived table; returns rows per table."""
    out = {}
    for name, (create, insert) in DERIVED.items():
        t0 = time.monotonic()
        next_name = f"{name}_next"
        store.command(f"DROP TABLE IF EXISTS {next_name}")
        store.command(create.format(name=next_name))
        store.command(insert.format(name=next_name))
        swap_in(store, next_name, name)
        out[name] = int(store.scalar(f"SELECT count() FROM {name}") or 0)
        log.info("step=derived table=%s rows=%d seconds=%.3f", name, out[name], time.monotonic() - t0)
    return out


def split_statements(text: str) -> list[str]:
    """Statements of an operator's .sql file: split on ';' outside quotes and comments; empty ones dropped."""
    out, buf, i, quote = [], [], 0, ""
    while i < len(text):
        ch = text[i]
        if quote:
            buf.append(ch)
            if ch == "\\" and i + 1 < len(text):
                buf.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in ("'", '"', "`"):
            quote = ch
            buf.append(ch)
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
            continue
        elif ch == ";":
            out.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
        i += 1
    out.append("".join(buf).strip())
    return [s for s in out if s]


def run_sql_steps(store: Store, folder: Path) -> list[dict[str, Any]]:
    """The operator's `*.sql` files of `folder`, in name order, statement by statement; the first error stops."""
    if not folder.is_dir():
        log.info("step=sql folder=%s event=skip reason=no_folder", folder.name)
        return []
    done = []
    for path in sorted(folder.glob("*.sql")):
        statements = split_statements(path.read_text())
        t0 = time.monotonic()
        for n, stmt in enumerate(statements, 1):
            try:
                store.command(stmt, idempotent=False)  # the operator's SQL: we cannot know
            except Exception as exc:
                first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                raise SqlStepFailed(f"{path.name} statement {n}/{len(statements)} failed: {first}") from None
        seconds = round(time.monotonic() - t0, 3)
        log.info("step=sql file=%s statements=%d seconds=%.3f", path.name, len(statements), seconds)
        done.append({"file": path.name, "statements": len(statements), "seconds": seconds})
    return done
