"""ClickHouse's Native format for the transfer tables: the rows the compiled scanner encoded, as one block.

The scanner (backfill/decode/scanner.py) writes an answer's transfer columns already in Native encoding and
hands them over as NativeRows; the store client (backfill/store/client.py) joins the rows of many answers
into one Native block per table (table_block), adding block_timestamp from the blocks' timestamps and the
same _version for every row, and sends it with no per-value work in the driver.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from typing import Sequence

try:
    from backfill.decode import _fastlogs  # type: ignore[attr-defined]  # the compiled extension: no stubs
except ImportError:  # built without a C compiler: no NativeRows are ever made
    _fastlogs = None


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
