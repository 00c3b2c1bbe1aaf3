"""The snapshot the metrics serve, read from the store and the supervisor in the supervisor's loop (I/O).

Everything here is what the fleet already records: checkpoints and the plan (days, rows, pace, ETA),
heartbeats (a worker's age and day), rpc_usage (per endpoint, errors by kind, limit waits), gate_results and
audit_results (the latest verdicts), backfill_meta (reorgs, the last rebuild). A worker is counted whatever
process or host wrote its rows; the HTTP thread only reads the dict this returns.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from typing import Any

from backfill.cli.status import day_counts, eta_and_rates, read_rates
from backfill.control import Phase
from backfill.store.client import Store

STATUSES = ("PENDING", "RUNNING", "OPEN", "COMPLETE", "FAILED")
PACED_PHASES = {Phase.RUNNING.value, Phase.RESCALING.value, Phase.FOLLOWING.value}


def gather(sup: Any) -> dict[str, Any]:
    """The snapshot, from the supervisor's store and its own state (called in its loop)."""
    store: Store = sup.store
    now = time.time()
    checkpoints = store.checkpoints()
    days = store.read_plan()
    plan: list[dict[str, Any]] = [
        {"day_idx": p.day_idx, "day": p.day, "start_block": p.start_block, "end_block": p.end_block} for p in days
    ]
    follow = sup.follower.view() if sup.follower is not None else {}
    phase = str(sup.phase.value if isinstance(sup.phase, Phase) else sup.phase)
    return {
        "at": now,
        "phase": phase,
        "days": day_statuses(plan, checkpoints),
        "rows": {
            "erc20": sum(int(c["erc20_count"]) for c in checkpoints.values()),
            "erc1155": sum(int(c["erc1155_count"]) for c in checkpoints.values()),
            "quarantined": sum(int(c["quarantined_count"]) for c in checkpoints.values()),
        },
        "copied_to": max((int(c["next_block"]) - 1 for c in checkpoints.values()), default=-1),
        "progress": progress(store, plan, checkpoints, sup.started, phase in PACED_PHASES, now),
        "workers": workers(sup, store, {p.day_idx: p.day for p in days}, now),
        "endpoints": endpoints(store),
        "head": follow.get("head"),
        "safe_head": follow.get("safe_head"),
        "final_head": follow.get("final_head"),
        "store_up": bool(store.outage.state()["reachable"]),
        "gates": {
            str(gate): str(verdict)
            for gate, verdict in store.query_rows(
                "SELECT gate, argMax(verdict, run_at) FROM gate_results GROUP BY gate ORDER BY gate"
            )
        },
        "audit": latest_audit(store),
        "rebuild": _meta_json(store, "last_rebuild"),
        "reorgs": int(store.meta_get("reorgs") or 0),
        "reorg_rows_removed": int(store.meta_get("reorg_rows_removed") or 0),
        "last_reorg": _meta_json(store, "last_reorg"),
    }


def day_statuses(plan: list[dict[str, Any]], checkpoints: dict[int, dict[str, Any]]) -> dict[str, int]:
    """Planned days by checkpoint status; a planned day without a checkpoint is PENDING."""
    statuses = Counter(
        str(checkpoints[p["day_idx"]]["status"]) if p["day_idx"] in checkpoints else "PENDING" for p in plan
    )
    return {s: int(statuses.get(s, 0)) for s in STATUSES}


def progress(
    store: Store,
    plan: list[dict[str, Any]],
    checkpoints: dict[int, dict[str, Any]],
    started: float,
    live: bool,
    now: float,
) -> dict[str, Any]:
    """Pace and ETA as status computes them (backfill/cli/status.py): only while workers copy."""
    _, remaining = day_counts(plan, checkpoints, live=True)
    rates = read_rates(store, started, plan, now) if live and remaining else {}
    eta_s, shown = eta_and_rates(live, rates, remaining)
    return {
        "remaining_blocks": remaining,
        "eta_s": eta_s,
        "rows_per_s": shown.get("rows_per_s") or 0.0,
        "blocks_per_s": shown.get("blocks_per_s") or 0.0,
    }


def workers(sup: Any, store: Store, dates: dict[int, dt.date], now: float) -> dict[int, dict[str, Any]]:
    """Each worker slot of this supervisor: running, restarts, and for a running one its heartbeat's age and
    the day it is on (as an index and as the day's midnight, UTC)."""
    beats = store.heartbeats(sup.host)
    out = {}
    for slot in sup.slots.values():
        beat = beats.get(slot.shard_id) if slot.proc is not None else None
        day = dates.get(int(beat.day_idx)) if beat is not None else None
        out[slot.shard_id] = {
            "running": slot.proc is not None,
            "restarts": slot.restarts,
            "heartbeat_age_s": now - beat.last_update() if beat is not None else None,
            "day_idx": int(beat.day_idx) if beat is not None else None,
            "day_ts": dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp() if day else None,
        }
    return out


def endpoints(store: Store) -> list[dict[str, Any]]:
    """Per endpoint (redacted label), summed over every process that used it."""
    kinds: dict[str, dict[str, int]] = {}
    for endpoint, kind, n in store.rpc_errors_by_kind():
        kinds.setdefault(str(endpoint), {})[str(kind)] = int(n)
    return [
        {
            "endpoint": r[0],
            "requests": r[1],
            "errors": r[2],
            "compute_units": r[3],
            "parked": r[4],
            "limited": r[6],
            "waits": r[7],
            "waited_s": r[8],
            "error_kinds": kinds.get(str(r[0]), {}),
        }
        for r in store.rpc_usage_by_endpoint()
    ]


def latest_audit(store: Store) -> dict[str, Any] | None:
    """The latest `backfill verify` run (by hand or the rebuild's): when, and its days by verdict."""
    rows = store.query_rows(
        "SELECT verdict, count(), max(run_at) FROM audit_results WHERE run_id = "
        "(SELECT argMax(run_id, run_at) FROM audit_results) GROUP BY verdict"
    )
    if not rows:
        return None
    at = max(r[2] for r in rows).replace(tzinfo=dt.timezone.utc).timestamp()
    return {"at": at, "days": {str(r[0]): int(r[1]) for r in rows}}


def _meta_json(store: Store, key: str) -> dict[str, Any] | None:
    text = store.meta_get(key)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
