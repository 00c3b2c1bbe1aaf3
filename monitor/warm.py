"""Workers started before they have a shard, so that their start-up overlaps the plan.

A foreground `start` spends ~0.7 s before its supervisor spawns anyone (the endpoint probe, the chain check, the
plan), and a worker spends ~0.4 s in its interpreter and imports before it asks for its first range. A warm worker
(`python -P -m workers.worker --warm`) is started when the command begins, does its imports while the command
plans, and then waits on its stdin for the one line that makes it a worker: its arguments, its environment and its
stderr file, exactly what a cold spawn would have given it (workers/worker.py `serve_warm`). The supervisor takes a
warm worker where it would spawn one and spawns cold when none is left or the one it took has died; the pool's
leftovers read the end of their stdin and exit when it closes. Nothing of the worker's own behaviour differs.
While it waits, a warm worker also opens its connection to a store that is up (workers/early_store.py), and
uses it when the hand-over names the same store.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import orjson

log = logging.getLogger("supervisor")

WORKER_COMMAND = (
    sys.executable,
    "-P",  # not the working directory first on sys.path: a `backfill/` folder there must not shadow us
    "-m",
    "workers.worker",
)


class WarmPool:
    """Up to n workers importing ahead of their shard; take() hands one its start, close() ends the rest."""

    def __init__(self, n: int, env: dict[str, str]) -> None:
        self.procs: list[subprocess.Popen] = []
        for _ in range(max(0, n)):
            try:
                proc = subprocess.Popen(
                    [*WORKER_COMMAND, "--warm"],
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            except OSError as exc:  # no process to spare: the supervisor spawns cold, as it always could
                log.warning("event=warm_worker_failed error=%r action=spawn_cold", str(exc))
                break
            self.procs.append(proc)

    def take(self, argv: list[str], env: dict[str, str], stderr_path: Path) -> subprocess.Popen | None:
        """A warm worker now running as `workers.worker <argv>` with env and stderr_path; None when none is left."""
        line = orjson.dumps({"argv": argv, "env": env, "stderr": str(stderr_path)}) + b"\n"
        while self.procs:
            proc = self.procs.pop(0)
            if proc.poll() is not None or proc.stdin is None:
                continue
            try:
                proc.stdin.write(line)
                proc.stdin.close()
            except OSError:  # it died between the poll and the write: not a worker, take the next
                proc.kill()
                proc.wait()
                continue
            return proc
        return None

    def close(self) -> None:
        """End the workers nobody took (they read the end of stdin and exit; killed if they do not, in 5 s)."""
        procs, self.procs = self.procs, []
        for proc in procs:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
