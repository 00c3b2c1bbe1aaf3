"""Leases in the store: one holder at a time for a name (a shard of the fleet, the plan, a rebuild), across
processes and hosts, with ClickHouse as the only shared state. No check-then-insert race:

    claim      insert my claim, stamped by the server's clock, then read the live claims of the name: the
               earliest (claimed_at, holder) wins. Two claimants both read after inserting, so whichever was
               inserted first is seen by both as the earliest; the loser withdraws its claim.
    renew      the holder restamps renewed_at (claimed_at kept); a claim not renewed for ttl_s is dead.
    fencing    the holder knows locally until when its lease is surely live (the start of its last renewal
               + ttl_s - a margin, on the monotonic clock, which runs on while a process is stopped); past
               that it must not write: `Lease.valid()` is checked before each checkpoint.
    release    a released claim is withdrawn at once (an exiting worker frees its shard without a wait).

A claim whose holder is a process of this host that no longer exists is withdrawn by the next claimant
(a worker killed with -9 is replaced at once, not after ttl_s). Everything is stamped with the server's
`now64(6)`, so the hosts' clocks never decide an order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import time
import uuid
from typing import Any, Callable, Iterator

from backfill.store.client import Store
from backfill.store.records import host_name

PLAN_LEASE = "plan"  # the days of a database are planned by one process at a time
SHARD_LEASES = "shard/"  # shard/<count>/<id>: a worker's (workers/lease.py)
MARGIN_S = 2.0  # how much sooner than the server the holder stops trusting its lease

LIVE_CLAIMS = (
    "SELECT name, holder, host, pid, claimed_at, renewed_at, dateDiff('millisecond', renewed_at, now64(6)) / 1000 "
    "FROM leases FINAL WHERE startsWith(name, %(prefix)s) AND released = 0 "
    "AND renewed_at > now64(6) - toIntervalMillisecond(toUInt64(ttl_s * 1000)) "
    "ORDER BY claimed_at, holder"
)


@dataclasses.dataclass(frozen=True)
class Claim:
    name: str
    holder: str
    host: str
    pid: int
    claimed_at: dt.datetime
    renewed_at: dt.datetime
    renewed_ago_s: float

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, renewed {self.renewed_ago_s:.0f}s ago"


class LeaseHeld(Exception):
    """The name is held by another live claim (rival=True: by a claim of a rival group, e.g. a shard of
    another shard count, that was there first)."""

    def __init__(self, name: str, holder: Claim, rival: bool = False):
        what = f"{holder.name}, " if rival else ""
        super().__init__(f"{name} is held by {what}{holder.describe()}")
        self.name = name
        self.holder = holder
        self.rival = rival


@dataclasses.dataclass
class Lease:
    store: Store
    name: str
    ttl_s: float
    holder: str
    claimed_at: dt.datetime
    valid_until: float  # monotonic
    renewed_mono: float

    def valid(self) -> bool:
        return time.monotonic() < self.valid_until

    def renew_due(self) -> bool:
        return time.monotonic() - self.renewed_mono >= self.ttl_s / 3

    def renew(self) -> bool:
        """Restamp the claim; False (and nothing written) when the lease may have lapsed already: then another
        claimant may hold it, and this holder must stop."""
        if not self.valid():
            return False
        started = time.monotonic()
        _stamp(self.store, self.name, self.holder, self.ttl_s, claimed_at=self.claimed_at)
        self.renewed_mono = started
        self.valid_until = started + self.ttl_s - MARGIN_S
        return True

    def release(self) -> None:
        _stamp(self.store, self.name, self.holder, self.ttl_s, claimed_at=self.claimed_at, released=True)


def new_holder() -> str:
    return f"{host_name()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def live_claims(store: Store, prefix: str) -> list[Claim]:
    """The live claims of every name starting with `prefix`, earliest first."""
    rows = store.query_rows(LIVE_CLAIMS, {"prefix": prefix})
    return [Claim(str(r[0]), str(r[1]), str(r[2]), int(r[3]), r[4], r[5], float(r[6])) for r in rows]


def claim(
    store: Store,
    name: str,
    ttl_s: float,
    *,
    rivals: str | None = None,
    holder: str | None = None,
    pid_alive: Callable[[int], bool] | None = None,
) -> Lease:
    """The lease of `name`, or LeaseHeld naming the holder. rivals: a prefix of names that exclude this one
    too when claimed first (`shard/`: a shard of one count excludes every shard of another count; names of
    the same group, `shard/12/`, are not rivals). Claims of this host's dead processes are withdrawn before
    the claims are judged (pid_alive: how to tell; default psutil). Two round trips when there are none:
    the claim, then the read that judges it."""
    holder = holder or new_holder()
    group = name.rsplit("/", 1)[0] + "/"
    prefix = rivals or name
    started = time.monotonic()
    _stamp(store, name, holder, ttl_s)
    claims = _without_dead(store, live_claims(store, prefix), holder, ttl_s, pid_alive or _pid_alive, prefix)
    claims = [c for c in claims if c.name == name or not c.name.startswith(group)]
    mine = next((c for c in claims if c.holder == holder and c.name == name), None)
    if mine is None:  # not even my own claim reads back live: the store lost it, or it took over ttl_s
        raise LeaseHeld(name, claims[0]) if claims else RuntimeError(f"lease {name}: my claim did not read back")
    first = claims[0]
    if first.holder != holder:
        _stamp(store, name, holder, ttl_s, claimed_at=mine.claimed_at, released=True)
        raise LeaseHeld(name, first, rival=first.name != name)
    return Lease(store, name, ttl_s, holder, mine.claimed_at, started + ttl_s - MARGIN_S, started)


@contextlib.contextmanager
def waiting_for(store: Store, name: str, ttl_s: float, poll_s: float = 0.5) -> Iterator[Lease]:
    """Hold `name` for the block, waiting while another holds it (for work done once at a time, e.g. the
    plan: the second planner finds the first one's days and adds none)."""
    while True:
        try:
            lease = claim(store, name, ttl_s)
            break
        except LeaseHeld:
            time.sleep(poll_s)
    try:
        yield lease
    finally:
        lease.release()


def _without_dead(
    store: Store, claims: list[Claim], holder: str, ttl_s: float, pid_alive: Callable[[int], bool], prefix: str
) -> list[Claim]:
    """The live claims once those of this host's processes that no longer exist are withdrawn (read again
    only when there was one: a worker killed with -9 leaves its claim, and the next claimant frees it)."""
    here = host_name()
    dead = [c for c in claims if c.host == here and c.holder != holder and not pid_alive(c.pid)]
    for other in dead:
        _stamp(store, other.name, other.holder, ttl_s, claimed_at=other.claimed_at, released=True, pid=other.pid)
    return live_claims(store, prefix) if dead else claims


def _stamp(
    store: Store,
    name: str,
    holder: str,
    ttl_s: float,
    *,
    claimed_at: dt.datetime | None = None,
    released: bool = False,
    pid: int | None = None,
) -> None:
    """One version of a claim, stamped with the server's clock (claimed_at too, for a new claim)."""
    params: dict[str, Any] = {
        "name": name,
        "holder": holder,
        "host": holder.split(":", 1)[0] if pid is not None else host_name(),
        "pid": pid if pid is not None else os.getpid(),
        "ttl": float(ttl_s),
        "released": int(released),
    }
    if claimed_at is None:
        claimed = "now64(6)"
    else:
        claimed = "toDateTime64(%(claimed)s, 6, 'UTC')"
        params["claimed"] = claimed_at.strftime("%Y-%m-%d %H:%M:%S.%f")
    store.command(
        "INSERT INTO leases (name, holder, host, pid, claimed_at, renewed_at, ttl_s, released) "
        f"SELECT %(name)s, %(holder)s, %(host)s, %(pid)s, {claimed}, now64(6), %(ttl)s, %(released)s",
        params,
    )


def _pid_alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)
