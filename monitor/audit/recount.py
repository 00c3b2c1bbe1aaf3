"""The independent audit (`backfill verify`): recount days straight from RPC and compare them with the store.

Per day: eth_getLogs over the day's blocks on another endpoint than the one that filled it (where there is one
that can; else on the one that did, and the result says so), with the copy's lag guard, eth-abi decoding
(backfill.decode.reference), timestamps from block headers, then counts and a content hash per standard
(backfill.store.digest). Those are compared with the store after FINAL and with the day's fingerprint; the store's
row versions are listed side by side, each compared with the recount. A recount that differs from the store is
made again on other endpoints before it is called a mismatch.

This module is the entry point (run_audit) and the run: the days, the RPC clients per endpoint set, the order
of recounts and re-checks, the audit_results rows and audit.log. The parts: measuring in monitor.audit.measure
(the recount, the store's versions), judging in monitor.audit.judge (comparisons, verdicts), choosing days and
endpoints and the report in monitor.audit.report. Their names stay importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backfill.chain.planner import DayPlan
from backfill.chain.usage import merge_usage
from backfill.errors import RpcError
from backfill.files.oplog import operation_log
from backfill.redact import endpoint_label, scrub
from backfill.settings import Settings
from backfill.store import fingerprints, schema
from backfill.store.client import Store, now_utc
from backfill.store.records import AUDIT_USAGE_ID
from monitor.audit.engine_read import EngineReader
from monitor.audit.judge import (  # noqa: F401  (re-exported: part of the audit API)
    SAME_ENDPOINT,
    STANDARDS,
    UNRECOUNTED,
    Digests,
    Recount,
    decide,
    full,
    judge,
    recorded_digests,
)
from monitor.audit.measure import (  # noqa: F401  (re-exported: part of the audit API)
    ENGINE_TARGET_LOGS,
    MAX_SPAN,
    TABLES,
    TARGET_LOGS,
    ChainDay,
    next_span,
    opening_span,
    recount_day,
    split_span,
    store_versions,
)
from monitor.audit.report import (  # noqa: F401  (re-exported: part of the audit API)
    DAY_CONCURRENCY,
    DAYS_HELP,
    AuditReport,
    DayAudit,
    EndpointSet,
    Selection,
    Span,
    VersionSummary,
    audit_endpoints,
    choose_days,
    day_indices,
    endpoint_sets,
    parse_days,
    recheck_sets,
    span_plans,
)

log = logging.getLogger(__name__)


# -- the run ---------------------------------------------------------------------------------------------------------
def _audit_log(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """key=value lines to <log_dir>/audit.log for the duration of a run (they also reach the caller's handlers)."""
    return operation_log(settings.log_dir / "audit.log", log, logging.getLogger("backfill.chain.client"))


def _run_sync(make: Callable[[], Any]) -> Any:
    """asyncio.run, also when the caller already runs an event loop (then on a thread of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _rpc_client(settings: Settings, urls: list[str], indices: tuple[int, ...]) -> Any:
    from backfill.chain.client import RpcClient

    return RpcClient(
        [urls[i] for i in indices],
        labels=[endpoint_label(urls[i], i) for i in indices],
        timeout_s=settings.rpc_timeout_s,
        attempts=settings.rpc_attempts,
        max_rps_per_endpoint=settings.rpc_max_rps,
        concurrency_per_endpoint=settings.rpc_max_concurrency,
        context="audit",
        memory=settings.log_dir / "endpoints.json",
    )


FinishDay = Callable[[DayPlan, ChainDay | None, str, str, str, str, Digests], DayAudit]
StoredDigests = Callable[[DayPlan], Digests]  # a day's digests in the store now (after FINAL), on the store's thread


class _AuditRun:
    """The RPC side of one run: one RPC client per set of endpoints (opened when first needed and checked to
    serve this database's chain), the highest head any endpoint reports (the lag guard's reference), and the
    recount, re-check and judging of one day at a time (DAY_CONCURRENCY at once)."""

    def __init__(
        self,
        settings: Settings,
        filled_by: dict[int, str],
        expected_chain: str | None,
        stored: StoredDigests,
        recorded: dict[int, Digests | None],
        finish_day: FinishDay,
        expected: dict[int, int] | None = None,
    ) -> None:
        self.settings, self.filled_by, self.expected_chain = settings, filled_by, expected_chain
        self.stored, self.recorded, self.finish_day = stored, recorded, finish_day
        self.urls = list(settings.rpc_urls)
        self.labels = [endpoint_label(u, i) for i, u in enumerate(self.urls)]
        self.clients: dict[tuple[int, ...], Any] = {}
        self.refused: dict[tuple[int, ...], str] = {}  # endpoint set -> why it cannot recount (wrong chain, ...)
        self.opening: dict[tuple[int, ...], asyncio.Lock] = {}
        self.usage: list[dict[str, Any]] = []  # every client's RPC usage, summed when the run closes
        self.store_thread = ThreadPoolExecutor(1, thread_name_prefix="audit-store")  # the store client: one thread
        self.limit = asyncio.Semaphore(DAY_CONCURRENCY)
        self.top: int | None = None  # the highest head any endpoint reports, once known
        self.reader = EngineReader() if settings.audit_engine else None  # the answers' decoding, apart from the copy
        self.everyone: Any = None  # a client over every endpoint: headers and the lag guard's checks, on all
        self.span = settings.getlogs_blocks  # where a day's recount starts: where the last one to end left off
        self.expected = expected or {}  # day -> the rows its checkpoint gives the blocks to recount (sizes)
        self.target = ENGINE_TARGET_LOGS if self.reader is not None else TARGET_LOGS

    def names(self, s: EndpointSet) -> str:
        return ",".join(self.labels[i] for i in s.indices)

    def guard_from(self) -> int | None:
        """Blocks from here on are near the highest head any endpoint reports: answers are verified."""
        return max(0, self.top - self.settings.lag_guard_blocks) if self.top is not None else None

    async def probe_heads(self) -> None:
        """The heads of every endpoint, on a client over all of them (kept for headers and the guard's checks)."""
        probe = _rpc_client(self.settings, self.urls, tuple(range(len(self.urls))))
        await probe.__aenter__()
        self.everyone = probe
        heads = await probe.refresh_heads()
        if probe.highest_head() is not None:
            self.top = probe.highest_head()
        log.info(
            "event=endpoints heads=%s guard_from=%s",
            ",".join(f"{k}:{v}" for k, v in heads.items()),
            self.guard_from(),
        )

    async def client_for(self, key: tuple[int, ...]) -> tuple[Any, str]:
        """The client of an endpoint set, and why it cannot recount ("" when it can)."""
        async with self.opening.setdefault(key, asyncio.Lock()):
            if key not in self.clients:
                await self._open(key)
            return self.clients[key], self.refused.get(key, "")

    async def _open(self, key: tuple[int, ...]) -> None:
        """Open the client of an endpoint set; refuse the set if it serves another chain or cannot answer."""
        client = self.clients[key] = _rpc_client(self.settings, self.urls, key)
        await client.__aenter__()
        client.verifier = self.everyone  # canonical headers: from any endpoint
        try:
            got = await client.chain_id()
            if self.expected_chain is not None and str(got) != str(self.expected_chain):
                self.refused[key] = f"the endpoint serves chain {got}, this database holds chain {self.expected_chain}"
        except RpcError as exc:
            self.refused[key] = scrub(f"{type(exc).__name__}: {exc}", self.urls)[:300]
        if key in self.refused:
            log.error(
                "event=endpoints_refused endpoints=%s reason=%r action=next_endpoints",
                ",".join(ep.label for ep in client.pool.endpoints),
                self.refused[key],
            )
        elif self.top is None:  # no head known yet (none answered at the start)
            await client.refresh_heads()
            if client.highest_head() is not None:
                self.top = client.highest_head()

    async def recount(self, plan: DayPlan, sets: list[EndpointSet]) -> tuple[Recount, ChainDay | None]:
        """The day recounted on the first set that can; what each set before it could not."""
        failures: list[str] = []
        for n, s in enumerate(sets):
            client, why = await self.client_for(s.indices)
            if not why:
                usage = client.days.get(plan.day_idx)
                before = Counter(usage.served) if usage else Counter()
                try:
                    first = opening_span(plan.n_blocks, self.expected.get(plan.day_idx), self.target, self.span)
                    chain = await recount_day(client, plan, first, self.guard_from(), self.reader)
                except RpcError as exc:
                    why = scrub(f"{type(exc).__name__}: {exc}", self.urls)[:300]
                else:
                    self.span = chain.next_span or self.span
                    after = client.days[plan.day_idx].served if plan.day_idx in client.days else Counter()
                    served = ",".join(label for label, _ in (after - before).most_common())
                    return Recount(chain.digests, served or self.names(s), s.same, tuple(failures)), chain
            failures.append(f"{self.names(s)}: {why}")
            log.warning(
                "day=%d event=recount_failed endpoints=%s action=%s reason=%r",
                plan.day_idx,
                self.names(s),
                f"try {self.names(sets[n + 1])}" if n + 1 < len(sets) else "none_left",
                why,
            )
        return Recount(None, "", False, tuple(failures)), None

    async def recheck(self, plan: DayPlan, first: Recount) -> Recount | None:
        """A recount that differs from the store, made once more on other endpoints (None: none to make it on)."""
        again = recheck_sets(self.urls, self.filled_by.get(plan.day_idx, ""), first.served.split(","))
        if not again:
            return None
        log.info(
            "day=%d event=recheck reason='the recount differs from the store' first=%s next=%s",
            plan.day_idx,
            first.served,
            self.names(again[0]),
        )
        second, _ = await self.recount(plan, again)
        return second

    async def day(self, plan: DayPlan) -> DayAudit:
        """Recount a day, re-check a difference, judge it and read the store's versions of it. The store's side
        of the day is read on the store's thread while the chain's is recounted (the two need different
        servers: reading them one after the other left the engine idle for the store's FINAL scans)."""
        day, fills = plan.day_idx, self.filled_by.get(plan.day_idx, "")
        async with self.limit:
            t0 = time.monotonic()
            loop = asyncio.get_running_loop()
            reading = asyncio.ensure_future(loop.run_in_executor(self.store_thread, self.stored, plan))
            try:
                sets = endpoint_sets(self.urls, fills)
                first, chain = await self.recount(plan, sets)
            finally:
                stored = await reading
            second = None
            if first.digests is not None and full(first.digests) != full(stored):
                second = await self.recheck(plan, first)
            verdict, detail, problem = decide(first, stored, self.recorded[day], second)
            endpoint = first.served or ",".join(dict.fromkeys(self.labels[i] for s in sets for i in s.indices))
            kept = chain if problem != "disagree" else None  # two recounts disagree: neither is the chain
            result = await loop.run_in_executor(
                self.store_thread, self.finish_day, plan, kept, endpoint, verdict, detail, problem, stored
            )
            _log_day(plan, endpoint, result, time.monotonic() - t0)
            return result

    async def close(self) -> None:
        clients = [*self.clients.values(), *([self.everyone] if self.everyone is not None else [])]
        self.usage = merge_usage(*(c.usage() for c in clients))
        for client in clients:
            await client.close()
        self.store_thread.shutdown(wait=True)
        if self.reader is not None:
            log.info("event=answers_read engine=%d reference=%d", self.reader.taken, self.reader.handed_back)
            self.reader.close()


def _log_day(plan: DayPlan, endpoint: str, result: DayAudit, seconds: float) -> None:
    log.info(
        "day=%d date=%s blocks=%d-%d endpoint=%s verdict=%s chain_erc20=%s chain_erc1155=%s store_erc20=%d "
        "store_erc1155=%d versions=%d seconds=%.2f detail=%r",
        plan.day_idx,
        plan.day,
        plan.start_block,
        plan.end_block,
        endpoint,
        result.verdict,
        *(full(result.chain)[s][0] if result.chain else -1 for s in STANDARDS),
        *(full(result.store)[s][0] for s in STANDARDS),
        len(result.versions),
        seconds,
        result.detail,
    )


async def _audit_days(
    settings: Settings,
    plans: list[DayPlan],
    filled_by: dict[int, str],
    expected_chain: str | None,
    stored: StoredDigests,
    recorded: dict[int, Digests | None],
    finish_day: FinishDay,
    expected: dict[int, int],
) -> tuple[list[DayAudit], list[dict[str, Any]]]:
    """(the days' results, the RPC usage of the run). Recount the days (DAY_CONCURRENCY at once) and judge each as soon as its recount is in, so that only a few
    days' rows are held at a time.

    Per day, the endpoint sets of endpoint_sets() are tried in turn (the others, then the ones that filled the
    day); a set that cannot recount it (wrong chain, unreachable, parked for quota, every try failed) passes the
    day to the next one. A recount that differs from the store is made once more on other endpoints
    (recheck_sets) before it is called a mismatch. One RPC client per set of endpoints, opened when first
    needed and checked to serve this database's chain."""
    run = _AuditRun(settings, filled_by, expected_chain, stored, recorded, finish_day, expected)
    try:
        if run.urls and plans:
            await run.probe_heads()
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(run.day(p)) for p in plans]
    finally:
        await run.close()
    return [t.result() for t in tasks], run.usage


def run_audit(
    store: Store,
    settings: Settings,
    *,
    days: list[int] | None = None,
    sample: int | None = None,
    include: Iterable[int] = (),
    all_days: bool = False,
    source: str = "cli",
    seed: int | None = None,
) -> AuditReport:
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
        selection, plans = _chosen_days(
            store, checkpoints, days=days, sample=sample, include=include, all_days=all_days, seed=seed
        )
        chosen = [p.day_idx for p in plans]
        sampled = [] if all_days else sorted(set(chosen) - set(days or ()) - set(include))
        plans, spans = span_plans(plans, sampled, _day_rows(checkpoints), settings.audit_day_logs, seed)
        _log_start(run_id, source, seed, len(chosen), sample, all_days, days, include, selection, spans, settings)
        filled_by, recs = _store_side(store, checkpoints, chosen)
        recs.update({d: None for d in spans})  # a fingerprint covers the whole day, not a span of it
        finish_day, stored = _day_finisher(store, recs, spans), functools.partial(_stored_digests, store)
        expected_chain = store.meta_get("chain_id")
        expected = _expected_rows(plans, checkpoints, spans)
        results, usage = _run_sync(
            lambda: _audit_days(settings, plans, filled_by, expected_chain, stored, recs, finish_day, expected)
        )
        if usage:  # the recount's calls are billed too: counted with the fleet's (status, metrics)
            store.record_rpc_usage(AUDIT_USAGE_ID, os.getpid(), usage)
        report = AuditReport(
            run_id,
            run_at,
            source,
            seed,
            sorted(results, key=lambda r: r.day_idx),
            selection.skipped,
            time.monotonic() - t0,
        )
        _record(store, report)
        return report


def _log_start(
    run_id: str,
    source: str,
    seed: int,
    n_days: int,
    sample: int | None,
    all_days: bool,
    days: list[int] | None,
    include: list[int],
    selection: Selection,
    spans: dict[int, Span],
    settings: Settings,
) -> None:
    log.info(
        "event=audit_start run_id=%s source=%s days=%d seed=%d sample=%s all=%s listed=%s include=%s "
        "skipped_not_complete=%s day_logs=%d spans=%s endpoints=%s",
        run_id,
        source,
        n_days,
        seed,
        sample,
        all_days,
        _span(days),
        _span(include),
        _span(selection.skipped),
        settings.audit_day_logs,
        ",".join(f"{d}:{x.from_block}-{x.to_block}" for d, x in sorted(spans.items())) or "-",
        ",".join(endpoint_label(u, i) for i, u in enumerate(settings.rpc_urls)),
    )


def _chosen_days(
    store: Store,
    checkpoints: dict[int, dict[str, Any]],
    *,
    days: list[int] | None,
    sample: int | None,
    include: list[int],
    all_days: bool,
    seed: int,
) -> tuple[Selection, list[DayPlan]]:
    """The COMPLETE days to audit (choose_days), and the plans of those the plan holds, in the selection's order."""
    complete = [d for d, cp in checkpoints.items() if cp["status"] == "COMPLETE"]
    selection = choose_days(complete, days=days, sample=sample, include=include, all_days=all_days, seed=seed)
    plan = {p.day_idx: p for p in store.read_plan()}
    return selection, [plan[d] for d in selection.days if d in plan]


def _store_side(
    store: Store, checkpoints: dict[int, dict[str, Any]], chosen: list[int]
) -> tuple[dict[int, str], dict[int, Digests | None]]:
    """Per chosen day: the endpoints that filled it and its recorded fingerprint (fingerprints are recorded
    first for days that have none yet)."""
    fingerprints.record_fingerprints(store)
    recorded = fingerprints.recorded(store)
    filled_by = {d: str((recorded.get(d) or checkpoints.get(d) or {}).get("endpoints") or "") for d in chosen}
    recs = {d: recorded_digests(recorded.get(d)) for d in chosen}
    return filled_by, recs


def _stored_digests(store: Store, plan: DayPlan) -> Digests:
    """The day's digests in the store now, after FINAL (rows 0, hash 0 for a table without rows of it)."""
    current = fingerprints.day_digests(store, plan)
    return {std: current.get(TABLES[std], (0, 0)) for std in STANDARDS}


ROWS = ("erc20_count", "erc1155_count")  # a checkpoint's rows: what sizes a sampled span
LOGS = (*ROWS, "skipped_count", "quarantined_count")  # and the logs behind them: what sizes a first range


def _day_rows(checkpoints: dict[int, dict[str, Any]], counts: tuple[str, ...] = ROWS) -> dict[int, int]:
    """day -> the sum of `counts` of its checkpoint."""
    return {d: sum(int(cp.get(k) or 0) for k in counts) for d, cp in checkpoints.items()}


def _expected_rows(
    plans: list[DayPlan], checkpoints: dict[int, dict[str, Any]], spans: dict[int, Span]
) -> dict[int, int]:
    """day -> the logs its checkpoint gives the blocks to recount (a span's share of them): what sizes the
    recount's first range, nothing more."""
    logs = _day_rows(checkpoints, LOGS)
    out = {}
    for p in plans:
        span = spans.get(p.day_idx)
        out[p.day_idx] = int(logs.get(p.day_idx, 0) * span.share) if span else logs.get(p.day_idx, 0)
    return out


def _day_finisher(store: Store, recs: dict[int, Digests | None], spans: dict[int, Span]) -> FinishDay:
    """The last step of a day, on the store's thread: its row versions read and placed, its DayAudit made (a
    sampled span's detail names its blocks)."""

    def finish_day(
        p: DayPlan, chain: ChainDay | None, endpoint: str, verdict: str, detail: str, problem: str, stored: Digests
    ) -> DayAudit:
        versions = store_versions(store, p, chain)
        span = spans.get(p.day_idx)
        return DayAudit(
            p.day_idx,
            p.day,
            endpoint,
            verdict,
            "; ".join(filter(None, [span.text() if span else "", detail])),
            full(chain.digests) if chain else None,
            full(stored),
            recs[p.day_idx],
            versions,
            problem,
            span,
        )

    return finish_day


def _record(store: Store, report: AuditReport) -> None:
    """The run's audit_results rows, and its last audit.log line."""
    store.insert("audit_results", [r.row(report.run_id, report.run_at) for r in report.results], schema.AUDIT_COLUMNS)
    log.info(
        "event=audit_done run_id=%s source=%s passed=%s days=%d mismatch=%s error=%s seconds=%.1f",
        report.run_id,
        report.source,
        report.passed,
        len(report.results),
        _span(report.mismatched_days),
        _span(report.error_days),
        report.seconds,
    )


def _span(days: Iterable[int] | None) -> str:
    return "-" if days is None else ",".join(map(str, days)) or "-"


__all__ = [
    "AuditReport",
    "DayAudit",
    "Selection",
    "Span",
    "VersionSummary",
    "EndpointSet",
    "Recount",
    "audit_endpoints",
    "choose_days",
    "day_indices",
    "decide",
    "endpoint_sets",
    "judge",
    "next_span",
    "parse_days",
    "recheck_sets",
    "recount_day",
    "run_audit",
    "span_plans",
    "split_span",
    "store_versions",
]
