"""Run N worker processes until every planned day is COMPLETE.

Spawned, not forked: `python -m workers.worker --shard k --shards n`, a fresh interpreter with
nothing inherited but its arguments and environment. A worker that crashes is restarted with
backoff within a budget; an exit code that says "halt" stops the fleet with its message.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from backfill.settings import Settings
from workers import exitcodes

log = logging.getLogger("monitor")


@dataclass
class Child:
    shard_id: int
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    done: bool = False
    history: list[int] = field(default_factory=list)


class FleetHalted(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def spawn_worker(settings: Settings, shard_id: int, shards: int) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env()}
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "workers.worker", "--shard", str(shard_id), "--shards", str(shards)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(settings.log_dir / f"worker-{shard_id}.stderr", "ab"))


def run_fleet(settings: Settings, *, restart_budget: int = 20, on_tick: Callable[[], None] | None = None,
              tick_s: float = 2.0) -> None:
    """Start settings.shards workers and wait until all have finished their days."""
    shards = settings.shards
    children = [Child(k) for k in range(shards)]
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        last_tick = 0.0
        while True:
            now = time.monotonic()
            for c in children:
                if c.done:
                    continue
                if c.proc is None:
                    if stopping or now < c.next_start:
                        continue
                    c.proc = spawn_worker(settings, c.shard_id, shards)
                    log.info("worker=%d pid=%d event=spawn shards=%d restarts=%d", c.shard_id, c.proc.pid, shards, c.restarts)
                    continue
                code = c.proc.poll()
                if code is None:
                    continue
                c.history.append(code)
                c.proc = None
                if code == exitcodes.OK:
                    c.done = True
                    log.info("worker=%d event=exit code=0 status=done", c.shard_id)
                elif code in exitcodes.HALT_FLEET:
                    raise FleetHalted(f"worker {c.shard_id} stopped the run (exit {code}); see "
                                      f"{settings.log_dir / f'worker-{c.shard_id}.log'}", code)
                else:
                    c.restarts += 1
                    if c.restarts > restart_budget:
                        raise FleetHalted(f"worker {c.shard_id} failed {c.restarts} times; see "
                                          f"{settings.log_dir / f'worker-{c.shard_id}.log'}", exitcodes.CRASH)
                    delay = min(60.0, 0.5 * 2 ** min(c.restarts, 7))
                    c.next_start = now + delay
                    log.warning("worker=%d event=exit code=%d action=restart in_s=%.1f restarts=%d", c.shard_id, code,
                                delay, c.restarts)
            if stopping:
                for c in children:
                    if c.proc and c.proc.poll() is None:
                        c.proc.send_signal(signal.SIGTERM)
                for c in children:
                    if c.proc:
                        c.proc.wait(timeout=60)
                raise FleetHalted("stopped by signal; progress is checkpointed, `backfill start` resumes", 130)
            if all(c.done for c in children):
                return
            if on_tick and now - last_tick >= tick_s:
                last_tick = now
                on_tick()
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for c in children:
            if c.proc and c.proc.poll() is None:
                c.proc.kill()
