"""Peak memory of a worker on one very dense day: `scripts/bench_rss [--logs 1000000]`.

Builds a fresh anvil chain whose day 2024-01-01 holds N ERC-20 transfers (Token20.spray, 1,000 logs per
transaction, one transaction per block), backfills that day with one worker, samples the worker's RSS
(psutil, every 50 ms), and checks the row count. Prints peak RSS, wall time and rows/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from densechain import MIDNIGHT, build  # noqa: E402
from densechain import START as DAY  # noqa: E402

from backfill.devnet.generate import DevRpc  # noqa: E402
from backfill.devnet.node import Anvil  # noqa: E402

PER_TX = 1_000  # logs per block: a dense day (mainnet carries a few hundred transfers per block)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", type=int, default=1_000_000)
    args = ap.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    with Anvil(genesis_timestamp=MIDNIGHT - 3600, extra_args=("--gas-limit", "30000000")) as node:
        t0 = time.monotonic()
        build(
            DevRpc(node.url),
            days=1,
            blocks_per_day=-(-args.logs // PER_TX),
            logs_per_block=PER_TX,
            erc1155_share=0,
            total_logs=args.logs,
        )
        print(f"chain: {args.logs} transfer logs in one day, built in {time.monotonic() - t0:.0f}s", flush=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BACKFILL_") and k not in ("SHARDS", "CLICKHOUSE_URL")
        }
        env.update(
            {
                "SHARDS": "1",
                "ETHEREUM_RPC_URLS": node.url,
                "BACKFILL_DATA_DIR": str(data_dir),
                "BACKFILL_ON_COMPLETE": "0",
            }
        )
        peak = {"rss": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for p in psutil.process_iter(["cmdline"]):
                    try:
                        if "workers.worker" in " ".join(p.info["cmdline"] or []) and p.environ().get(
                            "BACKFILL_DATA_DIR"
                        ) == str(data_dir):
                            rss = p.memory_info().rss
                            peak["rss"] = max(peak["rss"], rss)
                            peak.setdefault("trace", []).append((round(time.monotonic() - t0, 1), rss >> 20))
                    except psutil.Error:
                        pass
                time.sleep(0.05)

        t0 = time.monotonic()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "backfill.cli.app",
                "start",
                "--foreground",
                "--from",
                DAY.isoformat(),
                "--to",
                DAY.isoformat(),
                "--confirmations",
                "0",
            ],
            env=env,
            capture_output=True,
            text=True,
            cwd=data_dir,
        )
        secs = time.monotonic() - t0
        done.set()
        sampler.join()
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        from backfill.settings import load_settings
        from backfill.store.client import Store
        from backfill.store.embedded import stop_server

        store = Store.connect(load_settings({"data_dir": data_dir}, env={}))
        rows = store.scalar("SELECT count() FROM erc20_transfers_staging FINAL")
        store.close()
        stop_server(data_dir)
    if not os.environ.get("KEEP_BENCH_DIR"):
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        print("kept", data_dir)
    print(
        f"rows {rows} (expected {args.logs}) | wall {secs:.1f}s, {rows / secs:.0f} rows/s | "
        f"peak worker RSS {peak['rss'] / 2**20:.0f} MB"
    )
    trace = peak.get("trace", [])
    print("worker RSS over time (s, MB):", trace[:: max(1, len(trace) // 12)])
    if rows != args.logs:
        raise SystemExit("row count differs from the chain")


if __name__ == "__main__":
    main()
