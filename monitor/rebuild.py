"""The on-complete rebuild: a pipeline of logged steps, stopped at the first failure, run exactly once
when every planned day is COMPLETE. This version: dedup (OPTIMIZE … FINAL per partition) -> duplicate
check -> coverage snapshot `data/post_rebuild_snapshot_<timestamp>.json`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import time
from pathlib import Path
from typing import Any, Callable

from backfill.settings import Settings
from backfill.store import Store

log = logging.getLogger("on_complete")

STAGING = {
    "erc20_transfers_staging": "tx_hash, log_index",
    "erc1155_transfers_staging": "tx_hash, log_index, batch_index",
}
DEDUP_TABLES = [*STAGING, "transfer_quarantine", "block_timestamps", "backfill_checkpoint"]


class RebuildFailed(Exception):
    pass


def _file_logger(settings: Settings) -> logging.Handler:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(settings.log_dir / "on-complete.log", maxBytes=10 << 20, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def fingerprint(store: Store) -> str:
    """What 'the run is complete' means now: days and their counts. A new plan or redo changes it."""
    row = store.query_rows("SELECT count(), max(day_idx), sum(erc20_count), sum(erc1155_count), "
                           "countIf(status = 'COMPLETE') FROM backfill_checkpoint FINAL")[0]
    return ":".join(str(v) for v in row)


def step_dedup(store: Store, report: dict[str, Any]) -> None:
    for table in DEDUP_TABLES:
        partitions = [r[0] for r in store.query_rows(
            "SELECT DISTINCT partition_id FROM system.parts WHERE database = currentDatabase() AND table = %(t)s "
            "AND active", {"t": table})]
        for pid in partitions:
            store.client.command(f"OPTIMIZE TABLE {table} PARTITION ID %(p)s FINAL", parameters={"p": pid})
        report.setdefault("dedup", {})[table] = {"partitions": len(partitions)}
        log.info("step=dedup table=%s partitions=%d", table, len(partitions))


def step_duplicates(store: Store, report: dict[str, Any]) -> None:
    dups = {}
    for table, key in STAGING.items():
        dups[table] = int(store.scalar(f"SELECT count() - uniqExact(tuple({key})) FROM {table} FINAL") or 0)
        raw = int(store.scalar(f"SELECT count() FROM {table}") or 0)
        final = int(store.scalar(f"SELECT count() FROM {table} FINAL") or 0)
        log.info("step=duplicates table=%s rows=%d rows_final=%d duplicates=%d", table, raw, final, dups[table])
        if raw != final:
            dups[table + "_unmerged"] = raw - final
    report["duplicates"] = dups
    bad = {t: n for t, n in dups.items() if n}
    if bad:
        raise RebuildFailed(f"duplicates after dedup: {bad}")


def step_snapshot(store: Store, settings: Settings, report: dict[str, Any]) -> Path:
    days = store.query_rows("SELECT day_idx, day, start_block, end_block, status, erc20_count, erc1155_count, "
                            "quarantined_count, skipped_count FROM backfill_progress ORDER BY day_idx")
    report["days"] = {
        "total": len(days), "complete": sum(1 for d in days if d[4] == "COMPLETE"),
        "first": str(days[0][1]) if days else None, "last": str(days[-1][1]) if days else None,
        "per_day": [{"day_idx": d[0], "day": str(d[1]), "blocks": [d[2], d[3]], "status": d[4], "erc20": d[5],
                     "erc1155": d[6], "quarantined": d[7], "skipped_erc721": d[8]} for d in days],
    }
    report["rows"] = {t: int(store.scalar(f"SELECT count() FROM {t} FINAL") or 0)
                      for t in [*STAGING, "transfer_quarantine", "block_timestamps"]}
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = settings.data_dir / f"post_rebuild_snapshot_{stamp}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    log.info("step=snapshot path=%s days=%d rows=%s", path, len(days), report["rows"])
    return path


def run_on_complete(store: Store, settings: Settings) -> dict[str, Any]:
    """Run the pipeline; each step logged with its duration; the first failure stops it."""
    report: dict[str, Any] = {"started_at": dt.datetime.now(dt.timezone.utc).isoformat(), "durations_s": {}}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("dedup", lambda: step_dedup(store, report)),
        ("duplicates", lambda: step_duplicates(store, report)),
        ("snapshot", lambda: step_snapshot(store, settings, report)),
    ]
    for name, fn in steps:
        t0 = time.monotonic()
        log.info("step=%s event=start", name)
        try:
            fn()
        except Exception as exc:
            log.error("step=%s event=failed error=%r action=stop_pipeline", name, str(exc)[:500])
            raise
        report["durations_s"][name] = round(time.monotonic() - t0, 3)
        log.info("step=%s event=done seconds=%.3f", name, report["durations_s"][name])
    return report


def run_on_complete_once(store: Store, settings: Settings) -> dict[str, Any] | None:
    """Exactly once per completed plan: skipped when this fingerprint was rebuilt already."""
    handler = _file_logger(settings)
    try:
        fp = fingerprint(store)
        if store.meta_get("on_complete_fingerprint") == fp:
            log.info("event=skip reason=already_rebuilt fingerprint=%s", fp)
            return None
        log.info("event=on_complete_start fingerprint=%s", fp)
        report = run_on_complete(store, settings)
        store.meta_set("on_complete_fingerprint", fp)
        log.info("event=on_complete_done")
        return report
    finally:
        log.removeHandler(handler)
        handler.close()
