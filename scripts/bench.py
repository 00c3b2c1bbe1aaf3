"""Benchmark: end-to-end `backfill start` throughput as a ratio of the node's raw eth_getLogs ceiling.

Both are measured in the same run on the same generated anvil chain:
- ceiling: the fastest simple client pulling the same logs (aiohttp + orjson, eth_getLogs over fixed
  ranges, several in flight, no decoding, no storage); the best of a grid of range sizes (sized for
  1,500-20,000 logs an answer at the chain's density) and 2/4/8 in flight, then that best point again;
- backfill: `SHARDS=N backfill start --foreground` from an empty embedded store to every day COMPLETE, wall
  clock of the whole command (planning, worker start-up, inserts, checkpoints included; the on-complete
  rebuild off), with the requests it made per 10,000 logs against the minimum (ceil(logs / 10,000-result
  cap) + one per window), and its timeline from the workers' logs: start-up (to the first worker fetching),
  the data phase (to the last worker done; its logs/s is the copy's pace once running) and the end; in the
  first run, `backfill rebuild` (dedup, audit, strict gates, derived tables) is then timed on its own;
- the same through the test suite's fault-injecting proxy, clean and at a 5 % fault rate;
- cryo (the PyPI package, Rust) collecting the same logs into memory, when installed (`pip install '.[bench]'`).

Each copy also reports the CPU seconds of the node, the store engine, the workers and the CLI/supervisor.
`--dense DAYSxBLOCKSxLOGS` uses a mainnet-shaped chain instead (scripts/densechain.py: e.g. 4x1000x250 is
4 days of 1,000 blocks carrying 250 transfer logs each, built once in ~25 s and cached under data/bench/).

    scripts/bench [--days 60] [--blocks-per-day 2000] [--dense 4x1000x250] [--shards 2] [--repeat 3]
                  [--no-proxy] [--no-cryo] [--no-rebuild] [--env BACKFILL_GETLOGS_ANSWER_LOGS=10000]
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
sys.path.insert(0, str(REPO / "scripts"))

from backfill.decode.events import LOG_FILTER_TOPICS  # noqa: E402
from backfill.devnet.node import Anvil, DevnetParams, start_devnet  # noqa: E402


async def pull_logs(url: str, first: int, last: int, chunk: int, concurrency: int) -> int:
    ranges = [(a, min(a + chunk - 1, last)) for a in range(first, last + 1, chunk)]
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(a: int, b: int) -> int:
            body = orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "eth_getLogs",
                    "params": [{"fromBlock": hex(a), "toBlock": hex(b), "topics": LOG_FILTER_TOPICS}],
                }
            )
            async with sem, session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                return len(orjson.loads(await resp.read())["result"])

        counts = await asyncio.gather(*(one(a, b) for a, b in ranges))
    return sum(counts)


def ceiling(url: str, first: int, last: int, logs_per_block: float, grid: list[tuple[int, int]] | None = None) -> dict:
    """The best of a grid of range sizes (sized by the chain's density, so a dense chain is not asked for 250k
    logs in one answer) and in-flight counts; `grid` narrows it to given (blocks, in-flight) pairs."""
    if grid is None:
        sizes = sorted({max(1, round(target / max(logs_per_block, 1e-9))) for target in (1_500, 3_000, 7_500, 20_000)})
        grid = [(chunk, conc) for chunk in sizes for conc in (2, 4, 8)]
    best = None
    for chunk, conc in grid:
        t0 = time.perf_counter()
        n = asyncio.run(pull_logs(url, first, last, chunk, conc))
        secs = time.perf_counter() - t0
        if best is None or n / secs > best["logs_per_s"]:
            best = {
                "logs": n,
                "seconds": round(secs, 3),
                "logs_per_s": round(n / secs),
                "chunk": chunk,
                "concurrency": conc,
            }
    return best


def run_cryo(url: str, first: int, last: int, chunk: int = 2000) -> dict | None:
    try:
        import cryo
    except ImportError:
        return None
    t0 = time.perf_counter()
    df = cryo.collect(
        "logs",
        blocks=[f"{first}:{last + 1}"],
        rpc=url,
        output_format="polars",
        inner_request_size=chunk,
        max_concurrent_requests=8,
        topic0=list(LOG_FILTER_TOPICS[0]),
    )
    secs = time.perf_counter() - t0
    return {"logs": len(df), "seconds": round(secs, 3), "logs_per_s": round(len(df) / secs)}


class CpuMeter:
    """CPU seconds spent during a run by the node, the store engine, the workers and the CLI/supervisor:
    processes are sampled every 0.1 s (psutil) and each one's last reading counts, minus its reading at start."""

    def __init__(self, node_pid: int | None, data_dir: Path):
        import threading

        self.node_pid, self.data_dir = node_pid, str(data_dir)
        self.seen: dict[int, tuple[str, float]] = {}
        self.base: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _kind(self, proc) -> str | None:
        if proc.pid == self.node_pid:
            return "node"
        cmd = " ".join(proc.cmdline())
        if self.data_dir not in cmd and proc.environ().get("BACKFILL_DATA_DIR") != self.data_dir:
            return None
        if "workers.worker" in cmd:
            return "workers"
        return "store engine" if "backfill.store.embedded" in cmd else "cli + supervisor"

    def _sample(self) -> dict[int, tuple[str, float]]:
        import psutil

        out = {}
        for proc in psutil.process_iter():
            try:
                kind = self._kind(proc)
                if kind:
                    t = proc.cpu_times()
                    out[proc.pid] = (kind, t.user + t.system)
            except psutil.Error:
                pass
        return out

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.seen.update(self._sample())
            time.sleep(0.1)

    def __enter__(self) -> "CpuMeter":
        self.base = {pid: cpu for pid, (_, cpu) in self._sample().items()}
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seen.update(self._sample())
        self.stop.set()
        self.thread.join()

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, (kind, cpu) in self.seen.items():
            out[kind] = out.get(kind, 0.0) + cpu - self.base.get(pid, 0.0)
        return {k: round(v, 2) for k, v in sorted(out.items())}


DATA_ROOT: Path | None = None  # where the copies' data directories are made (--data-root; None: the temp dir)


def run_backfill(
    url: str,
    first_day: str,
    last_day: str,
    shards: int,
    rebuild: bool = False,
    node_pid: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict:
    """The copy, timed alone (the rebuild off); with rebuild=True, then `backfill rebuild` timed on its own."""
    data_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=DATA_ROOT))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("BACKFILL_") and k not in ("SHARDS", "CLICKHOUSE_URL")
    }
    env.update(
        {
            "SHARDS": str(shards),
            "ETHEREUM_RPC_URLS": url,
            "BACKFILL_DATA_DIR": str(data_dir),
            "BACKFILL_ON_COMPLETE": "0",
            **(extra_env or {}),
        }
    )
    from backfill.store.embedded import ensure_server, stop_server

    ensure_server(data_dir)  # the store server's start-up is not the pipeline's speed
    try:
        with CpuMeter(node_pid, data_dir) as meter:
            launched = time.time()
            t0 = time.perf_counter()
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "backfill.cli.app",
                    "start",
                    "--foreground",
                    "--from",
                    first_day,
                    "--to",
                    last_day,
                    "--confirmations",
                    "0",
                ],
                env=env,
                capture_output=True,
                text=True,
                cwd=data_dir,
            )
            secs = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"backfill failed: {out.stderr}")
        rebuild_s = verify_s = None
        if rebuild:
            rebuild_s = _timed(env, data_dir, "rebuild")
            verify_s = _timed(env, data_dir, "verify", "--all")
        from backfill.settings import load_settings
        from backfill.store.client import Store

        store = Store.connect(load_settings({"data_dir": data_dir}, env={}))
        rows, requests, blocks = store.query_rows(
            "SELECT sum(erc20_count + erc1155_count), sum(requests), sum(greatest(end_block - start_block + 1, 0)) "
            "FROM backfill_checkpoint AS c FINAL JOIN (SELECT * FROM backfill_days FINAL) AS d USING day_idx"
        )[0]
        store.close()
        from backfill.settings import Settings
        from workers.worker import unit_blocks

        windows = -(-int(blocks) // unit_blocks(Settings().window_blocks))
        return {
            "seconds": round(secs, 3),
            "rows": int(rows),
            "rows_per_s": round(rows / secs),
            "requests": int(requests),
            "windows": windows,
            "rebuild_s": rebuild_s,
            "verify_all_s": verify_s,
            "cpu_s": meter.totals(),
            **phases(data_dir / "backfill", launched, launched + secs),
            **on_complete_phase(data_dir / "backfill"),
        }
    finally:
        stop_server(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def _timed(env: dict, data_dir: Path, *command: str) -> float:
    """Wall seconds of one `backfill <command>` on the copy's data directory; exits if it fails."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "backfill.cli.app", *command], env=env, capture_output=True, text=True, cwd=data_dir
    )
    if done.returncode != 0:
        raise SystemExit(f"backfill {' '.join(command)} failed: {done.stderr[-2000:]}")
    return round(time.perf_counter() - t0, 3)


def rate_limited_run(
    url: str,
    first_day: str,
    last_day: str,
    shards: int,
    rps: float,
    logs: int,
    extra_env: dict[str, str],
    days: list[dict] | None = None,
) -> dict:
    """Two endpoints behind a provider's per-second budget (a batch costs one unit per call), a 10,000-result cap
    (Infura's answer) and a 2,000-block range cap (QuickNode's), the rate unknown to the tool (it learns it from
    the 429s): wall time against the floor (calls made / the endpoints' budgets), the share of the budget used,
    limit answers, and eth_getLogs calls per 10k logs against the minimum under the caps: per day (days are
    fetched apart, by shard), max(⌈logs / 10,000⌉, ⌈blocks / 2,000⌉). Answers are sized as for a remote
    provider (10,000 logs)."""
    from tests.support.proxy import Fault, RpcProxy

    caps = [Fault("I1", rate=1.0, max_logs=10_000), Fault("Q1", rate=1.0, max_blocks=2_000)]
    env = {"BACKFILL_GETLOGS_ANSWER_LOGS": "10000", **extra_env}
    with (
        RpcProxy(url, caps, rate_limit_rps=rps) as a,
        RpcProxy(url, caps, rate_limit_rps=rps, rate_limit_kind="I4") as b,
    ):
        run = run_backfill(f"{a.url},{b.url}", first_day, last_day, shards, extra_env=env)
        proxies = (a, b)
        calls = sum(len(p.calls()) for p in proxies)
        served = sum(p.budget_calls() for p in proxies)
        limited = sum(p.limit_answers() for p in proxies)
        refused_caps = sum(p.fault_counts()["I1"] + p.fault_counts()["Q1"] for p in proxies)
        getlogs = sum(1 for p in proxies for c in p.calls("eth_getLogs") if c.fault is None)
        span = max(p.last_request_at() or 0 for p in proxies) - min(p.first_request_at() or 0 for p in proxies)
    floor_s = calls / (2 * rps)
    minimum = (
        sum(max(-(-d["logs"] // 10_000), -(-(d["last_block"] - d["first_block"] + 1) // 2_000), 1) for d in days)
        if days
        else -(-logs // 10_000)
    )
    out = {
        "rps_per_endpoint": rps,
        "seconds": run["seconds"],
        "calls": calls,
        "floor_s": round(floor_s, 1),
        "wall_over_floor": round(run["seconds"] / floor_s, 2),
        "budget_used": round(served / (2 * rps * span), 3),
        "limit_answers": limited,
        "limit_share": round(limited / calls, 3),
        "cap_refusals": refused_caps,
        "getlogs_per_10k_logs": round(getlogs * 1e4 / logs, 2),
        "minimum_per_10k_logs": round(minimum * 1e4 / logs, 2),
        "getlogs_over_minimum": round(getlogs / minimum, 2),
        "logs_per_s": round(logs / run["seconds"]),
    }
    print(
        f"rate_limited (2 endpoints x {rps:g} calls/s, 10,000-result and 2,000-block caps): {run['seconds']}s for {calls} calls "
        f"(floor {floor_s:.1f}s, x{out['wall_over_floor']}), budget used {out['budget_used']:.0%}, limit answers "
        f"{limited} ({out['limit_share']:.1%}), eth_getLogs {out['getlogs_per_10k_logs']}/10k logs (minimum "
        f"{out['minimum_per_10k_logs']}, x{out['getlogs_over_minimum']}), cap refusals {refused_caps}",
        flush=True,
    )
    return out


def stamp(line: str) -> float:
    """The Unix time of a log line (its leading UTC timestamp)."""
    return dt.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.timezone.utc).timestamp()


def phases(log_dir: Path, launched: float, ended: float) -> dict:
    """The copy's timeline from the workers' logs: start-up (command launched -> the first worker has its days
    and endpoints), the data phase (-> the last worker done) and the rest (-> the command exited)."""
    starts, dones = [], []
    for path in log_dir.glob("worker-*.log"):
        for line in path.read_text().splitlines():
            if " event=endpoints " in line:
                starts.append(stamp(line))
            elif " event=done " in line:
                dones.append(stamp(line))
    if not starts or not dones:
        return {}
    return {
        "startup_s": round(min(starts) - launched, 3),
        "data_s": round(max(dones) - min(starts), 3),
        "end_s": round(ended - max(dones), 3),
    }


def on_complete_phase(log_dir: Path) -> dict:
    """The on-complete rebuild of a copy run with it on (as users run `backfill start`), from on-complete.log:
    its wall time, from its start (every day COMPLETE) to its end. {} when it did not run."""
    path = log_dir / "on-complete.log"
    lines = path.read_text().splitlines() if path.exists() else []
    start = next((line for line in lines if " event=on_complete_start " in line), None)
    done = next((line for line in lines if " event=on_complete_done " in line), None)
    if start is None or done is None:
        return {}
    return {"on_complete_s": round(stamp(done) - stamp(start), 3)}


def _per_log(run: dict, logs: int) -> dict:
    """Throughput over the same logs as the ceiling, and requests per 10,000 logs against the minimum."""
    minimum = -(-logs // 10_000) + run["windows"]
    out = {
        "logs_per_s": round(logs / run["seconds"]),
        "requests_per_10k_logs": round(run["requests"] * 1e4 / logs, 1),
        "minimum_per_10k_logs": round(minimum * 1e4 / logs, 1),
    }
    if run.get("data_s"):
        out["data_logs_per_s"] = round(logs / run["data_s"])
    return out


def _summary(results: list[dict]) -> dict:
    """The figures the speed targets are stated in (docs/benchmarks.md), from one run on one node."""
    copies = [r["backfill"]["logs_per_s"] for r in results]
    first = results[0]["backfill"]
    best = max(copies)
    out: dict = {
        "ceiling_logs_per_s": max(r["ceiling"]["logs_per_s"] for r in results),
        "backfill_logs_per_s_rebuild_off": f"{min(copies)}-{best} (median {statistics.median(copies):.0f})",
        "copy_wall_s": first["seconds"],
    }
    paired = [r for r in results if r.get("cryo")]
    if paired:
        vs = [r["backfill"]["logs_per_s"] / r["cryo"]["logs_per_s"] for r in paired]
        out["cryo_logs_per_s"] = ", ".join(str(r["cryo"]["logs_per_s"]) for r in paired)
        out["backfill_vs_cryo"] = f"{statistics.median(vs):.2f}x median of runs ({', '.join(f'{v:.2f}' for v in vs)})"
    if first.get("rebuild_s") is not None:
        out["rebuild_wall_s"] = first["rebuild_s"]
        out["rebuild_vs_copy"] = f"{first['rebuild_s'] / first['seconds']:.2f}x"
    if results[0].get("with_rebuild", {}).get("on_complete_s") is not None:
        on_complete = results[0]["with_rebuild"]["on_complete_s"]
        out["on_complete_rebuild_s"] = on_complete
        out["on_complete_rebuild_vs_copy"] = f"{on_complete / first['seconds']:.2f}x"
    if first.get("verify_all_s"):
        out["verify_all_logs_per_s"] = round(results[0]["ceiling"]["logs"] / first["verify_all_s"])
    return out


def _store_filesystem(root: Path | None) -> str:
    """The filesystem the copies' stores are written to, as the store server names it."""
    from backfill.store.embedded.filesystem import filesystem_of

    where = root or Path(tempfile.gettempdir())
    fs = filesystem_of(where)
    return f"{where}: {fs.describe() if fs else 'unknown filesystem'}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--blocks-per-day", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-proxy", action="store_true")
    ap.add_argument("--no-cryo", action="store_true")
    ap.add_argument("--no-rebuild", action="store_true", help="do not time `backfill rebuild` after the first copy")
    ap.add_argument(
        "--rate-limit",
        type=float,
        default=25.0,
        metavar="CALLS_PER_S",
        help="the rate-limited run: two endpoints at this many calls/s each (0 = skip it)",
    )
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the timed copies, e.g. --env BACKFILL_GETLOGS_ANSWER_LOGS=10000",
    )
    ap.add_argument(
        "--dense",
        metavar="DAYSxBLOCKSxLOGS",
        help="a mainnet-shaped chain instead: e.g. 8x1000x250 = 8 days of 1,000 blocks of 250 logs",
    )
    ap.add_argument(
        "--data-root",
        type=Path,
        metavar="DIR",
        help="make the copies' data directories (the store) under DIR instead of the temp dir: the filesystem "
        "matters (docs/embedded-store.md, Where the data directory lives)",
    )
    args = ap.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    global DATA_ROOT
    DATA_ROOT = args.data_root
    store_fs = _store_filesystem(DATA_ROOT)
    print(f"store data directories on {store_fs}", flush=True)
    if args.dense:
        from densechain import ensure_dense

        d_days, d_blocks, d_logs = (int(x) for x in args.dense.lower().split("x"))
        print(f"dense chain {args.dense}: building or loading (cached under data/bench/)", flush=True)
        state, meta = ensure_dense(d_days, d_blocks, d_logs)
        t0 = time.perf_counter()
        node = Anvil(load_state=state, startup_timeout_s=600).start()
        print(f"node ready in {time.perf_counter() - t0:.0f}s", flush=True)
        first, last, first_day, last_day = meta["first_block"], meta["last_block"], meta["first_day"], meta["last_day"]
        chain_days, chain_logs = d_days, meta["logs"]
    else:
        params = DevnetParams.with_defaults(dt.date(2024, 1, 1), args.days, args.blocks_per_day, args.seed)
        state = REPO / "data" / "bench" / f"devnet-{args.days}x{args.blocks_per_day}-s{args.seed}.json"
        state.parent.mkdir(parents=True, exist_ok=True)
        node, summary, _ = start_devnet(params, state)
        first, last = summary["days"][0]["first_block"], summary["days"][-1]["last_block"]
        first_day, last_day = summary["days"][0]["date"], summary["days"][-1]["date"]
        chain_days, chain_logs = args.days, summary["logs"]["total"]
    try:
        results = []
        density = chain_logs / (last - first + 1)
        grid = None  # the whole grid in the first run, then its best point (and one more in flight)
        for i in range(args.repeat):
            ceil = ceiling(node.url, first, last, density, grid)
            grid = [(ceil["chunk"], ceil["concurrency"]), (ceil["chunk"], min(16, ceil["concurrency"] * 2))]
            e2e = run_backfill(
                node.url,
                first_day,
                last_day,
                args.shards,
                rebuild=i == 0 and not args.no_rebuild,
                node_pid=node.pid,
                extra_env=extra_env,
            )
            e2e.update(_per_log(e2e, ceil["logs"]))
            ratio = e2e["logs_per_s"] / ceil["logs_per_s"]
            results.append({"ceiling": ceil, "backfill": e2e, "ratio": round(ratio, 3)})
            if not args.no_cryo:  # in every run, beside the copy it is compared with (the machine's pace drifts)
                # ranges of the ceiling's best size (2,000 blocks would be 500k logs an answer on a dense chain)
                results[-1]["cryo"] = run_cryo(node.url, first, last, max(ceil["chunk"], 1))
            print(
                f"run {i + 1}: ceiling {ceil['logs_per_s']} logs/s (chunk {ceil['chunk']}, {ceil['concurrency']} in "
                f"flight) | backfill SHARDS={args.shards}: {e2e['logs_per_s']} logs/s, {e2e['rows_per_s']} rows/s, "
                f"{e2e['seconds']}s, {e2e['requests_per_10k_logs']} req/10k logs (minimum "
                f"{e2e['minimum_per_10k_logs']}) | ratio {ratio:.0%}"
                + (f" | rebuild {e2e['rebuild_s']}s" if e2e["rebuild_s"] is not None else "")
                + (
                    f" | verify --all {e2e['verify_all_s']}s ({round(ceil['logs'] / e2e['verify_all_s'])} logs/s)"
                    if e2e.get("verify_all_s")
                    else ""
                ),
                flush=True,
            )
            if i == 0 and not args.no_rebuild:  # as users run it: the on-complete rebuild inside `start`
                whole = run_backfill(
                    node.url,
                    first_day,
                    last_day,
                    args.shards,
                    node_pid=node.pid,
                    extra_env={**extra_env, "BACKFILL_ON_COMPLETE": "1"},
                )
                results[-1]["with_rebuild"] = whole
                print(
                    f"       with the on-complete rebuild (as `backfill start` runs it): {whole['seconds']}s in all, "
                    f"the rebuild {whole.get('on_complete_s')}s after the last day",
                    flush=True,
                )
            cores = os.cpu_count() or 1
            print(
                f"       cpu-s during the copy: {e2e['cpu_s']} ({cores} cores x {e2e['seconds']}s = "
                f"{cores * e2e['seconds']:.1f} available)",
                flush=True,
            )
            if e2e.get("data_s"):
                print(
                    f"       timeline: start-up {e2e['startup_s']}s (command to the first worker fetching), data "
                    f"{e2e['data_s']}s ({e2e['data_logs_per_s']} logs/s, "
                    f"{e2e['data_logs_per_s'] / ceil['logs_per_s']:.0%} of the ceiling), end {e2e['end_s']}s",
                    flush=True,
                )
        extra: dict = {}
        if not args.no_proxy:
            from tests.support.proxy import ALL_FAULTS_MIX, RpcProxy

            for name, faults in (
                ("proxy_clean", []),
                ("proxy_5pct_faults", ALL_FAULTS_MIX(0.05, retry_after_s=0.2, delay_s=1.0)),
            ):
                with RpcProxy(node.url, faults, seed=1) as proxy:
                    run = run_backfill(proxy.url, first_day, last_day, args.shards, extra_env=extra_env)
                    run.update(_per_log(run, results[0]["ceiling"]["logs"]))
                    run["faults_injected"] = sum(proxy.fault_counts().values())
                extra[name] = run
                print(
                    f"{name}: {run['logs_per_s']} logs/s, {run['seconds']}s, {run['requests_per_10k_logs']} req/10k "
                    f"logs (minimum {run['minimum_per_10k_logs']}), faults injected {run['faults_injected']}",
                    flush=True,
                )
        if args.rate_limit:
            extra["rate_limited"] = rate_limited_run(
                node.url,
                first_day,
                last_day,
                args.shards,
                args.rate_limit,
                results[0]["ceiling"]["logs"],
                extra_env,
                None if args.dense else summary["days"],
            )
        if not args.no_cryo:
            cryos = [r["cryo"] for r in results if r.get("cryo")]
            if cryos:
                extra["cryo"] = cryos[0]
                print(
                    "cryo (logs, into memory): "
                    + ", ".join(f"{c['logs_per_s']} logs/s ({c['seconds']}s)" for c in cryos)
                    + " | backfill/cryo per run: "
                    + ", ".join(
                        f"{r['backfill']['logs_per_s'] / r['cryo']['logs_per_s']:.2f}x"
                        for r in results
                        if r.get("cryo")
                    ),
                    flush=True,
                )
            else:
                print("cryo not installed (pip install '.[bench]'): skipped")
    finally:
        node.stop()
    median = statistics.median(r["ratio"] for r in results)
    extra["summary"] = _summary(results)
    for name, value in extra["summary"].items():
        print(f"  {name}: {value}")
    report = {
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "store_filesystem": store_fs,
        "chain": {
            "days": chain_days,
            "dense": args.dense,
            "blocks": last - first + 1,
            "logs": results[0]["ceiling"]["logs"],
        },
        "shards": args.shards,
        "settings": extra_env,
        "runs": results,
        "median_ratio": median,
        **extra,
    }
    out = REPO / "data" / "bench" / "last.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"median ratio backfill / ceiling: {median:.0%}  (details: {out.relative_to(REPO)})")


if __name__ == "__main__":
    main()
