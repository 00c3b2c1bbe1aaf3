"""`backfill start --dry-run`: a start's checks and plan, printed, with nothing written.

The planner (`prepare.plan_days`) reads the stored plan and writes the days it plans. Here it gets a stand-in
for the store (`PlanShadow`) that reads the existing store, when there is one to read without creating
anything, and keeps the writes instead of doing them. So the preview runs the very code a start runs, and
what it would have written is what a start would change. The RPC client learns nothing for later
(no `endpoints.json`), no log is opened, the data directory is not created.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from backfill import control
from backfill.chain.client import RpcClient
from backfill.chain.planner import DayPlan
from backfill.cli.prepare import check_chain, check_endpoints, check_range, plan_days, reopen_for_redo, survey_chain
from backfill.errors import UserError
from backfill.redact import redact_url
from backfill.settings import Settings, redact_clickhouse_url
from backfill.store.client import Store

_TABLES = ("backfill_days", "backfill_meta", "backfill_checkpoint")


class PlanShadow:
    """What planning uses of a Store: reads go to the existing store (or find nothing), writes are kept."""

    def __init__(self, store: Store | None):
        self.store = store
        self.days_written: list[DayPlan] = []
        self.meta_written: dict[str, str] = {}
        self.reopened: list[int] = []  # day_idx whose checkpoint would go back to RUNNING

    def read_plan(self) -> list[DayPlan]:
        return self.store.read_plan() if self.store else []

    def meta_get(self, key: str) -> str | None:
        if key in self.meta_written:
            return self.meta_written[key]
        return self.store.meta_get(key) if self.store else None

    def meta_values(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(keys)
        found = self.store.meta_values(keys) if self.store else {}
        return {**found, **{k: v for k, v in self.meta_written.items() if k in keys}}

    def meta_set(self, key: str, value: str) -> None:
        self.meta_written[key] = value

    def meta_update(self, values: dict[str, str]) -> None:
        self.meta_written.update(values)

    def checkpoints(self) -> dict[int, dict[str, Any]]:
        return self.store.checkpoints() if self.store else {}

    def write_plan(self, plans: Iterable[DayPlan]) -> None:
        self.days_written.extend(plans)

    def write_checkpoint(self, *, day_idx: int, **_: Any) -> None:
        self.reopened.append(day_idx)


@dataclass(frozen=True)
class Preview:
    chain_id: int
    plans: list[DayPlan]  # the whole plan a start would run
    stored: set[int]  # day_idx the existing store had planned
    new_days: set[int]  # day_idx planned now: not in the store yet, or re-planned after being clipped at the head
    reopened: set[int]  # day_idx that would go back to RUNNING (a clipped day that grew, --redo)
    statuses: dict[int, str]  # day_idx -> checkpoint status in the existing store
    endpoints: list[str]  # redacted
    store: str  # redacted
    store_exists: bool
    data_dir: Path
    shards: int
    confirmations: int
    anchor_written: str | None  # the plan anchor a start would record (a fresh store)
    running: dict[str, Any] | None = field(default=None)  # the active supervisor a start would talk to


def preview(settings: Settings) -> Preview:
    """Check the endpoints and the chain and plan the days as `backfill start` does, writing nothing."""
    running = control.running_supervisor(settings.log_dir) if settings.log_dir.exists() else None
    if settings.redo and running:
        raise UserError("a run is active for this data directory; `backfill stop` it before a --redo")
    existing = _existing_store(settings)
    try:
        return asyncio.run(_plan(settings, existing, running))
    finally:
        if existing:
            existing.close()


async def _plan(settings: Settings, existing: Store | None, running: dict[str, Any] | None) -> Preview:
    await check_endpoints(settings)
    shadow = PlanShadow(existing)
    store = cast(Store, shadow)  # the planner's functions take a Store; they use only what PlanShadow has
    async with RpcClient(
        settings.rpc_urls,
        timeout_s=settings.rpc_timeout_s,
        attempts=4,
        context="dry-run",
        max_rps_per_endpoint=settings.rpc_max_rps,
    ) as rpc:  # no memory: endpoints.json untouched
        chain = await survey_chain(rpc, settings)
        check_chain(store, chain.chain_id, chain.genesis_hash)
        check_range(settings, chain)  # the dates a start would refuse, refused the same way
        stored = {p.day_idx for p in shadow.read_plan()}
        plans = await plan_days(rpc, store, settings, chain)
        if settings.redo:
            assert settings.from_date and settings.to_date
            reopen_for_redo(store, plans, settings.from_date, settings.to_date)
    target = settings.store
    return Preview(
        chain_id=chain.chain_id,
        plans=plans,
        stored=stored,
        new_days={p.day_idx for p in shadow.days_written},
        reopened=set(shadow.reopened),
        statuses={k: str(cp["status"]) for k, cp in shadow.checkpoints().items()},
        endpoints=[redact_url(u) for u in settings.rpc_urls],
        store=redact_clickhouse_url(target.url)
        if target.url
        else f"embedded store in {settings.data_dir / 'clickhouse'}",
        store_exists=existing is not None,
        data_dir=settings.data_dir,
        shards=settings.shards,
        confirmations=settings.confirmations,
        anchor_written=shadow.meta_written.get("plan_anchor"),
        running=running,
    )


def _existing_store(settings: Settings) -> Store | None:
    """The store a start would use, when there is one to read without creating it: the configured server's
    database, or the embedded store of an existing data directory (started on demand, as any command does).
    None: nothing is stored yet, so nothing is planned."""
    from backfill.store.embedded import store_dir

    if not settings.store.url and not store_dir(settings.data_dir).is_dir():
        return None
    store = Store.connect(settings, create=False)
    found = store.scalar(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN %(t)s", {"t": _TABLES}
    )
    if int(found or 0) < len(_TABLES):
        store.close()
        return None
    return store


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _blocks(p: DayPlan) -> str:
    return f"{p.start_block}-{p.end_block}" if p.n_blocks else "none"


def render_preview(pv: Preview) -> str:
    """The preview for people: what was checked, the plan day by day, and what a start would write."""
    lines = [
        "dry run: nothing was written",
        f"endpoints: {', '.join(pv.endpoints)} (chain {pv.chain_id})",
        f"store: {pv.store}" + ("" if pv.store_exists else " (nothing stored yet)"),
        f"data dir: {pv.data_dir}" + ("" if pv.data_dir.exists() else " (does not exist; a start creates it)"),
        f"shards: {pv.shards}",
    ]
    if pv.plans:
        first, last = pv.plans[0], pv.plans[-1]
        lines.append(
            f"plan: {_days(len(pv.plans))}, {first.day} to {last.day}, blocks {first.start_block}-"
            f"{last.end_block} ({pv.confirmations} confirmations)"
        )
    header = ("day_idx", "day", "blocks", "n_blocks", "")
    rows = [(str(p.day_idx), p.day.isoformat(), _blocks(p), str(p.n_blocks), _day_note(pv, p)) for p in pv.plans]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        lines.append(
            "  "
            + "  ".join(c.rjust(w) if i in (0, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            + f"  {r[4]}".rstrip()
        )
    lines.append(f"a start would: {_would(pv)}")
    return "\n".join(line.rstrip() for line in lines)


def _day_note(pv: Preview, p: DayPlan) -> str:
    notes = []
    if p.day_idx in pv.new_days:
        notes.append("re-planned" if p.day_idx in pv.stored else "new")
    if p.day_idx in pv.stored:
        notes.append(pv.statuses.get(p.day_idx, "PENDING"))
    if p.clipped:
        notes.append("clipped at the safe head")
    if p.day_idx in pv.reopened:
        notes.append("fetched again")
    return ", ".join(notes)


def _would(pv: Preview) -> str:
    what = []
    if pv.new_days:
        what.append(f"plan {_days(len(pv.new_days))} (backfill_days)")
    if pv.anchor_written:
        what.append(f"anchor day_idx 0 at {dt.date.fromisoformat(pv.anchor_written)}")
    if pv.reopened:
        what.append(f"put {_days(len(pv.reopened))} back to RUNNING")
    if not what:
        what.append("keep the stored plan as it is")
    if pv.running:
        what.append(f"tell the active run (supervisor pid {pv.running.get('pid', '?')}) to re-read the plan")
    else:
        what.append(f"start a supervisor with {pv.shards} workers")
    return "; ".join(what)
