"""Promotion of staging into production, with layers to fall back on: verified dated backups, the previous
production kept as `<prod>_old`, an atomic swap and a verified rollback (see docs/promotion.md).

Every step is verified by row count and an order-free checksum over all columns, recorded in
`backfill_promotions` and logged key=value to `<log_dir>/promote.log`; the first failure stops the run.

Production holds the staging rows after FINAL up to `through_block` (the last block of the final days).
Per table, `<prod>_next` is built one of two ways, then verified and swapped in the same way:
- append: when the newest record of production is a promotion that ended ok through block W, production
  still has the rows and checksum it recorded, and the staging rows at or below W are unchanged since (the
  guard of `monitor/guard.py`, recorded with it), `<prod>_next` is a CLONE of production (hard links: no copy)
  plus the staging rows in (W, through_block] only;
- full: anything else (the first promotion, a rollback or a failure since, production changed by hand, a redo
  or DELETE at or below W, through_block below W): a copy of staging FINAL up to through_block.
The dated backups are CLONEs too, verified by rows and checksum. They share the parts' files with production
(parts are immutable, a mutation writes new ones): they guard against a bad promotion or a change by hand,
not against a damaged disk.

Crash safety: production is only ever replaced by the atomic swap of a `_next` already verified against
staging; a stop before it leaves production as it was (the next run drops the half-built `_next`). Just
before the swap a `status=started` record names the backup taken, so a stop between the swap and the final
record leaves `backfill rollback` able to put that backup back, and makes the next promotion a full one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import logging
import logging.handlers
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError

from backfill.ctrl_c import finished_first
from backfill.errors import CommandFailed, ConfigError
from backfill.files import locks
from backfill.files.oplog import operation_log
from backfill.settings import Settings
from backfill.store import schema
from backfill.store.client import Store, now_utc
from backfill.store.cluster import clone_statements
from monitor.guard import Guard, read_guards

# A child of the rebuild's logger: lines reach on-complete.log when the rebuild promotes, promote.log always.
log = logging.getLogger("on_complete.promote")

UTC = dt.UTC
PRODUCTION: dict[str, str] = {
    "erc20_transfers_staging": "erc20_transfers",
    "erc1155_transfers_staging": "erc1155_transfers",
}
# INSERT … SELECT of a multi-year table touches more monthly partitions than the default limit of 100.
COPY_SETTINGS = {"max_partitions_per_insert_block": 0}


class PromotionFailed(CommandFailed):
    """A promotion or rollback stopped; the message says what was left as it was."""


class NothingToRollBack(PromotionFailed):
    """No previous production to restore."""


# -- pure: names, ages, choices ------------------------------------------------------------------------

_BACKUP_RE = re.compile(r"^(?P<prod>.+)_backup_(?P<stamp>\d{8}T\d{6}_\d{6})Z$")
_AGE_RE = re.compile(r"^(?P<n>\d+)(?P<unit>[smhdw])$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def backup_name(production: str, at: dt.datetime) -> str:
    """`<prod>_backup_<UTC YYYYMMDDTHHMMSS_ffffffZ>`: sorts by time, and one per microsecond."""
    return f"{production}_backup_{at.astimezone(UTC).strftime('%Y%m%dT%H%M%S_%f')}Z"


def parse_backup_name(name: str) -> tuple[str, dt.datetime] | None:
    """(production, created) of a backup table's name; None for any other name."""
    m = _BACKUP_RE.match(name)
    if not m:
        return None
    return m["prod"], dt.datetime.strptime(m["stamp"], "%Y%m%dT%H%M%S_%f").replace(tzinfo=UTC)


def backup_stamp(at: dt.datetime, productions: list[str], existing: set[str]) -> dt.datetime:
    """The first instant from `at` at which no production's backup name is taken (two promotions within
    one microsecond, or a clock that stepped back, still get distinct names)."""
    while any(backup_name(p, at) in existing for p in productions):
        at += dt.timedelta(microseconds=1)
    return at


@dataclass(frozen=True)
class Backup:
    table: str
    production: str
    created: dt.datetime
    rows: int | None  # recorded when verified; else the engine's count
    checksum: str | None  # None: not verified (no record)
    verified: bool


def parse_age(text: str) -> dt.timedelta:
    """'30d', '12h', '90m', '45s', '2w' -> timedelta. Raises ConfigError on anything else."""
    m = _AGE_RE.match(text.strip().lower())
    if not m:
        raise ConfigError(f"--older-than {text!r} is not an age; use a whole number and a unit: 30d, 12h, 90m, 45s, 2w")
    return dt.timedelta(**{_AGE_UNITS[m["unit"]]: int(m["n"])})


def choose_prune(backups: list[Backup], older_than: dt.timedelta, now: dt.datetime) -> list[Backup]:
    """Backups at least `older_than` old (so 0d chooses every backup), oldest first."""
    return sorted((b for b in backups if now - b.created >= older_than), key=lambda b: b.created)


def exchange_refused(message: str) -> bool:
    """True when the engine refuses EXCHANGE TABLES (databases that are not Atomic, old servers)."""
    text = message.upper()
    return "NOT_IMPLEMENTED" in text or "ONLY IN ATOMIC" in text or ("EXCHANGE" in text and "SYNTAX" in text)


def clone_refused(message: str) -> bool:
    """True when the engine refuses CREATE … CLONE AS (a Replicated database: ClickHouse Cloud's)."""
    text = message.upper()
    return "CLONE AS" in text and ("SUPPORT_IS_DISABLED" in text or "NOT SUPPORTED" in text)


@dataclass(frozen=True)
class RollbackPlan:
    kind: str  # "exchange" (swap with _old), "restore" (copy the backup in), "nothing", "impossible"
    reason: str = ""


def plan_rollback(
    last_action: str | None,
    backup: str,
    expected: tuple[int, str] | None,
    old: tuple[int, str] | None,
    backup_exists: bool,
) -> RollbackPlan:
    """How to put back the production that the last promotion replaced.

    last_action: the newest successful 'promote' / 'rollback' recorded for the table (None: never promoted);
    backup: the backup that promotion took ('' when there was no production before it); expected: that
    backup's recorded (rows, checksum); old: (rows, checksum) of `<prod>_old` now, None if it does not exist."""
    if last_action is None:
        return RollbackPlan("nothing", "never promoted")
    if last_action == "rollback":
        return RollbackPlan("nothing", "already rolled back; promote again to re-apply staging")
    if not backup:
        return RollbackPlan("nothing", "the last promotion was the first: there was no production before it")
    if expected is None:
        return RollbackPlan("impossible", f"no verified record of backup {backup}")
    if old == expected:
        return RollbackPlan("exchange")
    if backup_exists:
        return RollbackPlan("restore", "_old missing" if old is None else "_old differs from the backup")
    return RollbackPlan(
        "impossible", f"{backup} was pruned and the _old table {'is missing' if old is None else 'differs from it'}"
    )


_DETAIL_RE = re.compile(r'(\w+)=("[^"]*"|\S+)')


def parse_detail(detail: str) -> dict[str, str]:
    """The key=value fields of a record's detail (quotes removed); the first word is `status=…`."""
    return {k: v.strip('"') for k, v in _DETAIL_RE.findall(detail)}


def guard_text(guard: Guard | None) -> str:
    return "-" if guard is None else f"{guard.rows}:{guard.max_version}:{guard.version_sum}"


def parse_guard(text: str) -> Guard | None:
    try:
        rows, max_version, version_sum = (int(v) for v in text.split(":"))
    except ValueError:
        return None
    return Guard(rows, max_version, version_sum)


@dataclass(frozen=True)
class Promoted:
    """The newest promote or rollback record of a production table: what production was last made of."""

    action: str
    status: str
    rows: int
    checksum: str
    through_block: int | None  # None: not recorded (a rollback, a promotion from before appends)
    guard: Guard | None  # the staging rows at or below through_block then; None: not recorded or not stable

    @classmethod
    def parse(cls, action: str, rows: int, checksum: str, detail: str) -> "Promoted":
        fields = parse_detail(detail)
        through = fields.get("through_block", "")
        return cls(
            action,
            fields.get("status", ""),
            int(rows),
            checksum,
            int(through) if through.isdigit() else None,
            parse_guard(fields.get("guard", "-")),
        )


def append_reason(
    last: Promoted | None, production: tuple[int, str] | None, through_block: int, guard_now: Guard | None
) -> str:
    """Why `<prod>_next` must be a full copy of staging ('' when production plus the new rows will do).
    production: its (rows, checksum) now (None: missing); guard_now: the staging rows at or below
    `last.through_block` now (None: not read yet, not judged)."""
    if production is None:
        return "no production yet"
    if last is None:
        return "no promotion recorded"
    if last.action != "promote":
        return f"last action on production was a {last.action}"
    if last.status != Outcome.OK.value:
        return f"the last promotion ended {last.status or 'unrecorded'}"
    if last.through_block is None or last.guard is None:
        return "the last promotion recorded no guard"
    if production != (last.rows, last.checksum):
        return "production changed since the last promotion"
    if last.through_block > through_block:
        return f"promoted through block {last.through_block}, beyond through_block {through_block}"
    if guard_now is not None and guard_now != last.guard:
        return f"staging rows at or below block {last.through_block} changed"
    return ""


# -- records -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableResult:
    production: str
    source: str  # staging table (promote), _old or a backup (rollback)
    rows: int
    checksum: str
    method: str  # "exchange", "rename", "first" (promote); "exchange", "restore" (rollback)
    backup: str = ""  # the verified copy of the production this replaced ('' when there was none)
    mode: str = ""  # promote: "append" (the new rows only) or "full"
    reason: str = ""  # why full
    from_block: int = 0  # promote: the first block of the rows written (0: full)
    through_block: int = 0  # promote: the last block production holds
    inserted: int = 0  # promote: rows written into the production-to-be


@dataclass
class PromotionReport:
    action: str  # "promote" or "rollback"
    at: dt.datetime
    tables: list[TableResult] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"{self.action} table={t.production} source={t.source} method={t.method} rows={t.rows} "
            f"checksum={t.checksum}"
            + (f" backup={t.backup}" if t.backup else "")
            + (f" {mode_text(t)}" if t.mode else "")
            for t in self.tables
        ]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the rebuild puts it in its snapshot)."""
        return {
            "action": self.action,
            "at": self.at.isoformat(),
            "seconds": round(self.seconds, 3),
            "tables": [asdict(t) for t in self.tables],
        }


def mode_text(t: TableResult) -> str:
    """`mode=append from_block=N through_block=T inserted=K` or `mode=full reason="…" through_block=T …`."""
    how = f"from_block={t.from_block}" if t.mode == "append" else f'reason="{t.reason}"'
    return f"mode={t.mode} {how} through_block={t.through_block} inserted={t.inserted}"


class Outcome(str, enum.Enum):
    """How a recorded action ended: the first word of its `detail` in `backfill_promotions` (`status=ok …`),
    written by `record` and read back by `outcome_is`, the table's one reader of it."""

    OK = "ok"
    STARTED = "started"  # a swap about to run: see the module doc
    FAILED = "failed"
    UNVERIFIED = "unverified"


def outcome_is(outcome: Outcome) -> str:
    """SQL: the promotion-log rows whose action ended so."""
    return f"startsWith(detail, 'status={outcome.value}')"


def record(
    store: Store, action: str, table: str, other: str, rows: int, checksum: str, outcome: Outcome, detail: str
) -> None:
    detail = f"status={outcome.value} {detail}"
    store.insert(
        "backfill_promotions", [(now_utc(), action, table, other, rows, checksum, detail)], schema.PROMOTION_COLUMNS
    )
    log.info(
        "event=recorded action=%s table=%s other=%s rows=%d checksum=%s %s",
        action,
        table or "-",
        other or "-",
        rows,
        checksum or "-",
        detail,
    )


# -- store helpers -------------------------------------------------------------------------------------


def _tables(store: Store) -> set[str]:
    return {r[0] for r in store.query_rows("SELECT name FROM system.tables WHERE database = currentDatabase()")}


def checksum(store: Store, table: str, final: bool = False, through_block: int | None = None) -> tuple[int, str]:
    """(rows, checksum) of the table's rows (up to `through_block` when given): the checksum is the sum of every
    row's cityHash64 over all columns, so it ignores order, changes with any value or _version, and a
    duplicated row changes it."""
    cols = [
        r[0]
        for r in store.query_rows(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = %(t)s ORDER BY position",
            {"t": table},
        )
    ]
    if not cols:
        raise PromotionFailed(f"table {table} does not exist")
    n, h = store.query_rows(
        f"SELECT count(), sum(toUInt128(cityHash64({', '.join(f'`{c}`' for c in cols)}))) "
        f"FROM `{table}`{' FINAL' if final else ''}{_upto(through_block)}"
    )[0]
    return int(n), f"{int(h or 0):032x}"


def _upto(through_block: int | None) -> str:
    return "" if through_block is None else f" WHERE block_number <= {int(through_block)}"


def _command(store: Store, sql: str, **settings: Any) -> None:
    log.info("event=sql statement=%r", sql)
    # EXCHANGE and RENAME swap back when run twice, and ATTACH PARTITION FROM (a clone on a cluster) would attach
    # the parts twice: after an outage of unknown outcome they are not re-sent
    store.command(sql, settings=settings or None, idempotent=not sql.startswith(("EXCHANGE", "RENAME", "ALTER")))


def _verified(dest: str, source: str, got: tuple[int, str], expected: tuple[int, str], what: str) -> tuple[int, str]:
    if got != expected:
        raise PromotionFailed(
            f"{dest} does not equal {what}: rows {got[0]} vs {expected[0]}, checksum {got[1]} vs {expected[1]}"
        )
    log.info("event=verified table=%s source=%s what=%r rows=%d checksum=%s", dest, source, what, *got)
    return got


def _copy(
    store: Store, source: str, dest: str, *, like: str, final: bool, through_block: int | None = None
) -> tuple[int, str]:
    """Create `dest` with the structure and engine of `like`, copy `source` into it (its rows up to
    `through_block` when given), and verify that it holds the same rows as `source` (after FINAL when
    `final`). Returns (rows, checksum)."""
    expected = checksum(store, source, final, through_block)
    _command(store, f"DROP TABLE IF EXISTS `{dest}`{store.on_cluster} SYNC")
    _command(store, f"CREATE TABLE `{dest}`{store.on_cluster} AS `{like}`")
    _command(
        store,
        f"INSERT INTO `{dest}` SELECT * FROM `{source}`{' FINAL' if final else ''}{_upto(through_block)}",
        **COPY_SETTINGS,
    )
    what = f"{source}{' FINAL' if final else ''}{'' if through_block is None else f' <= block {through_block}'}"
    return _verified(dest, source, checksum(store, dest), expected, what)


def _clone(store: Store, source: str, dest: str, expected: tuple[int, str]) -> tuple[int, str]:
    """`dest` as a CLONE of `source` (its parts hard-linked: no data copied), verified to hold `expected`."""
    _command(store, f"DROP TABLE IF EXISTS `{dest}`{store.on_cluster} SYNC")
    try:
        for sql in clone_statements(source, dest, store.cluster):
            _command(store, sql)
    except ClickHouseError as exc:
        if not clone_refused(str(exc)):
            raise
        log.warning("event=clone_refused table=%s source=%s action=create_and_attach_partitions", dest, source)
        _command(store, f"DROP TABLE IF EXISTS `{dest}`{store.on_cluster} SYNC")
        for sql in clone_statements(source, dest, store.cluster, attach=True):
            _command(store, sql)
    return _verified(dest, source, checksum(store, dest), expected, f"{source} as recorded")


def _append(store: Store, staging: str, prod: str, plan: TablePlan) -> tuple[int, str]:
    """`<prod>_next`: a CLONE of production plus the staging FINAL rows in [from_block, through_block],
    verified to equal staging FINAL up to through_block (read before the rows are written)."""
    assert plan.production is not None
    expected = checksum(store, staging, True, plan.through_block)
    dest = f"{prod}_next"
    _clone(store, prod, dest, plan.production)
    _command(
        store,
        f"INSERT INTO `{dest}` SELECT * FROM `{staging}` FINAL "
        f"WHERE block_number BETWEEN {plan.from_block} AND {plan.through_block}",
        **COPY_SETTINGS,
    )
    what = f"{staging} FINAL <= block {plan.through_block} (production + blocks {plan.from_block}-{plan.through_block})"
    return _verified(dest, staging, checksum(store, dest), expected, what)


def _try_exchange(store: Store, a: str, b: str) -> bool:
    """EXCHANGE TABLES a AND b (atomic); False when the engine refuses EXCHANGE (databases that are not Atomic)."""
    try:
        _command(store, f"EXCHANGE TABLES `{a}` AND `{b}`{store.on_cluster}")
        return True
    except ClickHouseError as exc:
        if not exchange_refused(str(exc)):
            raise
        log.warning("event=exchange_refused tables=%s,%s action=sequential_rename", a, b)
        return False


def _exchange(store: Store, a: str, b: str) -> str:
    """Swap two tables' names: EXCHANGE where the engine allows it, else three RENAMEs."""
    if _try_exchange(store, a, b):
        return "exchange"
    tmp = f"{a}_swap_tmp"
    _command(store, f"RENAME TABLE `{a}` TO `{tmp}`, `{b}` TO `{a}`, `{tmp}` TO `{b}`{store.on_cluster}")
    return "rename"


def _swap_in(store: Store, prod: str, nxt: str, prod_exists: bool) -> str:
    """`nxt` becomes `prod`; the replaced production becomes `<prod>_old` (a previous _old is dropped)."""
    if not prod_exists:
        _command(store, f"RENAME TABLE `{nxt}` TO `{prod}`{store.on_cluster}")
        return "first"
    if _try_exchange(store, nxt, prod):  # now nxt holds the replaced production
        _command(store, f"DROP TABLE IF EXISTS `{prod}_old`{store.on_cluster} SYNC")
        _command(store, f"RENAME TABLE `{nxt}` TO `{prod}_old`{store.on_cluster}")
        return "exchange"
    _command(store, f"DROP TABLE IF EXISTS `{prod}_old`{store.on_cluster} SYNC")
    _command(store, f"RENAME TABLE `{prod}` TO `{prod}_old`, `{nxt}` TO `{prod}`{store.on_cluster}")
    return "rename"


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^Received ClickHouse exception, code: \d+, server response: ", "", text)
    return re.sub(r"\s*\(for url [^)]*\)", "", text)[:300]


@contextlib.contextmanager
def promotion_log(settings: Settings) -> Iterator[None]:
    """Log this module's lines to `<log_dir>/promote.log` for the duration."""
    with operation_log(settings.log_dir / "promote.log", log):
        yield


@contextlib.contextmanager
def exclusive(settings: Settings) -> Iterator[None]:
    """One promotion, rollback or prune at a time per data directory."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    path = settings.log_dir / "promote.lock"
    fd = locks.acquire(path)
    if fd is None:
        raise PromotionFailed(f"another promotion, rollback or prune is running (lock {path})")
    try:
        yield
    finally:
        os.close(fd)


# -- promote -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TablePlan:
    """How one production table is promoted: append (reason '') or full, and the guard to record."""

    through_block: int
    from_block: int  # append: the first block written; 0 when full
    reason: str  # why full; '' for append
    production: tuple[int, str] | None  # production's (rows, checksum) now; None: missing
    guard: Guard  # the staging rows at or below through_block, read before any row is

    @property
    def mode(self) -> str:
        return "full" if self.reason else "append"


def _last_promotions(store: Store) -> dict[str, Promoted]:
    """production -> its newest promote or rollback record, whatever it ended."""
    rows = store.query_rows(
        "SELECT table_name, argMax(action, at), argMax(rows, at), argMax(checksum, at), argMax(detail, at) "
        "FROM backfill_promotions WHERE action IN ('promote', 'rollback') AND table_name IN %(t)s GROUP BY table_name",
        {"t": list(PRODUCTION.values())},
    )
    return {r[0]: Promoted.parse(r[1], int(r[2]), str(r[3]), str(r[4])) for r in rows}


def _plan_table(
    store: Store, staging: str, prod: str, existing: set[str], last: Promoted | None, through_block: int | None
) -> TablePlan:
    """Append or full for one table (see the module doc); the guard is read before any row is."""
    if through_block is not None:
        through = through_block
    else:  # every row: any bound at or above the newest one reads the same rows, so keep the last one's
        newest = int(store.scalar(f"SELECT max(block_number) FROM `{staging}`") or 0)
        through = max(newest, last.through_block or 0) if last is not None else newest
    production = checksum(store, prod) if prod in existing else None
    reason = append_reason(last, production, through, None)
    w = last.through_block if last is not None and last.through_block is not None and not reason else through
    guard_w, guard_t = read_guards(store, staging, w, through)
    if not reason:
        reason = append_reason(last, production, through, guard_w)
    plan = TablePlan(through, 0 if reason else w + 1, reason, production, guard_t)
    if reason:
        log.info('event=mode table=%s mode=full reason="%s" through_block=%d', prod, reason, through)
    else:
        log.info("event=mode table=%s mode=append from_block=%d through_block=%d", prod, plan.from_block, through)
    return plan


def promote(store: Store, settings: Settings, through_block: int | None = None) -> PromotionReport:
    """Back up production, build `<prod>_next` (production plus the new rows, or a full copy of staging FINAL)
    up to `through_block` (None: every row), verify, swap, verify. Raises PromotionFailed at the first failure;
    before the swap production is left as it was."""
    with promotion_log(settings), exclusive(settings):
        report = PromotionReport("promote", now_utc())
        t0 = time.monotonic()
        existing = _tables(store)
        for staging in PRODUCTION:
            if staging not in existing:
                raise PromotionFailed(f"staging table {staging} does not exist; nothing to promote")
        if not store.scalar("SELECT " + " + ".join(f"(SELECT count() FROM `{t}`)" for t in PRODUCTION)):
            raise PromotionFailed("the staging tables are empty; nothing to promote, production untouched")
        at = backup_stamp(report.at, list(PRODUCTION.values()), existing)
        log.info(
            "event=promote_start at=%s tables=%s through_block=%s",
            report.at.isoformat(),
            ",".join(PRODUCTION.values()),
            "-" if through_block is None else through_block,
        )
        lasts = _last_promotions(store)
        plans = {
            prod: _plan_table(store, staging, prod, existing, lasts.get(prod), through_block)
            for staging, prod in PRODUCTION.items()
        }
        if not sum(p.guard.rows for p in plans.values()):
            raise PromotionFailed(
                f"the staging tables hold no rows at or below block {through_block}; nothing to promote, "
                "production untouched"
            )
        backups, nexts = _backups_and_nexts(store, plans, at)
        _swap_and_verify(store, report, existing, backups, nexts, plans)
        report.seconds = time.monotonic() - t0
        log.info(
            "event=promote_done seconds=%.3f %s",
            report.seconds,
            " ".join(f"{t.production}={t.rows}" for t in report.tables),
        )
        return report


def _backups_and_nexts(
    store: Store, plans: dict[str, TablePlan], at: dt.datetime
) -> tuple[dict[str, tuple[str, int, str]], dict[str, tuple[int, str]]]:
    """a) verified dated backups of the production there is, b) every `<prod>_next`: production plus the new
    rows, or a full copy. On a failure every `_next` is dropped and PromotionFailed says production is untouched."""
    step, table = "backup", ""
    backups: dict[str, tuple[str, int, str]] = {}
    nexts: dict[str, tuple[int, str]] = {}
    try:
        for prod, plan in plans.items():  # a) verified dated backups of the production there is
            if plan.production is not None:
                table, name = prod, backup_name(prod, at)
                rows, summ = _clone(store, prod, name, plan.production)
                backups[prod] = (name, rows, summ)
                record(
                    store,
                    "backup",
                    name,
                    prod,
                    rows,
                    summ,
                    Outcome.OK,
                    f"verified=rows+checksum method=clone at={at.isoformat()}",
                )
        step = "next"
        for staging, prod in PRODUCTION.items():  # b) production-to-be: production + new rows, or a full copy
            table, plan = f"{prod}_next", plans[prod]
            if plan.reason:
                nexts[prod] = _copy(store, staging, table, like=staging, final=True, through_block=plan.through_block)
            else:
                nexts[prod] = _append(store, staging, prod, plan)
    except (ClickHouseError, PromotionFailed) as exc:
        for prod in PRODUCTION.values():
            with contextlib.suppress(ClickHouseError):
                store.command(f"DROP TABLE IF EXISTS `{prod}_next`{store.on_cluster} SYNC")
        msg = f"step={step} table={table} error={_reason(exc)}"
        log.error("event=promote_failed %s action=stop production=untouched", msg)
        record(store, "promote", table, "", 0, "", Outcome.FAILED, f"{msg} production=untouched")
        raise PromotionFailed(
            f"promotion stopped before the swap ({step} of {table}): {_reason(exc)}; production untouched"
        ) from None
    return backups, nexts


def _swap_and_verify(
    store: Store,
    report: PromotionReport,
    existing: set[str],
    backups: dict[str, tuple[str, int, str]],
    nexts: dict[str, tuple[int, str]],
    plans: dict[str, TablePlan],
) -> None:
    """c) swap every `<prod>_next` in, d) verify it equals staging FINAL; each table lands in the report."""
    with finished_first("the swap of production"):  # c) swap, d) verify: a Ctrl-C waits for every table
        for staging, prod in PRODUCTION.items():
            name, plan = backups.get(prod, ("", 0, ""))[0], plans[prod]
            how = f'mode=full reason="{plan.reason}"' if plan.reason else f"mode=append from_block={plan.from_block}"
            # before the swap: a stop after it leaves rollback this backup, and the next promotion a full one
            record(store, "promote", prod, name, 0, "", Outcome.STARTED, f"step=swap {how}")
            try:
                method = _swap_in(store, prod, f"{prod}_next", prod in existing)
            except ClickHouseError as exc:
                done = ", ".join(t.production for t in report.tables) or "none"
                record(store, "promote", prod, name, 0, "", Outcome.FAILED, f"step=swap error={_reason(exc)}")
                raise PromotionFailed(
                    f"swap of {prod} failed: {_reason(exc)}; already promoted: {done}; see promote.log"
                ) from None
            # read again after every row: a change to staging meanwhile is left for the next promotion to see
            _, after = read_guards(store, staging, plan.through_block, plan.through_block)
            guard = plan.guard if after == plan.guard else None
            got = _verify_recorded(
                store,
                "promote",
                prod,
                name,
                nexts[prod],
                f"swap={method} staging={staging} old={prod + '_old' if prod in existing else '-'} "
                f"staging_final_rows={nexts[prod][0]} staging_final_checksum={nexts[prod][1]} {how} "
                f"through_block={plan.through_block} guard={guard_text(guard)}",
                "after the swap does not equal staging FINAL",
                "; `backfill rollback` restores the previous production",
            )
            inserted = got[0] - (plan.production[0] if plan.production and not plan.reason else 0)
            report.tables.append(
                TableResult(
                    prod,
                    staging,
                    got[0],
                    got[1],
                    method,
                    name,
                    plan.mode,
                    plan.reason,
                    plan.from_block,
                    plan.through_block,
                    inserted,
                )
            )


def _verify_recorded(
    store: Store,
    action: str,
    prod: str,
    other: str,
    expected: tuple[int, str] | None,
    detail: str,
    mismatch: str,
    hint: str = "",
) -> tuple[int, str]:
    """Production's rows and checksum after a swap, recorded (ok / unverified); PromotionFailed when they
    differ from what was expected."""
    got = checksum(store, prod)
    ok = got == expected
    record(store, action, prod, other, got[0], got[1], Outcome.OK if ok else Outcome.UNVERIFIED, detail)
    if not ok:
        raise PromotionFailed(f"{prod} {mismatch} (rows {got[0]} vs {expected[0] if expected else '?'}){hint}")
    return got


# -- rollback ------------------------------------------------------------------------------------------


def _last_swaps(store: Store) -> dict[str, tuple[str, str]]:
    """production -> (action, other_table) of its newest promote/rollback that swapped tables."""
    rows = store.query_rows(
        "SELECT table_name, argMax(action, at), argMax(other_table, at) FROM backfill_promotions "
        f"WHERE action IN ('promote', 'rollback') AND NOT {outcome_is(Outcome.FAILED)} GROUP BY table_name"
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def _recorded_backups(store: Store) -> dict[str, tuple[int, str, dt.datetime]]:
    rows = store.query_rows(
        "SELECT table_name, argMax(rows, at), argMax(checksum, at), max(at) FROM backfill_promotions "
        f"WHERE action = 'backup' AND {outcome_is(Outcome.OK)} GROUP BY table_name"
    )
    return {r[0]: (int(r[1]), str(r[2]), r[3]) for r in rows}


def _plan_rollbacks(
    store: Store,
    existing: set[str],
    swaps: dict[str, tuple[str, str]],
    recorded: dict[str, tuple[int, str, dt.datetime]],
) -> dict[str, tuple[RollbackPlan, str, tuple[int, str] | None]]:
    """Per production table: its rollback plan, the backup it names and that backup's recorded rows+checksum."""
    plans: dict[str, tuple[RollbackPlan, str, tuple[int, str] | None]] = {}
    for prod in PRODUCTION.values():
        action, backup = swaps.get(prod, (None, ""))
        expected = recorded[backup][:2] if backup in recorded else None
        old = checksum(store, f"{prod}_old") if f"{prod}_old" in existing else None
        plan = plan_rollback(action, backup, expected, old, backup in existing)
        plans[prod] = (plan, backup, expected)
        log.info(
            "event=rollback_plan table=%s last=%s backup=%s plan=%s reason=%r",
            prod,
            action or "-",
            backup or "-",
            plan.kind,
            plan.reason,
        )
    return plans


def rollback(store: Store, settings: Settings) -> PromotionReport:
    """Put back the production the last promotion replaced, verified against that promotion's backup record.
    From `<prod>_old` when it still holds it (EXCHANGE), else from the backup (copy, verify, swap)."""
    with promotion_log(settings), exclusive(settings):
        report = PromotionReport("rollback", now_utc())
        t0 = time.monotonic()
        existing, swaps, recorded = _tables(store), _last_swaps(store), _recorded_backups(store)
        plans = _plan_rollbacks(store, existing, swaps, recorded)
        impossible = [f"{p}: {pl.reason}" for p, (pl, _, _) in plans.items() if pl.kind == "impossible"]
        if impossible:
            raise PromotionFailed("cannot roll back, nothing changed: " + "; ".join(impossible))
        if all(pl.kind == "nothing" for pl, _, _ in plans.values()):
            reasons = sorted({pl.reason for pl, _, _ in plans.values()})
            raise NothingToRollBack("nothing to roll back: " + "; ".join(reasons))
        with finished_first("the rollback of production"):  # a Ctrl-C waits for every table
            for prod, (plan, backup, expected) in plans.items():
                if plan.kind == "nothing":
                    continue
                try:
                    if plan.kind == "exchange":
                        source, method = f"{prod}_old", _exchange(store, prod, f"{prod}_old")
                    else:
                        source, method = backup, "restore"
                        assert expected is not None
                        _clone(store, backup, f"{prod}_next", expected)
                        _swap_in(store, prod, f"{prod}_next", prod in existing)
                except (ClickHouseError, PromotionFailed) as exc:
                    done = ", ".join(t.production for t in report.tables) or "none"
                    record(
                        store, "rollback", prod, backup, 0, "", Outcome.FAILED, f"plan={plan.kind} error={_reason(exc)}"
                    )
                    raise PromotionFailed(
                        f"rollback of {prod} failed ({plan.kind}): {_reason(exc)}; already rolled back: {done}"
                    ) from None
                got = _verify_recorded(
                    store,
                    "rollback",
                    prod,
                    backup,
                    expected,
                    f"method={method} source={source} now_old={prod}_old",
                    f"after the rollback does not equal backup {backup}",
                )
                report.tables.append(TableResult(prod, source, got[0], got[1], method, backup))
        report.seconds = time.monotonic() - t0
        log.info(
            "event=rollback_done seconds=%.3f %s",
            report.seconds,
            " ".join(f"{t.production}={t.rows}" for t in report.tables),
        )
        return report


# -- backups -------------------------------------------------------------------------------------------


def list_backups(store: Store) -> list[Backup]:
    """Every backup table there is, oldest first, with its verified rows and checksum when recorded."""
    recorded = _recorded_backups(store)
    out = []
    for name, total_rows in store.query_rows(
        "SELECT name, total_rows FROM system.tables WHERE database = currentDatabase() AND name LIKE '%\\_backup\\_%'"
    ):
        parsed = parse_backup_name(name)
        if parsed is None:
            continue
        rec = recorded.get(name)
        out.append(
            Backup(
                name,
                parsed[0],
                parsed[1],
                rec[0] if rec else (int(total_rows) if total_rows is not None else None),
                rec[1] if rec else None,
                rec is not None,
            )
        )
    return sorted(out, key=lambda b: (b.created, b.table))


def prune_backups(store: Store, older_than: dt.timedelta, now: dt.datetime | None = None) -> list[Backup]:
    """Drop the backups at least `older_than` old; returns them. Each drop is recorded."""
    now = now or now_utc()
    dropped = choose_prune(list_backups(store), older_than, now)
    for b in dropped:
        _command(store, f"DROP TABLE IF EXISTS `{b.table}`{store.on_cluster} SYNC")
        record(
            store,
            "prune",
            b.table,
            b.production,
            b.rows or 0,
            b.checksum or "",
            Outcome.OK,
            f"older_than_s={older_than.total_seconds():.0f} age_s={(now - b.created).total_seconds():.0f}",
        )
    log.info("event=prune_done older_than_s=%.0f dropped=%d", older_than.total_seconds(), len(dropped))
    return dropped
