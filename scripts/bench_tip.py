"""Benchmark: keeping the copy current.

- sync: on the 60-day devnet (the same chain as scripts/bench), `backfill sync --from` copies it all; then
  the chain grows by one UTC day and `backfill sync` is timed three ways: without the rebuild
  (BACKFILL_ON_COMPLETE=0), with the rebuild (derived tables from the new rows only), and the rebuild alone
  with the derived tables built from all rows (their records dropped first), for comparison;
- follow: on a short devnet, `backfill follow --confirmations 0` while a block with three transfer logs is
  mined every second; for each block, the seconds from its mining (here the moment it reaches the
  confirmation depth) to its rows being queryable in the staging tables; median and worst, per poll interval.

    scripts/bench_tip [--days 60] [--blocks-per-day 2000] [--follow-blocks 60] [--polls 2,0.5] [--shards 2]

Figures go to data/bench/tip-last.json; record them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backfill.devnet.node import Anvil, DevnetParams, ensure_state, saved_summary  # noqa: E402
from backfill.settings import load_settings  # noqa: E402
from backfill.store.client import Store  # noqa: E402
from tests.support.chain_ops import grow, mine_block  # noqa: E402


def cli(args: list[str], env: dict[str, str], timeout: float = 3600) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "backfill.cli.app", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise SystemExit(f"`backfill {' '.join(args)}` failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0, out


def base_env(url: str, data_dir: Path, shards: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFILL_") and k not in ("SHARDS",)}
    return {**env, "SHARDS": str(shards), "ETHEREUM_RPC_URLS": url, "BACKFILL_DATA_DIR": str(data_dir), **extra}


def checkpointed_rows(data_dir: Path) -> int:
    store = Store.connect(load_settings({"data_dir": data_dir}), create=False)
    try:
        return sum(int(c["erc20_count"]) + int(c["erc1155_count"]) for c in store.checkpoints().values())
    finally:
        store.close()


def bench_sync(days: int, blocks_per_day: int, shards: int) -> dict[str, Any]:
    params = DevnetParams.with_defaults(dt.date(2024, 1, 1), days, blocks_per_day, 7)
    state = REPO / "data" / "bench" / f"devnet-{days}x{blocks_per_day}-s7.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    ensure_state(params, state)
    summary = saved_summary(params, state)
    assert summary is not None
    node = Anvil(load_state=state, startup_timeout_s=600).start()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-tip-")) / "data"
    out: dict[str, Any] = {"chain": f"{days} days x {blocks_per_day} blocks, {summary['logs']['total']} logs"}
    try:
        env = base_env(node.url, data_dir, shards)
        seconds, _ = cli(["sync", "--from", "2024-01-01", "--confirmations", "0"], {**env, "BACKFILL_ON_COMPLETE": "0"})
        out["initial_sync_s"] = round(seconds, 2)
        seconds, _ = cli(["rebuild"], env)
        out["first_rebuild_s"] = round(seconds, 2)
        next_day = dt.date(2024, 1, 1) + dt.timedelta(days=days)
        for i, (label, extra) in enumerate(
            [("sync_one_day_no_rebuild", {"BACKFILL_ON_COMPLETE": "0"}), ("sync_one_day_incremental_rebuild", {})]
        ):
            day = next_day + dt.timedelta(days=i)
            grown = grow(node.url, summary, day, days=1, blocks_per_day=blocks_per_day, seed=40 + i)
            before = checkpointed_rows(data_dir)
            seconds, result = cli(["sync", "--confirmations", "0"], {**env, **extra})
            rows = checkpointed_rows(data_dir) - before
            out[label] = {
                "wall_s": round(seconds, 2),
                "rows": rows,
                "rows_per_s": round(rows / seconds),
                "logs_mined": grown[0]["logs"],
                "line": result.stdout.strip(),
            }
        cli(["sql", "DELETE FROM backfill_meta WHERE startsWith(key, 'derived.')"], env)
        seconds, _ = cli(["rebuild"], env)
        out["rebuild_full_derived_s"] = round(seconds, 2)
        with (data_dir / "backfill" / "on-complete.log").open() as fh:
            out["derived_lines"] = [line.strip() for line in fh if "step=derived table=" in line][-6:]
    finally:
        subprocess.run([sys.executable, "-m", "backfill.cli.app", "db", "stop"], env=base_env(node.url, data_dir, 1))
        node.stop()
    return out


def bench_follow(blocks: int, poll_s: float, shards: int) -> dict[str, Any]:
    params = DevnetParams.with_defaults(dt.date(2024, 1, 1), 3, 500, 7)
    state = REPO / "data" / "bench" / "devnet-3x500-s7.json"
    ensure_state(params, state)
    summary = saved_summary(params, state)
    assert summary is not None
    node = Anvil(load_state=state).start()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-follow-")) / "data"
    env = base_env(node.url, data_dir, shards, BACKFILL_FOLLOW_POLL_S=str(poll_s), BACKFILL_ON_COMPLETE="0")
    try:
        cli(["follow", "--from", "2024-01-01", "--confirmations", "0"], env)
        store = Store.connect(load_settings({"data_dir": data_dir}), create=False)
        deadline = time.monotonic() + 300
        while json.loads((data_dir / "backfill" / "supervisor.json").read_text()).get("phase") != "following":
            if time.monotonic() > deadline:
                raise SystemExit("follow did not catch up")
            time.sleep(0.2)
        mined: dict[int, float] = {}
        seen: dict[int, float] = {}
        next_mine = time.monotonic()
        while len(mined) < blocks or len(seen) < len(mined):
            now = time.monotonic()
            if len(mined) < blocks and now >= next_mine:
                row = mine_block(node.url, summary, step_s=12, seed=len(mined))
                mined[row["first_block"]] = time.monotonic()
                next_mine += 1.0
            top = int(store.scalar("SELECT max(block_number) FROM erc20_transfers_staging FINAL") or 0)
            for b in mined:
                if b <= top and b not in seen:
                    seen[b] = time.monotonic()
            if now > deadline + 600:
                raise SystemExit(f"blocks not copied: {sorted(set(mined) - set(seen))[:5]}")
            time.sleep(0.05)
        store.close()
        latency = sorted(seen[b] - mined[b] for b in mined)
        return {
            "poll_s": poll_s,
            "blocks": blocks,
            "median_s": round(statistics.median(latency), 2),
            "p90_s": round(latency[int(0.9 * (len(latency) - 1))], 2),
            "worst_s": round(latency[-1], 2),
        }
    finally:
        subprocess.run([sys.executable, "-m", "backfill.cli.app", "stop"], env=env, capture_output=True)
        subprocess.run([sys.executable, "-m", "backfill.cli.app", "db", "stop"], env=env, capture_output=True)
        node.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--blocks-per-day", type=int, default=2000)
    ap.add_argument("--follow-blocks", type=int, default=60)
    ap.add_argument("--polls", default="2,0.5", help="poll intervals to measure follow at (seconds)")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--no-sync", action="store_true")
    args = ap.parse_args()
    result: dict[str, Any] = {"at": dt.datetime.now(dt.UTC).isoformat(), "cpus": os.cpu_count()}
    for poll in [float(p) for p in args.polls.split(",") if p]:
        result.setdefault("follow", []).append(bench_follow(args.follow_blocks, poll, args.shards))
        print(json.dumps(result["follow"][-1]), flush=True)
    if not args.no_sync:
        result["sync"] = bench_sync(args.days, args.blocks_per_day, args.shards)
        print(json.dumps(result["sync"], indent=1), flush=True)
    path = REPO / "data" / "bench" / "tip-last.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"written {path}")


if __name__ == "__main__":
    main()
