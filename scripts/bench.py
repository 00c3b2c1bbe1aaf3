"""Benchmark: end-to-end `backfill start` throughput as a ratio of the node's raw eth_getLogs ceiling.

Both are measured in the same run on the same generated anvil chain:
- ceiling: the fastest simple client pulling the same logs (aiohttp + orjson, eth_getLogs over fixed
  ranges, several in flight, no decoding, no storage); the best of a small grid of range sizes and
  concurrencies;
- backfill: `SHARDS=N backfill start` from an empty embedded store to every day COMPLETE, wall clock of
  the whole command (planning, worker start-up, inserts, checkpoints included).

    scripts/bench [--days 60] [--blocks-per-day 2000] [--shards 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backfill.devnet import DevnetParams, start_devnet  # noqa: E402
from backfill.events import LOG_FILTER_TOPICS  # noqa: E402


async def pull_logs(url: str, first: int, last: int, chunk: int, concurrency: int) -> int:
    ranges = [(a, min(a + chunk - 1, last)) for a in range(first, last + 1, chunk)]
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:
        async def one(a: int, b: int) -> int:
            body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
                                 "params": [{"fromBlock": hex(a), "toBlock": hex(b), "topics": LOG_FILTER_TOPICS}]})
            async with sem, session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                return len(orjson.loads(await resp.read())["result"])
        counts = await asyncio.gather(*(one(a, b) for a, b in ranges))
    return sum(counts)


def ceiling(url: str, first: int, last: int) -> dict:
    best = None
    for chunk in (1000, 2000, 5000):
        for conc in (2, 4, 8):
            t0 = time.perf_counter()
            n = asyncio.run(pull_logs(url, first, last, chunk, conc))
            secs = time.perf_counter() - t0
            if best is None or n / secs > best["logs_per_s"]:
                best = {"logs": n, "seconds": round(secs, 3), "logs_per_s": round(n / secs), "chunk": chunk,
                        "concurrency": conc}
    return best


def run_backfill(url: str, first_day: str, last_day: str, shards: int) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFILL_") and k not in ("SHARDS", "CLICKHOUSE_URL")}
    env.update({"SHARDS": str(shards), "ETHEREUM_RPC_URLS": url, "BACKFILL_DATA_DIR": str(data_dir)})
    from backfill.embedded import ensure_server, stop_server
    ensure_server(data_dir)  # the store server's start-up is not the pipeline's speed
    try:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "backfill.cli", "start", "--from", first_day, "--to", last_day,
                              "--confirmations", "0"], env=env, capture_output=True, text=True, cwd=data_dir)
        secs = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"backfill failed: {out.stderr}")
        from backfill.settings import load_settings
        from backfill.store import Store
        store = Store.connect(load_settings({"data_dir": data_dir}, env={}))
        rows = store.scalar("SELECT sum(erc20_count + erc1155_count) FROM backfill_checkpoint FINAL")
        store.close()
        return {"seconds": round(secs, 3), "rows": int(rows), "rows_per_s": round(rows / secs)}
    finally:
        stop_server(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--blocks-per-day", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    params = DevnetParams.with_defaults(dt.date(2024, 1, 1), args.days, args.blocks_per_day, args.seed)
    state = REPO / "data" / "bench" / f"devnet-{args.days}x{args.blocks_per_day}-s{args.seed}.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    node, summary, _ = start_devnet(params, state)
    try:
        first, last = summary["days"][0]["first_block"], summary["days"][-1]["last_block"]
        last_day = summary["days"][-1]["date"]
        results = []
        for i in range(args.repeat):
            ceil = ceiling(node.url, first, last)
            e2e = run_backfill(node.url, summary["days"][0]["date"], last_day, args.shards)
            # the same logs both pull (a TransferBatch with 0 ids is a log but writes no row)
            e2e["logs_per_s"] = round(ceil["logs"] / e2e["seconds"])
            ratio = e2e["logs_per_s"] / ceil["logs_per_s"]
            results.append({"ceiling": ceil, "backfill": e2e, "ratio": round(ratio, 3)})
            print(f"run {i + 1}: ceiling {ceil['logs_per_s']} logs/s (chunk {ceil['chunk']}, {ceil['concurrency']} in "
                  f"flight) | backfill SHARDS={args.shards}: {e2e['logs_per_s']} logs/s, {e2e['rows_per_s']} rows/s, "
                  f"{e2e['seconds']}s | ratio {ratio:.0%}", flush=True)
    finally:
        node.stop()
    median = statistics.median(r["ratio"] for r in results)
    report = {"date": dt.date.today().isoformat(), "machine": f"{os.cpu_count()} cores, {platform.machine()}",
              "chain": {"days": args.days, "blocks": last - first + 1, "logs": results[0]["ceiling"]["logs"]},
              "shards": args.shards, "runs": results, "median_ratio": median}
    out = REPO / "data" / "bench" / "last.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"median ratio backfill / ceiling: {median:.0%}  (details: {out.relative_to(REPO)})")


if __name__ == "__main__":
    main()
