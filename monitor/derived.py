"""Derived tables the rebuild builds from the deduplicated staging tables, and the operator's own SQL steps.

Built in: net flows and balances per wallet and token, for both standards. Each is built under a `_next`
name and swapped in with EXCHANGE TABLES, so readers see the old table or the new one, never half of one.

Amounts follow EVM arithmetic: sums are modulo 2^256 and `balance` is `received - sent` read as a signed
256-bit number. The zero address shows minus what was minted to others plus what was burnt.

Incremental builds. A build covers the staging rows (after FINAL) up to `through_block`. Its record in
`backfill_meta` (key `derived.<table>`) holds W, the last block covered; the built table's UUID and row count;
the definition's hash; and a guard over the staging rows at or below W after FINAL: their count, and the max
and the sum of their `_version`, read before the build reads any row. When the table, the definition and the
guard are unchanged and W <= through_block, the next build is the old table merged with the aggregate of the
rows in (W, through_block] only (and, when there are none, the old table kept as it is: a rebuild run again
re-aggregates nothing); anything else is a full build.

The guard (`monitor/guard.py`, shared with the promotion) and why it is sound are described there. The UUID
(a swap or a re-creation changes it) and row count catch a derived table replaced, dropped or trimmed since, or
swapped in by a build that stopped before writing its record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backfill.store.client import Store
from backfill.store.cluster import table_ddl
from monitor.guard import Guard, read_guards

log = logging.getLogger("on_complete")

_BALANCE_COLUMNS = """
            wallet String,
            balance Int256,
            received UInt256,
            sent UInt256,
            transfers_in UInt64,
            transfers_out UInt64,
            first_block UInt64,
            last_block UInt64"""
_PARTS = "wallet, received, sent, transfers_in, transfers_out, first_block, last_block"


@dataclass(frozen=True)
class Derived:
    """A balances table: per `keys` and wallet, over the staging table `source`."""

    source: str
    keys: str
    create: str  # CREATE TABLE with {name}

    def insert_sql(self, name: str, base: str | None = None) -> str:
        """INSERT INTO `name` the balances of the rows of `source` between %(lo)s and %(hi)s (after FINAL),
        merged with the rows of the balances table `base` when given: sums and counts add, first and last
        block are the min and the max."""
        src, keys = self.source, self.keys
        rng = "WHERE block_number BETWEEN %(lo)s AND %(hi)s"
        # every transfer as two legs: what the receiver got and what the sender gave
        legs = (
            f"SELECT {keys}, to_address AS wallet, value AS received, toUInt256(0) AS sent, "
            f"toUInt64(1) AS transfers_in, toUInt64(0) AS transfers_out, block_number AS first_block, "
            f"block_number AS last_block FROM {src} FINAL {rng} UNION ALL "
            f"SELECT {keys}, from_address, toUInt256(0), value, toUInt64(0), toUInt64(1), block_number, "
            f"block_number FROM {src} FINAL {rng}"
        )
        rows = f"SELECT {keys}, {_PARTS} FROM {base} UNION ALL {legs}" if base else legs
        return (
            f"INSERT INTO {name} SELECT {keys}, wallet, sum(received) - sum(sent), sum(received), sum(sent), "
            f"sum(transfers_in), sum(transfers_out), min(first_block), max(last_block) FROM ({rows}) "
            f"GROUP BY {keys}, wallet"
        )

    def definition(self) -> str:
        """A hash of what the table holds and how it is computed: a change forces a full build."""
        text = "\n".join([self.create, self.insert_sql("{name}"), self.insert_sql("{name}", "{base}")])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


DERIVED: dict[str, Derived] = {
    "erc20_balances": Derived(
        "erc20_transfers_staging",
        "token_address",
        "CREATE TABLE {name} (token_address String," + _BALANCE_COLUMNS + ") "
        "ENGINE = MergeTree ORDER BY (token_address, wallet)",
    ),
    "erc1155_balances": Derived(
        "erc1155_transfers_staging",
        "token_address, token_id",
        "CREATE TABLE {name} (token_address String, token_id UInt256," + _BALANCE_COLUMNS + ") "
        "ENGINE = MergeTree ORDER BY (token_address, token_id, wallet)",
    ),
}


@dataclass(frozen=True)
class Built:
    """What a derived table was built from (its `backfill_meta` record)."""

    through_block: int
    uuid: str
    table_rows: int
    definition: str
    guard: Guard

    def to_json(self) -> str:
        return json.dumps(
            {
                "through_block": self.through_block,
                "uuid": self.uuid,
                "table_rows": self.table_rows,
                "definition": self.definition,
                "guard": self.guard.to_json(),
            }
        )

    @classmethod
    def parse(cls, text: str | None) -> "Built | None":
        """The record, or None when there is none or it cannot be read (then the build is a full one)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                int(data["through_block"]),
                str(data["uuid"]),
                int(data["table_rows"]),
                str(data["definition"]),
                Guard.from_json(data["guard"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


# The build's rows sorted and written in blocks of this many rows, not the engine's default million: sorting
# one block of a million wallet keys cost more than writing two parts and merging them later (a full build
# of the dense bench chain's ERC-20 balances, 788k rows: 1.18 s -> 0.68 s).
INSERT_SETTINGS = {"min_insert_block_size_rows": 400_000}


def meta_key(name: str) -> str:
    return f"derived.{name}"


def full_reason(
    built: Built | None,
    table: tuple[str, int] | None,
    definition: str,
    through_block: int,
    guard_now: Guard | None,
    incremental: bool,
) -> str:
    """Why the build must be a full one ('' when it may add only the new rows). `table`: the UUID and rows of
    the derived table now (None: missing); `guard_now`: the staging rows at or below `built.through_block`
    now (None: not read yet, not judged)."""
    if not incremental:
        return "asked"
    if built is None:
        return "first build"
    if table is None:
        return "table missing"
    if table != (built.uuid, built.table_rows):
        return "table replaced or changed since its build"
    if definition != built.definition:
        return "definition changed"
    if built.through_block > through_block:
        return f"built through block {built.through_block}, beyond through_block {through_block}"
    if guard_now is not None and guard_now != built.guard:
        return f"rows at or below block {built.through_block} changed"
    return ""


class SqlStepFailed(Exception):
    pass


def table_exists(store: Store, name: str) -> bool:
    return bool(
        store.scalar(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = %(n)s", {"n": name}
        )
    )


def table_state(store: Store, name: str) -> tuple[str, int] | None:
    """The table's UUID and rows, None when it does not exist. A swap or a re-creation gives a new UUID."""
    rows = store.query_rows(
        "SELECT toString(uuid) FROM system.tables WHERE database = currentDatabase() AND name = %(n)s", {"n": name}
    )
    if not rows:
        return None
    return str(rows[0][0]), int(store.scalar(f"SELECT count() FROM {name}") or 0)


def swap_in(store: Store, next_name: str, name: str) -> None:
    """Make `next_name` the table `name`, atomically when there is one already."""
    if table_exists(store, name):
        store.command(f"EXCHANGE TABLES {next_name} AND {name}{store.on_cluster}", idempotent=False)
        store.command(f"DROP TABLE IF EXISTS {next_name}{store.on_cluster}")
    else:
        store.command(f"RENAME TABLE {next_name} TO {name}{store.on_cluster}", idempotent=False)


def newest_block(store: Store, tables: list[str]) -> int:
    """The highest block number stored in `tables` (0 when they are empty)."""
    return max(int(store.scalar(f"SELECT max(block_number) FROM {t}") or 0) for t in tables)


def next_table(name: str) -> str:
    """Where a derived table is built before it is swapped in."""
    return f"{name}_next"


def drop_next(store: Store, name: str) -> None:
    store.command(f"DROP TABLE IF EXISTS {next_table(name)}{store.on_cluster}")


@dataclass(frozen=True)
class Pending:
    """A derived table built under its `_next` name, not swapped in yet (prepare_derived -> commit_derived)."""

    name: str
    through: int
    definition: str
    guard: Guard
    reason: str  # why the build is a full one, '' for an incremental one
    from_block: int
    new_rows: int
    seconds: float
    kept: bool = False  # no staging row after the last build's block: the table stays as it is, not rebuilt

    @property
    def next_name(self) -> str:
        return next_table(self.name)


def build_derived(store: Store, through_block: int | None = None, incremental: bool = True) -> dict[str, Any]:
    """Build every built-in derived table over the staging rows up to `through_block` (None: all of them), from
    the new rows only when the table's record allows it (see the module doc), and swap them in. Returns per
    table its rows, the mode ('incremental from block N' or 'full: reason'), the staging rows read and the
    block range."""
    return commit_derived(store, prepare_derived(store, through_block, incremental))


def prepare_derived(store: Store, through_block: int | None = None, incremental: bool = True) -> list[Pending]:
    """Every built-in derived table built under its `_next` name, nothing swapped in: the rebuild builds them
    while its audit runs and swaps them in (commit_derived) only once the audit and the gates have passed."""
    return [_prepare_one(store, name, spec, through_block, incremental) for name, spec in DERIVED.items()]


def _prepare_one(store: Store, name: str, spec: Derived, through_block: int | None, incremental: bool) -> Pending:
    t0 = time.monotonic()
    built = Built.parse(store.meta_get(meta_key(name)))
    if through_block is not None:
        through = through_block
    else:  # every row: any bound at or above the newest one reads the same rows, so keep the last build's
        through = max(newest_block(store, [spec.source]), built.through_block if built is not None else 0)
    definition = spec.definition()
    state = table_state(store, name)
    reason = full_reason(built, state, definition, through, None, incremental)
    w = built.through_block if built is not None and not reason else through
    guard_w, guard_t = read_guards(store, spec.source, w, through)  # before any row is read: see the module doc
    if not reason:
        reason = full_reason(built, state, definition, through, guard_w, incremental)
    from_block = 0 if reason else w + 1
    drop_next(store, name)
    if not reason and guard_t.rows == guard_w.rows:  # no row in (W, through]: the build would add nothing
        return Pending(name, through, definition, guard_t, "", from_block, 0, time.monotonic() - t0, kept=True)
    next_name = next_table(name)
    store.command(table_ddl(spec.create.format(name=next_name), store.cluster))
    store.command(
        spec.insert_sql(next_name, base=None if reason else name),
        {"lo": from_block, "hi": through},
        settings=INSERT_SETTINGS,
    )
    new_rows = guard_t.rows - (0 if reason else guard_w.rows)
    return Pending(name, through, definition, guard_t, reason, from_block, new_rows, time.monotonic() - t0)


def commit_derived(store: Store, pending: list[Pending]) -> dict[str, Any]:
    """Swap the built tables in and write their records; the report of build_derived."""
    out: dict[str, Any] = {}
    for p in pending:
        t0 = time.monotonic()
        if not p.kept:
            swap_in(store, p.next_name, p.name)
        state = table_state(store, p.name)
        assert state is not None, p.name
        store.meta_set(meta_key(p.name), Built(p.through, state[0], state[1], p.definition, p.guard).to_json())
        mode = (
            f"full: {p.reason}"
            if p.reason
            else f"unchanged: no new rows from block {p.from_block}"
            if p.kept
            else f"incremental from block {p.from_block}"
        )
        seconds = p.seconds + time.monotonic() - t0
        out[p.name] = {
            "rows": state[1],
            "mode": mode,
            "new_rows": p.new_rows,
            "from_block": p.from_block,
            "to_block": p.through,
            "seconds": round(seconds, 3),
        }
        log.info(
            'step=derived table=%s mode="%s" rows=%d new_rows=%d blocks=%d-%d seconds=%.3f',
            p.name,
            mode,
            state[1],
            p.new_rows,
            p.from_block,
            p.through,
            seconds,
        )
    return out


def discard_derived(store: Store) -> None:
    """Drop the `_next` tables of a build that will not be swapped in (the audit or the gates failed)."""
    for name in DERIVED:
        drop_next(store, name)


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


# The range parameters an operator's statement may use; ClickHouse binds them (`{from_block:UInt64}`).
RANGE_PARAMETER = re.compile(r"\{(from_block|to_block):[^{}]+\}")


def range_parameters(stmt: str, from_block: int, to_block: int | None, newest: Any) -> dict[str, int] | None:
    """The values of the range parameters `stmt` uses, None when it uses none. Only a statement that names
    one gets parameters: given any, the driver binds a statement without `{name:Type}` client-side, as
    Python %-formatting, which would break on a literal '%'. `newest()`: the block a missing `to_block` means."""
    names = set(RANGE_PARAMETER.findall(stmt))
    if not names:
        return None
    values = {"from_block": from_block, "to_block": to_block if to_block is not None else int(newest())}
    return {n: values[n] for n in sorted(names)}


def run_sql_steps(store: Store, folder: Path, from_block: int = 0, to_block: int | None = None) -> list[dict[str, Any]]:
    """The operator's `*.sql` files of `folder`, in name order, statement by statement; the first error stops.
    A statement may use `{from_block:UInt64}` and `{to_block:UInt64}`: the blocks of the rows the derived
    tables just added (from_block 0 after a full build; to_block None: the newest stored block)."""
    if not folder.is_dir():
        log.info("step=sql folder=%s event=skip reason=no_folder", folder.name)
        return []
    newest: list[int] = []

    def newest_stored() -> int:
        if not newest:
            newest.append(newest_block(store, [spec.source for spec in DERIVED.values()]))
        return newest[0]

    done = []
    for path in sorted(folder.glob("*.sql")):
        statements = split_statements(path.read_text())
        t0 = time.monotonic()
        for n, stmt in enumerate(statements, 1):
            try:
                parameters = range_parameters(stmt, from_block, to_block, newest_stored)
                store.command(stmt, parameters, idempotent=False)  # the operator's SQL: we cannot know
            except Exception as exc:
                first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                raise SqlStepFailed(f"{path.name} statement {n}/{len(statements)} failed: {first}") from None
        seconds = round(time.monotonic() - t0, 3)
        log.info("step=sql file=%s statements=%d seconds=%.3f", path.name, len(statements), seconds)
        done.append({"file": path.name, "statements": len(statements), "seconds": seconds})
    return done
