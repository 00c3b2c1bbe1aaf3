"""Reference decoding with eth-abi: the independent path the audit recounts with and the hand-written decoder
(backfill/decode/decoder.py) is held to. Slower, library-driven, sharing no parsing code with the hot path.

The rules are the product's (docs/architecture.md, Decisions): an ERC-20 `Transfer` has 3 topics and exactly
32 bytes of data; indexed addresses are 32-byte words with 12 zero bytes in front; a `TransferBatch` gives one
row per id and needs arrays of equal length; logs flagged `removed` are not part of the chain. Anything else
under our topics (including a 4-topic ERC-721 `Transfer`) is counted as not a valid transfer.
"""

from __future__ import annotations

import re
from typing import Any

from eth_abi import decode
from eth_abi.exceptions import DecodingError

from backfill.decode.decoder import Erc20Row, Erc1155Row
from backfill.decode.events import ERC20_TRANSFER, ERC1155_BATCH, ERC1155_SINGLE

# Its own patterns, not backfill.decode.hexfmt's: the reference shares no decoding code with the copy path.
_HASH = re.compile(r"0x[0-9a-fA-F]{64}\Z")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}\Z")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*\Z")
_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}\Z")


def _addr(topic: str) -> str | None:
    raw = bytes.fromhex(topic[2:])
    if len(raw) != 32 or any(raw[:12]):
        return None
    return "0x" + raw[12:].hex()


def _as_a_node_writes_it(log: dict[str, Any]) -> bool:
    """Every field in the form a node writes (the RPC client refuses answers with anything else, so this only
    keeps the audit's decoder honest on its own)."""
    block_hash, ts, removed = log.get("blockHash"), log.get("blockTimestamp"), log.get("removed")
    return (
        (removed is None or type(removed) is bool)
        and all(_HASH.match(t) for t in log["topics"])
        and bool(_HASH.match(log["transactionHash"]))
        and bool(_ADDRESS.match(log["address"]))
        and bool(_DATA.match(log["data"]))
        and bool(_QUANTITY.match(log["blockNumber"]))
        and int(log["blockNumber"], 16) < 2**64
        and bool(_QUANTITY.match(log["logIndex"]))
        and int(log["logIndex"], 16) < 2**32
        and (block_hash is None or bool(_HASH.match(block_hash)))
        and (ts is None or bool(_QUANTITY.match(ts)) and int(ts, 16) < 2**32)
    )


def _decode_one(log: dict[str, Any]) -> list[Erc20Row] | list[Erc1155Row] | None:
    """Rows of one log, or None when it is not a valid transfer."""
    if not _as_a_node_writes_it(log):
        return None
    topics = [t.lower() for t in log["topics"]]
    data = bytes.fromhex(log["data"][2:])
    bn, li = int(log["blockNumber"], 16), int(log["logIndex"], 16)
    tx, token = log["transactionHash"].lower(), log["address"].lower()
    if topics[0] == ERC20_TRANSFER.topic0 and len(topics) == 3 and len(data) == 32:
        frm, to = _addr(topics[1]), _addr(topics[2])
        if frm and to:
            (value,) = decode(["uint256"], data)
            return [Erc20Row(bn, tx, li, token, frm, to, value)]
    elif topics[0] == ERC1155_SINGLE.topic0 and len(topics) == 4 and len(data) == 64:
        op, frm, to = (_addr(t) for t in topics[1:])
        if op and frm and to:
            tid, value = decode(["uint256", "uint256"], data)
            return [Erc1155Row(bn, tx, li, 0, token, op, frm, to, tid, value)]
    elif topics[0] == ERC1155_BATCH.topic0 and len(topics) == 4:
        op, frm, to = (_addr(t) for t in topics[1:])
        ids, values = decode(["uint256[]", "uint256[]"], data)
        if op and frm and to and len(ids) == len(values):
            return [Erc1155Row(bn, tx, li, i, token, op, frm, to, t, v) for i, (t, v) in enumerate(zip(ids, values))]
    return None


def reference_rows(logs: list[dict[str, Any]]) -> tuple[list[Erc20Row], list[Erc1155Row], int]:
    """(erc20 rows, erc1155 rows, number of logs that are not valid transfers) via eth-abi."""
    erc20: list[Erc20Row] = []
    erc1155: list[Erc1155Row] = []
    rejected = 0
    for log in logs:
        removed = log.get("removed") if isinstance(log, dict) else None
        if removed is True:
            continue  # reorged out: not part of the chain
        try:
            rows = _decode_one(log)
        except (DecodingError, ValueError, OverflowError, KeyError, IndexError, TypeError, AttributeError):
            rows = None
        if rows is None:
            rejected += 1
        elif rows and isinstance(rows[0], Erc20Row):
            erc20.extend(rows)
        else:
            erc1155.extend(rows)  # type: ignore[arg-type]
    return erc20, erc1155, rejected


def with_timestamps(
    erc20: list[Erc20Row], erc1155: list[Erc1155Row], timestamps: dict[int, int]
) -> tuple[list[tuple], list[tuple]]:
    """Rows in the shape backfill.store.digest and the ground truth use: the block's Unix timestamp after block_number.

    erc20 -> (block_number, ts, tx_hash, log_index, token, from, to, value);
    erc1155 -> (block_number, ts, tx_hash, log_index, batch_index, token, operator, from, to, id, value)."""
    return (
        [(r.block_number, timestamps[r.block_number], *r[1:]) for r in erc20],
        [(r.block_number, timestamps[r.block_number], *r[1:]) for r in erc1155],
    )


__all__ = ["reference_rows", "with_timestamps"]
