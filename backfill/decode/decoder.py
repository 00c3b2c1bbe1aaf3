"""Log -> rows. Pure functions, no I/O; a malformed log is quarantined with its reason, never raised.

Hand-written hex decoding is the hot path; tests compare it against eth-abi's decoding of the same
logs (the reference path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from backfill.decode.events import ERC20_TRANSFER, ERC1155_BATCH, ERC1155_SINGLE, EVENTS
from backfill.decode.hexfmt import ADDRESS, ADDRESS_TOPIC, HEX, QUANTITY, WORD

if TYPE_CHECKING:
    from backfill.store.native_format import NativeRows

_ZERO_PAD = "0" * 24


class Erc20Row(NamedTuple):
    block_number: int
    tx_hash: str
    log_index: int
    token_address: str
    from_address: str
    to_address: str
    value: int


class Erc1155Row(NamedTuple):
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


class Quarantined(NamedTuple):
    reason: str


class Skipped(NamedTuple):
    reason: str  # e.g. "erc721": a 4-topic Transfer is an NFT transfer, not ERC-20


@dataclass
class DecodedBatch:
    """Everything one eth_getLogs answer turned into."""

    erc20: list[Erc20Row] = field(default_factory=list)
    erc1155: list[Erc1155Row] = field(default_factory=list)
    quarantined: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    skipped: int = 0
    # block_number -> (block_hash, timestamp or None when the node gave no blockTimestamp)
    blocks: dict[int, tuple[str, int | None]] = field(default_factory=dict)
    # rows the compiled scanner wrote in Native encoding (backfill/decode/scanner.py), one entry per answer
    native_erc20: list["NativeRows"] = field(default_factory=list)
    native_erc1155: list["NativeRows"] = field(default_factory=list)

    @property
    def n_erc20(self) -> int:
        return len(self.erc20) + sum(r.n for r in self.native_erc20)

    @property
    def n_erc1155(self) -> int:
        return len(self.erc1155) + sum(r.n for r in self.native_erc1155)

    @property
    def n_quarantined(self) -> int:
        return len(self.quarantined)

    def extend(self, other: "DecodedBatch") -> None:
        self.erc20.extend(other.erc20)
        self.erc1155.extend(other.erc1155)
        self.native_erc20.extend(other.native_erc20)
        self.native_erc1155.extend(other.native_erc1155)
        self.quarantined.extend(other.quarantined)
        self.skipped += other.skipped
        self.blocks.update(other.blocks)


def _topic_address(topic: str) -> str | None:
    """An indexed address is a 32-byte word with 12 zero bytes in front; anything else is not an address."""
    if type(topic) is not str or not ADDRESS_TOPIC.match(topic):
        return None
    return "0x" + topic[26:].lower()


UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1  # log_index, timestamps / block_number as the tables store them


def _quantity(value: Any, top: int = UINT64_MAX) -> int:
    """A JSON-RPC quantity ("0x" + hex digits) up to `top` as an int; ValueError for anything else (int() alone
    would take "0x1_0" or " 0x10", and a value past the column's type would wrap)."""
    if type(value) is not str or not QUANTITY.match(value):
        raise ValueError(f"not a hex quantity: {value!r:.40}")
    n = int(value, 16)
    if n > top:
        raise ValueError(f"quantity out of range: {value!r:.40}")
    return n


def _words(data: str) -> str | None:
    """Hex payload without 0x, or None when it is not whole 32-byte words of hex."""
    if type(data) is not str or not HEX.match(data):
        return None
    h = data[2:]
    if len(h) % 64:
        return None
    return h


def decode_erc20(log: dict[str, Any], bn: int, tx: str, li: int, addr: str) -> list[Erc20Row] | Quarantined | Skipped:
    topics = log["topics"]
    if len(topics) == 4:
        return Skipped("erc721")
    if len(topics) != 3:
        return Quarantined(f"transfer with {len(topics)} topics")
    data = log.get("data") or "0x"
    if type(data) is not str or len(data) != 66 or not HEX.match(data):
        return Quarantined(f"transfer data is {max(len(data) - 2, 0) // 2} bytes, expected 32")
    frm, to = _topic_address(topics[1]), _topic_address(topics[2])
    if frm is None or to is None:
        return Quarantined("transfer topic is not an address")
    return [Erc20Row(bn, tx, li, addr, frm, to, int(data[2:], 16))]


def decode_erc1155_single(log: dict[str, Any], bn: int, tx: str, li: int, addr: str) -> list[Erc1155Row] | Quarantined:
    topics = log["topics"]
    if len(topics) != 4:
        return Quarantined(f"TransferSingle with {len(topics)} topics")
    h = _words(log.get("data") or "0x")
    if h is None or len(h) != 128:
        return Quarantined("TransferSingle data is not (uint256 id, uint256 value)")
    op, frm, to = (_topic_address(t) for t in topics[1:4])
    if op is None or frm is None or to is None:
        return Quarantined("TransferSingle topic is not an address")
    return [Erc1155Row(bn, tx, li, 0, addr, op, frm, to, int(h[:64], 16), int(h[64:], 16))]


def _uint_array(h: str, offset_bytes: int) -> list[int] | None:
    """ABI dynamic uint256[] at a byte offset of the data; None when it does not fit."""
    if offset_bytes % 32:
        return None
    start = offset_bytes * 2
    if start + 64 > len(h):
        return None
    n = int(h[start : start + 64], 16)
    end = start + 64 + n * 64
    if n > len(h) // 64 or end > len(h):
        return None
    return [int(h[i : i + 64], 16) for i in range(start + 64, end, 64)]


def decode_erc1155_batch(log: dict[str, Any], bn: int, tx: str, li: int, addr: str) -> list[Erc1155Row] | Quarantined:
    topics = log["topics"]
    if len(topics) != 4:
        return Quarantined(f"TransferBatch with {len(topics)} topics")
    h = _words(log.get("data") or "0x")
    if h is None or len(h) < 128:
        return Quarantined("TransferBatch data is not (uint256[] ids, uint256[] values)")
    # Offsets must point past the two-word head (eth-abi rejects pointers into the head, and so do we).
    off_ids, off_values = int(h[:64], 16), int(h[64:128], 16)
    ids = _uint_array(h, off_ids) if 64 <= off_ids < len(h) else None
    values = _uint_array(h, off_values) if 64 <= off_values < len(h) else None
    if ids is None or values is None:
        return Quarantined("TransferBatch arrays do not fit the data")
    if len(ids) != len(values):
        return Quarantined(f"TransferBatch ids/values length mismatch {len(ids)}/{len(values)}")
    op, frm, to = (_topic_address(t) for t in topics[1:4])
    if op is None or frm is None or to is None:
        return Quarantined("TransferBatch topic is not an address")
    return [Erc1155Row(bn, tx, li, i, addr, op, frm, to, tid, val) for i, (tid, val) in enumerate(zip(ids, values))]


_DECODERS = {
    ERC20_TRANSFER.topic0: decode_erc20,
    ERC1155_SINGLE.topic0: decode_erc1155_single,
    ERC1155_BATCH.topic0: decode_erc1155_batch,
}
assert set(_DECODERS) == set(EVENTS), "every event of the signature table has a decoder"


def decode_log(log: dict[str, Any]) -> list[Erc20Row] | list[Erc1155Row] | Quarantined | Skipped:
    """One raw JSON-RPC log -> rows, Quarantined(reason) or Skipped(reason). Never raises on bad input."""
    try:
        removed = log.get("removed")
        if removed is not None and type(removed) is not bool:
            return Quarantined("removed is not a boolean")
        topics = log.get("topics") or []
        if type(topics) not in (list, tuple) or not topics:
            return Quarantined("log without topics")
        if any(type(t) is not str or not WORD.match(t) for t in topics):
            return Quarantined("a topic is not 32 bytes of hex")
        decoder = _DECODERS.get(topics[0].lower())
        if decoder is None:
            return Quarantined("topic0 is not a transfer event")
        bn = _quantity(log["blockNumber"])
        li = _quantity(log["logIndex"], UINT32_MAX)
        tx, addr = log["transactionHash"], log["address"]
        if type(tx) is not str or type(addr) is not str or not WORD.match(tx) or not ADDRESS.match(addr):
            return Quarantined("malformed transaction hash or address")
        return decoder(log, bn, tx.lower(), li, addr.lower())
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return Quarantined(f"malformed log: {type(exc).__name__}")


_ERC20_TOPIC0 = ERC20_TRANSFER.topic0


def _fast_erc20(log: dict[str, Any], bn: int) -> Erc20Row | None:
    """The common case, a well-formed ERC-20 Transfer in canonical lowercase form, without the general path's
    calls; None sends the log to decode_log, which gives the same answer for everything this accepts."""
    topics = log["topics"]
    if type(topics) is not list or len(topics) != 3 or topics[0] != _ERC20_TOPIC0:
        return None
    data, t1, t2, tx, addr = log["data"], topics[1], topics[2], log["transactionHash"], log["address"]
    if (
        type(data) is not str
        or type(t1) is not str
        or type(t2) is not str
        or type(tx) is not str
        or type(addr) is not str
        or not WORD.match(data)
        or not ADDRESS_TOPIC.match(t1)
        or not ADDRESS_TOPIC.match(t2)
        or not WORD.match(tx)
        or not ADDRESS.match(addr)
    ):
        return None
    return Erc20Row(
        bn,
        tx.lower(),
        _quantity(log["logIndex"], UINT32_MAX),
        addr.lower(),
        "0x" + t1[26:].lower(),
        "0x" + t2[26:].lower(),
        int(data[2:], 16),
    )


def take_decoded(
    out: DecodedBatch, log: dict[str, Any], result: list[Erc20Row] | list[Erc1155Row] | Quarantined | Skipped
) -> None:
    """Add what decode_log made of a log to a batch."""
    if isinstance(result, Skipped):
        out.skipped += 1
    elif isinstance(result, Quarantined):
        out.quarantined.append((log, result.reason))
    elif result:
        if isinstance(result[0], Erc20Row):
            out.erc20.extend(result)
        else:
            out.erc1155.extend(result)


def _block_fields(log: dict[str, Any]) -> tuple[str, int | None] | None:
    """(block hash lowercased or "", timestamp or None) of a log, or None when they are malformed."""
    block_hash, ts_hex = log.get("blockHash"), log.get("blockTimestamp")
    if block_hash is not None and (type(block_hash) is not str or not WORD.match(block_hash)):
        return None
    try:
        ts = _quantity(ts_hex, UINT32_MAX) if ts_hex is not None else None
    except ValueError:
        return None
    return (block_hash or "").lower(), ts or None  # 0x0 means "unknown" on some EVMs


def decode_logs(logs: list[dict[str, Any]]) -> DecodedBatch:
    """Decode an eth_getLogs answer; collects block hashes (and timestamps when the node gives them).
    Never raises on what a provider can send: a log that is not even an object, or whose block fields are
    malformed, is quarantined with the reason (the RPC layer refuses such answers before they get here)."""
    out = DecodedBatch()
    blocks = out.blocks
    erc20_append = out.erc20.append
    numbers: dict[str, int] = {}  # blockNumber hex -> int: logs of a block share it
    for log in logs:
        if type(log) is not dict:
            out.quarantined.append(({}, f"a log that is a JSON {type(log).__name__}"))
            continue
        removed = log.get("removed")
        if removed is True:
            continue  # a reorged-out log is not part of the chain
        if removed is not None and removed is not False:
            out.quarantined.append((log, "removed is not a boolean"))
            continue
        bn_hex = log.get("blockNumber")
        bn = numbers.get(bn_hex) if type(bn_hex) is str else None
        if bn is None:
            try:
                bn = numbers[bn_hex] = _quantity(bn_hex)  # type: ignore[index]  # a str, or _quantity raised
            except ValueError:
                take_decoded(out, log, decode_log(log))  # quarantined: no block number
                continue
        if bn not in blocks:
            fields = _block_fields(log)
            if fields is None:
                out.quarantined.append((log, "malformed blockHash or blockTimestamp"))
                continue
            blocks[bn] = fields
        try:
            row = _fast_erc20(log, bn)
        except (KeyError, TypeError, ValueError, AttributeError):
            row = None
        if row is not None:
            erc20_append(row)
        else:
            take_decoded(out, log, decode_log(log))
    return out
