"""The compiled path: a raw eth_getLogs answer -> rows already in ClickHouse's Native encoding.

`_fastlogs.scan` (backfill/decode/_fastlogs.c) reads the answer in one pass and writes the transfer columns as the
engine reads them; no Python object is made per log or per field. It takes only what it decodes exactly as
backfill/decode/decoder.py does and hands the rest back: a whole answer (not a plain ASCII JSON-RPC result, block
fields not canonical or not agreeing within a block) goes to orjson + decode_logs, a single log (any
non-canonical transfer field, quarantine, another topic) to decode_log. decode.py is the reference: the tests
hold the two to the same rows.

Where the extension did not build, AVAILABLE is False and workers take the Python path for everything.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from typing import Any, Sequence

import orjson

from backfill.decode.decoder import DecodedBatch, decode_log, decode_logs, take_decoded

try:
    from backfill.decode import _fastlogs
except ImportError:  # built without a C compiler: the Python path does the same work, slower
    _fastlogs = None

AVAILABLE = _fastlogs is not None

# The scanner's column order per table; block_timestamp and _version are attached at insert time.
ERC20_SCANNED = ("block_number", "tx_hash", "log_index", "token_address", "from_address", "to_address", "value")
ERC1155_SCANNED = (
    "block_number",
    "tx_hash",
    "log_index",
    "batch_index",
    "token_address",
    "operator",
    "from_address",
    "to_address",
    "token_id",
    "value",
)


@dataclass
class NativeRows:
    """Rows of one answer for one table, column by column in Native encoding."""

    n: int
    columns: dict[str, bytes]  # column name -> encoded values
    slots: bytes  # UInt32 per row: the row's block, as an index into block_numbers
    block_numbers: list[int]

    def timestamps(self, stamp: dict[int, int]) -> bytes:
        """The block_timestamp column (DateTime = UInt32 seconds) from the blocks' timestamps."""
        assert _fastlogs is not None
        return _fastlogs.gather_u32(self.slots, array("I", [stamp[bn] for bn in self.block_numbers]).tobytes())


class Scanned:
    """An eth_getLogs answer read by the scanner; len() is the number of logs, as for a list of logs."""

    __slots__ = ("body", "parts", "_fallback_logs")

    def __init__(self, body: bytes, parts: tuple):
        self.body = body
        self.parts = parts
        self._fallback_logs: list[Any] | None = None

    def __len__(self) -> int:
        return self.parts[0]

    @property
    def batch(self) -> list[tuple[str, str | None]] | None:
        """For a batch answer, [(id as its JSON text, string result or None for the logs)]; None otherwise."""
        return self.parts[10]

    @property
    def fallback(self) -> list[tuple[int, int]]:
        """Byte spans of the logs the scanner left to decode.py."""
        return self.parts[9]

    def fallback_logs(self) -> list[Any]:
        """The logs the scanner left to decode.py, parsed (once)."""
        if self._fallback_logs is None:
            self._fallback_logs = [orjson.loads(self.body[start:end]) for start, end in self.fallback]
        return self._fallback_logs

    def block_hashes(self) -> dict[int, str]:
        """block number -> block hash ("" where the node gave none) of every block the logs name."""
        return {bn: block_hash for bn, block_hash, _ in self.parts[8]}

    def decoded(self) -> DecodedBatch:
        _, c20, n20, slots20, c1155, n1155, slots1155, skipped, blocks, _, _ = self.parts
        out = DecodedBatch(skipped=skipped)
        out.blocks = {bn: (block_hash, ts) for bn, block_hash, ts in blocks}
        numbers = [bn for bn, _, _ in blocks]
        if n20:
            out.native_erc20.append(NativeRows(n20, dict(zip(ERC20_SCANNED, c20)), slots20, numbers))
        if n1155:
            out.native_erc1155.append(NativeRows(n1155, dict(zip(ERC1155_SCANNED, c1155)), slots1155, numbers))
        for entry in self.fallback_logs():  # the scanner has recorded these logs' blocks already
            take_decoded(out, entry, decode_log(entry))
        return out


def scan(body: bytes) -> Scanned | None:
    """The scanner's reading of a raw answer, or None when the answer is for orjson and decode_logs."""
    if _fastlogs is None:
        return None
    parts = _fastlogs.scan(body)
    return None if parts is None else Scanned(body, parts)


def decode_answer(answer: list[dict[str, Any]] | Scanned) -> DecodedBatch:
    """Rows of an eth_getLogs answer, whichever way it was read."""
    return answer.decoded() if isinstance(answer, Scanned) else decode_logs(answer)


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    return _leb128(len(raw)) + raw


def table_block(
    rows: Sequence[NativeRows], columns: Sequence[str], types: Sequence[str], stamp: dict[int, int], version: int
) -> bytes:
    """One Native block of a transfers table from scanned rows: the scanned columns joined, block_timestamp
    from the blocks' timestamps, _version the same for all."""
    n = sum(r.n for r in rows)
    out = [_leb128(len(columns)), _leb128(n)]
    for name, type_name in zip(columns, types):
        out += (_string(name), _string(type_name))
        if name == "block_timestamp":
            out += (r.timestamps(stamp) for r in rows)
        elif name == "_version":
            out.append(struct.pack("<Q", version) * n)
        else:
            out += (r.columns[name] for r in rows)
    return b"".join(out)
