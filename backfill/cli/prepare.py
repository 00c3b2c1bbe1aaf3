"""Before any worker starts: endpoints answer, the chain is the database's chain, the days are planned.

Every check here runs before anything is written, so bad input leaves the store as it was.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from backfill.chain.client import RpcClient, probe_endpoints
from backfill.chain.finality import final_head, finality_depth, use_finalized_tag
from backfill.chain.planner import BoundarySearch, DayPlan, build_plan, day_targets, range_problem
from backfill.errors import ConfigError, EndpointUnreachable, RpcError, WrongChain
from backfill.redact import endpoint_label
from backfill.settings import Settings
from backfill.store.client import Store, side_by_side

log = logging.getLogger(__name__)


async def check_endpoints(settings: Settings) -> int:
    """The chain id every reachable endpoint agrees on; one clear error otherwise."""
    answers = await probe_endpoints(settings.rpc_urls)
    ids = {v for v in answers.values() if isinstance(v, int)}
    if not ids:
        detail = ", ".join(f"{k} ({v})" for k, v in answers.items())
        raise EndpointUnreachable(
            f"no RPC endpoint answers eth_chainId: {detail}; check ETHEREUM_RPC_URLS "
            "(host, key, the plan's quota) or add another endpoint"
        )
    if len(ids) > 1:
        raise ConfigError(f"RPC endpoints serve different chains: {answers}")
    down = [k for k, v in answers.items() if not isinstance(v, int)]
    if down:
        log.warning("event=endpoints_down endpoints=%s", ",".join(down))
    return ids.pop()


async def identity_and_head(rpc: RpcClient) -> tuple[int, str, int | None, int]:
    """Chain id, genesis hash and genesis timestamp (the gates refuse timestamps before it), and the head: one
    batch, one round trip where the endpoint takes batches (each a round trip of its own to a hosted provider,
    ~50-100 ms, before anything can be planned)."""
    chain_id, genesis, head = await rpc.batch(
        [("eth_chainId", []), ("eth_getBlockByNumber", ["0x0", False]), ("eth_blockNumber", [])]
    )
    genesis = genesis or {}
    ts = genesis.get("timestamp")
    return int(chain_id, 16), genesis.get("hash", "").lower(), int(ts, 16) if ts else None, int(head, 16)


@dataclass(frozen=True)
class ChainView:
    """What the chain says before anything is written: who it is, where its history starts and ends."""

    chain_id: int
    genesis_hash: str
    genesis_ts: int | None
    head: int
    safe_head: int  # head - confirmations: the copy stops here
    safe_head_ts: int | None  # None when the chain is shorter than the confirmations asked
    finality_depth: int = 0  # blocks behind the head that may still change (backfill.chain.finality)
    final_head: int = -1  # the highest copied block that is final: a day ending at or below it is COMPLETE


async def survey_chain(rpc: RpcClient, settings: Settings) -> ChainView:
    """The chain's identity, genesis and safe head, read from the chain only (nothing is written)."""
    chain_id, genesis_hash, genesis_ts, head = await identity_and_head(rpc)
    safe_head = head - settings.confirmations
    safe_head_ts = None
    if safe_head >= 0:
        ((_, safe_head_ts),) = (await rpc.headers([safe_head])).values()
    depth = finality_depth(chain_id, settings.finality_depth)
    finalized = await finalized_block(rpc) if use_finalized_tag(settings.finality_depth, depth) else None
    final = final_head(head, safe_head, depth, finalized)
    return ChainView(chain_id, genesis_hash, genesis_ts, head, safe_head, safe_head_ts, depth, final)


async def finalized_block(rpc: RpcClient) -> int | None:
    """The node's `finalized` block number, None where it has none (older nodes, chains without the tag)."""
    try:
        block = await rpc.call("eth_getBlockByNumber", ["finalized", False])
    except RpcError:
        return None
    return int(block["number"], 16) if isinstance(block, dict) and block.get("number") else None


def check_range(settings: Settings, chain: ChainView) -> None:
    """--from / --to against the chain: one ConfigError line when a day lies before its genesis day or after
    its safe head's day (planning such a day would record an empty day the chain never had)."""
    if chain.safe_head_ts is None and (settings.from_date is not None or settings.to_date is not None):
        raise ConfigError(f"the chain head {chain.head} is below the {settings.confirmations} confirmations asked")
    problem = range_problem(
        settings.from_date,
        settings.to_date,
        chain.genesis_ts,
        chain.head,
        chain.safe_head,
        chain.safe_head_ts,
        settings.confirmations,
    )
    if problem:
        raise ConfigError(problem)


CHAIN_KEYS = ("chain_id", "genesis_hash", "genesis_timestamp")  # the chain this database holds (backfill_meta)


def check_chain(store: Store, chain_id: int, genesis_hash: str, known: Mapping[str, str] | None = None) -> None:
    """One database per chain: refuse an endpoint of another chain than the one recorded. known: the
    database's CHAIN_KEYS, read already (one query here otherwise)."""
    known = store.meta_values(CHAIN_KEYS) if known is None else known
    known_id, known_genesis = known.get("chain_id"), known.get("genesis_hash")
    if known_id is not None and int(known_id) != chain_id:
        raise WrongChain(
            f"the RPC endpoint serves chain {chain_id} but this database holds chain {known_id}; "
            "use another database (CLICKHOUSE_URL or --data-dir)"
        )
    if known_genesis and genesis_hash and known_genesis != genesis_hash:
        raise WrongChain(
            f"the RPC endpoint's genesis block {genesis_hash[:18]}… differs from this database's "
            f"{known_genesis[:18]}…: another chain; use another database (CLICKHOUSE_URL or --data-dir)"
        )


def chain_record(known: Mapping[str, str], chain: ChainView) -> dict[str, str]:
    """What of the chain's identity and genesis time is not recorded yet (written once, with the plan)."""
    new: dict[str, str] = {}
    if "chain_id" not in known:
        new.update({"chain_id": str(chain.chain_id), "genesis_hash": chain.genesis_hash})
    if chain.genesis_ts is not None and "genesis_timestamp" not in known:
        new["genesis_timestamp"] = str(chain.genesis_ts)
    return new


async def search_boundaries(rpc: RpcClient, targets: list[int], head: int) -> list[int]:
    search = BoundarySearch(targets, head)
    while not search.done:
        wanted = search.pending()
        headers = await rpc.headers(wanted)
        search.feed({bn: ts for bn, (_, ts) in headers.items()})
    return search.result()


async def plan_days(
    rpc: RpcClient,
    store: Store,
    settings: Settings,
    chain: ChainView,
    *,
    to_head: bool = False,
    record: Mapping[str, str] | None = None,
) -> list[DayPlan]:
    """Plan [--from, --to] (what is not planned yet, or was clipped at the head last time) and return the whole
    plan. `chain` is the survey the dates were checked against (`survey_chain`): its safe head bounds the plan.
    to_head (`backfill sync`): without --from the stored plan is carried on to the safe head's day.
    record: other meta keys to write; they go in the one meta insert of planning, which precedes the days it
    anchors (the plan's anchor day: a plan is never stored without it)."""
    stored, anchor_text = side_by_side(store.read_plan, lambda: store.meta_get("plan_anchor"))
    existing = {p.day_idx: p for p in stored}
    meta = dict(record or {})
    plans = await _new_plans(rpc, settings, chain, to_head, existing, anchor_text)
    if plans and not anchor_text:
        anchor = anchor_of(anchor_text, settings)
        assert anchor is not None  # a first plan has --from (_new_plans)
        meta["plan_anchor"] = anchor.isoformat()
    if plans:
        settle_open_days(store, existing, plans)
    if meta:
        store.meta_update(meta)
    if plans:
        store.write_plan(plans)
        for p in plans:
            existing[p.day_idx] = p
        log.info(
            "event=planned days=%d first=%s last=%s blocks=%d-%d open=%d final_head=%d",
            len(plans),
            plans[0].day,
            plans[-1].day,
            plans[0].start_block,
            plans[-1].end_block,
            sum(p.clipped for p in plans),
            chain.final_head,
        )
    return [existing[k] for k in sorted(existing)]


def anchor_of(anchor_text: str | None, settings: Settings) -> dt.date | None:
    """The day the plan's day_idx count from: the recorded one, else (a first plan) --from."""
    return dt.date.fromisoformat(anchor_text) if anchor_text else settings.from_date


async def _new_plans(
    rpc: RpcClient,
    settings: Settings,
    chain: ChainView,
    to_head: bool,
    existing: dict[int, DayPlan],
    anchor_text: str | None,
) -> list[DayPlan]:
    """The days to write: those of [--from, --to] not planned yet or clipped at the head last time (an open
    day never shrinks); none when the stored plan is run as it is."""
    anchor = anchor_of(anchor_text, settings)
    from_date = settings.from_date
    if from_date is None:
        if not existing:
            hint = "--from" if to_head else "--from and --to"
            raise ConfigError(f"nothing is planned yet: give {hint} (e.g. --from 2024-01-01)")
        if settings.to_date is None and not to_head:
            return []
        # `--to` alone, or a sync, extends the stored plan: its new days are planned, never left out
        from_date = anchor
        if chain.safe_head_ts is None:
            raise ConfigError(f"the chain head {chain.head} is below the {settings.confirmations} confirmations asked")
    assert from_date is not None and anchor is not None and chain.safe_head_ts is not None  # (check_range)
    if from_date < anchor:
        raise ConfigError(
            f"this database's plan starts at {anchor}; --from {from_date} is earlier. "
            "Use another database (CLICKHOUSE_URL or --data-dir) for an earlier range"
        )
    # up to the day of the safe head by default (that day clipped at it)
    to_date = settings.to_date or dt.datetime.fromtimestamp(chain.safe_head_ts, dt.timezone.utc).date()
    wanted_days = [from_date + dt.timedelta(days=i) for i in range((to_date - from_date).days + 1)]
    missing = [d for d in wanted_days if (d - anchor).days not in existing or existing[(d - anchor).days].clipped]
    if not missing:
        return []
    plans = await _plan_missing(rpc, settings, chain, anchor, missing, to_date)
    # an open day never shrinks (a lower safe head than last time, e.g. more confirmations asked)
    return [p for p in plans if p.day_idx not in existing or p.end_block >= existing[p.day_idx].end_block]


async def _plan_missing(
    rpc: RpcClient, settings: Settings, chain: ChainView, anchor: dt.date, missing: list[dt.date], to_date: dt.date
) -> list[DayPlan]:
    """The plans of the missing days, from one boundary search; a day with no safe block is refused."""
    first, last = missing[0], missing[-1]
    boundaries = await search_boundaries(rpc, day_targets(first, last), chain.safe_head)
    plans = build_plan(anchor, first, last, boundaries, chain.safe_head, chain.final_head)
    plans = [p for p in plans if p.day in set(missing)]
    beyond = [p for p in plans if p.start_block > chain.safe_head and p.clipped]
    if beyond:
        raise ConfigError(
            f"--to {to_date} is beyond the chain: day {beyond[0].day} has no block at or below the "
            f"safe head {chain.safe_head} (head {chain.head} - {settings.confirmations} confirmations)"
        )
    return plans


def settle_open_days(store: Store, existing: dict[int, DayPlan], plans: list[DayPlan]) -> None:
    """Days that were open (clipped) and are planned again: one that grew goes back to RUNNING from where it
    stopped; one whose end is final now, with nothing more to fetch, becomes COMPLETE. (A database written
    before OPEN existed has such days COMPLETE: they are treated the same.)"""
    if not any(p.day_idx in existing and existing[p.day_idx].clipped for p in plans):
        return  # no open day planned again: nothing to settle (and no checkpoint to read)
    checkpoints = store.checkpoints()
    for p in plans:
        old, cp = existing.get(p.day_idx), checkpoints.get(p.day_idx)
        if not (old and old.clipped and cp and cp["status"] in ("OPEN", "COMPLETE")):
            continue
        if int(cp["next_block"]) <= old.end_block:
            continue  # not copied to its old end: the workers go on from the checkpoint anyway
        if p.end_block > old.end_block:
            store.update_checkpoint(p.day_idx, status="RUNNING", next_block=old.end_block + 1, failures=0, error="")
        elif not p.clipped and cp["status"] == "OPEN":
            store.update_checkpoint(p.day_idx, status="COMPLETE")
            log.info("event=day_final day=%s last_block=%d", p.day, p.end_block)


def reopen_for_redo(store: Store, plans: list[DayPlan], first: dt.date, last: dt.date) -> list[int]:
    """`start --redo`: the planned days of [first, last] go back to RUNNING from their first block, counts and
    failures reset, so workers fetch them again and write newer row versions that supersede the old ones."""
    checkpoints = store.checkpoints()
    reopened = []
    for p in plans:
        if not first <= p.day <= last:
            continue
        cp = checkpoints.get(p.day_idx)
        store.write_checkpoint(
            day_idx=p.day_idx,
            status="RUNNING",
            next_block=p.start_block,
            erc20_count=0,
            erc1155_count=0,
            quarantined_count=0,
            skipped_count=0,
            worker_id=int(cp["worker_id"]) if cp else 0,
            shards=int(cp["shards"]) if cp else 0,
            attempts=int(cp["attempts"]) if cp else 0,
            failures=0,
            error="",
            requests=int(cp["requests"]) if cp else 0,
            rpc_errors=int(cp["rpc_errors"]) if cp else 0,
            compute_units=int(cp["compute_units"]) if cp else 0,
        )
        reopened.append(p.day_idx)
    log.info("event=redo days=%d first=%s last=%s", len(reopened), first, last)
    return reopened


__all__ = [
    "ChainView",
    "reopen_for_redo",
    "check_endpoints",
    "identity_and_head",
    "survey_chain",
    "check_range",
    "check_chain",
    "chain_record",
    "CHAIN_KEYS",
    "plan_days",
    "endpoint_label",
]
