"""The worker's write buffer: decoded parts of a window waiting to be inserted, and what was written early.

A window's rows are written before its checkpoint; on dense days the completed chunks are written as soon
as they hold batch_rows rows, so memory stays bounded. A part then keeps only the counts of what it wrote
(its day's checkpoint still needs them); the decoded data itself is `DecodedBatch`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backfill.decode.decoder import DecodedBatch


@dataclass
class SegmentRows(DecodedBatch):
    """A segment's decoded rows not written yet, with the counts of its rows already written (flushed)."""

    flushed_erc20: int = 0
    flushed_erc1155: int = 0
    flushed_quarantined: int = 0
    # block -> (hash, parent hash) of the segment's blocks that may still be reorganised, read before their logs
    tip: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def held_rows(self) -> int:
        """Transfer rows held in memory, not written yet."""
        return super().n_erc20 + super().n_erc1155

    @property
    def n_erc20(self) -> int:
        return super().n_erc20 + self.flushed_erc20

    @property
    def n_erc1155(self) -> int:
        return super().n_erc1155 + self.flushed_erc1155

    @property
    def n_quarantined(self) -> int:
        return super().n_quarantined + self.flushed_quarantined

    @property
    def flushed_rows(self) -> int:
        return self.flushed_erc20 + self.flushed_erc1155

    def extend(self, other: DecodedBatch) -> None:
        super().extend(other)
        if isinstance(other, SegmentRows):
            self.flushed_erc20 += other.flushed_erc20
            self.flushed_erc1155 += other.flushed_erc1155
            self.flushed_quarantined += other.flushed_quarantined

    def mark_flushed(self) -> None:
        """The rows held are in the store now: keep their counts, drop them."""
        self.flushed_erc20 += super().n_erc20
        self.flushed_erc1155 += super().n_erc1155
        self.flushed_quarantined += len(self.quarantined)
        self.erc20, self.erc1155, self.quarantined, self.blocks = [], [], [], {}
        self.native_erc20, self.native_erc1155 = [], []


class WriteBuffer:
    """The completed chunks of one window not written yet: (segment index, rows)."""

    def __init__(self, batch_rows: int):
        self.batch_rows = batch_rows
        self.parts: list[tuple[int, SegmentRows]] = []

    def held_rows(self) -> int:
        return sum(p.held_rows for _, p in self.parts)

    def add(self, seg_i: int, part: SegmentRows) -> None:
        self.parts.append((seg_i, part))

    def full(self) -> bool:
        """Enough rows held for an early write."""
        return self.held_rows() >= self.batch_rows

    def may_fetch(self) -> bool:
        """Back-pressure: writes must keep up with fetches."""
        return self.held_rows() < 2 * self.batch_rows

    def take(self) -> list[tuple[int, SegmentRows]]:
        """The parts with something to write, no longer in the buffer."""
        batch = [(i, p) for i, p in self.parts if p.held_rows or p.quarantined]
        for item in batch:
            self.parts.remove(item)
        return batch
