"""The copy's tip against the chain, before anything is copied: a fork found is repaired, a deep one stops.

check_tip(rpc, store, chain)    compare the recorded tip hashes with the chain; on a fork, roll back
                                above the common ancestor (one log line) so the copy takes the new blocks
                                (repair_tip: the same with the highest tracked block read already)
track_tip(store, chain)         tell the workers from which block on hashes are recorded (the final head:
                                it is the anchor, the blocks above it may change); tip_record: that value,
                                for a meta insert made anyway
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from backfill.chain.client import RpcClient
from backfill.chain.reorg import DeepFork, Fork, compared_blocks, find_fork
from backfill.errors import ChainForked
from backfill.store.client import Store
from backfill.store.rollback import Rollback, roll_back_above

if TYPE_CHECKING:
    from backfill.cli.prepare import ChainView

log = logging.getLogger(__name__)


async def check_tip(rpc: RpcClient, store: Store, chain: ChainView) -> Rollback | None:
    """Repair a fork of the copied tip (None when there is none). Raises ChainForked for a deep one."""
    return await repair_tip(rpc, store, chain, store.tracked_top())


async def repair_tip(rpc: RpcClient, store: Store, chain: ChainView, top: int | None) -> Rollback | None:
    """check_tip with the highest tracked block (`store.tracked_top()`) read already."""
    if top is None:
        return None
    stored = store.tracked_hashes(compared_blocks(top, chain.finality_depth).start)
    now = await rpc.block_hashes(sorted(stored))
    try:
        fork = find_fork(stored, now, chain.finality_depth)
    except DeepFork as exc:
        log.error("event=deep_fork error=%r action=stop", str(exc))
        raise ChainForked(str(exc)) from None
    if fork is None:
        return None
    done = roll_back_above(store, fork.ancestor)
    store.meta_set("reorgs", str(int(store.meta_get("reorgs") or 0) + 1))  # what monitoring counts
    store.meta_set("reorg_rows_removed", str(int(store.meta_get("reorg_rows_removed") or 0) + done.transfers_removed))
    store.meta_set("last_reorg", json.dumps(last_reorg(fork, done.transfers_removed)))
    log.warning(
        "event=reorg depth=%d blocks=%d-%d ancestor=%d rows_removed=%d block_rows=%d days_reopened=%d "
        "days_replanned=%d action=copy_again",
        fork.depth,
        fork.first_changed,
        fork.tip,
        fork.ancestor,
        done.transfers_removed,
        done.rows_removed.get("block_timestamps", 0),
        len(done.days_cut),
        len(done.days_removed),
    )
    return done


def last_reorg(fork: Fork, rows_removed: int) -> dict[str, Any]:
    """What status and the metrics show of the last fork repaired."""
    return {
        "at": time.time(),
        "depth": fork.depth,
        "first": fork.first_changed,
        "tip": fork.tip,
        "ancestor": fork.ancestor,
        "rows_removed": rows_removed,
    }


def tip_record(chain: ChainView) -> dict[str, str]:
    """The meta value that makes blocks from the final head up get their hashes recorded as they are copied
    (`tip_tracked_from`, read by Store.tip_tracked_from); none with depth 0 (an empty value)."""
    return {"tip_tracked_from": str(max(0, chain.final_head)) if chain.finality_depth > 0 else ""}


def track_tip(store: Store, chain: ChainView) -> None:
    """tip_record written now."""
    store.meta_update(tip_record(chain))
