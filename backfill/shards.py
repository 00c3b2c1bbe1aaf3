"""Which shards a host runs (`--shard-ids`, `BACKFILL_SHARD_IDS`), when a fleet is spread over machines.

    ""        every shard (one host runs the whole fleet)
    "0-5"     the ids listed: ranges and single ids, `0-1,6,8-9`; all must be below the shard count
    "1/3"     a share: the ids k with k % 3 == 1, whatever the shard count is. Hosts given `0/2` and `1/2`
              split any count between them, so a rescale (4 -> 6) needs no new flags on any host.

Pure: parsed when the settings are read, applied by the supervisor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SHARE = re.compile(r"^(\d+)/(\d+)$")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class ShardSet:
    listed: frozenset[int] | None = None  # explicit ids, or None
    share: tuple[int, int] | None = None  # (i, m): ids with k % m == i

    def ids(self, shards: int) -> list[int]:
        """This host's ids for a shard count (listed ids at or above it are not this count's)."""
        if self.share is not None:
            i, m = self.share
            return [k for k in range(shards) if k % m == i]
        if self.listed is not None:
            return sorted(k for k in self.listed if k < shards)
        return list(range(shards))

    @property
    def everything(self) -> bool:
        return self.listed is None and self.share is None

    def describe(self, shards: int) -> str:
        if self.everything:
            return f"all {shards}"
        ids = self.ids(shards)
        return ",".join(map(str, ids)) if ids else "none"


def parse_shard_ids(text: str) -> ShardSet:
    """ValueError with the reason when `text` is neither a list of ids nor a share."""
    text = text.strip()
    if not text:
        return ShardSet()
    share = _SHARE.match(text)
    if share:
        i, m = int(share.group(1)), int(share.group(2))
        if m < 1 or i >= m:
            raise ValueError(f"a share i/m needs 0 <= i < m, got {text!r}")
        return ShardSet(share=(i, m))
    ids: set[int] = set()
    for part in text.split(","):
        found = _RANGE.match(part.strip())
        if not found:
            raise ValueError(f"must be ids and ranges like 0-5,8 or a share like 1/3, got {text!r}")
        first, last = int(found.group(1)), int(found.group(2) or found.group(1))
        if last < first:
            raise ValueError(f"range {part.strip()!r} runs backwards")
        ids.update(range(first, last + 1))
    return ShardSet(listed=frozenset(ids))
