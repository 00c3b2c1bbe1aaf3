"""Status for people: the summary dict of `backfill.cli.status` as rich text (the CLI and the foreground
dashboard). Nothing here reads the store or the supervisor's files; it only formats what `summarize` reports."""

from __future__ import annotations

import datetime as dt
from typing import Any

from backfill.control import Phase
from backfill.dates import day_list


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
    if e.get("damaged"):
        text += f", {e['damaged']} damaged answers"
    if e.get("rps"):
        text += f", pace {e['rps']:g} calls/s"
    if e.get("limit_answers"):
        text += f", {e['limit_answers']} limit answers"
    if e.get("waits"):
        text += (
            ", waiting for budget" if e.get("waiting_now") else ", waited for budget"
        ) + f" ({e['waits']} waits, {e['waited_s']:g}s)"
    return text + (" PARKED" if e["parked"] else "")


def _utc(epoch: float | None, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    return dt.datetime.fromtimestamp(float(epoch), dt.UTC).strftime(fmt) if epoch else "an unknown time"


_ENDED_TEXT = {
    "complete": "complete",
    "caught_up": "caught up with the chain",
    "shards_done": "done with this host's shards (other hosts' shards go on)",
    "stopped": "stopped",
    "finished_with_failures": "finished with failures",
    "rebuild_failed": "rebuild failed",
    "halted": "halted",
}


def follow_text(follow: dict[str, Any] | None) -> str:
    """` — following: head 20051, copied to the safe head 20051, final 20043; polled at 12:00:03 UTC`."""
    if not follow:
        return ""
    if follow.get("head") is None:
        return " — following: no poll yet" + (f" (last poll failed: {follow['error']})" if follow.get("error") else "")
    text = (
        f" — following: head {follow['head']}, copied up to the safe head {follow['safe_head']}, "
        f"final {follow['final_head']}; polled at {_utc(follow.get('polled_at'), '%H:%M:%S UTC')}"
    )
    return text + (f"; the last poll FAILED: {follow['error']}" if follow.get("error") else "")


def run_text(summary: dict[str, Any]) -> tuple[str, str | None]:
    """The first line of status, and its style: what the run is doing, or how it ended and what carries on."""
    run, sup = summary["run"], summary["supervisor"]
    state = run["state"]
    if state == "running":
        phase = sup.get("phase") or Phase.STARTING
        step = f", step {sup['rebuild_step']}" if phase == Phase.REBUILDING and sup.get("rebuild_step") else ""
        n = run["workers"]
        text = f"run: running (pid {sup.get('pid')}, phase {phase}{step}, {n} worker{'' if n == 1 else 's'})"
        return text + follow_text(sup.get("follow")), "green"
    if state == "none":
        return "run: none yet in this data directory — start one: backfill start", None
    if state == "dead":
        text, style = f"run: NOT RUNNING since {_utc(run['since'])} (killed or crashed)", "bold red"
    else:
        text = f"run: {_ENDED_TEXT.get(state, state)} at {_utc(run['since'])}"
        style = "green" if state == "complete" and run["promoted"] else ("red" if state == "halted" else "yellow")
    if state in ("complete", "caught_up"):
        text += {
            True: " — production promoted",
            False: f" — not promoted: {run['hint']}",
            None: " — promotion unknown (the store cannot be reached)",
        }[run["promoted"]]
    if run.get("last_error") and state in ("dead", "halted", "rebuild_failed", "finished_with_failures"):
        text += f" — last error: {run['last_error']}"
    if run.get("resume"):
        text += f" — resume: {run['resume']}"
    return text, style


def store_lines(summary: dict[str, Any]) -> list[str]:
    """`store: …` lines, only when something is wrong: what the live run reports, else what status met."""
    store = summary.get("store") or {}
    seen = store.get("run_view")
    if seen and not seen["reachable"]:
        since = f" (since {_utc(seen['down_since'], '%H:%M:%S UTC')})" if seen.get("down_since") else ""
        took = f" for {seen['down_for_s']}s" if seen.get("down_for_s") is not None else ""
        return [f"store: unreachable{took}{since}: {seen.get('error') or 'no answer'}; the run waits for it"]
    if store and not store.get("reachable", True):
        return [f"store: unreachable: {store.get('error')}"]
    return []


def filesystem_line(summary: dict[str, Any]) -> str | None:
    """A note when the embedded store sits on a filesystem that makes every part costly (a slow copy's cause)."""
    slow = (summary.get("store") or {}).get("slow_filesystem")
    if not slow:
        return None
    return (
        f"store: on {slow}: every part is slow to create here (up to 3x); a journalled filesystem avoids it "
        "(docs/embedded-store.md)"
    )


def _supervisor_text(sup: dict[str, Any]) -> str:
    step = f" (step {sup['rebuild_step']})" if sup.get("phase") == Phase.REBUILDING and sup.get("rebuild_step") else ""
    seen = (
        f"pid {sup.get('pid')} phase {sup.get('phase')}{step} shards {sup.get('wanted_shards')}"
        if sup.get("pid")
        else ""
    )
    if sup["alive"]:
        text = "supervisor: running" + (f" {seen}" if seen else "")
    else:
        text = "supervisor: not running" + (
            f" (last state: {seen}, written {_utc(sup.get('updated_at'))})" if seen else ""
        )
    return text + (f" — {sup['message']}" if sup.get("message") else "")


def _dated(days: list[int], dates: list[str | None] | None, limit: int = 10) -> str:
    """Days of a quality record as dates, folded (`2024-01-05..2024-01-07`)."""
    return day_list(days, {d: v for d, v in zip(days, dates or []) if v}, limit=limit)


def table_lines(table_rows: dict[str, dict[str, int]]) -> list[str]:
    """One `dedup:` line per table, aligned: `dedup: erc20_transfers_staging  38123 rows, 38100 after FINAL`."""
    if not table_rows:
        return []
    width = max(len(t) for t in table_rows)
    digits = max(len(str(v["rows"])) for v in table_rows.values())
    return [
        f"dedup: {t:<{width}} {v['rows']:>{digits}} rows"
        + (f", {v['rows_after_dedup']} after FINAL" if "rows_after_dedup" in v else "")
        for t, v in table_rows.items()
    ]


def workers_table(workers: list[dict[str, Any]]) -> Any:
    """The workers as a table that fits 80 columns with every cell whole: a header rule and one space between
    columns, values that cannot wrap kept whole (only `state` wraps, between its words). `beat` is the age of
    the worker's last heartbeat."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0))
    for name, right in (
        ("worker", True),
        ("pid", True),
        ("state", False),
        ("day", False),
        ("last batch", False),
        ("rows", True),
        ("beat", True),
        ("restarts", True),
    ):
        table.add_column(name, justify="right" if right else "left", no_wrap=name != "state")
    for w in workers:
        table.add_row(
            str(w["worker_id"]),
            str(w["pid"]),
            w["state"],
            w.get("day") or "-",
            w["last_batch"],
            str(w["rows"]),
            f"{w['heartbeat_age_s']:.0f}s",
            str(w["restarts"]),
        )
    return table


def render(summary: dict[str, Any]) -> Any:
    """A rich renderable for people (the CLI and the foreground dashboard). Lines are short or break between
    words (80 columns): one line per endpoint and per table, days as dates."""
    from rich.console import Group
    from rich.text import Text

    first, style = run_text(summary)
    lines = [Text(first, style=style or "")]
    if "days_total" in summary:  # else the store could not be reached: no day counts
        lines += [Text(line) for line in progress_lines(summary)]
    lines.append(Text(_supervisor_text(summary["supervisor"])))
    lines += [Text(line, style="red") for line in store_lines(summary)]
    if note := filesystem_line(summary):
        lines.append(Text(note, style="yellow"))
    lines += [Text(line, style="red" if bad else "") for line, bad in quality_lines(summary.get("quality") or {})]
    if summary.get("fleet"):
        line, bad = fleet_line(summary["fleet"])
        lines.append(Text(line, style="red" if bad else ""))
    parts: list[Any] = list(lines)
    if summary["workers"]:
        parts.append(workers_table(summary["workers"]))
    elif "days_total" in summary:
        parts.append(Text("workers: none running"))
    for f in summary.get("failed_days", []):
        day = f.get("day") or f"day {f['day_idx']}"
        parts.append(Text(f"FAILED {day} after {f['failures']} failures: {f['error']}", style="red"))
    return Group(*parts)


def progress_lines(summary: dict[str, Any]) -> list[str]:
    """The lines read from the store: days, rate and ETA (only for a live run), checkpointed rows, rpc totals,
    one line per endpoint and one `dedup:` line per table."""
    live = summary["run"]["state"] == "running"
    cp = summary["checkpoint_rows"]
    busy = f"{summary['days_running']} running" if live else f"{summary.get('days_interrupted', 0)} interrupted"
    rpc = summary["rpc"]
    return [
        f"days: {summary['days_complete']}/{summary['days_total']} complete ({summary['percent']}%), "
        f"{busy}, {summary['days_pending']} pending, {summary['days_failed']} failed"
        + (
            f", {summary['days_open']} OPEN ({', '.join(summary['open_days'][:3])}: at the chain head, not final yet)"
            if summary.get("days_open")
            else ""
        ),
        f"rate: {summary['rows_per_s']} rows/s, {summary['blocks_per_s']} blocks/s (last "
        f"{summary['window_s']:.0f}s); remaining {summary['remaining_blocks']} blocks; "
        f"ETA {_duration(summary['eta_s'])}"
        if live
        else f"rate: - (not running); remaining {summary['remaining_blocks']} blocks; ETA -",
        f"rows (checkpointed): erc20={cp['erc20']} erc1155={cp['erc1155']} quarantined={cp['quarantined']} "
        f"skipped_erc721={cp['skipped_erc721']}",
        f"rpc: {rpc['requests']} requests, {rpc['errors']} errors, ~{rpc['compute_units']} compute units",
        *(f"rpc: {_endpoint_text(e)}" for e in rpc["endpoints"]),
        *table_lines(summary["table_rows"]),
    ]


def quality_lines(q: dict[str, Any]) -> list[tuple[str, bool]]:
    """(line, is it bad) for the latest gates run and the latest audit run, when there are any."""
    out = []
    if q.get("gates"):
        g = q["gates"]
        bad = "; ".join(f"{k} on {_dated(v, g.get('failed_dates', {}).get(k))}" for k, v in g["failed"].items())
        warn = "; ".join(f"{k} on {_dated(v, g.get('warned_dates', {}).get(k))}" for k, v in g["warned"].items())
        line = f"gates ({g['level']}, {g['run_at'][:19]}): " + (f"FAIL {bad}" if bad else "pass")
        out.append((line + (f"; warn {warn}" if warn else ""), bool(bad)))
    if q.get("audit"):
        a = q["audit"]
        verdict = f"NOT OK: {_dated(a['not_ok'], a.get('not_ok_dates'))}" if a["not_ok"] else "all match the chain"
        out.append((f"audit ({a['run_at'][:19]}): {a['days']} days recounted, " + verdict, bool(a["not_ok"])))
    if q.get("reorgs"):
        out.append((reorg_line(q["reorgs"]), False))
    return out


def fleet_line(f: dict[str, Any]) -> tuple[str, bool]:
    """`fleet: 6 shards; host-a: 0,2,4; host-b: 1,3,5` (+ `; NO WORKER on any host: 4,5` when days wait)."""
    hosts = "; ".join(f"{h}: {','.join(map(str, ids))}" for h, ids in f["hosts"].items())
    line = f"fleet: {f['shards']} shards; {hosts or 'no live worker'}"
    if f["no_worker"]:
        line += f"; NO WORKER on any host for shard(s) {','.join(map(str, f['no_worker']))} (their days wait)"
    return line, bool(f["no_worker"])


def reorg_line(r: dict[str, Any]) -> str:
    """`reorgs: 2 repaired, 14 rows removed; last at …: depth 4, blocks 20031-20034 (ancestor 20030)`."""
    line = f"reorgs: {r['repaired']} repaired, {r['rows_removed']} rows removed"
    last = r.get("last")
    if last:
        line += (
            f"; last at {_utc(last['at'])}: depth {last['depth']}, blocks {last['first']}-{last['tip']} "
            f"(ancestor {last['ancestor']})"
        )
    return line
