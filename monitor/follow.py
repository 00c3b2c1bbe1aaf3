"""Following the chain after the backfill (`backfill follow`, `start --follow`): the supervisor's poller.

While the fleet is idle (every day COMPLETE, FAILED or OPEN), the supervisor asks the poller every
`follow_poll_s`; a poll runs in a thread of its own, with its own RPC client and store connection:

    the head -> the recorded tip against the chain (a fork within the finality depth rolled back, a deeper
    one stops the run) -> the hashes to record from the final head up -> the plan carried on to the safe
    head's day (an OPEN day gets its new blocks, or becomes COMPLETE once final)

and says whether there is work; the supervisor then starts the workers as for any new days. Polls run only
while no worker runs, so a rollback never races a worker's write. A failed poll (endpoints away, the store
away) is a state with a log line: the next poll tries again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from backfill.chain.client import RpcClient
from backfill.chain.usage import merge_usage
from backfill.cli.prepare import check_chain, plan_days, survey_chain
from backfill.cli.tip import check_tip, track_tip
from backfill.control import SETTLED_STATUSES
from backfill.errors import ChainForked
from backfill.settings import Settings
from backfill.store.client import Store
from backfill.store.leases import PLAN_LEASE, waiting_for
from backfill.store.records import FOLLOWER_USAGE_ID

log = logging.getLogger("monitor")


@dataclass
class PollResult:
    work: list[int]  # day_idx to copy: new days, or an OPEN day with new blocks
    head: int
    safe_head: int
    final_head: int
    at: float


class Follower:
    def __init__(self, settings: Settings, on_done: Callable[[], None] | None = None):
        self.s = settings
        self.on_done = on_done  # told when a poll ends (the supervisor's wake-up: no tick's sleep in between)
        self.thread: threading.Thread | None = None
        self.last: PollResult | None = None
        self.pending: PollResult | None = None  # a finished poll's result, not yet taken by the supervisor
        self.error: str | None = None  # the last poll's failure (a state), None once one succeeds
        self.forked: ChainForked | None = None  # a deep fork: the run stops
        self.started_at = 0.0
        self._store: Store | None = None
        self.usage: list[dict[str, Any]] = []  # the polls' RPC usage, summed over their clients

    def due(self, now: float) -> bool:
        return self.thread is None and now - self.started_at >= self.s.follow_poll_s

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="follow", daemon=True)
        self.thread.start()

    def polling(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def take(self) -> PollResult | None:
        """The result of a poll that has ended (once), None while one runs or none ended since."""
        if self.thread is not None and not self.thread.is_alive():
            self.thread = None
        if self.thread is not None:
            return None
        result, self.pending = self.pending, None
        return result

    def view(self) -> dict[str, Any]:
        """What status shows of it (supervisor.json `follow`)."""
        last = self.last
        return {
            "poll_s": self.s.follow_poll_s,
            "head": last.head if last else None,
            "safe_head": last.safe_head if last else None,
            "final_head": last.final_head if last else None,
            "polled_at": last.at if last else None,
            "error": self.error,
        }

    def _run(self) -> None:
        try:
            self._poll_once()
        finally:
            if self.on_done is not None:
                self.on_done()

    def _poll_once(self) -> None:
        try:
            result = asyncio.run(self.poll())
        except ChainForked as exc:
            self.forked = exc
            return
        except Exception as exc:  # noqa: BLE001 - a state: logged with what happens next, polled again
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            if text != self.error:
                log.warning("event=follow_poll_failed error=%r action=poll_again in_s=%g", text, self.s.follow_poll_s)
            self.error = text
            return
        if self.error:
            log.info("event=follow_poll_recovered head=%d", result.head)
        self.error = None
        self.last = self.pending = result

    async def poll(self) -> PollResult:
        if self._store is None:
            self._store = Store.connect(self.s, create=False, start_embedded=False, context="follow")
        store = self._store
        async with RpcClient(
            self.s.rpc_urls,
            timeout_s=self.s.rpc_timeout_s,
            attempts=4,
            context="follow",
            max_rps_per_endpoint=self.s.rpc_max_rps,
            memory=self.s.log_dir / "endpoints.json",
        ) as rpc:
            try:
                chain = await survey_chain(rpc, self.s)
                check_chain(store, chain.chain_id, chain.genesis_hash)
                await check_tip(rpc, store, chain)
                track_tip(store, chain)
                if chain.safe_head_ts is not None:
                    with waiting_for(store, PLAN_LEASE, self.s.lease_ttl_s):
                        await plan_days(rpc, store, self.s, chain, to_head=True)
            finally:  # a failed poll's calls too (recorded with the next good one)
                self.usage = merge_usage(self.usage, rpc.usage())
        store.record_rpc_usage(FOLLOWER_USAGE_ID, os.getpid(), self.usage)  # the polls are billed too
        checkpoints = store.checkpoints()
        work = [
            p.day_idx
            for p in store.read_plan()
            if p.day_idx not in checkpoints or checkpoints[p.day_idx]["status"] not in SETTLED_STATUSES
        ]
        return PollResult(work, chain.head, chain.safe_head, chain.final_head, time.time())

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
