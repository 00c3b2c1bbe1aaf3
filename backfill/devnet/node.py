"""A local anvil chain for the demo and the tests: process management and saved states.

`Anvil` runs the pinned binary from node_modules (npm ci); `build_state` fills a fresh chain with
`backfill.devnet.generate.generate` and saves it; `ensure_state` reuses a saved state when its parameters
match. A saved state reloads with full history (blocks, hashes, timestamps, receipts, logs).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from backfill.devnet.generate import DAY_S, MIN_BLOCKS_PER_DAY, DevnetError, DevRpc, generate
from backfill.files.atomic import write_bytes_atomic

__all__ = [
    "Anvil",
    "DevnetError",
    "DevnetParams",
    "build_state",
    "dump_state",
    "ensure_state",
    "generate",
    "start_devnet",
    "summary_line",
]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
ANVIL_BIN = REPO / "node_modules" / ".bin" / "anvil"
# Bump when the generator's output changes, so stale saved states are rebuilt.
GENERATOR_VERSION = 2  # 2: a closing block at the midnight after the last day


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """One anvil process on 127.0.0.1; `with Anvil(...) as node: node.url`.

    Defaults chosen for speed: `--hardfork cancun` (prague's per-block history-contract writes
    make every block slower as the chain grows) and `--prune-history` (no per-block state
    snapshots; blocks, receipts and logs are all kept, only eth_call at old blocks is lost).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        chain_id: int | None = None,
        genesis_timestamp: int | None = None,
        load_state: Path | str | None = None,
        hardfork: str | None = "cancun",
        prune_history: bool = True,
        log_path: Path | str | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.port, self.chain_id, self.genesis_timestamp = port, chain_id, genesis_timestamp
        self.load_state = Path(load_state) if load_state is not None else None
        self.hardfork, self.prune_history, self.extra_args = hardfork, prune_history, extra_args
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._own_log = False

    @property
    def url(self) -> str:
        if self._proc is None or self.port is None:
            raise DevnetError("anvil is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _args(self, port: int) -> list[str]:
        args = [str(ANVIL_BIN), "--host", "127.0.0.1", "--port", str(port), "--silent"]
        if self.hardfork:
            args += ["--hardfork", self.hardfork]
        if self.prune_history:
            args.append("--prune-history")
        if self.chain_id is not None:
            args += ["--chain-id", str(self.chain_id)]
        if self.genesis_timestamp is not None:
            args += ["--timestamp", str(self.genesis_timestamp)]
        if self.load_state is not None:
            if not self.load_state.is_file():
                raise DevnetError(f"state file not found: {self.load_state}")
            args += ["--load-state", str(self.load_state)]
        return args + list(self.extra_args)

    def start(self) -> Self:
        if not ANVIL_BIN.exists():
            raise DevnetError(f"anvil not found at {ANVIL_BIN}; run `npm ci` in {REPO}")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="anvil-", suffix=".log")
            os.close(fd)
            self.log_path, self._own_log = Path(name), True
        fixed_port = self.port
        for attempt in range(1, 4):  # a free port can be taken between probing and binding
            port = fixed_port or _free_port()
            with open(self.log_path, "ab") as out:
                self._proc = subprocess.Popen(
                    self._args(port), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            self.port = port
            try:
                self._wait_ready()
                log.info("anvil started url=%s pid=%s log=%s", self.url, self._proc.pid, self.log_path)
                return self
            except DevnetError:
                self.stop(keep_log=True)
                if fixed_port or attempt == 3:
                    raise
                log.warning("anvil failed to start on port=%s attempt=%s, retrying", port, attempt)
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        assert self._proc is not None
        rpc = DevRpc(f"http://127.0.0.1:{self.port}", timeout_s=5.0)
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise DevnetError(f"anvil exited with code {self._proc.returncode}: {self._log_tail()}")
                try:
                    rpc.call("eth_chainId")
                    return
                except (OSError, DevnetError):
                    time.sleep(0.05)
        finally:
            rpc.close()
        raise DevnetError(f"anvil did not answer within {self.startup_timeout_s}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:].strip() if self.log_path else ""
        except OSError:
            return ""

    def poll(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return self._proc.poll() if self._proc is not None else None

    def stop(self, keep_log: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("anvil pid=%s ignored SIGTERM, killing", proc.pid)
                proc.kill()
                proc.wait()
        if self._own_log and not keep_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dump_state(rpc_url: str, path: Path | str) -> Path:
    """Save the chain (all blocks, receipts, logs and the latest state) as JSON for --load-state."""
    path = Path(path)
    rpc = DevRpc(rpc_url)
    try:
        blob = bytes.fromhex(rpc.call("anvil_dumpState").removeprefix("0x"))
    finally:
        rpc.close()
    data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob  # anvil gzips the RPC answer
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    return path


@dataclass(frozen=True)
class DevnetParams:
    """What a generated chain depends on; a saved state is reused only for equal params."""

    start_date: dt.date = dt.date(2024, 1, 1)
    days: int = 10
    blocks_per_day: int = 2000
    seed: int = 7
    heavy_day: int | None = None
    empty_days: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def with_defaults(cls, start_date: dt.date, days: int, blocks_per_day: int, seed: int) -> DevnetParams:
        """The standard layout: a heavy day in the middle, two empty days (for 10 days: 5; 2 and 8)."""
        heavy = days // 2 if days >= 2 else None
        empty = frozenset(d for d in (2, days - 2) if 0 < d < days - 1 and d != heavy)
        return cls(start_date, days, blocks_per_day, seed, heavy, empty)

    def validate(self) -> None:
        """Raise ValueError for a layout the generator cannot build."""
        if self.days < 1 or not MIN_BLOCKS_PER_DAY <= self.blocks_per_day <= DAY_S:
            raise ValueError(f"need days >= 1 and {MIN_BLOCKS_PER_DAY} <= blocks_per_day <= {DAY_S}")
        heavy = self.heavy_day
        if heavy is not None and (not 0 <= heavy < self.days or heavy in self.empty_days):
            raise ValueError(f"heavy_day {self.heavy_day} must be a non-empty day in 0..{self.days - 1}")
        if any(not 0 <= d < self.days for d in self.empty_days):
            raise ValueError(f"empty_days {sorted(self.empty_days)} must lie in 0..{self.days - 1}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return d | {
            "start_date": self.start_date.isoformat(),
            "empty_days": sorted(self.empty_days),
            "generator_version": GENERATOR_VERSION,
        }

    @property
    def genesis_timestamp(self) -> int:
        """One hour before the first simulated day starts (contracts are deployed in between)."""
        midnight = dt.datetime(self.start_date.year, self.start_date.month, self.start_date.day, tzinfo=dt.UTC)
        return int(midnight.timestamp()) - 3600


def meta_path(state_path: Path) -> Path:
    """The sidecar JSON ({"params", "summary"}) saved next to a state file."""
    return state_path.with_name(state_path.stem + ".meta.json")


def saved_summary(params: DevnetParams, state_path: Path) -> dict[str, Any] | None:
    """The saved chain's summary if `state_path` holds a chain generated with `params`, else None."""
    meta = meta_path(state_path)
    if not (state_path.is_file() and meta.is_file()):
        return None
    saved = json.loads(meta.read_text())
    return saved["summary"] if saved.get("params") == params.to_json() else None


def build_state(params: DevnetParams, node: Anvil, state_path: Path) -> dict[str, Any]:
    """Generate the chain on a fresh `node` (started with params.genesis_timestamp) and save it."""
    t0 = time.monotonic()
    summary = generate(
        node.url,
        start_date=params.start_date,
        days=params.days,
        blocks_per_day=params.blocks_per_day,
        seed=params.seed,
        heavy_day=params.heavy_day,
        empty_days=set(params.empty_days),
    )
    t1 = time.monotonic()
    dump_state(node.url, state_path)
    summary["timings_s"] = {"generate": round(t1 - t0, 2), "dump": round(time.monotonic() - t1, 2)}
    meta_path(state_path).write_text(json.dumps({"params": params.to_json(), "summary": summary}, indent=1))
    log.info(
        "devnet state saved path=%s blocks=%s logs=%s generate_s=%.1f",
        state_path,
        summary["head_block"],
        summary["logs"]["total"],
        t1 - t0,
    )
    return summary


def ensure_state(params: DevnetParams, state_path: Path) -> dict[str, Any]:
    """Reuse the saved state when it matches `params`, else generate and save it (anvil stopped after)."""
    summary = saved_summary(params, state_path)
    if summary is not None:
        return summary
    with Anvil(genesis_timestamp=params.genesis_timestamp) as node:
        return build_state(params, node, state_path)


def start_devnet(params: DevnetParams, state_path: Path, port: int | None = None) -> tuple[Anvil, dict[str, Any], bool]:
    """A running anvil serving the chain for `params`: the saved state when it matches (loaded=True),
    else a freshly generated chain, saved to `state_path` on the way. The caller stops the node."""
    summary = saved_summary(params, state_path)
    if summary is not None:
        return Anvil(port=port, load_state=state_path).start(), summary, True
    node = Anvil(port=port, genesis_timestamp=params.genesis_timestamp).start()
    try:
        return node, build_state(params, node, state_path), False
    except BaseException:
        node.stop(keep_log=True)
        raise


def summary_line(summary: dict[str, Any]) -> str:
    """One line for people: chain, blocks, days and log counts."""
    days = summary["days"]
    kinds = {k: [d["day_idx"] for d in days if d["kind"] == k] for k in ("heavy", "empty")}
    logs = summary["logs"]
    return (
        f"chain_id={summary['chain_id']} head={summary['head_block']} days={len(days)} "
        f"({days[0]['date']}..{days[-1]['date']}) heavy={kinds['heavy']} empty={kinds['empty']} "
        f"logs={logs['total']} (erc20={logs['erc20_transfer']} single={logs['erc1155_single']} "
        f"batch={logs['erc1155_batch']} weird={logs['weird']})"
    )
