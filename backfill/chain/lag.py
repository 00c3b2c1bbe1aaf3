"""The lag guard near the head: is the node that answered eth_getLogs up to the blocks it answered for?

A node behind a load balancer may be behind the chain and answer short, or empty, with no error. The RPC
client (backfill/chain/client.py) asks eth_blockNumber beside eth_getLogs and refuses, as NodeBehind, an
answer from a node whose head is below the range (refuse_behind); blocks from verify_from on are checked
against the chain's headers (verify_complete): block hashes must match the logs', and a block whose logsBloom
admits a transfer topic (backfill/chain/bloom.py) but came back without logs is asked again by hash.
A refused answer is retried on another endpoint by the client; nothing here logs or chooses endpoints.
"""

from __future__ import annotations

from typing import Any, Protocol

from backfill.chain.answers import ReadAnswer
from backfill.chain.provider_errors import NodeBehind, Transient
from backfill.decode.events import LOG_FILTER_TOPICS


class Batcher(Protocol):
    """What the headers are asked of: RpcClient.batch (answers in call order)."""

    async def batch(self, calls: list[tuple[str, list[Any]]], *, need_block: int | None = None) -> list[Any]: ...


def head_of(value: Any) -> int:
    """eth_blockNumber's result as a block number; Transient when it is not a hex quantity."""
    try:
        return int(value, 16)
    except (TypeError, ValueError):
        raise Transient(f"eth_blockNumber answered {str(value)[:40]!r}") from None


def refuse_behind(head: int, to_block: int) -> None:
    """NodeBehind when the node's head is below the last block asked for."""
    if head < to_block:
        raise NodeBehind(f"node head {head} is below block {to_block}", head=head)


def block_hashes(logs: list[dict[str, Any]] | ReadAnswer) -> dict[int, str]:
    """block number -> lowercased block hash ("" if none) of the blocks an eth_getLogs answer names."""
    if isinstance(logs, ReadAnswer):
        return logs.block_hashes()
    return {int(entry["blockNumber"], 16): (entry.get("blockHash") or "").lower() for entry in logs}


async def verify_complete(source: Batcher, logs: list[dict[str, Any]] | ReadAnswer, first: int, last: int) -> None:
    """Check [first, last] of an answer against the chain's headers; NodeBehind when it cannot be complete.

    The headers may come from any endpoint that has the blocks (they are the canonical chain's, whoever
    serves them), so `source` spreads the calls over the endpoints' budgets; a node that serves another branch
    or misses a block fails the check, which is the safe side."""
    from backfill.chain.bloom import may_contain_any  # imported on first use: only the guard near the head needs it

    blocks = list(range(first, last + 1))
    headers: dict[int, Any] = {}
    answers = await source.batch([("eth_getBlockByNumber", [hex(b), False]) for b in blocks], need_block=last)
    for bn, header in zip(blocks, answers):
        if not header:
            raise NodeBehind(f"block {bn} unknown to the node that served its header")
        headers[bn] = header
    seen = {bn: block_hash for bn, block_hash in block_hashes(logs).items() if first <= bn <= last}
    for bn, block_hash in seen.items():
        if block_hash and headers[bn]["hash"].lower() != block_hash:
            raise NodeBehind(f"block {bn}: logs and header disagree on the hash (reorg or mixed nodes)")
    suspicious = [
        bn
        for bn in blocks
        if bn not in seen and may_contain_any(headers[bn].get("logsBloom", ""), LOG_FILTER_TOPICS[0])
    ]
    if not suspicious:
        return
    recheck = [("eth_getLogs", [{"blockHash": headers[bn]["hash"], "topics": LOG_FILTER_TOPICS}]) for bn in suspicious]
    for bn, found in zip(suspicious, await source.batch(recheck, need_block=last)):
        if found:
            raise NodeBehind(f"the answer missed the logs of block {bn} (short answer)")
