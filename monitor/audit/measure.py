"""The audit's measuring: a day recounted straight from RPC, and the store's side of the same day.

The recount: eth_getLogs over the day's blocks (ranges sized by the answers, split on refusal) with the copy's
lag guard, decoding in the audit's own engine (monitor.audit.engine_read, SQL) or, for the answers it hands back,
with eth-abi (backfill.decode.reference), timestamps from block headers, then counts and a content hash per
standard (backfill.store.digest). The store: its raw rows by `_version`, each placed against the
recount (monitor.audit.judge compares them). Shares no code with the worker's fetching, range sizing or
decoding; only the RPC client (retries, endpoint health, lag guard) and the event table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from backfill.chain.planner import DayPlan
from backfill.store import digest
from backfill.store.client import Store
from monitor.audit.engine_read import EngineAnswer, EngineReader, hash_values
from monitor.audit.judge import STANDARDS, Digests, place_versions
from monitor.audit.report import VersionSummary

log = logging.getLogger("monitor.audit.recount")  # the audit's one logger: run_audit sends it to audit.log

TABLES = {"erc20": "erc20_transfers_staging", "erc1155": "erc1155_transfers_staging"}
MAX_SPAN = 10_000  # blocks per eth_getLogs at most
TARGET_LOGS = 5_000  # aim for answers of about this many logs
# Answers the audit's engine reads: larger, since each costs the engine ~30 ms of planning whatever its size.
ENGINE_TARGET_LOGS = 20_000


# -- range sizes (pure) ----------------------------------------------------------------------------------------------
def next_span(span: int, n_logs: int, target: int = TARGET_LOGS) -> int:
    """Blocks to ask for next after `span` blocks gave `n_logs`: toward `target` logs, growing at most 4x."""
    ideal = span * target // n_logs if n_logs else span * 4
    return max(1, min(span * 4, MAX_SPAN, ideal))


def opening_span(n_blocks: int, expected_rows: int | None, target: int, remembered: int) -> int:
    """Blocks of a day's first eth_getLogs. With the rows its checkpoint gives it: the day in even answers of
    at most ~`target` of them (a sparse day: one answer). That sizes the ranges only: every block is recounted
    whatever it holds, and a store that undercounts gets bigger answers, split if the provider refuses them. A
    day the store holds no rows of (or of unknown rows) starts where the last recount left off (`remembered`)."""
    if not expected_rows or n_blocks <= 0:
        return remembered
    answers = -(-expected_rows // target)
    return max(1, min(MAX_SPAN, -(-n_blocks // answers)))


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
    # standard -> block -> [rows, hash sum]: the recount's digests of any block range (a row version's)
    blocks: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    # standard -> the recount's row hashes, in the pieces they came in: sets (the reference path) and the
    # engine's blobs (monitor.audit.engine_read); joined only when a day's versions are placed row by row
    pieces: dict[str, list[Any]] = field(default_factory=dict)
    # the range size the recount would have asked for next: the next day's recount starts there, as if the
    # days were one range (a day of 2,000 sparse blocks is then one answer, not four from getlogs_blocks up)
    next_span: int = 0
    _joined: dict[str, set[int]] | None = None

    @property
    def row_hashes(self) -> dict[str, set[int]]:
        """standard -> hashes of the recount's rows (to place partial versions)."""
        if self._joined is None:
            self._joined = {
                s: set().union(*(p if isinstance(p, set) else hash_values(p) for p in self.pieces.get(s, [])))
                for s in STANDARDS
            }
        return self._joined

    def blocks_digests(self, blocks: set[int]) -> Digests:
        """The recount's (rows, hash sum) per standard over the given blocks."""
        out = {}
        for s in STANDARDS:
            picked = [v for bn, v in self.blocks.get(s, {}).items() if bn in blocks]
            out[s] = (sum(v[0] for v in picked), sum(v[1] for v in picked))
        return out


class _Tally:
    """Counts, hash sums and row-hash pieces of a day's recount, answer by answer."""

    def __init__(self) -> None:
        self.counts = {s: 0 for s in STANDARDS}
        self.sums = {s: 0 for s in STANDARDS}
        self.pieces: dict[str, list[Any]] = {s: [] for s in STANDARDS}
        self.blocks: dict[str, dict[int, list[int]]] = {s: {} for s in STANDARDS}

    def add(self, std: str, block: int, n: int, total: int, piece: Any) -> None:
        """Rows of one block (n, their hashes' sum, the hashes: a set or an engine blob)."""
        self.counts[std] += n
        self.sums[std] += total
        self.pieces[std].append(piece)
        got = self.blocks[std].setdefault(block, [0, 0])
        got[0] += n
        got[1] += total

    def day(self, next_span: int = 0) -> ChainDay:
        digests = {s: (self.counts[s], self.sums[s]) for s in STANDARDS}
        return ChainDay(digests, self.blocks, self.pieces, next_span)


def _check_hashes(blocks: dict[int, str], headers: dict[int, tuple[str, int]]) -> None:
    """NodeBehind when the logs name another hash for a block than its header (a reorg, or mixed nodes)."""
    from backfill.chain.provider_errors import NodeBehind

    for bn, block_hash in blocks.items():
        if bn in headers and block_hash.lower() not in ("", headers[bn][0]):
            raise NodeBehind(f"block {bn}: the logs and the header disagree on its hash (reorg or mixed nodes)")


def _reference_tally(tally: _Tally, logs: list[dict[str, Any]], headers: dict[int, tuple[str, int]]) -> None:
    """The answer's rows by the reference (eth-abi), with the headers' timestamps, into the tally."""
    from backfill.decode.reference import reference_rows, with_timestamps  # eth-abi: ~0.15 s to import

    erc20, erc1155, _ = reference_rows(logs)
    rows20, rows1155 = with_timestamps(erc20, erc1155, {bn: ts for bn, (_, ts) in headers.items()})
    for std, rows in (("erc20", rows20), ("erc1155", rows1155)):
        per_block: dict[int, list[int]] = {}
        for row in rows:
            per_block.setdefault(row[0], []).append(digest.digest_rows((row,), std)[1])
        for bn, hashes in per_block.items():
            tally.add(std, bn, len(hashes), sum(hashes), set(hashes))


async def _recount_answer(client: Any, tally: _Tally, logs: Any, reader: EngineReader | None) -> None:
    """One eth_getLogs answer into the tally: headers for its blocks with rows (their hashes checked against
    the logs', their timestamps the rows'), rows decoded by the engine where it took the answer, else by eth-abi."""
    source = client.verifier or client
    if isinstance(logs, EngineAnswer) and reader is not None:
        try:
            headers = await source.headers(logs.row_blocks) if logs.row_blocks else {}
            _check_hashes({bn: logs.blocks[bn] for bn in logs.row_blocks}, headers)
            per_block = await reader.run(reader.finish, logs, {bn: ts for bn, (_, ts) in headers.items()})
        finally:
            await reader.run(reader.discard, logs)
        for std, bn, n, total, blob in per_block:
            tally.add(std, bn, n, total, blob)
        return
    from backfill.decode.reference import reference_rows

    erc20, erc1155, _ = reference_rows(logs)
    blocks = sorted({r.block_number for r in erc20} | {r.block_number for r in erc1155})
    headers = await source.headers(blocks) if blocks else {}
    seen = {
        int(e["blockNumber"], 16): e.get("blockHash") or "" for e in logs if not e.get("removed") and e.get("blockHash")
    }
    _check_hashes(seen, headers)
    _reference_tally(tally, logs, headers)


async def recount_day(
    client: Any, plan: DayPlan, first_span: int, guard_from: int | None = None, reader: EngineReader | None = None
) -> ChainDay:
    """eth_getLogs over the day's blocks (split on refusal, sized by the answers), decoded apart from the copy
    (in the audit's own engine where it takes the answer, monitor.audit.engine_read; else eth-abi), timestamps
    from block headers (not the logs' blockTimestamp), digests per standard.

    The copy's protections: eth_blockNumber rides in the same batch as every eth_getLogs (a node whose head is
    below the range is refused), and a range reaching `guard_from` (near the highest known head) is checked
    against the same node's headers: hashes, and every block whose logsBloom admits a transfer but that came
    back without logs is asked again by hash. A refused answer is asked again elsewhere by the client."""
    from backfill.chain.client import current_day
    from backfill.chain.provider_errors import RangeTooLarge

    token = current_day.set(plan.day_idx)
    target = ENGINE_TARGET_LOGS if reader is not None else TARGET_LOGS
    try:
        tally = _Tally()
        a, span = plan.start_block, max(1, first_span)
        while a <= plan.end_block:
            b = min(a + span - 1, plan.end_block)
            try:
                near_head = guard_from is not None and b >= guard_from
                logs = await client.get_logs(
                    a, b, guard=True, verify_from=guard_from if near_head else None, read=reader
                )
            except RangeTooLarge as exc:
                smaller = split_span(b - a + 1, a, exc.suggested)
                if smaller is None:
                    raise
                log.info("day=%d blocks=%d-%d event=split next_blocks=%d", plan.day_idx, a, b, smaller)
                span = smaller
                continue
            await _recount_answer(client, tally, logs, reader)
            span = next_span(b - a + 1, len(logs), target)
            a = b + 1
        return tally.day(span)
    finally:
        current_day.reset(token)


# -- the store side (I/O) --------------------------------------------------------------------------------------------
def store_versions(store: Store, plan: DayPlan, chain: ChainDay | None) -> list[VersionSummary]:
    """The day's raw rows (no FINAL) by `_version`: rows, zero timestamps, hash; each compared with the recount."""
    per: dict[int, VersionSummary] = {}
    spans: dict[int, set[int]] = {}  # version -> the blocks it has rows of
    params = {"a": plan.start_block, "b": plan.end_block}
    for std in STANDARDS:
        table = TABLES[std]
        for version, n, zero, h, blocks in store.query_rows(
            f"SELECT _version, count(), countIf(toUnixTimestamp(block_timestamp) = 0), sum({digest.row_hash_sql(table)}), "
            f"groupUniqArray(block_number) FROM {table} WHERE block_number BETWEEN %(a)s AND %(b)s GROUP BY _version",
            params,
        ):
            v = per.setdefault(int(version), VersionSummary(int(version), {}, {}, 0))
            v.rows[std], v.hashes[std] = int(n), int(h or 0)
            v.zero_timestamps += int(zero)
            spans.setdefault(int(version), set()).update(map(int, blocks))
    versions = [per[k] for k in sorted(per)]
    if versions:
        versions[-1].latest = True
    if chain is None:
        return versions
    missing = _placed_by_blocks(versions, spans, chain) if len(versions) > 1 else None
    if missing is not None and len(missing) < len(versions):
        missing = _rows_not_on_chain(store, plan, chain)
    return place_versions(versions, chain.digests, missing)


def _placed_by_blocks(versions: list[VersionSummary], spans: dict[int, set[int]], chain: ChainDay) -> dict[int, int]:
    """{version: 0} for each version whose rows equal the recount's of the blocks it has rows of (whole blocks
    copied once, as a clean copy writes them): all of them are on chain, no row-by-row placement needed for it.
    The others are left out."""
    placed = {}
    for v in versions:
        want = chain.blocks_digests(spans[v.version])
        if all((v.rows.get(s, 0), v.hashes.get(s, 0)) == d for s, d in want.items()):
            placed[v.version] = 0
    return placed


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
