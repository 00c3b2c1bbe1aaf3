"""A worker's lease on its shard (backfill/store/leases.py): no two live workers copy one shard, whichever
host or supervisor started them, and a worker of a new shard count waits for those of the old one.

    lease = take_shard(store, settings, shard_id, shards, abandon)   # ShardTaken when a live worker has it
    lease.renew()      with each heartbeat, every ttl/3
    lease.valid()      before each checkpoint: a worker whose lease may have lapsed (stopped, cut off from the
                       store for longer than the lease) writes nothing more and exits (LeaseLost)
"""

from __future__ import annotations

import logging
import threading
import time

from backfill.settings import Settings
from backfill.store.client import Store
from backfill.store.leases import SHARD_LEASES, Lease, LeaseHeld, claim

log = logging.getLogger(__name__)

RIVALS = SHARD_LEASES


class ShardTaken(Exception):
    """Another live worker holds the shard."""


class LeaseLost(Exception):
    """The worker's lease may have lapsed: another may hold the shard now."""


def shard_lease_name(shard_id: int, shards: int) -> str:
    return f"shard/{shards}/{shard_id}"


def take_shard(
    store: Store, settings: Settings, shard_id: int, shards: int, abandon: threading.Event | None = None
) -> Lease | None:
    """The shard's lease. A holder seen renewing is alive: ShardTaken (after at most a renewal interval,
    ttl/3). A holder that stopped renewing (a pod or a host gone) is waited out, as are the workers of another
    shard count (a rescale across hosts); None when told to stop while waiting."""
    name, ttl = shard_lease_name(shard_id, shards), settings.lease_ttl_s
    said = 0.0
    seen: dict[str, object] = {}  # holder -> the renewal it was last seen with
    while True:
        try:
            return claim(store, name, ttl, rivals=RIVALS)
        except LeaseHeld as exc:
            holder = exc.holder
            if not exc.rival and seen.get(holder.holder, holder.renewed_at) != holder.renewed_at:
                raise ShardTaken(  # it renewed while we looked: a live worker, not a gone one's leftover
                    f"shard {shard_id} of {shards} is already being copied by {holder.describe()}; "
                    "not started (each host needs its own --shard-ids)"
                ) from None
            seen[holder.holder] = holder.renewed_at
            if time.monotonic() - said > 30:
                log.warning(
                    "worker=%d event=wait_lease held_by=%r why=%s action=wait",
                    shard_id,
                    exc.holder.describe(),
                    f"a worker of {holder.name} has not exited yet"
                    if exc.rival
                    else "its holder may be gone (a renewal proves it alive, a lapse frees the shard)",
                )
                said = time.monotonic()
        if abandon is not None and abandon.wait(1.0):
            return None
        if abandon is None:
            time.sleep(1.0)
