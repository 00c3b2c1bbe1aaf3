"""Status: store rows in, a plain summary dict out (rendered with rich, or printed as --json).

Status never shows a running day, worker, rate or ETA without a live process behind it. The arithmetic
(`run_summary`, `summarize`, `progress_rates`, `last_error`, `shown_day_status`) is pure: liveness (is the
supervisor alive, which worker pids are live processes) comes in as data. `collect` gathers the inputs;
`StatusReader` answers from supervisor.json alone while the store cannot be reached. Rendering the summary
for people is `backfill.cli.status_render`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from backfill.control import ENDED_PHASES, FLEET_SHARDS, SETTLED_STATUSES
from backfill.dates import date_of
from backfill.errors import StoreUnavailable
from backfill.redact import redact_text, scrub
from backfill.settings import Settings, secret_bearing_values
from backfill.store.client import Store
from backfill.store.embedded.filesystem import filesystem_of
from backfill.store.embedded.store_dir import store_dir
from backfill.store.leases import SHARD_LEASES, live_claims
from backfill.store.records import host_name

RATE_WINDOW_S = 300.0
RATE_KEYS = ("rows_per_s", "blocks_per_s", "window_s")
PRODUCTION_TABLES = ("erc20_transfers", "erc1155_transfers")
RESUME = {
    "dead": "backfill start",
    "stopped": "backfill start",
    "halted": "backfill start",
    "finished_with_failures": "backfill retry-failed, then backfill start",
    "rebuild_failed": "backfill rebuild",
    "caught_up": "backfill sync (completes the OPEN days once final)",
    "shards_done": "nothing here: the host that finishes the last shard runs the rebuild",
}
CHECKPOINT_ROWS = {  # summary key -> checkpoint column
    "erc20": "erc20_count",
    "erc1155": "erc1155_count",
    "quarantined": "quarantined_count",
    "skipped_erc721": "skipped_count",
}
DONE_STATES = ("complete", "caught_up")  # runs that did their job: promotion is asked about
STATUS_PATIENCE_S = 5.0  # how long one status read rides out a store outage
COLLECT_THREADS = 6  # status reads made side by side (collect)
LAST_ERROR_CHARS = 300
MONITOR_TAIL_BYTES = 256 * 1024
INTERRUPTED_HINT = (
    "INTERRUPTED: the day was being fetched when the run ended (no run is active); "
    "`backfill start` resumes it from its checkpoint"
)


# -- the run: the supervisor's last word and whether it is alive (pure) ----------------------------------------


def run_state(supervisor: dict[str, Any] | None, alive: bool) -> str:
    """running, complete, stopped, finished_with_failures, rebuild_failed, halted, dead, or none (no run yet).

    dead: supervisor.json names an active phase but its process is gone (killed with -9, or crashed)."""
    phase = (supervisor or {}).get("phase")
    if phase in ENDED_PHASES:  # also while a live supervisor writes its last state on the way out
        return str(phase)
    if alive:
        return "running"
    return "dead" if supervisor else "none"


def shown_day_status(status: str, run_live: bool) -> str:
    """A checkpoint status as people should read it: RUNNING with no live run is INTERRUPTED (start resumes it)."""
    return "INTERRUPTED" if status == "RUNNING" and not run_live else status


_DAY_STATUS_RE = re.compile(r"((?:\bday \d+(?: \([^)]*\))?|\b\d{4}-\d{2}-\d{2}) )(RUNNING)\b")


def show_day_statuses(text: str, run_live: bool) -> str:
    """`2024-01-04 RUNNING` (or `day 3 RUNNING`) in a report line, read through `shown_day_status`."""
    return _DAY_STATUS_RE.sub(lambda m: m[1] + shown_day_status(m[2], run_live), text)


def run_summary(
    supervisor: dict[str, Any] | None, alive: bool, *, promoted: bool | None = None, last_error: str | None = None
) -> dict[str, Any]:
    """summary["run"]: state, since (epoch: started_at while running, else ended_at / updated_at), last_error,
    resume (the command that carries on), promoted and hint (complete runs), workers (live worker processes)."""
    sup = supervisor or {}
    state = run_state(supervisor, alive)
    since = sup.get("started_at") if state == "running" else (sup.get("ended_at") or sup.get("updated_at"))
    complete = state in DONE_STATES
    return {
        "state": state,
        "since": float(since) if since else None,
        "last_error": last_error,
        "resume": "backfill follow"
        if sup.get("follow") and RESUME.get(state) == "backfill start"
        else RESUME.get(state),
        "promoted": promoted if complete else None,
        "hint": "backfill promote" if complete and promoted is False else None,
        "workers": sum(1 for w in sup.get("workers", []) if w.get("pid")) if state == "running" else 0,
    }


def store_view(
    reachable: bool, error: str | None, supervisor: dict[str, Any] | None, alive: bool, now: float
) -> dict[str, Any]:
    """summary["store"]: whether status reached the store, and (run_view) what the live supervisor reports of it."""
    seen = (supervisor or {}).get("store") if alive else None
    run_view = None
    if isinstance(seen, dict):
        down = seen.get("down_since")
        run_view = {
            "reachable": bool(seen.get("reachable", True)),
            "down_since": down,
            "down_for_s": round(now - float(down)) if down else None,
            "error": seen.get("error") or None,
        }
    return {"reachable": reachable, "error": None if reachable else error, "run_view": run_view}


def current_workers(
    heartbeats: list[dict[str, Any]],
    supervisor: dict[str, Any] | None,
    alive: bool,
    live_pids: Iterable[int],
    host: str | None,
    now: float,
) -> list[dict[str, Any]]:
    """The heartbeat rows of worker processes that exist. With a live supervisor: rows of its current slots whose
    pid is the slot's (or the slot has none yet), so rows of an earlier fleet drop out. Without one: rows whose
    pid is still a live worker process (`live_pids`, judged on this host only)."""
    slots = {int(w["shard_id"]): w for w in (supervisor or {}).get("workers", [])} if alive else {}
    live = set(live_pids)
    out = []
    for h in sorted(heartbeats, key=lambda h: int(h["worker_id"])):
        k, pid = int(h["worker_id"]), int(h["pid"])
        if host is not None and h.get("host", host) != host:
            continue
        slot = slots.get(k)
        if alive and not (slot is not None and slot.get("pid") in (None, pid)):
            continue
        if not alive and pid not in live:
            continue
        out.append(
            {
                "worker_id": k,
                "pid": pid,
                "day_idx": int(h["day_idx"]),
                "last_batch": h["last_batch"],
                "rows": int(h["rows"]),
                "heartbeat_age_s": round(now - h["updated_at"], 1),
                "restarts": (slot or {}).get("restarts", 0),
                "state": (slot or {}).get("state", "unknown") if alive else "not supervised",
            }
        )
    return out


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
    return {
        "rows_per_s": round(rows / elapsed, 1),
        "blocks_per_s": round(blocks / elapsed, 2),
        "window_s": round(elapsed, 1),
    }


def summarize(
    plan: list[dict[str, Any]],
    checkpoints: dict[int, dict[str, Any]],
    heartbeats: list[dict[str, Any]],
    supervisor: dict[str, Any] | None,
    supervisor_alive: bool,
    rates: dict[str, float],
    table_rows: dict[str, dict[str, int]],
    now: float,
    endpoints: list[dict[str, Any]] | None = None,
    *,
    live_worker_pids: Iterable[int] = (),
    host: str | None = None,
    promoted: bool | None = None,
    last_error: str | None = None,
) -> dict[str, Any]:
    """The whole status. When the run is not running: no ETA, rates None, RUNNING days counted as interrupted,
    and only workers whose pid is in live_worker_pids."""
    run = run_summary(supervisor, supervisor_alive, promoted=promoted, last_error=last_error)
    live = run["state"] == "running"
    by_status, remaining_blocks = day_counts(plan, checkpoints, live)
    total = len(plan)
    done = by_status.get("COMPLETE", 0)
    eta_s, shown_rates = eta_and_rates(live, rates, remaining_blocks)
    dates = {p["day_idx"]: p["day"] for p in plan if p.get("day")}
    workers = current_workers(heartbeats, supervisor, supervisor_alive, live_worker_pids, host, now)
    for w in workers:
        w["day"] = date_of(dates, w["day_idx"])
    counted = lambda key: sum(int(cp[key]) for cp in checkpoints.values())  # noqa: E731
    return {
        "run": run,
        "days_total": total,
        "days_complete": done,
        "days_running": by_status.get("RUNNING", 0),
        "days_interrupted": by_status.get("INTERRUPTED", 0),
        "days_failed": by_status.get("FAILED", 0),
        "days_open": by_status.get("OPEN", 0),
        "open_days": [dates.get(d, str(d)) for d in sorted(open_day_idx(checkpoints))],
        "days_pending": by_status.get("PENDING", 0),
        "percent": round(100.0 * done / total, 2) if total else 0.0,
        "remaining_blocks": remaining_blocks,
        "eta_s": eta_s,
        **shown_rates,
        "checkpoint_rows": {key: counted(column) for key, column in CHECKPOINT_ROWS.items()},
        "rpc": {
            "requests": counted("requests"),
            "errors": counted("rpc_errors"),
            "compute_units": counted("compute_units"),
            "endpoints": endpoints or [],
        },
        "table_rows": table_rows,
        "supervisor": _supervisor_part(supervisor, supervisor_alive),
        "store": store_view(True, None, supervisor, supervisor_alive, now),
        "workers": workers,
        "failed_days": failed_days(checkpoints, dates),
    }


def open_day_idx(checkpoints: dict[int, dict[str, Any]]) -> list[int]:
    """Days copied to the safe head whose end is not final on chain yet."""
    return [d for d, cp in checkpoints.items() if cp["status"] == "OPEN"]


def day_counts(
    plan: list[dict[str, Any]], checkpoints: dict[int, dict[str, Any]], live: bool
) -> tuple[dict[str, int], int]:
    """(days per shown status, blocks not yet fetched of the days that are not COMPLETE). A day without a
    checkpoint is PENDING; RUNNING without a live run is INTERRUPTED (`shown_day_status`)."""
    by_status: dict[str, int] = {}
    remaining_blocks = 0
    for p in plan:
        cp = checkpoints.get(p["day_idx"])
        status = shown_day_status(cp["status"] if cp else "PENDING", live)
        by_status[status] = by_status.get(status, 0) + 1
        if status not in ("COMPLETE", "OPEN"):
            next_block = max(p["start_block"], int(cp["next_block"]) if cp else 0)
            remaining_blocks += max(0, p["end_block"] - next_block + 1)
    return by_status, remaining_blocks


def eta_and_rates(
    live: bool, rates: dict[str, float], remaining_blocks: int
) -> tuple[int | None, dict[str, float | None]]:
    """(ETA in seconds, the RATE_KEYS): only a live run has them; nothing left is ETA 0, no pace is ETA None."""
    if not live:
        return None, dict.fromkeys(RATE_KEYS)
    bps = rates.get("blocks_per_s", 0.0)
    eta_s = round(remaining_blocks / bps) if bps > 0 and remaining_blocks else (0 if not remaining_blocks else None)
    return eta_s, {k: rates.get(k) for k in RATE_KEYS}


def failed_days(checkpoints: dict[int, dict[str, Any]], dates: dict[int, str]) -> list[dict[str, Any]]:
    """The FAILED checkpoints in day order, each with its date, error and failure count."""
    return [
        {"day_idx": k, "day": date_of(dates, k), "error": cp["error"], "failures": int(cp.get("failures", 0))}
        for k, cp in sorted(checkpoints.items())
        if cp["status"] == "FAILED"
    ]


def summarize_offline(
    supervisor: dict[str, Any] | None,
    supervisor_alive: bool,
    store_error: str,
    now: float,
    last_error: str | None = None,
) -> dict[str, Any]:
    """What can be known while the store cannot be reached: the run (supervisor.json and liveness), the store's
    state; no day counts, rates or workers (those live in the store)."""
    return {
        "run": run_summary(supervisor, supervisor_alive, last_error=last_error),
        "supervisor": _supervisor_part(supervisor, supervisor_alive),
        "store": store_view(False, store_error, supervisor, supervisor_alive, now),
        "workers": [],
    }


def _supervisor_part(supervisor: dict[str, Any] | None, alive: bool) -> dict[str, Any]:
    return {"alive": alive, **{k: v for k, v in (supervisor or {}).items() if k != "workers"}}


# -- monitor.log: the last error (pure, plus one reader) --------------------------------------------------------


def _log_time(line: str) -> float | None:
    """Epoch of a log line's leading `2026-12-01T22:10:04.123Z`; None for continuation lines (tracebacks)."""
    try:
        return dt.datetime.strptime(line[:24], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def _text_line(line: str) -> tuple[str, str]:
    """A JSON log line (log_format = json) as the text line it stands for, and the last line of its traceback."""
    if not line.startswith("{"):
        return line, ""
    try:
        doc = orjson.loads(line)
        text = f"{doc['ts']} {doc['level']} {doc['msg']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return line, ""
    exc = str(doc.get("exc") or "").strip().splitlines()
    return text, exc[-1].strip() if exc else ""


def last_error(lines: Iterable[str], since: float | None = None, secrets: Sequence[str] = ()) -> str | None:
    """The last ERROR line (or `event=supervisor_crash` line, with the exception its traceback ends with) logged
    at or after `since`: redacted, one line, at most LAST_ERROR_CHARS characters."""
    found: str | None = None
    exception = ""
    in_crash = False
    for raw in lines:
        line, crash_exception = _text_line(raw.rstrip("\r\n"))
        at = _log_time(line)
        if at is None:
            # a traceback: its last unindented line names the exception ("RuntimeError: boom")
            if in_crash and line.strip() and not line[0].isspace() and not line.startswith("Traceback"):
                exception = line.strip()
            continue
        in_crash = False
        if since is not None and at < since:
            continue
        level = line.split(" ", 2)[1] if line.count(" ") >= 1 else ""
        if level == "ERROR" or "event=supervisor_crash" in line:
            found, exception, in_crash = line, crash_exception, "event=supervisor_crash" in line
    if found is None:
        return None
    text = " ".join(redact_text(found + (f": {exception}" if exception else ""), secrets).split())
    return text if len(text) <= LAST_ERROR_CHARS else text[: LAST_ERROR_CHARS - 1] + "…"


def read_last_error(path: Path, since: float | None = None, secrets: Sequence[str] = ()) -> str | None:
    """`last_error` over the tail of a log file (None when there is no file)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - MONITOR_TAIL_BYTES))
            data = f.read()
    except FileNotFoundError:
        return None
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > MONITOR_TAIL_BYTES:
        lines = lines[1:]  # the first line is cut
    return last_error(lines, since, secrets)


# -- gathering (I/O) ----------------------------------------------------------------------------------------


def _supervisor(settings: Settings | None) -> tuple[dict[str, Any] | None, bool]:
    """(the live supervisor's state, or the last supervisor.json of a gone one; whether it is alive)."""
    if settings is None:
        return None, False
    from backfill import control

    alive = control.running_supervisor(settings.log_dir)
    return (alive or control.read_json(control.state_path(settings.log_dir))), alive is not None


def run_is_live(log_dir: Path) -> bool:
    """True while a supervisor of this data directory is alive and at work (for `shown_day_status`)."""
    from backfill import control

    sup = control.running_supervisor(log_dir)
    return run_state(sup, sup is not None) == "running"


def _live_worker_pids(pids: Iterable[int]) -> set[int]:
    """The pids (of this host) that are live `workers.worker` processes."""
    import psutil

    live = set()
    for pid in set(pids):
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and "workers.worker" in " ".join(proc.cmdline()):
                live.add(pid)
        except psutil.Error:  # gone, or not ours to inspect: not a worker status can vouch for
            continue
    return live


def _last_error(settings: Settings | None, supervisor: dict[str, Any] | None) -> str | None:
    if settings is None:
        return None
    since = (supervisor or {}).get("started_at")
    return read_last_error(settings.log_dir / "monitor.log", float(since) if since else None, secret_bearing_values())


def collect(store: Store, settings: Settings | None = None, dedup: bool = True) -> dict[str, Any]:
    """Everything status shows. dedup=False skips the FINAL counts (a scan of the staging tables): the live
    dashboard refreshes every few seconds and must not slow the run it watches. The reads that do not need
    each other's answers are made side by side (one after the other they were ~0.2 s at the end of a run)."""
    now = time.time()
    supervisor, alive = _supervisor(settings)
    state = run_state(supervisor, alive)
    host = host_name()
    started = float(supervisor["started_at"]) if supervisor and supervisor.get("started_at") else None
    with ThreadPoolExecutor(COLLECT_THREADS, thread_name_prefix="status") as pool:
        plan_read, checkpoints_read = pool.submit(_plan_rows, store), pool.submit(store.checkpoints)
        beats_read = pool.submit(store.heartbeats, host)
        table_rows_read = pool.submit(_table_rows, store, dedup)
        endpoints_read = pool.submit(_endpoints, store, running=state == "running")
        promoted_read = pool.submit(_promoted, store) if state in DONE_STATES else None
        plan = plan_read.result()
        rates_read = pool.submit(read_rates, store, started, plan, now) if state == "running" else None
        quality_read = pool.submit(quality, store, {p["day_idx"]: p["day"] for p in plan})
        checkpoints = checkpoints_read.result()
        spread = bool((supervisor or {}).get("shard_ids"))  # this host runs some of the shards
        fleet_read = pool.submit(read_fleet, store, host, plan, checkpoints, spread)
        heartbeats = [
            {**dataclasses.asdict(beat), "updated_at": beat.last_update()} for beat in beats_read.result().values()
        ]
        live_pids = set() if alive else _live_worker_pids(int(h["pid"]) for h in heartbeats)
        summary = summarize(
            plan,
            checkpoints,
            heartbeats,
            supervisor,
            alive,
            rates_read.result() if rates_read is not None else {},
            table_rows_read.result(),
            now,
            endpoints_read.result(),
            live_worker_pids=live_pids,
            host=host,
            promoted=promoted_read.result() if promoted_read is not None else None,
            last_error=_last_error(settings, supervisor),
        )
        summary["quality"] = quality_read.result()
        summary["fleet"] = fleet_read.result()
    if settings is not None and not settings.store.url:
        slow = slow_filesystem(store_dir(settings.data_dir))
        if slow:
            summary["store"]["slow_filesystem"] = slow
    return summary


@functools.lru_cache(maxsize=8)
def slow_filesystem(path: Path) -> str | None:
    """The embedded store's filesystem when it makes every part costly (ext4 without a journal), else None; read
    once per process (the dashboard asks every few seconds)."""
    fs = filesystem_of(path)
    return fs.describe() if fs is not None and fs.slow_file_creation else None


def _promoted(store: Store) -> bool:
    return all(store.scalar(f"EXISTS TABLE {t}") for t in PRODUCTION_TABLES)


def read_fleet(
    store: Store, host: str, plan: list[dict[str, Any]], checkpoints: dict[int, dict[str, Any]], spread: bool
) -> dict[str, Any] | None:
    """The fleet over hosts, from the shard leases: shown when this host runs some of the shards (`spread`) or
    another host's worker holds one; None for a fleet on this host alone."""
    claims = [(c.name, c.host) for c in live_claims(store, SHARD_LEASES)]
    if not spread and all(h == host for _, h in claims):
        return None
    text = store.meta_get(FLEET_SHARDS)
    shards = int(text) if text and text.isdigit() else max((int(name.split("/")[1]) for name, _ in claims), default=1)
    unsettled = [p["day_idx"] for p in plan if checkpoints.get(p["day_idx"], {}).get("status") not in SETTLED_STATUSES]
    return fleet_view(claims, shards, unsettled)


def fleet_view(claims: list[tuple[str, str]], shards: int, unsettled_days: list[int]) -> dict[str, Any]:
    """Hosts and the shard ids their live workers hold (of the fleet's count), and the shards that have days
    left but no live worker on any host."""
    hosts: dict[str, list[int]] = {}
    held = set()
    for name, host in claims:
        _, count, shard = name.split("/")
        if int(count) == shards:
            hosts.setdefault(host, []).append(int(shard))
            held.add(int(shard))
    waiting = sorted({d % shards for d in unsettled_days} - held)
    return {"shards": shards, "hosts": {h: sorted(ids) for h, ids in sorted(hosts.items())}, "no_worker": waiting}


def _plan_rows(store: Store) -> list[dict[str, Any]]:
    return [
        {"day_idx": p.day_idx, "day": p.day.isoformat(), "start_block": p.start_block, "end_block": p.end_block}
        for p in store.read_plan()
    ]


def read_rates(store: Store, started_at: float | None, plan: list[dict[str, Any]], now: float) -> dict[str, float]:
    """The pace of a running run over the last RATE_WINDOW_S (or since it started, if later); status and the
    metrics both read it here. plan: day_idx and start_block of each day."""
    since = now - RATE_WINDOW_S
    if started_at:
        since = max(since, started_at)
    since_dt = dt.datetime.fromtimestamp(since, dt.timezone.utc)
    history = store.checkpoint_progress_since(since_dt)
    return progress_rates(history, {p["day_idx"]: p["start_block"] for p in plan}, since, now)


def _table_rows(store: Store, dedup: bool) -> dict[str, dict[str, int]]:
    table_rows = {}
    for table in ("erc20_transfers_staging", "erc1155_transfers_staging", "transfer_quarantine"):
        table_rows[table] = {"rows": int(store.scalar(f"SELECT count() FROM {table}") or 0)}
        if dedup:
            table_rows[table]["rows_after_dedup"] = int(store.scalar(f"SELECT count() FROM {table} FINAL") or 0)
    return table_rows


def _endpoints(store: Store, running: bool) -> list[dict[str, Any]]:
    """Per-endpoint RPC usage. The pace is summed over the processes that are still reporting (a worker's row
    is at most a minute old); without a running run a pace or a wait is no process's, so they read 0 / False."""
    endpoints = [
        {
            "endpoint": r[0],
            "requests": int(r[1]),
            "errors": int(r[2]),
            "compute_units": int(r[3]),
            "parked": bool(r[4]),
            "rps": round(float(r[5]), 1),
            "limit_answers": int(r[6]),
            "waits": int(r[7]),
            "waited_s": round(float(r[8]), 1),
            "waiting_now": bool(r[9]),
            "damaged": int(r[10]),
        }
        for r in store.rpc_usage_by_endpoint()
    ]
    if not running:
        for e in endpoints:
            e["rps"], e["waiting_now"] = 0.0, False
    return endpoints


def collect_offline(settings: Settings, store_error: str) -> dict[str, Any]:
    """The status that needs no store (see summarize_offline)."""
    supervisor, alive = _supervisor(settings)
    return summarize_offline(supervisor, alive, store_error, time.time(), _last_error(settings, supervisor))


class StatusReader:
    """Summaries for `backfill status [--watch]`: connects to the store on demand; while it cannot be reached,
    answers with `collect_offline` and tries again at the next read (so --watch recovers by itself)."""

    def __init__(self, settings: Settings):
        import logging

        self.settings = settings
        self.store: Store | None = None
        logging.getLogger("store").setLevel(logging.ERROR)  # an outage is shown in the status, not logged to stderr

    def read(self, dedup: bool = True) -> dict[str, Any]:
        try:
            if self.store is None:
                # report an outage soon rather than wait it out as commands do (minutes): the next read retries
                self.store = Store.connect(self.settings, patience_s=STATUS_PATIENCE_S)
            return collect(self.store, self.settings, dedup)
        except StoreUnavailable as exc:  # not there at all, or went away between two reads
            error = str(exc)
        self.close()
        return collect_offline(self.settings, scrub(error, secret_bearing_values()))  # the label is redacted

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def quality(store: Store, dates: dict[int, str] | None = None) -> dict[str, Any]:
    """The latest gates run (level, failed gates with their days) and the latest audit run (days, mismatches);
    each list of day_idx has its dates beside it (`failed_dates`, `warned_dates`, `not_ok_dates`)."""
    dates = dates or {}
    on = lambda days: [date_of(dates, d) for d in days]  # noqa: E731
    out: dict[str, Any] = {"gates": None, "audit": None}
    gates = store.query_rows(
        "SELECT run_at, level, gate, verdict, days FROM gate_results "
        "WHERE run_id = (SELECT argMax(run_id, run_at) FROM gate_results) ORDER BY gate"
    )
    if gates:
        failed = {g[2]: list(g[4]) for g in gates if g[3] == "fail"}
        warned = {g[2]: list(g[4]) for g in gates if g[3] == "warn"}
        out["gates"] = {
            "run_at": str(gates[0][0]),
            "level": gates[0][1],
            "failed": failed,
            "warned": warned,
            "failed_dates": {k: on(v) for k, v in failed.items()},
            "warned_dates": {k: on(v) for k, v in warned.items()},
        }
    audit = store.query_rows(
        "SELECT any(run_at), count(), groupArrayIf(day_idx, verdict != 'ok') FROM audit_results "
        "WHERE run_id = (SELECT argMax(run_id, run_at) FROM audit_results) HAVING count() > 0"
    )
    if audit:
        not_ok = list(audit[0][2])
        out["audit"] = {
            "run_at": str(audit[0][0]),
            "days": int(audit[0][1]),
            "not_ok": not_ok,
            "not_ok_dates": on(not_ok),
        }
    out["reorgs"] = reorgs(store)
    return out


def reorgs(store: Store) -> dict[str, Any] | None:
    """The forks of the copied tip repaired so far (backfill/cli/tip.py records them); None when none was."""
    repaired = int(store.meta_get("reorgs") or 0)
    if not repaired:
        return None
    try:
        last = orjson.loads(store.meta_get("last_reorg") or "null")
    except orjson.JSONDecodeError:
        last = None
    return {"repaired": repaired, "rows_removed": int(store.meta_get("reorg_rows_removed") or 0), "last": last}
