"""Status arithmetic: store rows in, a plain summary dict out (rendered by the CLI, or as --json)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from backfill.store import Store


def summarize(days_total: int, checkpoints: dict[int, dict[str, Any]], heartbeats: list[dict[str, Any]],
              table_rows: dict[str, int], now: dt.datetime) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for cp in checkpoints.values():
        by_status[cp["status"]] = by_status.get(cp["status"], 0) + 1
    done = by_status.get("COMPLETE", 0)
    workers = [{
        "worker_id": int(h["worker_id"]), "pid": int(h["pid"]), "day_idx": int(h["day_idx"]),
        "last_batch": h["last_batch"], "rows": int(h["rows"]),
        "heartbeat_age_s": round((now - h["updated_at"]).total_seconds(), 1),
    } for h in sorted(heartbeats, key=lambda h: int(h["worker_id"]))]
    failed = [{"day_idx": k, "error": cp["error"]} for k, cp in sorted(checkpoints.items()) if cp["status"] == "FAILED"]
    return {
        "days_total": days_total,
        "days_complete": done,
        "days_running": by_status.get("RUNNING", 0),
        "days_failed": by_status.get("FAILED", 0),
        "percent": round(100.0 * done / days_total, 2) if days_total else 0.0,
        "checkpoint_rows": {
            "erc20": sum(int(cp["erc20_count"]) for cp in checkpoints.values()),
            "erc1155": sum(int(cp["erc1155_count"]) for cp in checkpoints.values()),
            "quarantined": sum(int(cp["quarantined_count"]) for cp in checkpoints.values()),
            "skipped_erc721": sum(int(cp["skipped_count"]) for cp in checkpoints.values()),
        },
        "table_rows": table_rows,
        "workers": workers,
        "failed_days": failed,
    }


def collect(store: Store) -> dict[str, Any]:
    days_total = int(store.scalar("SELECT count() FROM backfill_days FINAL") or 0)
    checkpoints = store.checkpoints()
    heartbeats = list(store.client.query(
        "SELECT worker_id, pid, day_idx, last_batch, rows, updated_at FROM worker_heartbeats FINAL").named_results())
    table_rows = {t: int(store.scalar(f"SELECT count() FROM {t}") or 0)
                  for t in ("erc20_transfers_staging", "erc1155_transfers_staging", "transfer_quarantine")}
    now = dt.datetime.now(dt.timezone.utc)
    for h in heartbeats:
        if h["updated_at"].tzinfo is None:
            h["updated_at"] = h["updated_at"].replace(tzinfo=dt.timezone.utc)
    return summarize(days_total, checkpoints, heartbeats, table_rows, now)
