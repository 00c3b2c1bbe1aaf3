"""Status: store rows in, a plain summary dict out (rendered with rich, or printed as --json).

The arithmetic (`summarize`, `progress_rates`) is pure; `collect` gathers its inputs.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from backfill.settings import Settings
from backfill.store import Store

RATE_WINDOW_S = 300.0


def progress_rates(history: list[dict[str, Any]], starts: dict[int, int], since: float, now: float) -> dict[str, float]:
    """rows/s and blocks/s from per-day checkpoint history over [since, now].

    history rows: day_idx, rows_now, next_now, rows_then, next_then, had_before (see collect)."""
    rows = blocks = 0
    for h in history:
        start = starts.get(int(h["day_idx"]), 0)
        rows_then = int(h["rows_then"]) if h["had_before"] else 0
        blocks_then = max(0, int(h["next_then"]) - start) if h["had_before"] else 0
        rows += int(h["rows_now"]) - rows_then
        blocks += max(0, int(h["next_now"]) - start) - blocks_then
    elapsed = max(1e-9, now - since)
    return {"rows_per_s": round(rows / elapsed, 1), "blocks_per_s": round(blocks / elapsed, 2),
            "window_s": round(elapsed, 1)}


def summarize(plan: list[dict[str, Any]], checkpoints: dict[int, dict[str, Any]], heartbeats: list[dict[str, Any]],
              supervisor: dict[str, Any] | None, supervisor_alive: bool, rates: dict[str, float],
              table_rows: dict[str, dict[str, int]], now: float,
              endpoints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    remaining_blocks = 0
    for p in plan:
        cp = checkpoints.get(p["day_idx"])
        status = cp["status"] if cp else "PENDING"
        by_status[status] = by_status.get(status, 0) + 1
        if status != "COMPLETE":
            next_block = max(p["start_block"], int(cp["next_block"]) if cp else 0)
            remaining_blocks += max(0, p["end_block"] - next_block + 1)
    total = len(plan)
    done = by_status.get("COMPLETE", 0)
    bps = rates.get("blocks_per_s", 0.0)
    eta_s = round(remaining_blocks / bps) if bps > 0 and remaining_blocks else (0 if not remaining_blocks else None)
    sup_workers = {w["shard_id"]: w for w in (supervisor or {}).get("workers", [])}
    workers = []
    for h in sorted(heartbeats, key=lambda h: int(h["worker_id"])):
        k = int(h["worker_id"])
        sw = sup_workers.get(k, {})
        workers.append({
            "worker_id": k, "pid": int(h["pid"]), "day_idx": int(h["day_idx"]), "last_batch": h["last_batch"],
            "rows": int(h["rows"]), "heartbeat_age_s": round(now - h["updated_at"], 1),
            "restarts": sw.get("restarts", 0), "state": sw.get("state", "unknown") if supervisor_alive else "not supervised",
        })
    failed = [{"day_idx": k, "error": cp["error"], "failures": int(cp.get("failures", 0))}
              for k, cp in sorted(checkpoints.items()) if cp["status"] == "FAILED"]
    counted = lambda key: sum(int(cp[key]) for cp in checkpoints.values())  # noqa: E731
    return {
        "days_total": total, "days_complete": done, "days_running": by_status.get("RUNNING", 0),
        "days_failed": by_status.get("FAILED", 0), "days_pending": by_status.get("PENDING", 0),
        "percent": round(100.0 * done / total, 2) if total else 0.0,
        "remaining_blocks": remaining_blocks, "eta_s": eta_s, **rates,
        "checkpoint_rows": {"erc20": counted("erc20_count"), "erc1155": counted("erc1155_count"),
                            "quarantined": counted("quarantined_count"), "skipped_erc721": counted("skipped_count")},
        "rpc": {"requests": counted("requests"), "errors": counted("rpc_errors"),
                "compute_units": counted("compute_units"), "endpoints": endpoints or []},
        "table_rows": table_rows,
        "supervisor": {"alive": supervisor_alive, **{k: v for k, v in (supervisor or {}).items() if k != "workers"}},
        "workers": workers, "failed_days": failed,
    }


def collect(store: Store, settings: Settings | None = None, dedup: bool = True) -> dict[str, Any]:
    """Everything status shows. dedup=False skips the FINAL counts (a scan of the staging tables): the live
    dashboard refreshes every few seconds and must not slow the run it watches."""
    from monitor import control

    now = time.time()
    plan = [{"day_idx": p.day_idx, "start_block": p.start_block, "end_block": p.end_block} for p in store.read_plan()]
    checkpoints = store.checkpoints()
    heartbeats = list(store.client.query(
        "SELECT worker_id, pid, day_idx, last_batch, rows, updated_at FROM worker_heartbeats FINAL").named_results())
    for h in heartbeats:
        h["updated_at"] = h["updated_at"].replace(tzinfo=dt.timezone.utc).timestamp()
    supervisor = alive = None
    if settings is not None:
        alive = control.running_supervisor(settings.log_dir)
        supervisor = alive or control.read_json(control.state_path(settings.log_dir))
    since = now - RATE_WINDOW_S
    if supervisor and supervisor.get("started_at"):
        since = max(since, float(supervisor["started_at"]))
    since_dt = dt.datetime.fromtimestamp(since, dt.timezone.utc)
    history = list(store.client.query(
        "SELECT day_idx, argMax(erc20_count + erc1155_count, updated_at) AS rows_now, "
        "argMax(next_block, updated_at) AS next_now, "
        "argMaxIf(erc20_count + erc1155_count, updated_at, updated_at < %(since)s) AS rows_then, "
        "argMaxIf(next_block, updated_at, updated_at < %(since)s) AS next_then, "
        "countIf(updated_at < %(since)s) > 0 AS had_before "
        "FROM backfill_checkpoint GROUP BY day_idx HAVING max(updated_at) >= %(since)s",
        parameters={"since": since_dt}).named_results())
    rates = progress_rates(history, {p["day_idx"]: p["start_block"] for p in plan}, since, now)
    table_rows = {}
    for table in ("erc20_transfers_staging", "erc1155_transfers_staging", "transfer_quarantine"):
        table_rows[table] = {"rows": int(store.scalar(f"SELECT count() FROM {table}") or 0)}
        if dedup:
            table_rows[table]["rows_after_dedup"] = int(store.scalar(f"SELECT count() FROM {table} FINAL") or 0)
    # the pace is summed over the processes that are still reporting (a worker's row is at most a minute old)
    endpoints = [{"endpoint": r[0], "requests": int(r[1]), "errors": int(r[2]), "compute_units": int(r[3]),
                  "parked": bool(r[4]), "rps": round(float(r[5]), 1), "limit_answers": int(r[6]), "waits": int(r[7]),
                  "waited_s": round(float(r[8]), 1), "waiting_now": bool(r[9])} for r in store.query_rows(
        "SELECT endpoint, sum(requests), sum(errors), sum(compute_units), max(parked), "
        "sumIf(rps, updated_at > now() - 60), sum(limit_answers), sum(waits), sum(waited_s), "
        "maxIf(waits > 0 AND rps > 0, updated_at > now() - 60) FROM rpc_usage FINAL "
        "GROUP BY endpoint ORDER BY endpoint")]
    summary = summarize(plan, checkpoints, heartbeats, supervisor, bool(alive), rates, table_rows, now, endpoints)
    summary["quality"] = quality(store)
    return summary


def quality(store: Store) -> dict[str, Any]:
    """The latest gates run (level, failed gates with their days) and the latest audit run (days, mismatches)."""
    out: dict[str, Any] = {"gates": None, "audit": None}
    gates = store.query_rows(
        "SELECT run_at, level, gate, verdict, days FROM gate_results "
        "WHERE run_id = (SELECT argMax(run_id, run_at) FROM gate_results) ORDER BY gate")
    if gates:
        out["gates"] = {"run_at": str(gates[0][0]), "level": gates[0][1],
                        "failed": {g[2]: list(g[4]) for g in gates if g[3] == "fail"},
                        "warned": {g[2]: list(g[4]) for g in gates if g[3] == "warn"}}
    audit = store.query_rows(
        "SELECT any(run_at), count(), groupArrayIf(day_idx, verdict != 'ok') FROM audit_results "
        "WHERE run_id = (SELECT argMax(run_id, run_at) FROM audit_results) HAVING count() > 0")
    if audit:
        out["audit"] = {"run_at": str(audit[0][0]), "days": int(audit[0][1]), "not_ok": list(audit[0][2])}
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _endpoint_text(e: dict[str, Any]) -> str:
    """`host#0 120 req / 0 err, pace 9.5 calls/s, 4 limit answers, waiting for budget (31 waits, 12.0s)`."""
    text = f"{e['endpoint']} {e['requests']} req / {e['errors']} err"
    if e.get("rps"):
        text += f", pace {e['rps']:g} calls/s"
    if e.get("limit_answers"):
        text += f", {e['limit_answers']} limit answers"
    if e.get("waits"):
        text += (", waiting for budget" if e.get("waiting_now") else ", waited for budget") + \
            f" ({e['waits']} waits, {e['waited_s']:g}s)"
    return text + (" PARKED" if e["parked"] else "")


def render(summary: dict[str, Any]) -> Any:
    """A rich renderable for people (the CLI and the foreground dashboard)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    sup = summary["supervisor"]
    cp = summary["checkpoint_rows"]
    lines = [
        Text(f"days: {summary['days_complete']}/{summary['days_total']} complete ({summary['percent']}%), "
             f"{summary['days_running']} running, {summary['days_pending']} pending, {summary['days_failed']} failed"),
        Text(f"rate: {summary['rows_per_s']} rows/s, {summary['blocks_per_s']} blocks/s (last "
             f"{summary['window_s']:.0f}s); remaining {summary['remaining_blocks']} blocks; "
             f"ETA {_duration(summary['eta_s'])}"),
        Text(f"rows (checkpointed): erc20={cp['erc20']} erc1155={cp['erc1155']} quarantined={cp['quarantined']} "
             f"skipped_erc721={cp['skipped_erc721']}"),
        Text(f"rpc: {summary['rpc']['requests']} requests, {summary['rpc']['errors']} errors, "
             f"~{summary['rpc']['compute_units']} compute units; " + ", ".join(
                 _endpoint_text(e) for e in summary["rpc"]["endpoints"])),
        Text("dedup: " + ", ".join(f"{t} {v['rows']} rows" + (f", {v['rows_after_dedup']} after FINAL"
                                                             if "rows_after_dedup" in v else "")
                                   for t, v in summary["table_rows"].items())),
        Text(f"supervisor: {'running' if sup['alive'] else 'not running'}"
             + (f" pid {sup.get('pid')} phase {sup.get('phase')} shards {sup.get('wanted_shards')}" if sup.get("pid") else "")
             + (f" — {sup['message']}" if sup.get("message") else "")),
    ]
    q = summary.get("quality") or {}
    if q.get("gates"):
        g = q["gates"]
        bad = "; ".join(f"{k} days {v[:10]}" for k, v in g["failed"].items())
        warn = "; ".join(f"{k} days {v[:10]}" for k, v in g["warned"].items())
        lines.append(Text(f"gates ({g['level']}, {g['run_at'][:19]}): " + (f"FAIL {bad}" if bad else "pass")
                          + (f"; warn {warn}" if warn else ""), style="red" if bad else None))
    if q.get("audit"):
        a = q["audit"]
        lines.append(Text(f"audit ({a['run_at'][:19]}): {a['days']} days recounted, "
                          + (f"NOT OK: days {a['not_ok'][:10]}" if a["not_ok"] else "all match the chain"),
                          style="red" if a["not_ok"] else None))
    parts: list[Any] = list(lines)
    if summary["workers"]:
        table = Table("worker", "pid", "state", "day", "last batch", "rows", "heartbeat age", "restarts")
        for w in summary["workers"]:
            table.add_row(str(w["worker_id"]), str(w["pid"]), w["state"], str(w["day_idx"]), w["last_batch"],
                          str(w["rows"]), f"{w['heartbeat_age_s']}s", str(w["restarts"]))
        parts.append(table)
    for f in summary["failed_days"]:
        parts.append(Text(f"FAILED day {f['day_idx']} after {f['failures']} failures: {f['error']}", style="red"))
    return Group(*parts)
