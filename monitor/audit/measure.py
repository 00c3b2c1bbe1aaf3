"""The audit's measuring: a day recounted straight from RPC, and the store's side of the same day.

The recount: eth_getLogs over the day's blocks (ranges sized by the answers, split on refusal) with the copy's
lag guard, eth-abi decoding (backfill.decode.reference), timestamps from block headers, then counts and a content
hash per standard (backfill.store.digest). The store: its raw rows by `_version`, each placed against the
recount (monitor.audit.judge compares them). Shares no code with the worker's fetching, range sizing or
decoding; only the RPC client (retries, endpoint health, lag guard) and the event table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from backfill.chain.planner import DayPlan
from backfill.decode.reference import reference_rows, with_timestamps
from backfill.store import digest
from backfill.store.client import Store
from monitor.audit.judge import STANDARDS, Digests, place_versions
from monitor.audit.report import VersionSummary

log = logging.getLogger("monitor.audit.recount")  # the audit's one logger: run_audit sends it to audit.log

TABLES = {"erc20": "erc20_transfers_staging", "erc1155": "erc1155_transfers_staging"}
MAX_SPAN = 10_000  # blocks per eth_getLogs at most
TARGET_LOGS = 5_000  # aim for answers of about this many logs


# -- range sizes (pure) ----------------------------------------------------------------------------------------------
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


# -- the recount from RPC (I/O) --------------------------------------------------------------------------------------
@dataclass
class ChainDay:
    digests: Digests
    row_hashes: dict[str, set[int]]  # standard -> hashes of the recount's rows (to place partial versions)


async def recount_day(client: Any, plan: DayPlan, first_span: int, guard_from: int | None = None) -> ChainDay:
    """eth_getLogs over the day's blocks (split on refusal, sized by the answers), eth-abi decoding, timestamps
    from block headers (not the logs' blockTimestamp), digests per standard.

    The copy's protections: eth_blockNumber rides in the same batch as every eth_getLogs (a node whose head is
    below the range is refused), and a range reaching `guard_from` (near the highest known head) is checked
    against the same node's headers: hashes, and every block whose logsBloom admits a transfer but that came
    back without logs is asked again by hash. A refused answer is asked again elsewhere by the client."""
    from backfill.chain.client import current_day
    from backfill.chain.provider_errors import NodeBehind, RangeTooLarge

    token = current_day.set(plan.day_idx)
    try:
        counts = {s: 0 for s in STANDARDS}
        sums = {s: 0 for s in STANDARDS}
        hashes: dict[str, set[int]] = {s: set() for s in STANDARDS}
        a, span = plan.start_block, max(1, first_span)
        while a <= plan.end_block:
            b = min(a + span - 1, plan.end_block)
            try:
                near_head = guard_from is not None and b >= guard_from
                logs = await client.get_logs(a, b, guard=True, verify_from=guard_from if near_head else None)
            except RangeTooLarge as exc:
                smaller = split_span(b - a + 1, a, exc.suggested)
                if smaller is None:
                    raise
                log.info("day=%d blocks=%d-%d event=split next_blocks=%d", plan.day_idx, a, b, smaller)
                span = smaller
                continue
            erc20, erc1155, _ = reference_rows(logs)
            blocks = sorted({r.block_number for r in erc20} | {r.block_number for r in erc1155})
            headers = await (client.verifier or client).headers(blocks) if blocks else {}
            for entry in logs:
                bn = int(entry["blockNumber"], 16)
                if (
                    not entry.get("removed")
                    and bn in headers
                    and (entry.get("blockHash") or "").lower() not in ("", headers[bn][0])
                ):
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
            f"FROM {table} WHERE block_number BETWEEN %(a)s AND %(b)s GROUP BY _version",
            params,
        ):
            v = per.setdefault(int(version), VersionSummary(int(version), {}, {}, 0))
            v.rows[std], v.hashes[std] = int(n), int(h or 0)
            v.zero_timestamps += int(zero)
    versions = [per[k] for k in sorted(per)]
    if versions:
        versions[-1].latest = True
    if chain is None:
        return versions
    missing = _rows_not_on_chain(store, plan, chain) if len(versions) > 1 else None
    return place_versions(versions, chain.digests, missing)


def _rows_not_on_chain(store: Store, plan: DayPlan, chain: ChainDay) -> dict[int, int]:
    """Per `_version`: its raw rows that are not rows of the recount (a row-by-row placement)."""
    missing: dict[int, int] = {}
    params = {"a": plan.start_block, "b": plan.end_block}
    for std in STANDARDS:
        table = TABLES[std]
        for version, h in store.query_rows(
            f"SELECT _version, {digest.row_hash_sql(table)} FROM {table} WHERE block_number BETWEEN %(a)s AND %(b)s",
            params,
        ):
            missing.setdefault(int(version), 0)
            if int(h) not in chain.row_hashes[std]:
                missing[int(version)] += 1
    return missing
