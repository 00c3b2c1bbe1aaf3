"""What a run has learnt about its endpoints, handed from one process to the next: the pace a provider allows,
the most calls it takes in a batch, the smallest eth_getLogs range it refused, and until when it is parked
because its quota is spent.

The planner (in `backfill start`), the workers and the rebuild's audit are separate processes; without this
each would learn a provider's limits again from its refusals. `<log_dir>/endpoints.json` holds, per endpoint
(keyed by a hash of its URL: keys in URLs are never written), the fleet-wide calls/s last seen and the caps,
with the time they were learnt; entries older than MAX_AGE_S are ignored (plans change). A process reads it when
its RPC client opens and merges what it learnt when it closes; the last writer wins, which is harmless: every
value is a starting point that the pace and the caps correct by themselves.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

MAX_AGE_S = 3600.0


def endpoint_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def read(path: Path | None) -> dict[str, dict[str, Any]]:
    """key -> {"rps", "batch_cap", "refused_blocks", "parked_until", "parked_reason", "at"} of the entries
    young enough to trust (parked_until: Unix time)."""
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    now = time.time()
    return {k: v for k, v in doc.items() if isinstance(v, dict) and now - float(v.get("at", 0)) < MAX_AGE_S}


def forget_parking(path: Path) -> None:
    """A new `backfill start` tries every endpoint again (the operator may have fixed a key or a plan): the
    processes of a run share that an endpoint is parked, the next run does not inherit it."""
    known = read(path)
    if any("parked_until" in v for v in known.values()):
        for values in known.values():
            values.pop("parked_until", None)
            values.pop("parked_reason", None)
        _replace(path, known)


def _replace(path: Path, doc: dict[str, Any]) -> None:
    from backfill.files.atomic import write_json_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, doc)
    except OSError:
        pass  # a starting point only: a read-only data directory loses nothing


def write(path: Path | None, learnt: dict[str, dict[str, Any]]) -> None:
    """Merge what one process learnt (key -> values, None values ignored) into the file, atomically."""
    learnt = {k: {f: v for f, v in values.items() if v is not None} for k, values in learnt.items()}
    learnt = {k: v for k, v in learnt.items() if v}
    if path is None or not learnt:
        return
    merged = read(path)
    for key, values in learnt.items():
        merged[key] = {**merged.get(key, {}), **values, "at": time.time()}
    _replace(path, merged)
