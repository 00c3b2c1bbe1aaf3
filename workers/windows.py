"""Walking a day: windows (checkpoint units) and getLogs chunks. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from backfill.planner import DayPlan


@dataclass(frozen=True)
class Window:
    day_idx: int
    start: int
    end: int  # inclusive
    last_of_day: bool


def ranges(start: int, end: int, size: int) -> list[tuple[int, int]]:
    """[start, end] inclusive cut into consecutive inclusive ranges of at most `size` blocks."""
    return [(a, min(a + size - 1, end)) for a in range(start, end + 1, size)]


def day_windows(plan: DayPlan, next_block: int, window_blocks: int) -> list[Window]:
    """The windows still to do for a day, from its checkpointed next_block."""
    start = max(plan.start_block, next_block)
    if start > plan.end_block:
        return []
    parts = ranges(start, plan.end_block, window_blocks)
    return [Window(plan.day_idx, a, b, i == len(parts) - 1) for i, (a, b) in enumerate(parts)]


def owned(day_idx: int, shard_id: int, shards: int) -> bool:
    return day_idx % shards == shard_id
