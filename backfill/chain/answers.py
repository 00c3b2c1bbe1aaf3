"""An eth_getLogs answer read straight from its bytes by a reader of its own instead of being parsed into Python
objects: the compiled scanner's (backfill/decode/scanner.py, the copy's path) or the audit's engine reading
(monitor/audit/engine_read.py). The RPC client judges either the same way: the blocks it names (range, one hash a
block, the lag guard's header checks), the logs the reader left to orjson, and for a batch answer the other
calls' results."""

from __future__ import annotations

from typing import Any


class ReadAnswer:
    """What the RPC client needs of an answer a reader took; len() is the number of logs, as for a list of logs."""

    __slots__ = ()

    body: bytes

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def batch(self) -> list[tuple[str, str | None]] | None:
        """For a batch answer, [(id as its JSON text, string result or None for the logs)]; None otherwise."""
        raise NotImplementedError

    def block_hashes(self) -> dict[int, str]:
        """block number -> block hash ("" where the node gave none) of every block the logs name."""
        raise NotImplementedError

    def fallback_logs(self) -> list[Any]:
        """The logs the reader left to orjson, parsed: the client judges them as it judges any parsed answer."""
        raise NotImplementedError
