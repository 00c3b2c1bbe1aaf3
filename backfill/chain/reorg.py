"""Finding a fork of the chain's tip against the hashes the copy recorded. Pure.

The copy records the hash of every block it copied while the block was not final yet, and of the final block
just below them (an anchor). Before a later copy, those hashes are compared with what the chain says now for
the same numbers: the lowest block that differs is where the fork begins, the block below it the common
ancestor. The lowest recorded block is final (the anchor): when even it differs, the ancestor is out of sight.

A fork is repaired (rows above the ancestor removed, copied again) when it replaced at most `finality_depth`
blocks of the copied tip; a deeper one means the chain broke what its finality promises, or the finality
depth is set too low: the run stops and names the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fork:
    ancestor: int  # the highest block the store and the chain agree on
    first_changed: int
    tip: int  # the highest tracked block (copied)
    stored_hash: str  # of first_changed, as copied
    chain_hash: str  # of first_changed, on the chain now ("" when the chain no longer has that block)

    @property
    def depth(self) -> int:
        """Copied blocks the fork replaced."""
        return self.tip - self.ancestor


class DeepFork(Exception):
    """A fork deeper than the finality depth: not repaired; the run stops with this text."""


def compared_blocks(tip: int, finality_depth: int) -> range:
    """The recorded blocks worth comparing: the copied tip, as deep as a fork may go, plus one below it."""
    return range(max(0, tip - finality_depth - 1), tip + 1)


def find_fork(stored: dict[int, str], chain: dict[int, str | None], finality_depth: int) -> Fork | None:
    """The fork between the recorded hashes and the chain's (None for a block the chain does not have yet, or
    no more), or None when they agree. Raises DeepFork when more than finality_depth copied blocks changed."""
    if not stored:
        return None
    changed = sorted(b for b, h in stored.items() if chain.get(b) != h)
    if not changed:
        return None
    first, tip = changed[0], max(stored)
    fork = Fork(first - 1, first, tip, stored[first], chain.get(first) or "")
    if first == min(stored) or fork.depth > finality_depth:
        # the lowest recorded block changed: the common ancestor lies below what was recorded, out of sight
        raise DeepFork(deep_fork_text(fork, finality_depth))
    return fork


def deep_fork_text(fork: Fork, finality_depth: int) -> str:
    now = f"{fork.chain_hash[:18]}…" if fork.chain_hash else "no block"
    return (
        f"the chain forked deeper than the finality depth ({finality_depth} blocks): block {fork.first_changed} "
        f"was {fork.stored_hash[:18]}… when copied and is {now} now, the copy's tip at block {fork.tip}; "
        "nothing was removed. Check the endpoints serve the same chain; if the fork is real, raise "
        "--finality-depth (or BACKFILL_FINALITY_DEPTH) and start again, or `backfill start --redo` the days"
    )
