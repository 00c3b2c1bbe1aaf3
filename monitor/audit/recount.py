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
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backfill.chain.planner import DayPlan
from backfill.errors import RpcError
from backfill.redact import endpoint_label, scrub
from backfill.settings import Settings
from backfill.store import fingerprints, schema
from backfill.store.client import Store, now_utc
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
    MAX_SPAN,
    TABLES,
    TARGET_LOGS,
    ChainDay,
    next_span,
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
    VersionSummary,
    audit_endpoints,
    choose_days,
    day_indices,
    endpoint_sets,
    parse_days,
    recheck_sets,
)

log = logging.getLogger(__name__)


# -- the run ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _audit_log(settings: Settings) -> Iterator[None]:
    """key=value lines to <log_dir>/audit.log for the duration of a run (they also reach the caller's handlers)."""
    from backfill.files.oplog import DATEFMT, FORMAT

    settings.log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(settings.log_dir / "audit.log")
    formatter = logging.Formatter(FORMAT, DATEFMT)
    formatter.converter = time.gmtime  # type: ignore[assignment]
    handler.setFormatter(formatter)
    loggers = [log, logging.getLogger("backfill.chain.client")]
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


async def _audit_days(
    settings: Settings,
    plans: list[DayPlan],
    filled_by: dict[int, str],
    expected_chain: str | None,
    stored: dict[int, Digests],
    recorded: dict[int, Digests | None],
    finish_day: Callable[[DayPlan, ChainDay | None, str, str, str, str], DayAudit],
) -> list[DayAudit]:
    """Recount the days (DAY_CONCURRENCY at once) and judge each as soon as its recount is in, so that only a few
    days' rows are held at a time.

    Per day, the endpoint sets of endpoint_sets() are tried in turn (the others, then the ones that filled the
    day); a set that cannot recount it (wrong chain, unreachable, parked for quota, every try failed) passes the
    day to the next one. A recount that differs from the store is made once more on other endpoints
    (recheck_sets) before it is called a mismatch. One RPC client per set of endpoints, opened when first
    needed and checked to serve this database's chain."""
    urls = list(settings.rpc_urls)
    labels = [endpoint_label(u, i) for i, u in enumerate(urls)]
    clients: dict[tuple[int, ...], Any] = {}
    refused: dict[tuple[int, ...], str] = {}  # endpoint set -> why it cannot recount (wrong chain, unreachable)
    opening: dict[tuple[int, ...], asyncio.Lock] = {}
    store_thread = ThreadPoolExecutor(1, thread_name_prefix="audit-store")  # the store client is used by one thread
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(DAY_CONCURRENCY)
    top: list[int] = []  # the highest head any endpoint reports (the lag guard's reference), once known
    everyone: list[Any] = []  # a client over every endpoint: headers and the lag guard's checks, spread on all

    def names(s: EndpointSet) -> str:
        return ",".join(labels[i] for i in s.indices)

    def guard_from() -> int | None:
        """Blocks from here on are near the highest head any endpoint reports: answers are verified."""
        return max(0, top[0] - settings.lag_guard_blocks) if top else None

    async def client_for(key: tuple[int, ...]) -> tuple[Any, str]:
        async with opening.setdefault(key, asyncio.Lock()):
            if key not in clients:
                client = clients[key] = _rpc_client(settings, urls, key)
                await client.__aenter__()
                client.verifier = everyone[0] if everyone else None  # canonical headers: from any endpoint
                try:
                    got = await client.chain_id()
                    if expected_chain is not None and str(got) != str(expected_chain):
                        refused[key] = f"the endpoint serves chain {got}, this database holds chain {expected_chain}"
                except RpcError as exc:
                    refused[key] = scrub(f"{type(exc).__name__}: {exc}", urls)[:300]
                if key in refused:
                    log.error(
                        "event=endpoints_refused endpoints=%s reason=%r action=next_endpoints",
                        ",".join(ep.label for ep in client.pool.endpoints),
                        refused[key],
                    )
                elif not top:  # no head known yet (none answered at the start)
                    await client.refresh_heads()
                    if client.highest_head() is not None:
                        top.append(client.highest_head())
            return clients[key], refused.get(key, "")

    async def recount(plan: DayPlan, sets: list[EndpointSet]) -> tuple[Recount, ChainDay | None]:
        """The day recounted on the first set that can; what each set before it could not."""
        failures: list[str] = []
        for n, s in enumerate(sets):
            client, why = await client_for(s.indices)
            if not why:
                usage = client.days.get(plan.day_idx)
                before = Counter(usage.served) if usage else Counter()
                try:
                    chain = await recount_day(client, plan, settings.getlogs_blocks, guard_from())
                except RpcError as exc:
                    why = scrub(f"{type(exc).__name__}: {exc}", urls)[:300]
                else:
                    after = client.days[plan.day_idx].served if plan.day_idx in client.days else Counter()
                    served = ",".join(label for label, _ in (after - before).most_common())
                    return Recount(chain.digests, served or names(s), s.same, tuple(failures)), chain
            failures.append(f"{names(s)}: {why}")
            log.warning(
                "day=%d event=recount_failed endpoints=%s action=%s reason=%r",
                plan.day_idx,
                names(s),
                f"try {names(sets[n + 1])}" if n + 1 < len(sets) else "none_left",
                why,
            )
        return Recount(None, "", False, tuple(failures)), None

    async def one(plan: DayPlan) -> DayAudit:
        day, fills = plan.day_idx, filled_by.get(plan.day_idx, "")
        async with limit:
            t0 = time.monotonic()
            first, chain = await recount(plan, endpoint_sets(urls, fills))
            second = None
            if first.digests is not None and full(first.digests) != full(stored[day]):
                again = recheck_sets(urls, fills, first.served.split(","))
                if again:
                    log.info(
                        "day=%d event=recheck reason='the recount differs from the store' first=%s next=%s",
                        day,
                        first.served,
                        names(again[0]),
                    )
                    second, _ = await recount(plan, again)
            verdict, detail, problem = decide(first, stored[day], recorded[day], second)
            endpoint = first.served or ",".join(
                dict.fromkeys(labels[i] for s in endpoint_sets(urls, fills) for i in s.indices)
            )
            kept = chain if problem != "disagree" else None  # two recounts disagree: neither is the chain
            result = await loop.run_in_executor(
                store_thread, finish_day, plan, kept, endpoint, verdict, detail, problem
            )
            log.info(
                "day=%d date=%s endpoint=%s verdict=%s chain_erc20=%s chain_erc1155=%s store_erc20=%d "
                "store_erc1155=%d versions=%d seconds=%.2f detail=%r",
                plan.day_idx,
                plan.day,
                endpoint,
                result.verdict,
                *(full(result.chain)[s][0] if result.chain else -1 for s in STANDARDS),
                *(full(result.store)[s][0] for s in STANDARDS),
                len(result.versions),
                time.monotonic() - t0,
                result.detail,
            )
            return result

    try:
        if urls and plans:
            probe = _rpc_client(settings, urls, tuple(range(len(urls))))
            await probe.__aenter__()
            everyone.append(probe)
            heads = await probe.refresh_heads()
            if probe.highest_head() is not None:
                top.append(probe.highest_head())
            log.info(
                "event=endpoints heads=%s guard_from=%s", ",".join(f"{k}:{v}" for k, v in heads.items()), guard_from()
            )
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(p)) for p in plans]
        return [t.result() for t in tasks]
    finally:
        for client in [*clients.values(), *everyone]:
            await client.close()
        store_thread.shutdown(wait=True)


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
        complete = [d for d, cp in checkpoints.items() if cp["status"] == "COMPLETE"]
        selection = choose_days(complete, days=days, sample=sample, include=include, all_days=all_days, seed=seed)
        plan = {p.day_idx: p for p in store.read_plan()}
        chosen = [d for d in selection.days if d in plan]
        log.info(
            "event=audit_start run_id=%s source=%s days=%d seed=%d sample=%s all=%s listed=%s include=%s "
            "skipped_not_complete=%s endpoints=%s",
            run_id,
            source,
            len(chosen),
            seed,
            sample,
            all_days,
            _span(days),
            _span(include),
            _span(selection.skipped),
            ",".join(endpoint_label(u, i) for i, u in enumerate(settings.rpc_urls)),
        )
        fingerprints.record_fingerprints(store)
        recorded = fingerprints.recorded(store)
        current = fingerprints.current_digests(store, chosen) if chosen else {}
        filled_by = {d: str((recorded.get(d) or checkpoints.get(d) or {}).get("endpoints") or "") for d in chosen}

        stored = {d: {std: current.get(d, {}).get(TABLES[std], (0, 0)) for std in STANDARDS} for d in chosen}
        recs = {d: recorded_digests(recorded.get(d)) for d in chosen}

        def finish_day(
            p: DayPlan, chain: ChainDay | None, endpoint: str, verdict: str, detail: str, problem: str
        ) -> DayAudit:
            versions = store_versions(store, p, chain)
            return DayAudit(
                p.day_idx,
                p.day,
                endpoint,
                verdict,
                detail,
                full(chain.digests) if chain else None,
                full(stored[p.day_idx]),
                recs[p.day_idx],
                versions,
                problem,
            )

        expected_chain = store.meta_get("chain_id")
        results = _run_sync(
            lambda: _audit_days(
                settings, [plan[d] for d in chosen], filled_by, expected_chain, stored, recs, finish_day
            )
        )
        report = AuditReport(
            run_id,
            run_at,
            source,
            seed,
            sorted(results, key=lambda r: r.day_idx),
            selection.skipped,
            time.monotonic() - t0,
        )
        store.insert("audit_results", [r.row(run_id, run_at) for r in report.results], schema.AUDIT_COLUMNS)
        log.info(
            "event=audit_done run_id=%s source=%s passed=%s days=%d mismatch=%s error=%s seconds=%.1f",
            run_id,
            source,
            report.passed,
            len(report.results),
            _span(report.mismatched_days),
            _span(report.error_days),
            report.seconds,
        )
        return report


def _span(days: Iterable[int] | None) -> str:
    return "-" if days is None else ",".join(map(str, days)) or "-"


__all__ = [
    "AuditReport",
    "DayAudit",
    "Selection",
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
    "split_span",
    "store_versions",
]
