"""Is an eth_getLogs answer one a node can give? Pure checks, no I/O.

A log on chain can carry anything under our topics (a contract may emit a `Transfer` with two topics or odd
data: those are chain facts, quarantined by the decoder). But some things no node produces: a non-hex digit,
a 4-byte transaction hash, a 21-byte address, a fifth topic (the EVM's LOG0..LOG4 carry at most four), data
that is not whole bytes, a block outside the range asked for, a log whose topic0 the filter did not ask for,
two hashes for one block in one answer. Such an answer was damaged on the way (a provider's bug, a proxy, a
truncating cache): it is a bad response, asked again elsewhere, never written and never quarantined as if
the chain held it.
"""

from __future__ import annotations

from typing import Any, Iterable

from backfill.decode.events import EVENTS
from backfill.decode.hexfmt import ADDRESS, DATA, QUANTITY, WORD

MAX_TOPICS = 4  # LOG0..LOG4
_TOPIC0S = frozenset(EVENTS)


UINT32_MAX = 2**32 - 1  # log_index and block timestamps as the tables store them


def _quantity(value: Any, top: int = 2**64 - 1) -> int | None:
    n = int(value, 16) if type(value) is str and QUANTITY.match(value) else None
    return n if n is not None and n <= top else None


def log_damage(log: Any, first: int, last: int) -> str | None:
    """Why `log` cannot be a node's answer to eth_getLogs over [first, last] with our topics; None when it can."""
    if type(log) is not dict:
        return f"a log that is a JSON {type(log).__name__}"
    removed = log.get("removed")
    if removed is not None and type(removed) is not bool:
        return "removed is not a boolean"
    bn = _quantity(log.get("blockNumber"))
    if bn is None:
        return "blockNumber is not a hex quantity"
    if not first <= bn <= last:
        return f"a log of block {bn}, outside the range asked for"
    if _quantity(log.get("logIndex"), UINT32_MAX) is None:
        return "logIndex is not a hex quantity below 2**32"
    block_hash = log.get("blockHash")
    if block_hash is not None and not (type(block_hash) is str and WORD.match(block_hash)):
        return "blockHash is not 32 bytes of hex"
    ts = log.get("blockTimestamp")
    if ts is not None and _quantity(ts, UINT32_MAX) is None:
        return "blockTimestamp is not a hex quantity below 2**32"
    tx = log.get("transactionHash")
    if not (type(tx) is str and WORD.match(tx)):
        return "transactionHash is not 32 bytes of hex"
    address = log.get("address")
    if not (type(address) is str and ADDRESS.match(address)):
        return "address is not 20 bytes of hex"
    topics = log.get("topics")
    if type(topics) is not list or not 1 <= len(topics) <= MAX_TOPICS:
        return f"topics is not a list of 1 to {MAX_TOPICS}"
    for topic in topics:
        if not (type(topic) is str and WORD.match(topic)):
            return "a topic is not 32 bytes of hex"
    if topics[0].lower() not in _TOPIC0S:
        return "topic0 is not one the filter asked for"
    data = log.get("data")
    if not (type(data) is str and DATA.match(data)):
        return "data is not whole bytes of hex"
    return None


def logs_damage(logs: Iterable[Any], first: int, last: int) -> str | None:
    """The first reason an answer's logs cannot be a node's (see log_damage), or two hashes for one block."""
    hashes: dict[Any, Any] = {}
    for log in logs:
        reason = log_damage(log, first, last)
        if reason is not None:
            return reason
        block_hash = log.get("blockHash")
        if block_hash is not None:
            seen = hashes.setdefault(log["blockNumber"], block_hash)
            if seen is not block_hash and seen.lower() != block_hash.lower():
                return f"block {int(log['blockNumber'], 16)} has two hashes in one answer"
    return None


def blocks_damage(blocks: Iterable[tuple[int, str]], first: int, last: int) -> str | None:
    """The same judgement for what the compiled scanner read of an answer: (block number, hash or "") pairs
    (it checks every other field of the logs it decodes and hands any other log back to logs_damage)."""
    for bn, block_hash in blocks:
        if not first <= bn <= last:
            return f"a log of block {bn}, outside the range asked for"
        if block_hash and not WORD.match(block_hash):
            return "blockHash is not 32 bytes of hex"
    return None
