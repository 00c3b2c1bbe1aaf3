"""The worker process: owns the days with day_idx % shards == shard_id and copies them into the store.

Data path, in order, per window: eth_getLogs (several in flight) -> decode -> attach timestamps ->
insert in large batches -> checkpoint next_block -> heartbeat. The next window is fetched while the
current one is written. All progress lives in the store, written after the data it describes, so the
process can be killed at any instruction and loses at most one window.

    python -m workers.worker --shard 3 --shards 12
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, cast

import orjson

from backfill.chain.client import RpcClient, current_day
from backfill.chain.planner import DayPlan
from backfill.chain.provider_errors import RangeTooLarge, Transient
from backfill.chain.ranges import RangeSizer, answer_target
from backfill.decode import scanner as native
from backfill.decode.decoder import DecodedBatch
from backfill.errors import ConfigError, RpcError, StoreUnavailable, UserError
from backfill.files.oplog import setup_logging
from backfill.redact import scrub
from backfill.settings import Settings, load_settings
from backfill.store import schema
from backfill.store.client import Store, side_by_side
from backfill.store.leases import Lease
from backfill.store.native_format import NativeRows
from backfill.store.records import Checkpoint
from workers import exitcodes
from workers.batching import SegmentRows, WriteBuffer
from workers.early_store import EarlyStore, connect_early, store_target
from workers.lease import LeaseLost, ShardTaken, take_shard
from workers.windows import Segment, Window, day_segments, owned, pack_windows

log = logging.getLogger("worker")
UTC = dt.timezone.utc
PREFETCH_WINDOWS = 1  # windows fetched ahead of the one being written (bounded memory)
HEARTBEAT_MAX_S = 10.0  # a worker waiting (e.g. for an endpoint's budget) still reports its pace this often


def unit_blocks(window_blocks: int) -> int:
    """Blocks per checkpoint unit: with the prefetched windows, a kill loses at most window_blocks."""
    return max(1, window_blocks // (PREFETCH_WINDOWS + 1))


@dataclass
class DayProgress:
    plan: DayPlan
    erc20: int = 0
    erc1155: int = 0
    quarantined: int = 0
    skipped: int = 0
    attempts: int = 0  # tries of the day (a run that writes its first piece)
    failures: int = 0  # failed tries; FAILED at max_day_attempts
    requests: int = 0  # RPC requests made for the day (all tries), with errors and estimated compute units
    rpc_errors: int = 0
    compute_units: int = 0
    resume_from: int = 0  # first block this run fetches for the day
    served: Counter = field(default_factory=Counter)  # endpoint label -> eth_getLogs answers used for the day


class Worker:
    def __init__(self, settings: Settings, shard_id: int, shards: int, store: Store):
        self.s = settings
        self.shard_id = shard_id
        self.shards = shards
        self.store = store
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")  # one ordered writer
        self.insert_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="insert")  # a window's inserts
        self.sizer = RangeSizer(
            settings.getlogs_blocks,
            unit_blocks(settings.window_blocks),
            cheap_logs=answer_target(settings.rpc_urls, settings.getlogs_answer_logs),
        )
        self.fetch_slots = asyncio.Semaphore(settings.getlogs_concurrency)  # chunks in flight, all windows
        self.answers = 0  # eth_getLogs answers so far: density is unknown until the first
        self.inflight = 0
        self.guard_from: int | None = None  # blocks at or above are near the head: answers are verified
        self.track_from: int | None = None  # blocks at or above may still be reorganised: their hashes recorded
        self.rpc: RpcClient | None = None
        self.rows_total = 0
        self.stop = asyncio.Event()
        self.last_beat = 0.0
        self.current: Window | None = None  # the window being fetched / written, blamed if we fail
        self.days: dict[int, DayProgress] = {}
        self.tag = f"worker={shard_id}"
        self.fast_decode = settings.fast_decode and native.AVAILABLE  # else everything takes decode.py
        self.lease: Lease | None = None  # the shard's lease (workers/lease.py): checked before each checkpoint

    # -- fetch ----------------------------------------------------------------------------
    async def fetch_range(self, rpc: RpcClient, a: int, b: int) -> list[list[dict[str, Any]] | native.Scanned]:
        """eth_getLogs over [a, b], split where the node refuses the range or the result size: the answers."""
        guard = self.guard_from is not None and b >= self.guard_from
        try:
            logs = await rpc.get_logs(
                a, b, guard=guard, verify_from=self.guard_from if guard else None, scan=self.fast_decode
            )
        except RangeTooLarge as exc:
            if a == b:
                raise
            mid = self.sizer.split(a, b, exc.suggested, exc.max_blocks, exc.max_results)
            log.info(
                "%s day=%d blocks=%d-%d event=split reason=%r next=%d-%d",
                self.tag,
                current_day.get(),
                a,
                b,
                str(exc)[:120],
                a,
                mid,
            )
            left, right = await asyncio.gather(self.fetch_range(rpc, a, mid), self.fetch_range(rpc, mid + 1, b))
            return left + right
        self.sizer.answered(b - a + 1, len(logs))
        return [cast("list[dict[str, Any]] | native.Scanned", logs)]  # the worker reads with the scanner only

    async def fetch_window(self, rpc: RpcClient, w: Window) -> list[SegmentRows]:
        """All segments of a window, their eth_getLogs chunks in flight together; one SegmentRows per segment.

        Memory stays bounded on dense days: once completed chunks hold batch_rows rows, they are written at once
        (only their counts are kept). The window's checkpoint still comes after all of its rows."""
        buffer = WriteBuffer(self.s.batch_rows)
        flush_lock = asyncio.Lock()
        # Chunks are cut as we go, with the size the answers so far call for. The in-flight limit is shared by
        # every window of this worker, and until the first answer (density unknown) only one request is out.
        links = await self.tip_links(rpc, w)
        tasks: set[asyncio.Task] = set()
        results: list[tuple[int, SegmentRows]] = []
        cursor = [(i, seg.start, seg.end) for i, seg in enumerate(w.segments)]
        try:
            while cursor or tasks:
                while cursor and self.may_send() and buffer.may_fetch():
                    await self.fetch_slots.acquire()  # free: returns at once
                    self.inflight += 1
                    seg_i, a, b = self.next_chunk(cursor)
                    tasks.add(asyncio.create_task(self.fetch_chunk(rpc, w, seg_i, a, b, buffer, flush_lock)))
                if not tasks:  # the other window holds the slots or the first probe: wait a moment
                    await asyncio.sleep(0.005)
                    continue
                done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                results.extend(task.result() for task in done)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        parts = [SegmentRows() for _ in w.segments]
        for seg_i, part in sorted(results, key=lambda r: r[0]):
            parts[seg_i].extend(part)
        for seg, part in zip(w.segments, parts):
            part.tip = {b: links[b] for b in range(seg.start, seg.end + 1) if b in links}
            check_tip_hashes(part)
        return parts

    async def tip_links(self, rpc: RpcClient, w: Window) -> dict[int, tuple[str, str]]:
        """The hashes of the window's blocks that may still be reorganised, read before their logs: a fork in
        between leaves the recorded hash on the old branch, so the next tip check finds it (backfill.cli.tip)."""
        if self.track_from is None:
            return {}
        blocks = [b for seg in w.segments for b in range(max(seg.start, self.track_from), seg.end + 1)]
        return await rpc.block_links(blocks) if blocks else {}

    def may_send(self) -> bool:
        """A request slot is free, and the density is known or no probe is out."""
        return not self.fetch_slots.locked() and bool(self.answers or not self.inflight)

    def next_chunk(self, cursor: list[tuple[int, int, int]]) -> tuple[int, int, int]:
        """Cut the next chunk (segment index, first block, last block) off the cursor, at the sizer's size."""
        seg_i, a, end = cursor[0]
        b = min(end, a + self.sizer.size - 1)
        if b == end:
            cursor.pop(0)
        else:
            cursor[0] = (seg_i, b + 1, end)
        return seg_i, a, b

    async def fetch_chunk(
        self, rpc: RpcClient, w: Window, seg_i: int, a: int, b: int, buffer: WriteBuffer, flush_lock: asyncio.Lock
    ) -> tuple[int, SegmentRows]:
        """One chunk: fetch -> decode -> timestamps -> into the window's buffer (written early when it is full)."""
        current_day.set(w.segments[seg_i].day_idx)  # requests made for this chunk are counted for its day
        try:
            answers = await self.fetch_range(rpc, a, b)
        finally:
            self.inflight -= 1
            self.fetch_slots.release()
        self.answers += 1
        part = SegmentRows()
        for answer in answers:
            part.extend(native.decode_answer(answer))
        del answers  # the RPC client refused answers naming blocks outside [a, b] (answer_check)
        await self.resolve_timestamps(rpc, part)
        buffer.add(seg_i, part)
        if buffer.full():
            async with flush_lock:
                batch = buffer.take()
                if batch:
                    await asyncio.get_running_loop().run_in_executor(None, self.flush_rows, w, batch)
        return seg_i, part

    async def resolve_timestamps(self, rpc: RpcClient, part: DecodedBatch) -> None:
        """Blocks whose logs carry no blockTimestamp (or when told not to trust it): batched header calls."""
        missing = sorted(bn for bn, (_, ts) in part.blocks.items() if ts is None or not self.s.use_log_timestamps)
        if not missing:
            return
        headers = await rpc.headers(missing)
        for bn, (block_hash, ts) in headers.items():
            log_hash = part.blocks[bn][0]
            if log_hash and log_hash != block_hash:
                raise Transient(f"block {bn} hash differs between logs and header (reorg or lagging node)")
            part.blocks[bn] = (block_hash, ts)

    def insert_rows(self, parts: Sequence[tuple[int, DecodedBatch]], w: Window, version: int) -> None:
        """Rows, quarantined logs and block timestamps of some decoded parts, the inserts run together."""
        decoded = DecodedBatch()
        for _, part in parts:
            decoded.extend(part)
        # Unix seconds: the driver writes ints to DateTime columns as they are (datetimes cost a conversion each way)
        stamp = {bn: int(ts) for bn, (_, ts) in decoded.blocks.items()}  # type: ignore[arg-type]  # all resolved
        quarantine = [
            _quarantine_row(entry, reason, w.segments[i].day_idx, version)
            for i, part in parts
            for entry, reason in part.quarantined
        ]
        batch = self.s.batch_rows
        pending = []
        if decoded.blocks:
            pending.append(
                self.insert_pool.submit(
                    self.store.insert_columns,
                    "block_timestamps",
                    {
                        "block_number": list(decoded.blocks),
                        "block_hash": [h for h, _ in decoded.blocks.values()],
                        "timestamp": [stamp[bn] for bn in decoded.blocks],
                    },
                )
            )
        if quarantine:
            pending.append(
                self.insert_pool.submit(self.store.insert, "transfer_quarantine", quarantine, schema.QUARANTINE_COLUMNS)
            )
        for table, rows, scanned, fields in (
            ("erc20_transfers_staging", decoded.erc20, decoded.native_erc20, schema.ERC20_COLUMNS),
            ("erc1155_transfers_staging", decoded.erc1155, decoded.native_erc1155, schema.ERC1155_COLUMNS),
        ):
            for i in range(0, len(rows), batch):
                pending.append(
                    self.insert_pool.submit(
                        self.store.insert_columns, table, _columns(rows[i : i + batch], fields, stamp, version)
                    )
                )
            for group in _groups(scanned, batch):
                pending.append(self.insert_pool.submit(self.store.insert_native, table, fields, group, stamp, version))
        for future in pending:
            future.result()  # raises the first failed insert
        self.rows_total += decoded.n_erc20 + decoded.n_erc1155

    def flush_rows(self, w: Window, parts: list[tuple[int, SegmentRows]]) -> None:
        """Write some parts of a window before its end and keep only their counts (bounded memory)."""
        self.insert_rows(parts, w, time.time_ns())
        for _, part in parts:
            part.mark_flushed()
        log.info(
            "%s day=%d blocks=%s event=flush rows=%d",
            self.tag,
            w.segments[0].day_idx,
            w.label(),
            sum(p.flushed_rows for _, p in parts),
        )

    # -- write ----------------------------------------------------------------------------
    def write_window(self, w: Window, parts: list[SegmentRows], days: dict[int, DayProgress]) -> None:
        """Insert a window's remaining rows, then checkpoint every day it touched. Runs on the single store
        thread, so checkpoints follow the data they describe and each other."""
        self.insert_rows(list(enumerate(parts)), w, time.time_ns())
        # the tip's hashes before the checkpoints: a copied block that may change is never left untracked
        self.store.record_block_hashes({b: link for part in parts for b, link in part.tip.items()})
        checkpoints: list[Checkpoint] = []
        for seg, part in zip(w.segments, parts):
            day = days[seg.day_idx]
            if seg.start == day.resume_from:
                day.attempts += 1  # the first piece of this day in this run
            day.erc20 += part.n_erc20
            day.erc1155 += part.n_erc1155
            day.quarantined += part.n_quarantined
            day.skipped += part.skipped
            checkpoints.append(
                self.checkpoint(day, day_end_status(day.plan) if seg.last_of_day else "RUNNING", seg.end + 1)
            )
        self.check_lease()
        self.store.write_checkpoints(checkpoints)
        self.beat(w.segments[-1].day_idx, w.label())

    def checkpoint(self, day: DayProgress, status: str, next_block: int, error: str = "") -> Checkpoint:
        """The day's progress as a checkpoint record, with the RPC usage counted for it since the last one."""
        usage = self.rpc.days.pop(day.plan.day_idx, None) if self.rpc else None
        if usage:
            day.requests += usage.requests
            day.rpc_errors += usage.errors
            day.compute_units += usage.compute_units
            day.served.update(usage.served)
        return Checkpoint(
            day_idx=day.plan.day_idx,
            status=status,
            next_block=next_block,
            erc20_count=day.erc20,
            erc1155_count=day.erc1155,
            quarantined_count=day.quarantined,
            skipped_count=day.skipped,
            worker_id=self.shard_id,
            shards=self.shards,
            attempts=day.attempts,
            failures=day.failures,
            error=error,
            requests=day.requests,
            rpc_errors=day.rpc_errors,
            compute_units=day.compute_units,
            endpoints=",".join(label for label, _ in day.served.most_common()),
            updated_at=dt.datetime.now(UTC),
        )

    def check_lease(self) -> None:
        """The fence: no checkpoint once the shard's lease may have lapsed (another worker may have it)."""
        if self.lease is not None and not self.lease.valid():
            raise LeaseLost(
                f"the lease of shard {self.shard_id} of {self.shards} lapsed (stopped or cut off longer "
                f"than {self.s.lease_ttl_s:g}s); nothing more written, the checkpoints say where to resume"
            )

    def beat(self, day_idx: int, label: str, final: bool = False) -> None:
        """Heartbeat after a batch; at most one a second, so tiny windows do not flood the store. The shard's
        lease is renewed with it when due (a lapsed one is not: check_lease stops the worker)."""
        if self.lease is not None and self.lease.renew_due():
            self.lease.renew()
        now = time.monotonic()
        if final or now - self.last_beat >= 1.0:
            self.store.heartbeat(self.shard_id, os.getpid(), day_idx, label, self.rows_total)
            if self.rpc is not None:
                self.store.record_rpc_usage(self.shard_id, os.getpid(), self.rpc.usage())
            self.last_beat = now

    def record_failure(self, error: str) -> None:
        """Blame the window in progress: its days get the error and one more attempt; FAILED at the limit."""
        if self.current is None:
            return
        if self.lease is not None and not self.lease.valid():
            return  # not ours to write any more
        rows: list[Checkpoint] = []
        seen: set[int] = set()
        for seg in self.current.segments:
            if seg.day_idx in seen:
                continue
            seen.add(seg.day_idx)
            day = self.days[seg.day_idx]
            day.failures += 1
            status = "FAILED" if day.failures >= self.s.max_day_attempts else "RUNNING"
            # windows are written in order, so the day's committed progress is where this segment starts
            rows.append(self.checkpoint(day, status, seg.start, error[:500]))
            log.error(
                "%s day=%d blocks=%d-%d event=day_error failures=%d/%d status=%s error=%s",
                self.tag,
                seg.day_idx,
                seg.start,
                seg.end,
                day.failures,
                self.s.max_day_attempts,
                status,
                error[:300],
            )
        self.store.write_checkpoints(rows)

    async def heartbeat_loop(self) -> None:
        """Beat every stall_s / 2 (at most HEARTBEAT_MAX_S) through the store thread: a hung store or a stopped
        process goes silent."""
        interval = max(0.5, min(self.s.stall_s / 2, HEARTBEAT_MAX_S, self.s.lease_ttl_s / 3))  # renews the lease
        while True:
            await asyncio.sleep(interval)
            day = self.current.segments[0].day_idx if self.current else -1
            label = self.current.label() if self.current else "idle"
            try:
                await self.in_store(self.beat, day, label, True)
            except StoreUnavailable:  # stopping while the store is away: the main loop says so
                return

    def request_stop(self) -> None:
        """Finish the current write and exit; a store call waiting out an outage gives up at once."""
        self.stop.set()
        self.store.abandon.set()

    async def in_store(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- main loop ------------------------------------------------------------------------
    def my_days(self) -> tuple[dict[int, DayProgress], list[Segment]]:
        """This shard's days still to copy and their segments; also where the tip is tracked from (the three
        reads side by side)."""
        checkpoints, plan_rows, self.track_from = side_by_side(
            self.store.checkpoints, self.store.read_plan, self.store.tip_tracked_from
        )
        days: dict[int, DayProgress] = {}
        segments: list[Segment] = []
        for plan in plan_rows:
            if not owned(plan.day_idx, self.shard_id, self.shards):
                continue
            cp = checkpoints.get(plan.day_idx)
            if cp and cp["status"] in ("COMPLETE", "FAILED"):
                continue
            if cp and cp["status"] == "OPEN" and int(cp["next_block"]) > plan.end_block:
                continue  # copied to the safe head; the next plan completes it or gives it more blocks
            day = DayProgress(plan)
            next_block = plan.start_block
            if cp:
                day.erc20, day.erc1155 = int(cp["erc20_count"]), int(cp["erc1155_count"])
                day.quarantined, day.skipped = int(cp["quarantined_count"]), int(cp["skipped_count"])
                day.attempts, day.failures = int(cp["attempts"]), int(cp["failures"])
                day.requests, day.rpc_errors = int(cp["requests"]), int(cp["rpc_errors"])
                day.compute_units = int(cp["compute_units"])
                day.served.update({label: 1 for label in str(cp.get("endpoints") or "").split(",") if label})
                next_block = max(next_block, int(cp["next_block"]))
            day.resume_from = max(plan.start_block, next_block)
            days[plan.day_idx] = day
            segments.extend(day_segments(plan, next_block, unit_blocks(self.s.window_blocks)))
        return days, segments

    async def run(self) -> int:
        async with RpcClient(
            self.s.rpc_urls,
            timeout_s=self.s.rpc_timeout_s,
            context=self.tag,
            attempts=self.s.rpc_attempts,
            concurrency_per_endpoint=self.s.rpc_max_concurrency,
            max_rps_per_endpoint=self.s.rpc_max_rps,
            share=self.shards,
            memory=self.s.log_dir / "endpoints.json",
        ) as rpc:
            # the endpoints report their heads while the store reads this shard's days (a round trip each, side
            # by side instead of one after the other)
            heads = asyncio.ensure_future(self.guard_near_head(rpc))
            try:
                windows = await self.plan_windows()
            except BaseException:
                heads.cancel()
                raise
            self.rpc = rpc
            await heads
            warm = asyncio.ensure_future(self.in_store(self.store.warm_up))
            inflight = [asyncio.create_task(self.fetch_window(rpc, w)) for w in windows[:PREFETCH_WINDOWS]]
            await warm
            for i, w in enumerate(windows):
                ahead = windows[i + PREFETCH_WINDOWS] if i + PREFETCH_WINDOWS < len(windows) else None
                if not await self.copy_window(rpc, w, inflight, ahead):
                    return exitcodes.OK
            if windows:
                last = windows[-1].segments[-1]
                await self.in_store(self.beat, last.day_idx, windows[-1].label(), True)
        log.info("%s event=done rows=%d", self.tag, self.rows_total)
        return exitcodes.OK

    async def plan_windows(self) -> list[Window]:
        """This shard's days and the windows left of them; days with nothing left are checkpointed COMPLETE."""
        days, segments = await self.in_store(self.my_days)
        self.days = days
        windows = pack_windows(segments, unit_blocks(self.s.window_blocks))
        log.info("%s shards=%d event=start days=%d windows=%d", self.tag, self.shards, len(days), len(windows))
        with_blocks = {seg.day_idx for seg in segments}
        nothing_left = [
            self.checkpoint(d, day_end_status(d.plan), d.plan.end_block + 1)
            for k, d in days.items()
            if k not in with_blocks
        ]
        if nothing_left:  # days without a block, or resumed at their very end
            await self.in_store(self.store.write_checkpoints, nothing_left)
            log.info("%s event=complete days=%s blocks=0", self.tag, ",".join(str(cp.day_idx) for cp in nothing_left))
        return windows

    async def guard_near_head(self, rpc: RpcClient) -> None:
        """The endpoints' heads: answers for blocks near the highest are verified (guard_from)."""
        heads = await rpc.refresh_heads()
        top = rpc.highest_head()
        if top is not None:
            self.guard_from = max(0, top - self.s.lag_guard_blocks)
        log.info(
            "%s event=endpoints heads=%s guard_from=%s answer_logs=%d decoder=%s",
            self.tag,
            ",".join(f"{k}:{v}" for k, v in heads.items()),
            self.guard_from,
            self.sizer.cheap_logs,
            "compiled" if self.fast_decode else "python",
        )

    async def copy_window(self, rpc: RpcClient, w: Window, inflight: list[asyncio.Task], ahead: Window | None) -> bool:
        """One window: its fetch (fetch -> decode -> timestamps -> early writes, started ahead) is awaited, the
        next one starts, then the rest of its rows are inserted and its days checkpointed. False: stopped."""
        if self.stop.is_set():
            return self.stopped(w, inflight)
        t0 = time.monotonic()
        self.current = w
        fetching = inflight.pop(0)
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({fetching, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not fetching.done():  # stopped while waiting (e.g. for an endpoint's budget): nothing to lose
            return self.stopped(w, [fetching, *inflight])
        parts = fetching.result()
        t1 = time.monotonic()
        if ahead is not None:
            inflight.append(asyncio.create_task(self.fetch_window(rpc, ahead)))
        await self.in_store(self.write_window, w, parts, self.days)
        self.log_window(w, parts, fetch_wait_s=t1 - t0, write_s=time.monotonic() - t1)
        return True

    def stopped(self, w: Window, tasks: list[asyncio.Task]) -> bool:
        """Told to stop before writing `w`: the fetches in flight are dropped (nothing of them is written)."""
        for task in tasks:
            task.cancel()
        seg = w.segments[0]
        log.info("%s event=stopped reason=signal next_day=%d next_block=%d", self.tag, seg.day_idx, seg.start)
        return False

    def log_window(self, w: Window, parts: list[SegmentRows], fetch_wait_s: float, write_s: float) -> None:
        for seg, part in zip(w.segments, parts):
            log.info(
                "%s day=%d blocks=%d-%d event=%s erc20=%d erc1155=%d quarantined=%d skipped=%d "
                "fetch_wait_ms=%d write_ms=%d",
                self.tag,
                seg.day_idx,
                seg.start,
                seg.end,
                "complete" if seg.last_of_day else "window",
                part.n_erc20,
                part.n_erc1155,
                part.n_quarantined,
                part.skipped,
                fetch_wait_s * 1000,
                write_s * 1000,
            )


def check_tip_hashes(part: SegmentRows) -> None:
    """The logs of a block that may still change must come from the block whose hash is recorded for it."""
    for bn, (block_hash, _) in part.tip.items():
        seen = part.blocks.get(bn)
        if seen and seen[0] and seen[0] != block_hash:
            raise Transient(f"block {bn} changed while it was copied (a fork at the chain's tip); fetching it again")


def day_end_status(plan: DayPlan) -> str:
    """A day copied to its planned end: COMPLETE, or OPEN while its end is not final on chain (clipped)."""
    return "OPEN" if plan.clipped else "COMPLETE"


def _columns(rows: list[Any], fields: list[str], stamp: dict[int, int], version: int) -> dict[str, list[Any]]:
    """Decoded rows (NamedTuples) -> the table's columns, with block_timestamp and _version attached."""
    cols: dict[str, list[Any]] = {name: list(values) for name, values in zip(rows[0]._fields, zip(*rows))}
    cols["block_timestamp"] = [stamp[bn] for bn in cols["block_number"]]
    cols["_version"] = [version] * len(rows)
    return {name: cols[name] for name in fields}


def _groups(scanned: list[NativeRows], rows: int) -> list[list[NativeRows]]:
    """Scanned answers in groups of about `rows` rows, one insert each."""
    groups: list[list[NativeRows]] = []
    size = rows
    for item in scanned:
        if size >= rows:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item.n
    return groups


def _quarantine_row(entry: dict[str, Any], reason: str, day_idx: int, version: int) -> tuple:
    def num(key: str) -> int:
        try:
            return int(entry.get(key) or "0x0", 16)
        except (TypeError, ValueError):
            return 0

    topics = [str(t) for t in entry.get("topics") or []]
    return (
        num("blockNumber"),
        num("logIndex"),
        str(entry.get("transactionHash") or ""),
        str(entry.get("address") or ""),
        topics,
        str(entry.get("data") or ""),
        reason,
        day_idx,
        version,
    )


async def _watch_parent(tag: str, parent: int, stop: list[Callable[[], None]]) -> None:
    """A worker exits by itself when its supervisor is gone (stop[0]: how to stop it at that point)."""
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            log.warning("%s event=parent_gone action=stop", tag)
            stop[0]()
            return


async def amain(
    settings: Settings,
    shard_id: int,
    shards: int,
    parent: int | None = None,
    early: Future[EarlyStore | None] | None = None,
) -> int:
    # A worker waits out a store outage for as long as it lasts (its supervisor restarts an embedded server and
    # pauses stall judgement meanwhile); a stop makes waiting calls give up at once: nothing is lost, the
    # checkpoints say where to resume.
    # The parent and the signals are heard from the start: a worker still waiting for its first contact with
    # the store when its supervisor dies (or stops it) gives up, rather than wait for a store nobody restarts.
    loop = asyncio.get_running_loop()
    tag = f"worker={shard_id}"
    abandon = threading.Event()
    stop: list[Callable[[], None]] = [abandon.set]
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop[0]())
    # the supervisor names itself: one that died before this process looked would otherwise never be missed
    watcher = asyncio.create_task(_watch_parent(tag, parent or os.getppid(), stop))
    try:
        store = await _connect(settings, tag, abandon, early)
        lease = await _shard_lease(store, settings, shard_id, shards, abandon) if store else exitcodes.OK
    except BaseException:
        watcher.cancel()
        raise
    if store is None or not isinstance(lease, Lease):  # stopped before it began, or the shard is not ours
        watcher.cancel()
        if store is not None:
            store.close()
        return exitcodes.OK if isinstance(lease, Lease) else lease
    worker = Worker(settings, shard_id, shards, store)
    worker.lease = lease
    stop[0] = worker.request_stop
    await worker.in_store(worker.beat, -1, "starting", True)
    beats = asyncio.create_task(worker.heartbeat_loop())
    try:
        return await worker.run()
    except LeaseLost as exc:
        log.error("%s event=lease_lost error=%r action=exit", worker.tag, str(exc))
        return exitcodes.LEASE
    except StoreUnavailable:
        if worker.stop.is_set():  # told to stop while the store was away: the checkpoints say where to resume
            log.info("%s event=stopped reason=signal store=unreachable", worker.tag)
            return exitcodes.OK
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        try:
            await worker.in_store(worker.record_failure, scrub(error, list(settings.rpc_urls)))
        except Exception:  # the store may be the thing that failed; the crash itself is logged by main()
            log.exception("%s event=record_failure_failed", worker.tag)
        raise
    finally:
        beats.cancel()
        watcher.cancel()
        worker.executor.shutdown(wait=True)
        worker.insert_pool.shutdown(wait=True)
        release(lease)
        store.close()


async def _connect(
    settings: Settings, tag: str, abandon: threading.Event, early: Future[EarlyStore | None] | None = None
) -> Store | None:
    """The worker's store connection, waiting out an outage; None when told to stop before it answered. A warm
    worker's early connection is taken when it reached the store these settings name."""
    if early is not None:
        taken = await asyncio.wrap_future(early)
        if taken is not None and taken.target == store_target(settings):
            taken.store.outage.context, taken.store.abandon = f"{tag} ", abandon
            return taken.store
        if taken is not None:
            taken.store.close()
    try:
        return await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: Store.connect(
                settings,
                create=False,
                start_embedded=False,
                patience_s=None,
                connect_patience_s=None,
                context=tag,
                abandon=abandon,
            ),
        )
    except StoreUnavailable:
        if abandon.is_set():
            log.info("%s event=stopped reason=stop_before_start store=unreachable", tag)
            return None
        raise


async def _shard_lease(
    store: Store, settings: Settings, shard_id: int, shards: int, abandon: threading.Event
) -> Lease | int:
    """The shard's lease, or the exit code when there is none: LEASE (another live worker has it), OK (told to
    stop while waiting for it)."""
    tag = f"worker={shard_id}"
    try:
        lease = await asyncio.get_running_loop().run_in_executor(
            None, take_shard, store, settings, shard_id, shards, abandon
        )
    except ShardTaken as exc:
        log.error("%s event=refused reason=shard_taken error=%r action=exit", tag, str(exc))
        return exitcodes.LEASE
    if lease is None:
        log.info("%s event=stopped reason=stop_while_waiting_for_lease", tag)
        return exitcodes.OK
    return lease


def release(lease: Lease) -> None:
    """Free the shard at once for the next worker (best effort: an unreleased lease lapses by itself)."""
    try:
        if lease.valid():
            lease.release()
    except Exception as exc:  # noqa: BLE001 - the store may be what ended the run
        log.warning("event=lease_release_failed lease=%s error=%r", lease.name, str(exc)[:200])


def tune_gc() -> None:
    """A window is hundreds of thousands of short-lived tuples and dicts; with the default thresholds the cyclic
    collector runs every 700 allocations and rescans them (measured: JSON parsing 5.1 -> 2.2 us/log when it is
    out of the way). Collect the young generation rarely, but keep the older generations at their default
    pace: reference cycles (e.g. in the HTTP client's insert machinery) must still be freed. Raising those too
    kept every window's rows alive (a 1M-log day grew a worker to 700 MB)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


def serve_warm() -> int:
    """A warm worker (monitor/warm.py): its imports are done; wait for the line that makes it a worker (argv,
    environment, stderr file, as a cold spawn would have had them), then run as one. The end of stdin: exit 0."""
    tune_gc()  # the imports' objects collected and frozen while waiting, not after the hand-over
    early = connect_early()
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return 0
    start = orjson.loads(line)
    os.environ.clear()
    os.environ.update(start["env"])
    err = os.open(start["stderr"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(err, 2)
    os.close(err)
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.close(nothing)
    return main(list(start["argv"]), early)


def main(argv: list[str] | None = None, early: Future[EarlyStore | None] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--warm"]:
        return serve_warm()
    parser = argparse.ArgumentParser(prog="workers.worker")
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--parent", type=int, default=None, help="the supervisor's pid (default: the parent's)")
    parser.add_argument("--log-stderr", action="store_true", help="log to stderr too (`backfill worker`)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    setup_logging(
        settings.log_dir / f"worker-{args.shard}.log", also_stderr=args.log_stderr, log_format=settings.log_format
    )
    tune_gc()
    pid_file = settings.log_dir / f"worker-{args.shard}.pid"
    pid_file.write_text(str(os.getpid()))
    try:
        return asyncio.run(amain(settings, args.shard, args.shards, args.parent, early))
    except StoreUnavailable as exc:
        log.error("worker=%d event=exit reason=store_unavailable error=%s", args.shard, exc)
        return exitcodes.STORE
    except UserError as exc:
        log.error("worker=%d event=exit reason=user_error error=%s", args.shard, exc)
        return exc.exit_code
    except RpcError as exc:  # a provider condition that outlasted the tries: its day has the failure recorded
        log.error(
            "worker=%d event=exit reason=rpc endpoint=%s error=%r action=restart",
            args.shard,
            getattr(exc, "endpoint", "-"),
            scrub(f"{type(exc).__name__}: {exc}", list(settings.rpc_urls))[:300],
        )
        return exitcodes.UNREACHABLE
    except Exception:
        log.exception("worker=%d event=crash action=exit code=%d", args.shard, exitcodes.CRASH)
        return exitcodes.CRASH
    finally:
        if pid_file.exists() and pid_file.read_text() == str(os.getpid()):
            pid_file.unlink()


if __name__ == "__main__":
    sys.exit(main())
