"""The rebuild: a pipeline of logged steps, stopped at the first failure, before anything replaces production.

    dedup -> fingerprints -> audit (a sample + every empty day, recounted from RPC) -> strict gates
          -> derived tables -> the operator's *.sql steps -> promotion (when asked) -> snapshot

The derived tables are built under `_next` names beside the audit and the gates (the store's work while the
node and the audit engine do theirs) and swapped in at the derived step, only once both passed; a pipeline that
stops before it drops them. The gates measure the store beside the audit too (the audit changes no staging
row) and judge once it is done, with its verdicts read then. The audit's modules import while dedup runs.

The supervisor runs it once when every planned day is COMPLETE (once per completed plan: a redo or new days
run it again); `backfill rebuild` runs it by hand. Every step is logged with its duration to
on-complete.log; the coverage snapshot `data/post_rebuild_snapshot_<timestamp>.json` is written at the end
either way, with `status` ok or failed and the step that stopped it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import logging.handlers
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from backfill.files.oplog import operation_log
from backfill.settings import Settings
from backfill.store.client import Store, on_thread
from backfill.store.digest import STAGING_TABLES
from backfill.store.leases import Lease, LeaseHeld, claim

if TYPE_CHECKING:
    from monitor.gates.measure import Known

log = logging.getLogger("on_complete")

REBUILD_LEASE = "rebuild"
REBUILD_LEASE_TTL_S = 1800.0  # renewed at each step; a holder gone mid-rebuild frees it after this long


class RebuildStopped(Exception):
    """The pipeline was asked to stop (a stop, or new days to fetch) and did, between two steps."""


class RebuildFailed(Exception):
    def __init__(self, step: str, message: str):
        super().__init__(f"step {step}: {message}")
        self.step = step
        self.message = message


def _file_logger(settings: Settings) -> contextlib.AbstractContextManager[None]:
    return operation_log(settings.log_dir / "on-complete.log", log)


def fingerprint(store: Store) -> str:
    """What 'the run is complete' means now: the days, their counts and their last checkpoint. New days or a
    redo change it, so the rebuild runs again."""
    row = store.query_rows(
        "SELECT count(), max(day_idx), sum(erc20_count), sum(erc1155_count), "
        "countIf(status = 'COMPLETE'), max(updated_at) FROM backfill_checkpoint FINAL WHERE status != 'OPEN'"
    )[0]  # an OPEN day growing at the head is outside the rebuild (final days only): no reason to run it again
    return ":".join(str(v) for v in row)


def rebuild_due(store: Store) -> bool:
    """Has the plan's final part changed since the last successful rebuild?"""
    return store.meta_get("on_complete_fingerprint") != fingerprint(store)


def empty_days(store: Store) -> list[int]:
    """COMPLETE days without a single transfer: the audit recounts every one of them."""
    return sorted(
        d
        for d, cp in store.checkpoints().items()
        if cp["status"] == "COMPLETE" and int(cp["erc20_count"]) + int(cp["erc1155_count"]) == 0
    )


def step_dedup(store: Store, report: dict[str, Any], known: Known) -> None:
    """Dedup every stored row (full_range: from block 0 to the highest stored or planned), so its key counts
    are the whole tables' and go to the gates in `known` (monitor.gates.measure.Known)."""
    from monitor.dedup import dedup_range, full_range

    result = dedup_range(store, *full_range(store))
    report["dedup"] = result.to_json()
    known.key_counts.update(result.key_counts)
    if not result.clean:
        raise RebuildFailed(
            "dedup",
            f"rows still duplicated after OPTIMIZE FINAL: {result.duplicates_after}, "
            f"raw {result.rows_after} vs final {result.final_rows}",
        )


def step_fingerprints(store: Store, report: dict[str, Any], known: Known) -> None:
    """Fingerprint the days that have none yet; their digests, read from the deduplicated rows, go to the
    gates in `known`: measured again moments later, with nothing written since, they could only be equal."""
    from backfill.store.fingerprints import record_fingerprints

    recorded = record_fingerprints(store)
    known.digests.update(recorded)
    report["fingerprinted_days"] = len(recorded)


def step_audit(store: Store, settings: Settings, report: dict[str, Any]) -> None:
    from monitor.audit.recount import run_audit

    include = empty_days(store)
    result = run_audit(store, settings, sample=settings.audit_sample, include=include, source="rebuild")
    report["audit"] = result.to_json()
    for line in result.lines():
        log.info("step=audit %s", line)
    if not result.passed:  # every class of day by name: mismatches, disagreeing recounts, days not recounted
        raise RebuildFailed("audit", result.failure_text(lambda days: _days(store, days)))


def start_measuring(store: Store, known: Known) -> Future[Any]:
    """The gates' measurement of the store (monitor.gates.measure), on a thread of its own beside the audit: it
    reads the deduplicated staging tables, which the audit does not change, except what dedup and the
    fingerprints read of them already (`known`); only the audit's verdicts are read again when the gates
    judge (step_gates)."""
    from monitor.gates.measure import measure

    return on_thread(lambda: measure(store, known), "rebuild-gates")


def step_gates(store: Store, settings: Settings, report: dict[str, Any], measured: Future[Any] | None = None) -> None:
    from monitor.gates.judge import run_gates

    m = measured.result() if measured is not None else None  # its error is this step's
    result = run_gates(store, settings, "strict", source="rebuild", final_only=True, measured=m)  # OPEN: not yet
    report["gates"] = result.to_json()
    for line in result.lines():
        log.info("step=gates %s", line)
    if not result.passed:
        failed = result.failed_days()
        raise RebuildFailed(
            "gates",
            "strict gates failed: "
            + "; ".join(f"{gate} on {_days(store, days) or 'the whole run'}" for gate, days in failed.items()),
        )


def final_block(store: Store) -> int | None:
    """The last block of the final days: the end of the last day before the OPEN days at the chain head (None:
    every day is final). The derived tables and the operator's steps take the rows up to it."""
    checkpoints = store.checkpoints()
    plans = store.read_plan()
    if not plans or all(checkpoints.get(p.day_idx, {}).get("status") != "OPEN" for p in plans):
        return None
    final = [p for p in plans if checkpoints.get(p.day_idx, {}).get("status") != "OPEN"]
    return max((p.end_block for p in final), default=-1)


def start_derived(store: Store) -> Future[tuple[int | None, list[Any]] | None]:
    """The derived tables built under their `_next` names on a thread of their own, while the audit and the gates
    run (the store's work beside the node's and the audit engine's): (the last final block, the built tables), or
    None when there is no final day yet. Nothing is swapped in here: step_derived does that once both passed."""
    from monitor.derived import prepare_derived

    def build() -> tuple[int | None, list[Any]] | None:
        t0 = time.monotonic()
        through = final_block(store)
        if through is not None and through < 0:
            return None
        log.info("step=derived event=building beside=audit,gates through_block=%s", through)
        pending = prepare_derived(store, through_block=through)
        log.info("step=derived event=built seconds=%.3f action=swap_in_after_audit_and_gates", time.monotonic() - t0)
        return through, pending

    return on_thread(build, "rebuild-derived")


def step_derived(
    store: Store, settings: Settings, report: dict[str, Any], built: Future[tuple[int | None, list[Any]] | None]
) -> None:
    """Swap in the tables built beside the audit (`built`: start_derived; its error is this step's), then the
    operator's steps over the same rows."""
    from monitor.derived import commit_derived, run_sql_steps

    ready = built.result()
    if ready is None:
        report["derived"], report["sql_steps"] = {}, []
        log.info("step=derived event=skip reason='no final day yet'")
        return
    through, pending = ready
    report["derived"] = commit_derived(store, pending)
    built_tables = list(report["derived"].values())
    start = min((int(t["from_block"]) for t in built_tables), default=0)
    report["sql_steps"] = run_sql_steps(store, settings.sql_dir, from_block=start, to_block=through)


def drop_unused_derived(store: Store, built: Future[Any] | None) -> None:
    """After a pipeline that stopped before step_derived: wait for the build beside it and drop what it built."""
    if built is None:
        return
    from monitor.derived import discard_derived

    _wait_quietly(built, "derived")
    try:
        discard_derived(store)
    except Exception as exc:  # noqa: BLE001 - the next build drops them too (DROP TABLE IF EXISTS first)
        log.warning("step=derived event=drop_next_failed error=%r action=next_build_drops_them", str(exc)[:200])


def _wait_quietly(work: Future[Any], step: str) -> None:
    """Wait for work begun beside a pipeline that stopped before it was used: its error adds nothing."""
    try:
        work.result()
    except Exception as exc:  # noqa: BLE001 - the pipeline failed already
        log.info("step=%s event=not_used error=%r", step, str(exc)[:200])


def _import_audit_ahead() -> None:
    """The audit's RPC client and answer engine (~0.3 s of imports) loaded on a thread while dedup and the
    fingerprints wait on the store, not when the audit begins."""
    from backfill.cli.import_ahead import import_ahead

    import_ahead(("chdb", "backfill.chain.client", "monitor.audit.recount"), "rebuild-imports")


def step_promote(store: Store, settings: Settings, report: dict[str, Any]) -> None:
    from monitor.promote import promote

    through = final_block(store)  # production holds the final days only
    if through is not None and through < 0:
        report["promotion"] = None
        log.info("step=promote event=skip reason='no final day yet'")
        return
    result = promote(store, settings, through_block=through)
    report["promotion"] = result.to_json() if hasattr(result, "to_json") else str(result)


def _days(store: Store, days: list[int]) -> str:
    """The days as dates, folded (`2024-01-05..2024-01-07`)."""
    from backfill.dates import day_list

    return day_list(days, {p.day_idx: p.day for p in store.read_plan()})


def step_snapshot(store: Store, settings: Settings, report: dict[str, Any]) -> Path:
    days = store.query_rows(
        "SELECT day_idx, day, start_block, end_block, status, erc20_count, erc1155_count, "
        "quarantined_count, skipped_count FROM backfill_progress ORDER BY day_idx"
    )
    report["days"] = {
        "total": len(days),
        "complete": sum(1 for d in days if d[4] == "COMPLETE"),
        "open": [str(d[1]) for d in days if d[4] == "OPEN"],  # at the chain head, not final: left for later
        "first": str(days[0][1]) if days else None,
        "last": str(days[-1][1]) if days else None,
        "per_day": [
            {
                "day_idx": d[0],
                "day": str(d[1]),
                "blocks": [d[2], d[3]],
                "status": d[4],
                "erc20": d[5],
                "erc1155": d[6],
                "quarantined": d[7],
                "skipped_erc721": d[8],
            }
            for d in days
        ],
    }
    report["rows"] = {
        t: int(store.scalar(f"SELECT count() FROM {t} FINAL") or 0)
        for t in [*STAGING_TABLES, "transfer_quarantine", "block_timestamps"]
    }
    report["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / f"post_rebuild_snapshot_{stamp}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    log.info("step=snapshot path=%s status=%s days=%d rows=%s", path.name, report["status"], len(days), report["rows"])
    return path


def _run_step(name: str, fn: Callable[[], Any], report: dict[str, Any]) -> RebuildFailed | None:
    """One pipeline step, timed into report["durations_s"] and logged; its failure returned, not raised."""
    failure: RebuildFailed | None = None
    t0 = time.monotonic()
    log.info("step=%s event=start", name)
    try:
        fn()
    except RebuildFailed as exc:
        failure = exc
    except Exception as exc:  # a step's own error (SQL, RPC): stop the same way, with its text
        text = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
        failure = RebuildFailed(name, text)
    report["durations_s"][name] = round(time.monotonic() - t0, 3)
    if failure:
        log.error(
            "step=%s event=failed seconds=%.3f error=%r action=stop_pipeline production=unchanged",
            name,
            report["durations_s"][name],
            failure.message[:500],
        )
    else:
        log.info("step=%s event=done seconds=%.3f", name, report["durations_s"][name])
    return failure


def _run_steps(
    steps: list[tuple[str, Callable[[], Any]]],
    report: dict[str, Any],
    on_step: Callable[[str | None], None] | None,
    should_stop: Callable[[], str | None] | None,
) -> RebuildFailed | None:
    """The steps in order until the first failure (returned); RebuildStopped when should_stop() gives a reason."""
    for name, fn in steps:
        reason = should_stop() if should_stop else None
        if reason:
            log.warning("step=%s event=not_started reason=%r action=stop_pipeline production=unchanged", name, reason)
            raise RebuildStopped(reason)
        if on_step:
            on_step(name)
        failure = _run_step(name, fn, report)
        if failure:
            return failure
    return None


def run_on_complete(
    store: Store,
    settings: Settings,
    *,
    promote: bool | None = None,
    on_step: Callable[[str | None], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
) -> dict[str, Any]:
    """Run the pipeline; each step logged with its duration; the first failure stops it (RebuildFailed), after
    the snapshot records how far it got. promote=None follows settings.auto_promote. on_step(name) is told
    each step as it starts; should_stop() -> a reason stops the pipeline before the next step
    (RebuildStopped; nothing is promoted, the next completion runs it again)."""
    from monitor.gates.measure import Known

    promote = settings.auto_promote if promote is None else promote
    report: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "status": "running",
        "durations_s": {},
        "promote": promote,
    }
    built: list[Future[Any]] = []  # the derived tables' build, started beside the audit
    measuring: list[Future[Any]] = []  # the gates' measurement, started beside the audit
    known = Known()  # what dedup and the fingerprints read of the staging tables, for the gates
    _import_audit_ahead()

    def audit() -> None:
        built.append(start_derived(store))
        measuring.append(start_measuring(store, known))
        step_audit(store, settings, report)

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("dedup", lambda: step_dedup(store, report, known)),
        ("fingerprints", lambda: step_fingerprints(store, report, known)),
        ("audit", audit),
        ("gates", lambda: step_gates(store, settings, report, measuring[0])),
        ("derived", lambda: step_derived(store, settings, report, built[0])),
    ]
    if promote:
        steps.append(("promote", lambda: step_promote(store, settings, report)))
    else:
        log.info("step=promote event=skip reason=not_asked hint='backfill promote, or auto_promote = true'")
    try:
        failure = _run_steps(steps, report, on_step, should_stop)
    finally:
        if measuring and "gates" not in report["durations_s"]:  # measured beside the audit, never judged
            _wait_quietly(measuring[0], "gates")
        if built and "derived" not in report:  # built beside the audit, never swapped in
            drop_unused_derived(store, built[0])
    if on_step:
        on_step("snapshot")
    report["status"] = "failed" if failure else "ok"
    if failure:
        report["failed_step"], report["error"] = failure.step, failure.message
    report["snapshot"] = str(step_snapshot(store, settings, report).name)
    record_outcome(store, report)
    if failure:
        raise failure
    return report


def record_outcome(store: Store, report: dict[str, Any]) -> None:
    """The last rebuild's outcome and step durations in backfill_meta, for the metrics of any host."""
    outcome = {
        "status": report["status"],
        "at": time.time(),
        "durations_s": report["durations_s"],
        "failed_step": report.get("failed_step"),
    }
    store.meta_set("last_rebuild", json.dumps(outcome))


def run_on_complete_once(store: Store, settings: Settings, **hooks: Any) -> dict[str, Any] | None:
    """Once per completed plan: skipped when this fingerprint was rebuilt successfully already. hooks: on_step
    and should_stop, as for run_on_complete."""
    with _file_logger(settings):
        fp = fingerprint(store)
        if store.meta_get("on_complete_fingerprint") == fp:
            log.info("event=skip reason=already_rebuilt fingerprint=%s", fp)
            return None
        try:  # however many supervisors or workers (hosts) finish the plan, one of them rebuilds it
            lease = claim(store, REBUILD_LEASE, REBUILD_LEASE_TTL_S)
        except LeaseHeld as exc:
            log.info("event=skip reason=rebuilding_elsewhere holder=%r fingerprint=%s", exc.holder.describe(), fp)
            return None
        try:
            if store.meta_get("on_complete_fingerprint") == fingerprint(store):  # done while we claimed
                log.info("event=skip reason=already_rebuilt fingerprint=%s", fp)
                return None
            log.info("event=on_complete_start fingerprint=%s", fp)
            report = run_on_complete(store, settings, **{**hooks, "on_step": _renewing(lease, hooks.get("on_step"))})
            store.meta_set("on_complete_fingerprint", fingerprint(store))
            log.info("event=on_complete_done snapshot=%s", report["snapshot"])
            return report
        finally:
            lease.release()


def _renewing(lease: Lease, on_step: Callable[[str | None], None] | None) -> Callable[[str | None], None]:
    """on_step that also renews the rebuild's lease at each step."""

    def step(name: str | None) -> None:
        if not lease.renew():
            log.warning("event=rebuild_lease_lapsed step=%s action=go_on", name)
        if on_step:
            on_step(name)

    return step


def run_by_hand(
    store: Store,
    settings: Settings,
    *,
    promote: bool | None = None,
    on_step: Callable[[str | None], None] | None = None,
) -> dict[str, Any]:
    """`backfill rebuild`: the same pipeline, whatever was rebuilt before (on_step as for run_on_complete)."""
    with _file_logger(settings):
        log.info("event=rebuild_by_hand_start")
        report = run_on_complete(store, settings, promote=promote, on_step=on_step)
        store.meta_set("on_complete_fingerprint", fingerprint(store))
        return report
