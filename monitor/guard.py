"""A cheap fingerprint of the staging rows at or below a block after FINAL, telling whether they changed since
it was taken: their count, and the max and the sum of their `_version`. The derived tables and the promotion
use it to add only the rows above the block they last covered.

Why it is sound: what a build or a promotion took is the rows at or below W after FINAL, one per sorting key,
the newest `_version`. Merges and dedup's removal of superseded versions leave those rows alone, so they leave
the guard alone. Every writer (a day's fetch, a redo, a correction, a reorg's re-fetch) stamps `_version` with
its clock when it writes — the same ordering ReplacingMergeTree relies on for a redo to win — so a row or
version written since that shows after FINAL raises the max. Without such a write, the rows after FINAL can
only lose keys (a DELETE of a rollback: the count falls) or fall back to an older version of a key (a DELETE
of its newest one: the sum falls). `block_number` is in the sorting key, so every version of a row sits at the
same block, on the same side of W. Two rows with the same key and the same `_version` but other contents are
the one case it cannot see; dedup refuses them. It reads only the sorting key and `_version` (no strings, no
hashing) and writes nothing; read before the rows are, a change made meanwhile is seen by the next reader,
never hidden from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backfill.store.client import Store


@dataclass(frozen=True)
class Guard:
    """The staging rows at or below a block after FINAL: how many, and the max and sum of their `_version`."""

    rows: int
    max_version: int
    version_sum: int

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "max_version": self.max_version, "version_sum": str(self.version_sum)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Guard":
        return cls(int(data["rows"]), int(data["max_version"]), int(data["version_sum"]))


def read_guards(store: Store, source: str, w: int, t: int) -> tuple[Guard, Guard]:
    """The guards of the rows of `source` at or below block `w` and at or below block `t` (w <= t), one read."""
    row = store.query_rows(
        "SELECT countIf(block_number <= %(w)s), maxIf(_version, block_number <= %(w)s), "
        "sumIf(toUInt128(_version), block_number <= %(w)s), count(), max(_version), sum(toUInt128(_version)) "
        f"FROM {source} FINAL WHERE block_number <= %(t)s",
        {"w": w, "t": t},
    )[0]
    n_w, max_w, sum_w, n_t, max_t, sum_t = (int(v or 0) for v in row)
    return Guard(n_w, max_w, sum_w), Guard(n_t, max_t, sum_t)
