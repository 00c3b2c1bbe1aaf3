"""Quality gates: data-quality checks over the staging tables, judged against two threshold sets — relaxed
while backfilling, strict before promotion. Measuring (grouped queries, one per check) is kept apart from
judging (pure functions over the measured values), and every finding names its days.

Relaxed judges COMPLETE days only (days being written may be half there) and warns where a finished run is
needed; strict requires every planned day COMPLETE and tolerates no corruption. See docs/gates.md.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import statistics
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backfill.dates import day_list
from backfill.errors import ConfigError
from backfill.settings import Settings
from backfill.store import digest, schema
from backfill.store.client import Store, now_utc
from backfill.thresholds import LEVELS, THRESHOLDS  # noqa: F401  (re-exported: part of the gates' API)
from monitor.gates.measure import (  # noqa: F401  (re-exported: the measured data is part of the API)
    ADDRESS_RE,
    HASH_RE,
    SORT_KEYS,
    Day,
    Fingerprint,
    Measurements,
    final_days_only,
    measure,
    read_audits,
)
from monitor.gates.report import fmt_value, limit_text, value_text

GATES = ("coverage", "duplicates", "timestamps", "malformed", "empty_days", "quarantine", "missing_timestamps")
PASS, WARN, FAIL = "pass", "warn", "fail"
_RANK = {PASS: 0, WARN: 1, FAIL: 2}

NEIGHBOUR_DAYS = 3  # an empty day is compared with the days up to this far on either side


# -- thresholds ----------------------------------------------------------------------------------------------
def thresholds(overrides: Iterable[tuple[str, str, float]], level: str) -> dict[str, float]:
    """The threshold set of `level` with the overrides of backfill.toml ([gates.relaxed] / [gates.strict])
    applied. Every override is checked, whatever the level, so a typo fails at once."""
    if level not in LEVELS:
        raise ConfigError(f"unknown gate level {level!r}; use one of {', '.join(LEVELS)}")
    out = {name: pair[LEVELS.index(level)] for name, pair in THRESHOLDS.items()}
    for lvl, name, value in overrides:
        if lvl not in LEVELS:
            raise ConfigError(f"[gates.{lvl}] is not a threshold set; use [gates.relaxed] or [gates.strict]")
        if name not in THRESHOLDS:
            raise ConfigError(f"[gates.{lvl}] {name} is not a gate threshold; valid: {', '.join(sorted(THRESHOLDS))}")
        if math.isnan(value) or value < 0:
            raise ConfigError(f"[gates.{lvl}] {name} must be >= 0, got {value}")
        if lvl == level:
            out[name] = float(value)
    return out


# -- verdicts ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateResult:
    gate: str
    verdict: str  # pass / warn / fail
    value: float
    threshold: float
    days: list[int]
    detail: str
    check: str = ""  # the check of the worst finding: what value and threshold measure (monitor/gates/report.py)

    @property
    def value_text(self) -> str:
        """What the gate found, in words (`2 empty days next to busy ones, not audited`)."""
        return value_text(self.gate, self.check, self.value)

    @property
    def limit_text(self) -> str:
        """What the gate allows, in words (`at most 0 duplicate rows`, `at most 1% quarantined per day`)."""
        return limit_text(self.gate, self.check, self.threshold)


@dataclass(frozen=True)
class Finding:
    check: str
    verdict: str
    value: float
    threshold: float
    days: tuple[int, ...] = ()
    text: str = ""


def _label(m: Measurements, d: int) -> str:
    """A day as people read it: its date (`day 12` when it is not planned)."""
    day = m.days.get(d)
    return day.day.isoformat() if day else f"day {d}"


def _days_text(m: Measurements, per_day: Mapping[int, Any], limit: int = 8) -> str:
    days = sorted(per_day)
    shown = ", ".join(f"{_label(m, d)}: {per_day[d]}" for d in days[:limit])
    return shown + (f" (+{len(days) - limit} more days)" if len(days) > limit else "")


def _count(
    check: str,
    per_day: Mapping[int, int],
    threshold: float,
    what: str,
    m: Measurements,
    shown: Mapping[int, Any] | None = None,
) -> Finding:
    """A count of bad things: above the threshold fails, non-zero within a raised threshold warns.
    `shown` replaces the per-day numbers in the text (e.g. what differs on the day)."""
    total = sum(per_day.values())
    verdict = FAIL if total > threshold else WARN if total > 0 else PASS
    text = (
        f"{what}: {fmt_value(total)} (at most {fmt_value(threshold)} allowed) on {_days_text(m, shown or per_day)}"
        if total
        else ""
    )
    return Finding(check, verdict, total, threshold, tuple(sorted(d for d, n in per_day.items() if n)), text)


def _scope(m: Measurements, per_day: Mapping[int, int], level: str) -> dict[int, int]:
    """Relaxed judges COMPLETE days only: a day being written may hold half its rows and timestamps."""
    if level == "strict":
        return dict(per_day)
    done = m.complete
    return {d: n for d, n in per_day.items() if d in done}


def combine(gate: str, findings: list[Finding], ok_text: str) -> GateResult:
    """The gate's verdict is its worst finding's; value and threshold are those of the largest finding with
    that verdict."""
    worst = max(findings, key=lambda f: (_RANK[f.verdict], f.value if f.verdict != PASS else 0))
    bad = [f for f in findings if f.verdict != PASS]
    days = sorted({d for f in bad for d in f.days})
    notes = [f.text for f in findings if f.verdict == PASS and f.text]
    detail = "; ".join([f.text for f in bad] + notes) or ok_text
    return GateResult(gate, worst.verdict, float(worst.value), float(worst.threshold), days, detail, worst.check)


# -- the gates (pure) ----------------------------------------------------------------------------------------
def _unfinished_finding(m: Measurements, t: Mapping[str, float]) -> Finding:
    unfinished = {d: 1 for d, day in m.days.items() if day.status not in ("COMPLETE", "FAILED")}
    n = len(unfinished)
    if n > t["unfinished_days"]:
        return Finding(
            "unfinished_days",
            FAIL,
            n,
            t["unfinished_days"],
            tuple(sorted(unfinished)),
            f"days not COMPLETE: {n} (at most {fmt_value(t['unfinished_days'])} allowed): "
            f"{', '.join(f'{_label(m, d)} {m.days[d].status}' for d in sorted(unfinished)[:8])}",
        )
    return Finding("unfinished_days", PASS, n, t["unfinished_days"], (), f"{n} days in progress" if n else "")


def _plan_gaps_finding(m: Measurements, t: Mapping[str, float]) -> Finding:
    gaps = plan_gaps(list(m.days.values()))
    return Finding(
        "plan_gaps",
        FAIL if len(gaps) > t["plan_gaps"] else WARN if gaps else PASS,
        len(gaps),
        t["plan_gaps"],
        tuple(sorted({d for g in gaps for d in g[:2]})),
        "; ".join(f"{g[2]} between {_label(m, g[0])} and {_label(m, g[1])}" for g in gaps[:8]),
    )


def judge_coverage(m: Measurements, level: str, t: Mapping[str, float]) -> GateResult:
    failed = {d: 1 for d, day in m.days.items() if day.status == "FAILED"}
    findings = [_count("failed_days", failed, t["failed_days"], "FAILED days", m, {d: "FAILED" for d in failed})]
    findings.append(_unfinished_finding(m, t))
    findings.append(_plan_gaps_finding(m, t))
    counts = count_mismatches(m)
    findings.append(
        _count(
            "count_mismatch",
            {d: 1 for d in counts},
            t["mismatched_days"],
            "COMPLETE days whose rows after FINAL differ from their checkpoint",
            m,
            {d: f"store {s[0]}+{s[1]} vs checkpoint {c[0]}+{c[1]} (erc20+erc1155)" for d, (s, c) in counts.items()},
        )
    )
    changed = fingerprint_mismatches(m)
    findings.append(
        _count(
            "fingerprint_mismatch",
            {d: 1 for d in changed},
            t["mismatched_days"],
            "COMPLETE days changed since their fingerprint",
            m,
            {d: "+".join(tables) + " content differs" for d, tables in changed.items()},
        )
    )
    if not m.days:
        findings.append(
            Finding(
                "no_plan", FAIL if level == "strict" else PASS, 0, 0, (), "no planned days: nothing has been backfilled"
            )
        )
    return combine("coverage", findings, f"all {len(m.days)} planned days COMPLETE, counts and fingerprints match")


def plan_gaps(days: list[Day]) -> list[tuple[int, int, str]]:
    """(earlier day, later day, what) for consecutive planned days that leave blocks or days uncovered or
    cover blocks twice."""
    out = []
    ordered = sorted(days, key=lambda d: d.day_idx)
    for a, b in itertools.pairwise(ordered):
        if b.start_block > a.end_block + 1:
            out.append((a.day_idx, b.day_idx, f"gap of blocks {a.end_block + 1}-{b.start_block - 1}"))
        elif b.start_block < a.end_block + 1:
            out.append((a.day_idx, b.day_idx, f"overlap of blocks {b.start_block}-{a.end_block}"))
        elif (b.day - a.day).days != 1:
            out.append((a.day_idx, b.day_idx, f"{(b.day - a.day).days - 1} days missing from the plan"))
    return out


def count_mismatches(m: Measurements) -> dict[int, tuple[tuple[int, int], tuple[int, int]]]:
    """COMPLETE day -> (store counts, checkpoint counts) where they differ."""
    out = {}
    for d in sorted(m.complete):
        store, cp = m.store_counts.get(d, (0, 0)), m.checkpoint_counts.get(d, (0, 0))
        if store != cp:
            out[d] = (store, cp)
    return out


def fingerprint_mismatches(m: Measurements) -> dict[int, list[str]]:
    """COMPLETE day -> the tables whose rows or content hash differ from the day's fingerprint."""
    out: dict[int, list[str]] = {}
    zero = digest.fmt_hash(0)
    for d in sorted(m.complete):
        fp = m.fingerprints.get(d)
        if fp is None:
            continue
        counts, hashes = m.store_counts.get(d, (0, 0)), m.store_hashes.get(d, (zero, zero))
        tables = [
            t for i, t in enumerate(("erc20", "erc1155")) if counts[i] != fp.counts[i] or hashes[i] != fp.hashes[i]
        ]
        if tables:
            out[d] = tables
    return out


def judge_duplicates(m: Measurements, level: str, t: Mapping[str, float]) -> GateResult:
    dup = _scope(m, m.of("duplicate_key_rows"), level)
    findings = [_count("duplicate_rows", dup, t["duplicate_rows"], "rows sharing a key after FINAL", m)]
    runbook = ", ".join(f"{table} {n}" for table, n in m.final_duplicates.items() if n)
    if runbook:
        findings.append(
            Finding("runbook_duplicates", PASS, 0, 0, (), f"count() - uniqExact(key) after FINAL: {runbook}")
        )
    findings.append(
        _count(
            "ambiguous_keys",
            _scope(m, m.of("ambiguous_keys"), level),
            t["ambiguous_keys"],
            "keys with different rows at the same newest _version",
            m,
        )
    )
    copies = sum(_scope(m, m.of("exact_copies"), level).values())
    note = f"{copies} exact copies at the same _version (harmless: dedup collapses them)" if copies else ""
    findings.append(Finding("exact_copies", PASS, copies, 0, (), note))
    return combine("duplicates", findings, "no duplicate keys after FINAL, no ambiguous versions")


def _counts(
    m: Measurements, level: str, t: Mapping[str, float], threshold: str, checks: Iterable[tuple[str, str]]
) -> list[Finding]:
    """One finding per measured check, all judged against the same threshold."""
    return [_count(threshold, _scope(m, m.of(check), level), t[threshold], what, m) for check, what in checks]


def judge_timestamps(m: Measurements, level: str, t: Mapping[str, float]) -> GateResult:
    findings = _counts(
        m,
        level,
        t,
        "bad_timestamp_rows",
        (
            ("zero_timestamp_rows", "rows with block_timestamp 0"),
            ("timestamp_mismatch_rows", "rows whose block_timestamp is not their block's"),
            ("rows_before_genesis", "rows timed before genesis"),
        ),
    )
    findings += _counts(
        m,
        level,
        t,
        "bad_timestamp_blocks",
        (
            ("blocks_outside_day", "blocks timed outside their day's UTC date"),
            ("blocks_before_genesis", "blocks timed before genesis"),
            ("blocks_backwards", "blocks timed earlier than the block before"),
        ),
    )
    return combine("timestamps", findings, "every timestamp is its block's, inside its day, after genesis, in order")


def judge_malformed(m: Measurements, level: str, t: Mapping[str, float]) -> GateResult:
    findings = _counts(
        m,
        level,
        t,
        "malformed_rows",
        (
            ("malformed_tx_hash", "rows with a malformed tx_hash"),
            ("malformed_address", "rows with a malformed token/from/to/operator address"),
            ("malformed_block_hash", "blocks with a malformed block_hash"),
        ),
    )
    return combine("malformed", findings, "every hash and address is lowercase 0x hex of the right length")


def suspicious_empty_days(rows: Mapping[int, int], busy_rows: float, window: int = NEIGHBOUR_DAYS) -> dict[int, float]:
    """day_idx -> its neighbours' median rows, for days of `rows` (the COMPLETE days: rows in both tables)
    with zero rows whose neighbours within ±window days (also COMPLETE) have a median of at least busy_rows."""
    out = {}
    for d, n in rows.items():
        if n:
            continue
        around = [rows[x] for x in range(d - window, d + window + 1) if x != d and x in rows]
        if around and statistics.median(around) >= busy_rows:
            out[d] = float(statistics.median(around))
    return out


def audited_ok(m: Measurements, d: int) -> bool:
    """The latest audit of the day recounted it from RPC, agreed, and did so after the day last completed."""
    audit, fp = m.audits.get(d), m.fingerprints.get(d)
    return bool(audit and fp and audit[0] == "ok" and audit[1] > fp.completed_at)


def judge_empty_days(m: Measurements, level: str, t: Mapping[str, float]) -> GateResult:
    rows = {d: sum(m.store_counts.get(d, (0, 0))) for d in m.complete}
    suspicious = suspicious_empty_days(rows, t["busy_neighbour_rows"])
    open_days = {
        d: f"0 rows, neighbours' median {fmt_value(med)}" for d, med in suspicious.items() if not audited_ok(m, d)
    }
    accepted = sorted(set(suspicious) - set(open_days))
    verdict = PASS if not open_days else FAIL if level == "strict" else WARN
    text = (
        f"empty days next to busy ones, not confirmed by an audit: {len(open_days)} on "
        f"{_days_text(m, open_days)}; recount them from RPC with `backfill verify`"
        if open_days
        else ""
    )
    note = f"empty days confirmed by an audit: {', '.join(_label(m, d) for d in accepted)}" if accepted else ""
    findings = [
        Finding(
            "suspicious_empty_days", verdict, len(open_days), t["busy_neighbour_rows"], tuple(sorted(open_days)), text
        ),
        Finding("audited_empty_days", PASS, len(accepted), 0, (), note),
    ]
    return combine("empty_days", findings, "no empty day next to busy neighbours")


def quarantine_shares(m: Measurements, min_logs: float) -> dict[int, float]:
    """day_idx -> quarantined / (transfer rows + quarantined), for days with at least min_logs quarantined."""
    out = {}
    for d, q in m.of("quarantined").items():
        if q >= min_logs:
            out[d] = q / (sum(m.store_counts.get(d, (0, 0))) + q)
    return out


def judge_quarantine(m: Measurements, level: str, t: Mapping[str, float]) -> GateResult:
    judged = set(_scope(m, {d: 1 for d in m.days}, level))
    shares = {d: s for d, s in quarantine_shares(m, t["quarantine_min_logs"]).items() if d in judged}
    over = {d: f"{s:.2%}" for d, s in shares.items() if s > t["quarantine_share"]}
    top = max(shares.values(), default=0.0)
    total = sum(_scope(m, m.of("quarantined"), level).values())
    text = (
        f"days quarantining more than {t['quarantine_share']:.2%} of their logs: {len(over)} on {_days_text(m, over)}"
        if over
        else ""
    )
    note = f"{total} quarantined logs, highest day share {top:.2%}" if total else ""
    findings = [
        Finding(
            "quarantine_share", FAIL if over else PASS, top, t["quarantine_share"], tuple(sorted(over)), text or note
        )
    ]
    return combine("quarantine", findings, "no quarantined logs")


def judge_missing_timestamps(m: Measurements, level: str, t: Mapping[str, float]) -> GateResult:
    finding = _count(
        "missing_timestamp_blocks",
        _scope(m, m.of("missing_timestamp_blocks"), level),
        t["missing_timestamp_blocks"],
        "blocks with transfers but no block_timestamps row",
        m,
    )
    return combine("missing_timestamps", [finding], "every block with transfers has its timestamp row")


JUDGES = {
    "coverage": judge_coverage,
    "duplicates": judge_duplicates,
    "timestamps": judge_timestamps,
    "malformed": judge_malformed,
    "empty_days": judge_empty_days,
    "quarantine": judge_quarantine,
    "missing_timestamps": judge_missing_timestamps,
}


def judge(m: Measurements, level: str, t: Mapping[str, float]) -> list[GateResult]:
    """Every gate's verdict, in GATES order."""
    return [JUDGES[g](m, level, t) for g in GATES]


# -- the report ----------------------------------------------------------------------------------------------
@dataclass
class GateReport:
    run_id: str
    level: str
    source: str
    run_at: dt.datetime
    results: list[GateResult]
    dates: dict[int, str]  # day_idx -> ISO date of the planned days

    @property
    def passed(self) -> bool:
        """No gate failed (warnings allowed)."""
        return all(r.verdict != FAIL for r in self.results)

    def failed_days(self) -> dict[str, list[int]]:
        return {r.gate: r.days for r in self.results if r.verdict == FAIL}

    def day_names(self, days: Iterable[int], limit: int = 20) -> str:
        """The days as dates, consecutive ones folded (`2024-01-05..2024-01-07`)."""
        return day_list(days, self.dates, limit=limit)

    def line(self, r: GateResult) -> str:
        """`FAIL empty_days: 2 empty days next to busy ones, not audited; limit: none unaudited, …; days:
        2024-01-03, 2024-01-09 — <detail>`: what was found and what is allowed in words, the days as dates."""
        days = f"; days: {self.day_names(r.days)}" if r.days else ""
        return f"{r.verdict.upper():4} {r.gate}: {r.value_text}; limit: {r.limit_text}{days} — {r.detail}"

    def lines(self) -> list[str]:
        out = [f"{self.level} gates: {'passed' if self.passed else 'FAILED'} (run {self.run_id})"]
        return out + [self.line(r) for r in self.results]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (plain types; an infinite threshold is null)."""
        return {
            "run_id": self.run_id,
            "level": self.level,
            "source": self.source,
            "run_at": self.run_at.isoformat(),
            "passed": self.passed,
            "gates": [
                {
                    "gate": r.gate,
                    "verdict": r.verdict,
                    "check": r.check or None,
                    "value": r.value,
                    "threshold": None if math.isinf(r.threshold) else r.threshold,
                    "days": r.days,
                    "dates": [self.dates.get(d) for d in r.days],
                    "detail": r.detail,
                }
                for r in self.results
            ],
        }


def run_gates(
    store: Store,
    settings: Settings,
    level: str = "relaxed",
    *,
    record: bool = True,
    source: str = "cli",
    final_only: bool = False,
    measured: Measurements | None = None,
) -> GateReport:
    """Measure, judge at `level` and (record=True) write one gate_results row and one gates.log line per gate.
    final_only: judge the final days only, leaving out the OPEN days at the chain head (the rebuild's scope;
    `backfill gates --strict` judges every planned day, and an OPEN one fails it). measured: the store measured
    already (the rebuild measures it beside the audit); its audit verdicts are read again here."""
    limits = thresholds(settings.gates, level)
    if measured is None:
        m = measure(store)
    else:
        m, m.audits = measured, read_audits(store)
    if final_only:
        m = final_days_only(m)
    report = GateReport(
        run_id=uuid.uuid4().hex[:16],
        level=level,
        source=source,
        run_at=now_utc(),
        results=judge(m, level, limits),
        dates={d: day.day.isoformat() for d, day in m.days.items()},
    )
    if record:
        store.insert(
            "gate_results",
            [
                (report.run_id, report.run_at, level, r.gate, r.verdict, r.value, r.threshold, r.days, r.detail)
                for r in report.results
            ],
            schema.GATE_COLUMNS,
        )
        append_log(settings.log_dir / "gates.log", report)
    return report


def log_line(report: GateReport, r: GateResult) -> str:
    days = ",".join(str(d) for d in r.days[:20]) + (f",+{len(r.days) - 20}" if len(r.days) > 20 else "")
    detail = r.detail.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f"{report.run_at.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z run_id={report.run_id} source={report.source} "
        f"level={report.level} gate={r.gate} verdict={r.verdict} value={fmt_value(r.value)} "
        f'threshold={fmt_value(r.threshold)} days={days or "-"} detail="{detail}"'
    )


def append_log(path: Path, report: GateReport) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for r in report.results:
            fh.write(log_line(report, r) + "\n")
