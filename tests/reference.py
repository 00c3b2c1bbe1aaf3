"""Reference decoding with eth-abi: the independent ground truth the hand-written decoder is held to."""

from __future__ import annotations

from typing import Any

from eth_abi import decode
from eth_abi.exceptions import DecodingError

from backfill.decode import Erc1155Row, Erc20Row
from backfill.events import ERC1155_BATCH, ERC1155_SINGLE, ERC20_TRANSFER


def _addr(topic: str) -> str | None:
    raw = bytes.fromhex(topic[2:])
    if len(raw) != 32 or any(raw[:12]):
        return None
    return "0x" + raw[12:].hex()


def reference_rows(logs: list[dict[str, Any]]) -> tuple[list[Erc20Row], list[Erc1155Row], int]:
    """(erc20 rows, erc1155 rows, number of logs that are not valid transfers) via eth-abi."""
    erc20: list[Erc20Row] = []
    erc1155: list[Erc1155Row] = []
    rejected = 0
    for log in logs:
        topics = [t.lower() for t in log["topics"]]
        data = bytes.fromhex(log["data"][2:])
        bn, li = int(log["blockNumber"], 16), int(log["logIndex"], 16)
        tx, token = log["transactionHash"].lower(), log["address"].lower()
        try:
            if topics[0] == ERC20_TRANSFER.topic0 and len(topics) == 3 and len(data) == 32:
                frm, to = _addr(topics[1]), _addr(topics[2])
                if frm and to:
                    (value,) = decode(["uint256"], data)
                    erc20.append(Erc20Row(bn, tx, li, token, frm, to, value))
                    continue
            elif topics[0] == ERC1155_SINGLE.topic0 and len(topics) == 4 and len(data) == 64:
                op, frm, to = (_addr(t) for t in topics[1:])
                if op and frm and to:
                    tid, value = decode(["uint256", "uint256"], data)
                    erc1155.append(Erc1155Row(bn, tx, li, 0, token, op, frm, to, tid, value))
                    continue
            elif topics[0] == ERC1155_BATCH.topic0 and len(topics) == 4:
                op, frm, to = (_addr(t) for t in topics[1:])
                ids, values = decode(["uint256[]", "uint256[]"], data)
                if op and frm and to and len(ids) == len(values):
                    erc1155.extend(Erc1155Row(bn, tx, li, i, token, op, frm, to, t, v)
                                   for i, (t, v) in enumerate(zip(ids, values)))
                    continue
        except (DecodingError, ValueError, OverflowError):
            pass
        rejected += 1
    return erc20, erc1155, rejected
