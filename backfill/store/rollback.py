"""Undo the copy above a block: what a fork of the chain's tip replaced (backfill.chain.reorg).

Rows are removed with lightweight deletes (`DELETE FROM … WHERE block_number > ancestor`): ClickHouse masks
them at once, FINAL and the `*_final` views never see them again, merges drop them later, and the parts of
older blocks are not rewritten. A re-copied block's transfers are a new insert with new versions, never a repeat
of an earlier insert block; its block_timestamps row has no version and can repeat one exactly (the tip forks
from A to B and back to A), which is why a cluster's tables keep no insert deduplication window that could
swallow it (backfill/store/cluster.py). The DELETEs are not sent ON CLUSTER: a replicated table's log carries
them to every replica, and a lightweight DELETE waits for all of them (lightweight_deletes_sync = 2, the default).

The order makes a crash at any point safe to repeat: the rows first, then the days (their plans cut back to
the ancestor, their counts recounted from what is left, days that began above it removed from the plan), and
the recorded hashes last. Until the hashes are gone the next check finds the same fork and does it all again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backfill.chain.planner import DayPlan
from backfill.store.client import Store
from backfill.store.digest import STAGING_TABLES

log = logging.getLogger(__name__)

ROW_TABLES = (*STAGING_TABLES, "transfer_quarantine", "block_timestamps")


@dataclass
class Rollback:
    ancestor: int
    rows_removed: dict[str, int] = field(default_factory=dict)
    days_cut: list[int] = field(default_factory=list)  # day_idx cut back to the ancestor (OPEN, re-planned)
    days_removed: list[int] = field(default_factory=list)  # day_idx that began above it: planned again

    @property
    def transfers_removed(self) -> int:
        return sum(self.rows_removed.get(t, 0) for t in STAGING_TABLES)


def roll_back_above(store: Store, ancestor: int) -> Rollback:
    """Remove every copied row, block and day progress above `ancestor`."""
    done = Rollback(ancestor)
    above = {"b": ancestor}
    for table in ROW_TABLES:
        done.rows_removed[table] = int(
            store.scalar(f"SELECT count() FROM {table} FINAL WHERE block_number > %(b)s", above) or 0
        )
        store.command(f"DELETE FROM {table} WHERE block_number > %(b)s", above)
    checkpoints = store.checkpoints()
    for plan in store.read_plan():
        if plan.end_block <= ancestor:
            continue
        if plan.start_block > ancestor:
            done.days_removed.append(plan.day_idx)
            continue
        cut = DayPlan(plan.day_idx, plan.day, plan.start_block, ancestor, clipped=True)
        store.write_plan([cut])
        cp = checkpoints.get(plan.day_idx)
        if cp is not None and int(cp["next_block"]) > ancestor + 1:
            erc20, erc1155, quarantined = recount(store, cut)
            store.update_checkpoint(
                plan.day_idx,
                status="OPEN",
                next_block=ancestor + 1,
                erc20_count=erc20,
                erc1155_count=erc1155,
                quarantined_count=quarantined,
            )
        done.days_cut.append(plan.day_idx)
    if done.days_removed:
        days = {"d": done.days_removed}
        store.command("DELETE FROM backfill_checkpoint WHERE day_idx IN %(d)s", days)
        store.command("DELETE FROM backfill_days WHERE day_idx IN %(d)s", days)
    store.command("DELETE FROM block_hashes WHERE block_number > %(b)s", above)
    return done


def recount(store: Store, plan: DayPlan) -> tuple[int, int, int]:
    """A day's rows after FINAL in its block range: erc20, erc1155, quarantined."""
    span = {"a": plan.start_block, "b": plan.end_block}
    where = "WHERE block_number BETWEEN %(a)s AND %(b)s"
    return tuple(  # type: ignore[return-value]  # three tables, three counts
        int(store.scalar(f"SELECT count() FROM {table} FINAL {where}", span) or 0)
        for table in (*STAGING_TABLES, "transfer_quarantine")
    )
