"""Reading the compiled scanner's Native columns back into decode.py's rows (tests only)."""

from __future__ import annotations

from backfill.decode.decoder import DecodedBatch, Erc20Row, Erc1155Row
from backfill.store.native_format import NativeRows


def _strings(data: bytes) -> list[str]:
    out, i = [], 0
    while i < len(data):
        n = data[i]  # every string here is shorter than 128 bytes: a one-byte length
        out.append(data[i + 1 : i + 1 + n].decode())
        i += 1 + n
    return out


def _ints(data: bytes, size: int) -> list[int]:
    return [int.from_bytes(data[i : i + size], "little") for i in range(0, len(data), size)]


def column(name: str, data: bytes) -> list:
    if name == "block_number":
        return _ints(data, 8)
    if name in ("log_index", "batch_index"):
        return _ints(data, 4)
    if name in ("value", "token_id"):
        return _ints(data, 32)
    return _strings(data)


def timestamps(data: bytes) -> list[int]:
    return _ints(data, 4)


def native_rows(nr: NativeRows, kind: type) -> list:
    """The rows of one scanned answer for one table, as decode.py's row type `kind`."""
    cols = [column(f, nr.columns[f]) for f in kind._fields]
    assert all(len(c) == nr.n for c in cols), "a column is short"
    return [kind(*values) for values in zip(*cols)]


def all_rows(batch: DecodedBatch) -> tuple[list[Erc20Row], list[Erc1155Row]]:
    """Every row a batch holds, decoded by Python or scanned."""
    return (
        batch.erc20 + [r for nr in batch.native_erc20 for r in native_rows(nr, Erc20Row)],
        batch.erc1155 + [r for nr in batch.native_erc1155 for r in native_rows(nr, Erc1155Row)],
    )
