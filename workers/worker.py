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
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from backfill import schema
from backfill.decode import DecodedBatch, decode_logs
from backfill.errors import ConfigError, StoreUnavailable, UserError
from backfill.logs import setup_logging
from backfill.planner import DayPlan
from backfill.rpc import RpcClient
from backfill.rpc_errors import RangeTooLarge, Transient
from backfill.settings import Settings, load_settings
from backfill.store import Store
from workers import exitcodes
from workers.windows import Window, day_windows, owned, ranges

log = logging.getLogger("worker")
UTC = dt.timezone.utc


@dataclass
class DayProgress:
    plan: DayPlan
    erc20: int = 0
    erc1155: int = 0
    quarantined: int = 0
    skipped: int = 0
    attempts: int = 0


class Worker:
    def __init__(self, settings: Settings, shard_id: int, shards: int, store: Store):
        self.s = settings
        self.shard_id = shard_id
        self.shards = shards
        self.store = store
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")  # one ordered writer
        self.chunk_blocks = settings.getlogs_blocks
        self.rows_total = 0
        self.stop = asyncio.Event()
        self.tag = f"worker={shard_id}"

    # -- fetch ----------------------------------------------------------------------------
    async def fetch_range(self, rpc: RpcClient, a: int, b: int) -> list[dict[str, Any]]:
        """eth_getLogs over [a, b], split where the node refuses the range or the result size."""
        try:
            return await rpc.get_logs(a, b)
        except RangeTooLarge as exc:
            if a == b:
                raise
            s = exc.suggested
            mid = s[1] if s and s[0] == a and a <= s[1] < b else (a + b) // 2
            self.chunk_blocks = max(1, min(self.chunk_blocks, mid - a + 1))
            log.info("%s blocks=%d-%d event=split reason=%r next=%d-%d", self.tag, a, b, str(exc)[:120], a, mid)
            left, right = await asyncio.gather(self.fetch_range(rpc, a, mid), self.fetch_range(rpc, mid + 1, b))
            return left + right

    async def fetch_window(self, rpc: RpcClient, w: Window) -> DecodedBatch:
        chunks = ranges(w.start, w.end, self.chunk_blocks)
        sem = asyncio.Semaphore(self.s.getlogs_concurrency)

        async def one(a: int, b: int) -> list[dict[str, Any]]:
            async with sem:
                return await self.fetch_range(rpc, a, b)

        answers = await asyncio.gather(*(one(a, b) for a, b in chunks))
        decoded = DecodedBatch()
        for (a, b), logs in zip(chunks, answers):
            for entry in logs:
                bn = int(entry.get("blockNumber") or "0x0", 16)
                if not a <= bn <= b:
                    raise Transient(f"node answered a log of block {bn} for range {a}-{b}")
            decoded.extend(decode_logs(logs))
        missing = [bn for bn, (_, ts) in decoded.blocks.items() if ts is None or not self.s.use_log_timestamps]
        if missing:
            headers = await rpc.headers(sorted(missing))
            for bn, (block_hash, ts) in headers.items():
                log_hash = decoded.blocks[bn][0]
                if log_hash and log_hash != block_hash:
                    raise Transient(f"block {bn} hash differs between logs and header (reorg or lagging node)")
                decoded.blocks[bn] = (block_hash, ts)
        return decoded

    # -- write ----------------------------------------------------------------------------
    def write_window(self, w: Window, decoded: DecodedBatch, day: DayProgress) -> None:
        """Insert a window's rows, then checkpoint it. Runs on the single store thread."""
        version = time.time_ns()
        stamp = {bn: dt.datetime.fromtimestamp(ts, UTC) for bn, (_, ts) in decoded.blocks.items()}
        erc20 = [(r.block_number, stamp[r.block_number], r.tx_hash, r.log_index, r.token_address, r.from_address,
                  r.to_address, r.value, version) for r in decoded.erc20]
        erc1155 = [(r.block_number, stamp[r.block_number], r.tx_hash, r.log_index, r.batch_index, r.token_address,
                    r.operator, r.from_address, r.to_address, r.token_id, r.value, version) for r in decoded.erc1155]
        blocks = [(bn, h, stamp[bn]) for bn, (h, _) in decoded.blocks.items()]
        quarantine = [_quarantine_row(entry, reason, w.day_idx, version) for entry, reason in decoded.quarantined]
        label = f"{w.start}-{w.end}"
        for table, rows, cols in (("erc20_transfers_staging", erc20, schema.ERC20_COLUMNS),
                                  ("erc1155_transfers_staging", erc1155, schema.ERC1155_COLUMNS)):
            for i in range(0, len(rows), self.s.batch_rows):
                self.store.insert(table, rows[i:i + self.s.batch_rows], cols)
                self.rows_total += len(rows[i:i + self.s.batch_rows])
                self.store.heartbeat(self.shard_id, os.getpid(), w.day_idx, label, self.rows_total)
        self.store.insert("block_timestamps", blocks, schema.BLOCK_COLUMNS)
        self.store.insert("transfer_quarantine", quarantine, schema.QUARANTINE_COLUMNS)
        day.erc20 += len(erc20)
        day.erc1155 += len(erc1155)
        day.quarantined += len(quarantine)
        day.skipped += decoded.skipped
        self.checkpoint(day, "COMPLETE" if w.last_of_day else "RUNNING", w.end + 1)
        self.store.heartbeat(self.shard_id, os.getpid(), w.day_idx, label, self.rows_total)

    def checkpoint(self, day: DayProgress, status: str, next_block: int, error: str = "") -> None:
        self.store.write_checkpoint(
            day_idx=day.plan.day_idx, status=status, next_block=next_block, erc20_count=day.erc20,
            erc1155_count=day.erc1155, quarantined_count=day.quarantined, skipped_count=day.skipped,
            worker_id=self.shard_id, shards=self.shards, attempts=day.attempts, error=error)

    async def in_store(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- main loop ------------------------------------------------------------------------
    def my_days(self) -> list[tuple[DayProgress, list[Window]]]:
        checkpoints = self.store.checkpoints()
        todo = []
        for plan in self.store.read_plan():
            if not owned(plan.day_idx, self.shard_id, self.shards):
                continue
            cp = checkpoints.get(plan.day_idx)
            if cp and cp["status"] == "COMPLETE":
                continue
            day = DayProgress(plan)
            next_block = plan.start_block
            if cp:
                day.erc20, day.erc1155 = int(cp["erc20_count"]), int(cp["erc1155_count"])
                day.quarantined, day.skipped = int(cp["quarantined_count"]), int(cp["skipped_count"])
                day.attempts = int(cp["attempts"])
                next_block = max(next_block, int(cp["next_block"]))
            todo.append((day, day_windows(plan, next_block, self.s.window_blocks)))
        return todo

    async def run(self) -> int:
        todo = await self.in_store(self.my_days)
        log.info("%s shards=%d event=start days=%d windows=%d", self.tag, self.shards, len(todo),
                 sum(len(ws) for _, ws in todo))
        stream = [(day, w) for day, ws in todo for w in ws]
        async with RpcClient(self.s.rpc_urls, timeout_s=self.s.rpc_timeout_s, context=self.tag,
                             concurrency=max(4, self.s.getlogs_concurrency * 2)) as rpc:
            for day, windows in todo:  # days with nothing left (no block, or resumed at the end) complete at once
                if not windows:
                    await self.in_store(self.checkpoint, day, "COMPLETE", day.plan.end_block + 1)
                    log.info("%s day=%d event=complete blocks=0 erc20=%d erc1155=%d", self.tag, day.plan.day_idx,
                             day.erc20, day.erc1155)
            pending = asyncio.create_task(self.fetch_window(rpc, stream[0][1])) if stream else None
            for i, (day, w) in enumerate(stream):
                if self.stop.is_set():
                    pending.cancel()
                    log.info("%s event=stopped reason=signal next_day=%d next_block=%d", self.tag, w.day_idx, w.start)
                    return exitcodes.OK
                if i == 0 or stream[i - 1][0] is not day:  # first window of this day in this run
                    day.attempts += 1
                    await self.in_store(self.checkpoint, day, "RUNNING", w.start)
                t0 = time.monotonic()
                decoded = await pending
                pending = asyncio.create_task(self.fetch_window(rpc, stream[i + 1][1])) if i + 1 < len(stream) else None
                await self.in_store(self.write_window, w, decoded, day)
                log.info("%s day=%d blocks=%d-%d event=window erc20=%d erc1155=%d quarantined=%d skipped=%d ms=%d",
                         self.tag, w.day_idx, w.start, w.end, len(decoded.erc20), len(decoded.erc1155),
                         len(decoded.quarantined), decoded.skipped, (time.monotonic() - t0) * 1000)
                if w.last_of_day:
                    log.info("%s day=%d event=complete erc20=%d erc1155=%d quarantined=%d skipped=%d", self.tag,
                             w.day_idx, day.erc20, day.erc1155, day.quarantined, day.skipped)
        log.info("%s event=done rows=%d", self.tag, self.rows_total)
        return exitcodes.OK


def _quarantine_row(entry: dict[str, Any], reason: str, day_idx: int, version: int) -> tuple:
    def num(key: str) -> int:
        try:
            return int(entry.get(key) or "0x0", 16)
        except (TypeError, ValueError):
            return 0

    topics = [str(t) for t in entry.get("topics") or []]
    return (num("blockNumber"), num("logIndex"), str(entry.get("transactionHash") or ""), str(entry.get("address") or ""),
            topics, str(entry.get("data") or ""), reason, day_idx, version)


async def _watch_parent(worker: Worker, parent: int) -> None:
    """A worker exits by itself when its supervisor is gone."""
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            log.warning("%s event=parent_gone action=stop", worker.tag)
            worker.stop.set()
            return


async def amain(settings: Settings, shard_id: int, shards: int) -> int:
    store = Store.connect(settings, create=False)
    worker = Worker(settings, shard_id, shards, store)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)
    watcher = asyncio.create_task(_watch_parent(worker, os.getppid()))
    try:
        return await worker.run()
    finally:
        watcher.cancel()
        worker.executor.shutdown(wait=True)
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workers.worker")
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--shards", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    setup_logging(settings.log_dir / f"worker-{args.shard}.log")
    try:
        return asyncio.run(amain(settings, args.shard, args.shards))
    except StoreUnavailable as exc:
        log.error("worker=%d event=exit reason=store_unavailable error=%s", args.shard, exc)
        return exitcodes.STORE
    except UserError as exc:
        log.error("worker=%d event=exit reason=user_error error=%s", args.shard, exc)
        return exc.exit_code
    except Exception:
        log.exception("worker=%d event=crash", args.shard)
        return exitcodes.CRASH


if __name__ == "__main__":
    sys.exit(main())
