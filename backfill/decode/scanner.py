"""The compiled path: a raw eth_getLogs answer -> rows already in ClickHouse's Native encoding (NativeRows,
backfill/store/native_format.py, which also joins them into the blocks the store client sends).

`_fastlogs.scan` (backfill/decode/_fastlogs.c) reads the answer in one pass and writes the transfer columns as the
engine reads them; no Python object is made per log or per field. It takes only what it decodes exactly as
backfill/decode/decoder.py does and hands the rest back: a whole answer (not a plain ASCII JSON-RPC result, block
fields not canonical or not agreeing within a block) goes to orjson + decode_logs, a single log (any
non-canonical transfer field, quarantine, another topic) to decode_log. decoder.py is the reference: the tests
hold the two to the same rows.

Where the extension did not build, AVAILABLE is False and workers take the Python path for everything.
"""

from __future__ import annotations

from typing import Any

import orjson

from backfill.chain.answers import ReadAnswer
from backfill.decode.decoder import DecodedBatch, decode_log, decode_logs, take_decoded
from backfill.store.native_format import NativeRows

try:
    from backfill.decode import _fastlogs  # type: ignore[attr-defined]  # compiled: no source to read
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


# The fields of the tuple _fastlogs.scan returns, in its order (see the comment atop backfill/decode/_fastlogs.c).
(
    N_LOGS,  # logs in the answer
    ERC20_COLUMNS,  # the ERC-20 rows' columns, in ERC20_SCANNED order
    ERC20_ROWS,
    ERC20_SLOTS,  # UInt32 per ERC-20 row: its block, as an index into BLOCKS
    ERC1155_COLUMNS,  # the ERC-1155 rows' columns, in ERC1155_SCANNED order
    ERC1155_ROWS,
    ERC1155_SLOTS,
    SKIPPED,  # logs that are not transfers of ours (ERC-721)
    BLOCKS,  # (block number, hash or "", timestamp or None) of every block the logs name
    FALLBACK,  # byte spans of the logs left to decoder.py
    BATCH,  # a batch answer's [(id as JSON text, string result or None for the logs)]; None otherwise
) = range(11)


class Scanned(ReadAnswer):
    """An eth_getLogs answer read by the scanner; len() is the number of logs, as for a list of logs."""

    __slots__ = ("body", "parts", "_fallback_logs")

    def __init__(self, body: bytes, parts: tuple):
        self.body = body
        self.parts = parts
        self._fallback_logs: list[Any] | None = None

    def __len__(self) -> int:
        return self.parts[N_LOGS]

    @property
    def batch(self) -> list[tuple[str, str | None]] | None:
        """For a batch answer, [(id as its JSON text, string result or None for the logs)]; None otherwise."""
        return self.parts[BATCH]

    @property
    def fallback(self) -> list[tuple[int, int]]:
        """Byte spans of the logs the scanner left to decoder.py."""
        return self.parts[FALLBACK]

    def fallback_logs(self) -> list[Any]:
        """The logs the scanner left to decoder.py, parsed (once)."""
        if self._fallback_logs is None:
            self._fallback_logs = [orjson.loads(self.body[start:end]) for start, end in self.fallback]
        return self._fallback_logs

    def block_hashes(self) -> dict[int, str]:
        """block number -> block hash ("" where the node gave none) of every block the logs name."""
        return {bn: block_hash for bn, block_hash, _ in self.parts[BLOCKS]}

    def decoded(self) -> DecodedBatch:
        parts = self.parts
        out = DecodedBatch(skipped=parts[SKIPPED])
        out.blocks = {bn: (block_hash, ts) for bn, block_hash, ts in parts[BLOCKS]}
        numbers = [bn for bn, _, _ in parts[BLOCKS]]
        if n20 := parts[ERC20_ROWS]:
            columns = dict(zip(ERC20_SCANNED, parts[ERC20_COLUMNS]))
            out.native_erc20.append(NativeRows(n20, columns, parts[ERC20_SLOTS], numbers))
        if n1155 := parts[ERC1155_ROWS]:
            columns = dict(zip(ERC1155_SCANNED, parts[ERC1155_COLUMNS]))
            out.native_erc1155.append(NativeRows(n1155, columns, parts[ERC1155_SLOTS], numbers))
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
