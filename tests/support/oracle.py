"""The tests' own decoder of transfer logs: web3.py's contract-event processing under the product's rules,
written apart from the product (nothing here comes from `backfill`), so a mistake in the product's decoders
cannot also be in the ground truth they are checked against.

The rules are those of docs/architecture.md (Decisions): an ERC-20 `Transfer` has exactly 3 topics and exactly
32 bytes of data (4 topics is ERC-721: not a row); indexed addresses are 32-byte words with 12 zero bytes in
front; a `TransferBatch` gives one row per id and needs arrays of equal length (0 ids: no row); logs flagged
`removed` are not part of the chain; addresses and hashes are written lowercase. Every field of a log used here
must be as a node writes it; anything else is refused (no row) and counted.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from eth_utils import keccak
from web3 import Web3


class Erc20Transfer(NamedTuple):
    block_number: int
    tx_hash: str
    log_index: int
    token_address: str
    from_address: str
    to_address: str
    value: int


class Erc1155Transfer(NamedTuple):
    block_number: int
    tx_hash: str
    log_index: int
    batch_index: int
    token_address: str
    operator: str
    from_address: str
    to_address: str
    token_id: int
    value: int


def _event(name: str, inputs: list[tuple[str, str, bool]]) -> dict[str, Any]:
    return {
        "type": "event",
        "name": name,
        "anonymous": False,
        "inputs": [{"name": n, "type": t, "indexed": i} for n, t, i in inputs],
    }


ABI = [
    _event("Transfer", [("from", "address", True), ("to", "address", True), ("value", "uint256", False)]),
    _event(
        "TransferSingle",
        [
            ("operator", "address", True),
            ("from", "address", True),
            ("to", "address", True),
            ("id", "uint256", False),
            ("value", "uint256", False),
        ],
    ),
    _event(
        "TransferBatch",
        [
            ("operator", "address", True),
            ("from", "address", True),
            ("to", "address", True),
            ("ids", "uint256[]", False),
            ("values", "uint256[]", False),
        ],
    ),
]
SIGNATURES = {
    "Transfer": "Transfer(address,address,uint256)",
    "TransferSingle": "TransferSingle(address,address,address,uint256,uint256)",
    "TransferBatch": "TransferBatch(address,address,address,uint256[],uint256[])",
}
TOPIC0 = {name: "0x" + keccak(text=sig).hex() for name, sig in SIGNATURES.items()}
EVENT_OF_TOPIC0 = {topic: name for name, topic in TOPIC0.items()}
# eth_getLogs filter: any contract, topic0 one of the three
FILTER_TOPICS: list[list[str]] = [list(EVENT_OF_TOPIC0)]

_CONTRACT = Web3().eth.contract(abi=ABI)
_EVENTS = {name: getattr(_CONTRACT.events, name)() for name in SIGNATURES}

# Node output, byte for byte: DATA is "0x" + two hex digits per byte (either case: lowercased on the way out);
# a QUANTITY is "0x" + hex digits. The JSON-RPC spec wants no leading zeros; a number written with them is still
# unambiguous, and refusing it would stall a run on a provider that writes them, so it is read (a decision).
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_QUANTITY = re.compile(r"0x[0-9a-fA-F]+")
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1  # log_index, block_number and timestamps as the tables store them


class Refused(Exception):
    """The log is not a valid transfer, or not as a node writes it: no row."""


def _data(value: Any, n_bytes: int | None = None) -> bytes:
    if type(value) is not str or not _DATA.fullmatch(value):
        raise Refused(f"not 0x-prefixed hex bytes: {value!r:.80}")
    raw = bytes.fromhex(value[2:])
    if n_bytes is not None and len(raw) != n_bytes:
        raise Refused(f"{len(raw)} bytes, expected {n_bytes}")
    return raw


def _quantity(value: Any, top: int) -> int:
    if type(value) is not str or not _QUANTITY.fullmatch(value):
        raise Refused(f"not a hex quantity: {value!r:.80}")
    n = int(value[2:], 16)
    if n > top:
        raise Refused(f"quantity {n} out of range")
    return n


def _indexed_address(word: bytes) -> None:
    # eth-abi refuses non-zero padding too (NonEmptyPaddingBytes); the rule is the product's, so it is said here
    if len(word) != 32 or any(word[:12]):
        raise Refused("indexed address is not 12 zero bytes + 20 bytes")


def _rows(log: dict[str, Any]) -> list[Erc20Transfer] | list[Erc1155Transfer]:
    """Rows of one log that is part of the chain; raises Refused when it is not a valid transfer."""
    topics = log["topics"]
    if type(topics) not in (list, tuple) or not topics:  # a JSON array (a tuple only where a test built the log)
        raise Refused("topics is not a non-empty array")
    words = [_data(t, 32) for t in topics]
    name = EVENT_OF_TOPIC0.get("0x" + words[0].hex())
    if name is None:
        raise Refused("topic0 is not one of the three transfer events")
    data = _data(log["data"])
    # web3 checks the topic count against the ABI (LogTopicError) but not the data length: eth-abi reads the
    # words it needs and ignores what follows, so the exact lengths are the product's rules, said here.
    if name == "Transfer" and (len(topics) != 3 or len(data) != 32):
        raise Refused("ERC-20 Transfer needs 3 topics and 32 bytes of data (4 topics: ERC-721)")
    if name == "TransferSingle" and (len(topics) != 4 or len(data) != 64):
        raise Refused("TransferSingle needs 4 topics and 64 bytes of data")
    if name == "TransferBatch" and (len(topics) != 4 or len(data) % 32):
        raise Refused("TransferBatch needs 4 topics and data in whole 32-byte words")
    for word in words[1:]:
        _indexed_address(word)
    block_number = _quantity(log["blockNumber"], UINT64_MAX)
    log_index = _quantity(log["logIndex"], UINT32_MAX)
    tx_hash = "0x" + _data(log["transactionHash"], 32).hex()
    token = "0x" + _data(log["address"], 20).hex()
    # blockHash and blockTimestamp give no column here, but a log with them present and malformed is not as a
    # node writes it (null is allowed: pending blocks, nodes without log timestamps)
    if log.get("blockHash") is not None:
        _data(log["blockHash"], 32)
    if log.get("blockTimestamp") is not None:
        _quantity(log["blockTimestamp"], UINT32_MAX)  # a DateTime column: seconds until 2106

    entry = {
        "topics": words,
        "data": data,
        "logIndex": log_index,
        "transactionIndex": None,
        "transactionHash": tx_hash,
        "address": token,
        "blockHash": None,
        "blockNumber": block_number,
    }
    try:
        args = _EVENTS[name].process_log(entry)["args"]
    except Exception as exc:  # eth-abi's errors (InsufficientDataBytes, InvalidPointer, ...), web3's LogTopicError
        raise Refused(f"{name}: {type(exc).__name__}") from exc
    frm, to = args["from"].lower(), args["to"].lower()  # web3 gives checksummed addresses
    if name == "Transfer":
        return [Erc20Transfer(block_number, tx_hash, log_index, token, frm, to, args["value"])]
    operator = args["operator"].lower()
    if name == "TransferSingle":
        return [
            Erc1155Transfer(block_number, tx_hash, log_index, 0, token, operator, frm, to, args["id"], args["value"])
        ]
    ids, values = args["ids"], args["values"]
    if len(ids) != len(values):  # web3 decodes each array on its own: the pairing is the product's rule
        raise Refused(f"TransferBatch ids/values {len(ids)}/{len(values)}")
    return [
        Erc1155Transfer(block_number, tx_hash, log_index, i, token, operator, frm, to, token_id, value)
        for i, (token_id, value) in enumerate(zip(ids, values))
    ]


def decode_one(log: Any) -> list[Erc20Transfer] | list[Erc1155Transfer] | None:
    """Rows of one log ([] for a removed log or a TransferBatch of 0 ids), or None when it is refused."""
    try:
        if type(log) is not dict:
            raise Refused("a log is a JSON object")
        removed = log.get("removed")
        if removed is None:  # absent or null: not flagged
            removed = False
        if type(removed) is not bool:
            raise Refused(f"removed is not a boolean: {removed!r:.40}")
        if removed:
            return []  # reorged out: not part of the chain, and not counted either
        return _rows(log)
    except (Refused, KeyError):
        return None


def oracle_rows(logs: list[Any]) -> tuple[list[Erc20Transfer], list[Erc1155Transfer], int]:
    """(ERC-20 rows, ERC-1155 rows, number of logs refused: not valid transfers or not as a node writes them)."""
    erc20: list[Erc20Transfer] = []
    erc1155: list[Erc1155Transfer] = []
    refused = 0
    for log in logs:
        rows = decode_one(log)
        if rows is None:
            refused += 1
        for row in rows or ():
            (erc20 if isinstance(row, Erc20Transfer) else erc1155).append(row)  # type: ignore[arg-type]
    return erc20, erc1155, refused
