"""The independent audit (`backfill verify`): recount days straight from RPC and compare them with the store.

Per day: eth_getLogs over the day's blocks (another endpoint than the one that filled it, where there is one),
eth-abi decoding (backfill.decode_ref), timestamps from block headers, then counts and a content hash per
standard (backfill.digest). Those are compared with the store after FINAL and with the day's fingerprint; the
store's row versions are listed side by side, each compared with the recount. Shares no code with the worker's
fetching, range sizing or decoding; only the RPC client (retries, endpoint health) and the event table.

Pure parts first (choosing days, endpoints, range sizes, the verdict), then the report, then the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from backfill import digest, fingerprints, schema
from backfill.decode_ref import reference_rows, with_timestamps
from backfill.errors import ConfigError, RpcError
from backfill.planner import DayPlan
from backfill.redact import endpoint_label, scrub
from backfill.settings import Settings
from backfill.store import Store, now_utc

log = logging.getLogger(__name__)

STANDARDS = ("erc20", "erc1155")
TABLES = {"erc20": "erc20_transfers_staging", "erc1155": "erc1155_transfers_staging"}
Digests = dict[str, tuple[int, int]]  # standard -> (rows, hash)

DAY_CONCURRENCY = 4  # days recounted at once (memory: one day's rows each)
MAX_SPAN = 10_000  # blocks per eth_getLogs at most
TARGET_LOGS = 5_000  # aim for answers of about this many logs
DAYS_HELP = "dates and ranges, e.g. 2024-01-03,2024-01-05..2024-01-07"


# -- choosing days (pure) ---------------------------------------------------------------------------------------
def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--days: {text!r} is not a date like 2024-01-03 ({DAYS_HELP})") from None


def parse_days(text: str) -> list[dt.date]:
    """`2024-01-03,2024-01-05..2024-01-07` -> the dates, in order, without repeats."""
    out: list[dt.date] = []
    parts = [p.strip() for p in (text or "").split(",")]
    if not any(parts):
        raise ConfigError(f"--days is empty; give {DAYS_HELP}")
    for part in parts:
        if not part:
            raise ConfigError(f"--days has an empty item in {text!r}; give {DAYS_HELP}")
        first, sep, last = part.partition("..")
        a = _date(first.strip())
        b = _date(last.strip()) if sep else a
        if b < a:
            raise ConfigError(f"--days: the range {part!r} ends before it starts")
        out.extend(a + dt.timedelta(days=i) for i in range((b - a).days + 1))
    return list(dict.fromkeys(out))


def day_indices(text: str, plan: Iterable[DayPlan]) -> list[int]:
    """--days text -> planned day_idx; a date outside the plan is a user error."""
    by_date = {p.day: p.day_idx for p in plan}
    dates = parse_days(text)
    missing = [d for d in dates if d not in by_date]
    if missing:
        span = f"{min(by_date)}..{max(by_date)}" if by_date else "nothing is planned yet"
        what = f"{missing[0]} is not a planned day" if len(missing) == 1 else \
            f"{missing[0]} and {len(missing) - 1} more days are not planned"
        raise ConfigError(f"--days: {what} (planned: {span})")
    return [by_date[d] for d in dates]


@dataclass(frozen=True)
class Selection:
    days: list[int]  # to audit, ascending
    skipped: list[int]  # asked for (listed or included) but not COMPLETE


def choose_days(complete: Iterable[int], *, days: Iterable[int] | None = None, sample: int | None = None,
                include: Iterable[int] = (), all_days: bool = False, seed: int = 0) -> Selection:
    """Only COMPLETE days: every one (all_days), or the listed days, plus `include`, plus `sample` more drawn
    at random (seeded) from the remaining COMPLETE days."""
    done = set(complete)
    asked = set(days or ()) | set(include)
    chosen = set(done) if all_days else asked & done
    if sample and not all_days:
        rest = sorted(done - chosen)
        chosen |= set(random.Random(seed).sample(rest, min(sample, len(rest))))
    return Selection(sorted(chosen), sorted(asked - done))


# -- endpoints and ranges (pure) ------------------------------------------------------------------------------------
def audit_endpoints(urls: Iterable[str], filled_by: str) -> list[int]:
    """Indices into rpc_urls to recount a day with: those whose label (`host#i`) did not serve the day, when
    there are any; else all of them."""
    used = {label.strip() for label in (filled_by or "").split(",") if label.strip()}
    urls = list(urls)
    others = [i for i, url in enumerate(urls) if endpoint_label(url, i) not in used]
    return others or list(range(len(urls)))


def next_span(span: int, n_logs: int) -> int:
    """Blocks to ask for next after `span` blocks gave `n_logs`: toward TARGET_LOGS, growing at most 4x."""
    ideal = span * TARGET_LOGS // n_logs if n_logs else span * 4
    return max(1, min(span * 4, MAX_SPAN, ideal))


def split_span(span: int, from_block: int, suggested: tuple[int, int] | None) -> int | None:
    """Blocks to ask for after the provider refused `span` blocks from `from_block`; None when 1 was refused."""
    if span <= 1:
        return None
    if suggested and suggested[0] == from_block and 1 <= suggested[1] - suggested[0] + 1 < span:
        return suggested[1] - suggested[0] + 1
    return span // 2


# -- the verdict (pure) -------------------------------------------------------------------------------------------
def full(d: Digests | None) -> Digests:
    return {std: tuple(map(int, (d or {}).get(std, (0, 0)))) for std in STANDARDS}  # type: ignore[misc]


def judge(chain: Digests, store: Digests, recorded: Digests | None) -> tuple[str, str]:
    """(verdict, detail): `ok` when the recount equals the store after FINAL and the fingerprint (if any)."""
    chain, store = full(chain), full(store)
    problems = []
    for std in STANDARDS:
        (cn, ch), (sn, sh) = chain[std], store[std]
        if cn != sn:
            problems.append(f"{std}: chain {cn} rows / store {sn} rows")
        elif ch != sh:
            problems.append(f"{std} hash differs, same count")
    if recorded is not None and full(recorded) != store:
        rec = full(recorded)
        counts = [f"{std} {store[std][0]} rows, recorded {rec[std][0]}" for std in STANDARDS if rec[std][0] != store[std][0]]
        problems.append("store differs from its fingerprint" + (f" ({'; '.join(counts)})" if counts else ""))
    return ("mismatch", "; ".join(problems)) if problems else ("ok", "")


def recorded_digests(fp: dict[str, Any] | None) -> Digests | None:
    """A day_fingerprints row -> digests (its hashes are stored as hex)."""
    if fp is None:
        return None
    return {std: (int(fp[f"{std}_count"]), int(str(fp[f"{std}_hash"]) or "0", 16)) for std in STANDARDS}


# -- the report ---------------------------------------------------------------------------------------------------
@dataclass
class VersionSummary:
    """One `_version` of a day's raw rows (before FINAL)."""

    version: int
    rows: dict[str, int]
    hashes: dict[str, int]
    zero_timestamps: int
    latest: bool = False
    equals_chain: bool | None = None  # its rows are exactly the recount (None: no recount)
    not_on_chain: int | None = None  # its rows that are not rows of the recount (None: not computed)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "latest": self.latest, "zero_timestamps": self.zero_timestamps,
                **{f"{s}_rows": self.rows.get(s, 0) for s in STANDARDS},
                **{f"{s}_hash": digest.fmt_hash(self.hashes.get(s, 0)) for s in STANDARDS},
                "equals_chain": self.equals_chain, "not_on_chain": self.not_on_chain}

    def line(self) -> str:
        if self.equals_chain:
            verdict = "equals the chain"
        elif self.not_on_chain == 0:
            verdict = "part of the chain's rows"
        elif self.not_on_chain:
            verdict = f"differs from the chain: {self.not_on_chain} rows not on chain"
        else:
            verdict = "differs from the chain" if self.equals_chain is False else "not compared"
        counts = " ".join(f"{s}={self.rows.get(s, 0)}" for s in STANDARDS)
        return (f"    version {self.version}{' (latest)' if self.latest else ''}: {counts} "
                f"zero_timestamps={self.zero_timestamps} -- {verdict}")


def _hashes(d: Digests | None) -> str:
    return "" if d is None else "/".join(digest.fmt_hash(full(d)[s][1]) for s in STANDARDS)


@dataclass
class DayAudit:
    day_idx: int
    day: dt.date
    endpoint: str  # label(s) of the endpoint(s) that answered the recount
    verdict: str  # ok | mismatch | error
    detail: str
    chain: Digests | None  # None when the recount failed
    store: Digests
    recorded: Digests | None  # None when the day has no fingerprint
    versions: list[VersionSummary] = field(default_factory=list)

    def hash_equal(self, std: str) -> bool | None:
        return None if self.chain is None else full(self.chain)[std][1] == full(self.store)[std][1]

    def line(self) -> str:
        parts = [f"{self.day} day={self.day_idx} endpoint={self.endpoint or '-'} {self.verdict.upper()}"]
        chain, store, rec = full(self.chain), full(self.store), full(self.recorded)
        for std in STANDARDS:
            equal = self.hash_equal(std)
            parts.append(f"{std} chain={chain[std][0] if self.chain is not None else '?'} store={store[std][0]} "
                         f"recorded={rec[std][0] if self.recorded is not None else '-'} "
                         f"hash={'?' if equal is None else 'equal' if equal else 'differs'}")
        return "  ".join(parts) + (f"  -- {self.detail}" if self.detail else "")

    def lines(self) -> list[str]:
        return [self.line()] + ([v.line() for v in self.versions] if len(self.versions) > 1 else [])

    def to_json(self) -> dict[str, Any]:
        def side(d: Digests | None) -> dict[str, Any] | None:
            return None if d is None else {s: {"rows": n, "hash": digest.fmt_hash(h)} for s, (n, h) in full(d).items()}
        return {"day_idx": self.day_idx, "day": self.day.isoformat(), "endpoint": self.endpoint,
                "verdict": self.verdict, "detail": self.detail, "chain": side(self.chain), "store": side(self.store),
                "recorded": side(self.recorded), "hash_equal": {s: self.hash_equal(s) for s in STANDARDS},
                "versions": [v.to_json() for v in self.versions]}

    def row(self, run_id: str, run_at: dt.datetime) -> tuple:
        """The audit_results row (schema.AUDIT_COLUMNS); -1 = unknown."""
        chain, store, rec = full(self.chain), full(self.store), full(self.recorded)
        return (run_id, run_at, self.day_idx, self.day, self.endpoint, self.verdict,
                chain["erc20"][0] if self.chain is not None else -1, chain["erc1155"][0] if self.chain is not None else -1,
                store["erc20"][0], store["erc1155"][0],
                rec["erc20"][0] if self.recorded is not None else -1, rec["erc1155"][0] if self.recorded is not None else -1,
                _hashes(self.chain), _hashes(self.store), _hashes(self.recorded),
                json.dumps([v.to_json() for v in self.versions]), self.detail)


@dataclass
class AuditReport:
    run_id: str
    run_at: dt.datetime
    source: str
    seed: int
    results: list[DayAudit]
    skipped: list[int] = field(default_factory=list)  # asked for but not COMPLETE
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """No mismatch and no error (an audit of no day passes: callers that need days check `results`)."""
        return all(r.verdict == "ok" for r in self.results)

    @property
    def mismatched_days(self) -> list[int]:
        return [r.day_idx for r in self.results if r.verdict == "mismatch"]

    @property
    def error_days(self) -> list[int]:
        return [r.day_idx for r in self.results if r.verdict == "error"]

    def summary(self) -> str:
        n = {v: sum(r.verdict == v for r in self.results) for v in ("ok", "mismatch", "error")}
        bad = [str(r.day) for r in self.results if r.verdict != "ok"]
        return (f"audit {'passed' if self.passed else 'FAILED'}: {len(self.results)} days, {n['ok']} ok, "
                f"{n['mismatch']} mismatch, {n['error']} error" + (f" ({', '.join(bad)})" if bad else "")
                + f"; run_id={self.run_id} seed={self.seed}")

    def lines(self) -> list[str]:
        """One line per day, plus its versions side by side when it has more than one."""
        return [line for r in self.results for line in r.lines()]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"run_id": self.run_id, "run_at": self.run_at.isoformat(), "source": self.source, "seed": self.seed,
                "passed": self.passed, "mismatched_days": self.mismatched_days, "error_days": self.error_days,
                "skipped_days": self.skipped, "seconds": round(self.seconds, 3),
                "results": [r.to_json() for r in self.results]}


# -- the recount from RPC (I/O) --------------------------------------------------------------------------------------
@dataclass
class ChainDay:
    digests: Digests
    row_hashes: dict[str, set[int]]  # standard -> hashes of the recount's rows (to place partial versions)


async def recount_day(client: Any, plan: DayPlan, first_span: int) -> ChainDay:
    """eth_getLogs over the day's blocks (split on refusal, sized by the answers), eth-abi decoding, timestamps
    from block headers (not the logs' blockTimestamp), digests per standard."""
    from backfill.rpc import current_day
    from backfill.rpc_errors import NodeBehind, RangeTooLarge

    token = current_day.set(plan.day_idx)
    try:
        counts = {s: 0 for s in STANDARDS}
        sums = {s: 0 for s in STANDARDS}
        hashes: dict[str, set[int]] = {s: set() for s in STANDARDS}
        a, span = plan.start_block, max(1, first_span)
        while a <= plan.end_block:
            b = min(a + span - 1, plan.end_block)
            try:
                logs = await client.get_logs(a, b, guard=True)
            except RangeTooLarge as exc:
                smaller = split_span(b - a + 1, a, exc.suggested)
                if smaller is None:
                    raise
                log.info("day=%d blocks=%d-%d event=split next_blocks=%d", plan.day_idx, a, b, smaller)
                span = smaller
                continue
            erc20, erc1155, _ = reference_rows(logs)
            blocks = sorted({r.block_number for r in erc20} | {r.block_number for r in erc1155})
            headers = await client.headers(blocks) if blocks else {}
            for entry in logs:
                bn = int(entry["blockNumber"], 16)
                if not entry.get("removed") and bn in headers and (entry.get("blockHash") or "").lower() not in ("", headers[bn][0]):
                    raise NodeBehind(f"block {bn}: the logs and the header disagree on its hash (reorg or mixed nodes)")
            rows20, rows1155 = with_timestamps(erc20, erc1155, {bn: ts for bn, (_, ts) in headers.items()})
            for std, rows in (("erc20", rows20), ("erc1155", rows1155)):
                for row in rows:
                    _, h = digest.digest_rows((row,), std)
                    counts[std] += 1
                    sums[std] += h
                    hashes[std].add(h)
            span = next_span(b - a + 1, len(logs))
            a = b + 1
        return ChainDay({s: (counts[s], sums[s]) for s in STANDARDS}, hashes)
    finally:
        current_day.reset(token)


# -- the store side (I/O) --------------------------------------------------------------------------------------------
def store_versions(store: Store, plan: DayPlan, chain: ChainDay | None) -> list[VersionSummary]:
    """The day's raw rows (no FINAL) by `_version`: rows, zero timestamps, hash; each compared with the recount."""
    per: dict[int, VersionSummary] = {}
    params = {"a": plan.start_block, "b": plan.end_block}
    for std in STANDARDS:
        table = TABLES[std]
        for version, n, zero, h in store.query_rows(
                f"SELECT _version, count(), countIf(toUnixTimestamp(block_timestamp) = 0), sum({digest.row_hash_sql(table)}) "
                f"FROM {table} WHERE block_number BETWEEN %(a)s AND %(b)s GROUP BY _version", params):
            v = per.setdefault(int(version), VersionSummary(int(version), {}, {}, 0))
            v.rows[std], v.hashes[std] = int(n), int(h or 0)
            v.zero_timestamps += int(zero)
    versions = [per[k] for k in sorted(per)]
    if versions:
        versions[-1].latest = True
    if chain is None:
        return versions
    cd = full(chain.digests)
    for v in versions:
        v.equals_chain = all((v.rows.get(s, 0), v.hashes.get(s, 0)) == cd[s] for s in STANDARDS)
        if v.equals_chain:
            v.not_on_chain = 0
    if len(versions) > 1:  # place each version against the recount row by row
        missing: dict[int, int] = {v.version: 0 for v in versions}
        for std in STANDARDS:
            table = TABLES[std]
            for version, h in store.query_rows(f"SELECT _version, {digest.row_hash_sql(table)} FROM {table} "
                                               f"WHERE block_number BETWEEN %(a)s AND %(b)s", params):
                if int(h) not in chain.row_hashes[std]:
                    missing[int(version)] += 1
        for v in versions:
            v.not_on_chain = missing[v.version]
    return versions


# -- the run ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _audit_log(settings: Settings) -> Iterator[None]:
    """key=value lines to <log_dir>/audit.log for the duration of a run (they also reach the caller's handlers)."""
    from backfill.logs import DATEFMT, FORMAT

    settings.log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(settings.log_dir / "audit.log")
    formatter = logging.Formatter(FORMAT, DATEFMT)
    formatter.converter = time.gmtime  # type: ignore[assignment]
    handler.setFormatter(formatter)
    loggers = [log, logging.getLogger("backfill.rpc")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()


def _run_sync(make: Callable[[], Any]) -> Any:
    """asyncio.run, also when the caller already runs an event loop (then on a thread of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def _audit_days(settings: Settings, plans: list[DayPlan], filled_by: dict[int, str], expected_chain: str | None,
                      judge_day: Callable[[DayPlan, ChainDay | None, str, str], DayAudit]) -> list[DayAudit]:
    """Recount the days (DAY_CONCURRENCY at once) and judge each as soon as its recount is in, so that only a few
    days' rows are held at a time. One RPC client per set of endpoints, checked to serve this database's chain."""
    from backfill.rpc import RpcClient

    urls = list(settings.rpc_urls)
    chosen = {p.day_idx: tuple(audit_endpoints(urls, filled_by.get(p.day_idx, ""))) for p in plans}
    clients: dict[tuple[int, ...], Any] = {}
    refused: dict[tuple[int, ...], str] = {}  # endpoint set -> why it cannot recount (wrong chain, unreachable)
    store_thread = ThreadPoolExecutor(1, thread_name_prefix="audit-store")  # the store client is used by one thread
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(DAY_CONCURRENCY)

    async def one(plan: DayPlan) -> DayAudit:
        key = chosen[plan.day_idx]
        client = clients[key]
        async with limit:
            t0 = time.monotonic()
            chain: ChainDay | None = None
            error = refused.get(key, "")
            if not error:
                try:
                    chain = await recount_day(client, plan, settings.getlogs_blocks)
                except RpcError as exc:
                    error = scrub(f"{type(exc).__name__}: {exc}", urls)[:300]
            usage = client.days.get(plan.day_idx)
            served = ",".join(label for label, _ in usage.served.most_common()) if usage else ""
            endpoint = served or ",".join(endpoint_label(urls[i], i) for i in key)
            result = await loop.run_in_executor(store_thread, judge_day, plan, chain, error, endpoint)
            log.info("day=%d date=%s endpoint=%s verdict=%s chain_erc20=%s chain_erc1155=%s store_erc20=%d "
                     "store_erc1155=%d versions=%d seconds=%.2f detail=%r", plan.day_idx, plan.day, endpoint,
                     result.verdict, *(full(result.chain)[s][0] if result.chain else -1 for s in STANDARDS),
                     *(full(result.store)[s][0] for s in STANDARDS), len(result.versions), time.monotonic() - t0,
                     result.detail)
            return result

    try:
        for key in dict.fromkeys(chosen.values()):
            client = clients[key] = RpcClient(
                [urls[i] for i in key], labels=[endpoint_label(urls[i], i) for i in key], timeout_s=settings.rpc_timeout_s,
                attempts=settings.rpc_attempts, max_rps_per_endpoint=settings.rpc_max_rps,
                concurrency_per_endpoint=settings.rpc_max_concurrency, context="audit")
            await client.__aenter__()
            try:
                got = await client.chain_id()
                if expected_chain is not None and str(got) != str(expected_chain):
                    refused[key] = f"the endpoint serves chain {got}, this database holds chain {expected_chain}"
            except RpcError as exc:
                refused[key] = scrub(f"{type(exc).__name__}: {exc}", urls)[:300]
            if key in refused:
                log.error("event=endpoints_refused endpoints=%s reason=%r action=days_error",
                          ",".join(ep.label for ep in client.pool.endpoints), refused[key])
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(p)) for p in plans]
        return [t.result() for t in tasks]
    finally:
        for client in clients.values():
            await client.close()
        store_thread.shutdown(wait=True)


def run_audit(store: Store, settings: Settings, *, days: list[int] | None = None, sample: int | None = None,
              include: Iterable[int] = (), all_days: bool = False, source: str = "cli",
              seed: int | None = None) -> AuditReport:
    """Recount COMPLETE days from RPC and compare them with the store: all of them (all_days), the listed
    `days`, `include`, plus `sample` random others (default settings.audit_sample when nothing is listed).
    Writes one audit_results row per day and key=value lines to <log_dir>/audit.log."""
    include = list(include)
    with _audit_log(settings):
        t0 = time.monotonic()
        run_at = now_utc()
        run_id = f"{run_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        seed = seed if seed is not None else random.SystemRandom().randrange(1, 2**31)
        if days is None and not all_days and sample is None:
            sample = settings.audit_sample
        checkpoints = store.checkpoints()
        complete = [d for d, cp in checkpoints.items() if cp["status"] == "COMPLETE"]
        selection = choose_days(complete, days=days, sample=sample, include=include, all_days=all_days, seed=seed)
        plan = {p.day_idx: p for p in store.read_plan()}
        chosen = [d for d in selection.days if d in plan]
        log.info("event=audit_start run_id=%s source=%s days=%d seed=%d sample=%s all=%s listed=%s include=%s "
                 "skipped_not_complete=%s endpoints=%s", run_id, source, len(chosen), seed, sample, all_days,
                 _span(days), _span(include), _span(selection.skipped),
                 ",".join(endpoint_label(u, i) for i, u in enumerate(settings.rpc_urls)))
        fingerprints.record_fingerprints(store)
        recorded = fingerprints.recorded(store)
        current = fingerprints.current_digests(store, chosen) if chosen else {}
        filled_by = {d: str((recorded.get(d) or checkpoints.get(d) or {}).get("endpoints") or "") for d in chosen}

        def judge_day(p: DayPlan, chain: ChainDay | None, error: str, endpoint: str) -> DayAudit:
            stored = {std: current.get(p.day_idx, {}).get(TABLES[std], (0, 0)) for std in STANDARDS}
            rec = recorded_digests(recorded.get(p.day_idx))
            versions = store_versions(store, p, chain)
            if chain is None:
                verdict, detail = "error", f"recount from RPC failed: {error}"
            else:
                verdict, detail = judge(chain.digests, stored, rec)
            return DayAudit(p.day_idx, p.day, endpoint, verdict, detail,
                            full(chain.digests) if chain else None, full(stored), rec, versions)

        expected_chain = store.meta_get("chain_id")
        results = _run_sync(lambda: _audit_days(settings, [plan[d] for d in chosen], filled_by, expected_chain, judge_day))
        report = AuditReport(run_id, run_at, source, seed, sorted(results, key=lambda r: r.day_idx), selection.skipped,
                             time.monotonic() - t0)
        store.insert("audit_results", [r.row(run_id, run_at) for r in report.results], schema.AUDIT_COLUMNS)
        log.info("event=audit_done run_id=%s source=%s passed=%s days=%d mismatch=%s error=%s seconds=%.1f",
                 run_id, source, report.passed, len(report.results), _span(report.mismatched_days),
                 _span(report.error_days), report.seconds)
        return report


def _span(days: Iterable[int] | None) -> str:
    return "-" if days is None else ",".join(map(str, days)) or "-"


__all__ = [
    "AuditReport",
    "DayAudit",
    "Selection",
    "VersionSummary",
    "audit_endpoints",
    "choose_days",
    "day_indices",
    "judge",
    "next_span",
    "parse_days",
    "recount_day",
    "run_audit",
    "split_span",
    "store_versions",
]
