"""Gate judging: thresholds and their overrides, each gate's verdict at both levels, the empty-day maths."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest

from backfill.errors import ConfigError
from monitor.gates.judge import (
    GATES,
    THRESHOLDS,
    Day,
    Fingerprint,
    GateReport,
    GateResult,
    Measurements,
    audited_ok,
    judge,
    log_line,
    plan_gaps,
    quarantine_shares,
    suspicious_empty_days,
    thresholds,
)

START = dt.date(2024, 1, 1)
T0 = dt.datetime(2024, 2, 1, 12, tzinfo=dt.UTC)  # when the days completed
ZERO = "0" * 32
DOCS = Path(__file__).resolve().parents[2] / "docs" / "gates.md"


def make(
    n: int = 10,
    rows: dict[int, tuple[int, int]] | None = None,
    status: dict[int, str] | None = None,
    per_day: dict[str, dict[int, int]] | None = None,
    empty: tuple[int, ...] = (),
) -> Measurements:
    """n consecutive days of 1,000 blocks, all COMPLETE with 300 + 200 rows that match their checkpoint and
    fingerprint, unless told otherwise."""
    status = status or {}
    days = {
        d: Day(d, START + dt.timedelta(days=d), 1 + 1000 * d, 1000 * (d + 1), status.get(d, "COMPLETE"))
        for d in range(n)
    }
    counts = {d: (0, 0) if d in empty else (300, 200) for d in range(n)}
    counts.update(rows or {})
    m = Measurements(days=days, per_day=per_day or {})
    m.checkpoint_counts = {d: c for d, c in counts.items() if days[d].status == "COMPLETE"}
    m.store_counts = {d: c for d, c in counts.items() if c != (0, 0)}
    m.store_hashes = {d: (f"{d:032x}", f"{d + 100:032x}") for d in m.store_counts}
    m.fingerprints = {d: Fingerprint(counts[d], m.store_hashes.get(d, (ZERO, ZERO)), T0) for d in m.checkpoint_counts}
    return m


def gate(m: Measurements, name: str, level: str = "strict", **overrides: float) -> GateResult:
    limits = thresholds([(level, k, v) for k, v in overrides.items()], level)
    return {r.gate: r for r in judge(m, level, limits)}[name]


# -- thresholds ------------------------------------------------------------------------------------------------
def test_each_level_has_its_own_defaults():
    relaxed, strict = thresholds([], "relaxed"), thresholds([], "strict")
    assert strict["quarantine_share"] < relaxed["quarantine_share"]
    assert strict["failed_days"] == 0 < relaxed["failed_days"]
    assert strict["unfinished_days"] == 0 and math.isinf(relaxed["unfinished_days"])
    assert set(relaxed) == set(strict) == set(THRESHOLDS)


def test_an_override_changes_only_its_own_level():
    overrides = [("strict", "quarantine_share", 0.02), ("relaxed", "failed_days", 10)]
    assert thresholds(overrides, "strict")["quarantine_share"] == 0.02
    assert thresholds(overrides, "strict")["failed_days"] == 0
    assert thresholds(overrides, "relaxed")["quarantine_share"] == THRESHOLDS["quarantine_share"][0]
    assert thresholds(overrides, "relaxed")["failed_days"] == 10


def test_an_unknown_threshold_name_is_a_config_error_naming_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        thresholds([("relaxed", "quarantine_shar", 0.1)], "strict")  # checked whatever the level asked for
    assert "quarantine_shar" in str(err.value) and "quarantine_share" in str(err.value)
    assert all(name in str(err.value) for name in THRESHOLDS)


@pytest.mark.parametrize(
    "overrides, level",
    [
        ([("lenient", "failed_days", 1)], "strict"),
        ([("strict", "failed_days", -1)], "strict"),
        ([("strict", "failed_days", math.nan)], "strict"),
        ([], "medium"),
    ],
)
def test_bad_levels_and_values_are_config_errors(overrides, level):
    with pytest.raises(ConfigError):
        thresholds(overrides, level)


def test_every_threshold_is_documented_with_its_defaults():
    text = DOCS.read_text()
    for name in THRESHOLDS:
        assert f"`{name}`" in text, name


# -- coverage --------------------------------------------------------------------------------------------------
def test_a_clean_finished_run_passes_every_gate_at_both_levels():
    for level in ("relaxed", "strict"):
        results = judge(make(), level, thresholds([], level))
        assert [r.gate for r in results] == list(GATES)
        assert all(r.verdict == "pass" for r in results), [r for r in results if r.verdict != "pass"]


def test_days_in_progress_pass_relaxed_and_fail_strict_naming_them():
    m = make(status={3: "RUNNING", 7: "PENDING"})
    relaxed = gate(m, "coverage", "relaxed")
    assert relaxed.verdict == "pass" and "2 days in progress" in relaxed.detail
    strict = gate(m, "coverage")
    assert strict.verdict == "fail" and strict.days == [3, 7]
    assert "2024-01-04" in strict.detail and "RUNNING" in strict.detail


@pytest.mark.parametrize("failed, verdict", [(1, "warn"), (3, "warn"), (4, "fail")])
def test_relaxed_warns_on_a_few_failed_days_and_fails_above_the_threshold(failed, verdict):
    m = make(status={d: "FAILED" for d in range(failed)})
    result = gate(m, "coverage", "relaxed")
    assert result.verdict == verdict and result.days == list(range(failed))


def test_strict_fails_on_a_single_failed_day():
    assert gate(make(status={5: "FAILED"}), "coverage").days == [5]


def test_rows_missing_from_a_complete_day_fail_both_levels_naming_the_day_and_counts():
    m = make(rows={4: (290, 200)})
    m.checkpoint_counts[4] = (300, 200)
    for level in ("relaxed", "strict"):
        result = gate(m, "coverage", level)
        assert result.verdict == "fail" and 4 in result.days
        assert "2024-01-05" in result.detail and "store 290+200 vs checkpoint 300+200" in result.detail


def test_a_changed_content_hash_with_equal_counts_fails_naming_the_table():
    m = make()
    m.store_hashes[6] = (m.store_hashes[6][0], "f" * 32)
    result = gate(m, "coverage", "relaxed")
    assert result.verdict == "fail" and result.days == [6] and "erc1155 content differs" in result.detail


def test_a_day_being_redone_is_not_held_to_its_old_fingerprint():
    m = make(status={6: "RUNNING"})
    m.store_hashes[6] = ("e" * 32, "f" * 32)  # new versions half written
    m.fingerprints[6] = Fingerprint((300, 200), (ZERO, ZERO), T0)
    assert gate(m, "coverage", "relaxed").verdict == "pass"


def test_a_raised_threshold_turns_a_failure_into_a_warning():
    m = make(rows={4: (290, 200)})
    m.checkpoint_counts[4] = (300, 200)
    m.fingerprints[4] = Fingerprint((290, 200), m.store_hashes[4], T0)
    assert gate(m, "coverage", "strict", mismatched_days=1).verdict == "warn"


def test_an_empty_plan_fails_strict():
    assert gate(make(0), "coverage").verdict == "fail"
    assert gate(make(0), "coverage", "relaxed").verdict == "pass"


def test_plan_gaps_overlaps_and_missing_days_name_both_days():
    days = [
        Day(0, START, 1, 100, "COMPLETE"),
        Day(1, START + dt.timedelta(1), 102, 200, "COMPLETE"),
        Day(2, START + dt.timedelta(2), 150, 300, "COMPLETE"),
        Day(3, START + dt.timedelta(3), 301, 400, "COMPLETE"),
        Day(5, START + dt.timedelta(5), 401, 500, "COMPLETE"),
    ]
    gaps = plan_gaps(days)
    assert [(a, b) for a, b, _ in gaps] == [(0, 1), (1, 2), (3, 5)]
    assert "gap of blocks 101-101" in gaps[0][2] and "overlap of blocks 150-200" in gaps[1][2]
    assert "1 days missing" in gaps[2][2]


def test_a_plan_gap_fails_the_coverage_gate():
    m = make(3)
    m.days[1] = Day(1, m.days[1].day, 1005, 2000, "COMPLETE")
    result = gate(m, "coverage", "relaxed")
    assert result.verdict == "fail" and result.days == [0, 1] and "gap of blocks 1001-1004" in result.detail


def test_a_day_without_blocks_is_no_gap():
    days = [
        Day(0, START, 1, 100, "COMPLETE"),
        Day(1, START + dt.timedelta(1), 101, 100, "COMPLETE"),
        Day(2, START + dt.timedelta(2), 101, 200, "COMPLETE"),
    ]
    assert plan_gaps(days) == []


# -- duplicates ------------------------------------------------------------------------------------------------
def test_ambiguous_versions_fail_and_exact_copies_are_only_reported():
    m = make(per_day={"ambiguous_keys": {4: 1}, "exact_copies": {0: 7}})
    result = gate(m, "duplicates", "relaxed")
    assert result.verdict == "fail" and result.days == [4]
    assert "2024-01-05" in result.detail and "7 exact copies" in result.detail


def test_exact_copies_alone_pass():
    result = gate(make(per_day={"exact_copies": {0: 7}}), "duplicates")
    assert result.verdict == "pass" and result.days == [] and "harmless" in result.detail


def test_duplicate_keys_after_final_fail_with_the_runbook_number():
    m = make(per_day={"duplicate_key_rows": {2: 2}})
    m.final_duplicates = {"erc20_transfers_staging": 1, "erc1155_transfers_staging": 0}
    result = gate(m, "duplicates")
    assert result.verdict == "fail" and result.days == [2] and "erc20_transfers_staging 1" in result.detail


def test_relaxed_does_not_judge_days_still_being_written():
    m = make(
        status={2: "RUNNING"},
        per_day={"duplicate_key_rows": {2: 2}, "zero_timestamp_rows": {2: 5}, "missing_timestamp_blocks": {2: 1}},
    )
    for name in ("duplicates", "timestamps", "missing_timestamps"):
        assert gate(m, name, "relaxed").verdict == "pass", name
        assert gate(m, name, "strict").verdict == "fail", name


# -- timestamps, malformed, missing timestamps ----------------------------------------------------------------
@pytest.mark.parametrize(
    "check",
    [
        "zero_timestamp_rows",
        "timestamp_mismatch_rows",
        "rows_before_genesis",
        "blocks_outside_day",
        "blocks_before_genesis",
        "blocks_backwards",
    ],
)
def test_each_timestamp_check_fails_both_levels_naming_the_day(check):
    m = make(per_day={check: {3: 12}})
    for level in ("relaxed", "strict"):
        result = gate(m, "timestamps", level)
        assert (result.verdict, result.days, result.value) == ("fail", [3], 12)
        assert "2024-01-04: 12" in result.detail


def test_timestamp_findings_on_several_days_are_all_named():
    m = make(per_day={"zero_timestamp_rows": {3: 1829}, "blocks_backwards": {9: 1}})
    result = gate(m, "timestamps")
    assert result.days == [3, 9] and result.value == 1829


@pytest.mark.parametrize("check", ["malformed_tx_hash", "malformed_address", "malformed_block_hash"])
def test_each_malformed_check_fails_naming_the_day(check):
    result = gate(make(per_day={check: {6: 1}}), "malformed", "relaxed")
    assert result.verdict == "fail" and result.days == [6] and "2024-01-07" in result.detail


def test_blocks_without_a_timestamp_row_fail():
    result = gate(make(per_day={"missing_timestamp_blocks": {7: 2}}), "missing_timestamps")
    assert (result.verdict, result.days, result.value) == ("fail", [7], 2)


# -- empty days ------------------------------------------------------------------------------------------------
def test_an_empty_day_between_busy_days_is_suspicious_with_the_neighbours_median():
    rows = {0: 500, 1: 800, 2: 0, 3: 700, 4: 600, 5: 10_000}
    assert suspicious_empty_days(rows, 100) == {2: 700.0}


def test_an_empty_day_among_quiet_days_is_not_suspicious():
    assert suspicious_empty_days({0: 20, 1: 0, 2: 50, 3: 30}, 100) == {}


def test_the_median_ignores_one_heavy_neighbour():
    assert suspicious_empty_days({0: 5, 1: 0, 2: 1_000_000, 3: 10, 4: 0}, 100) == {}


def test_only_neighbours_within_three_days_count():
    rows = {0: 5000, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
    assert suspicious_empty_days(rows, 100) == {}  # day 1's neighbours: 5000, 0, 0, 0 -> median 0
    rows = {0: 0, 1: 500, 2: 500, 3: 500, 4: 0, 5: 0, 6: 0, 7: 0}
    assert set(suspicious_empty_days(rows, 100)) == {0, 4}  # day 5 sees 500, 500, 0, 0, 0 -> 0


def test_a_day_at_the_edge_uses_the_neighbours_it_has_and_a_lone_day_none():
    assert suspicious_empty_days({0: 0, 1: 300, 2: 300}, 100) == {0: 300.0}
    assert suspicious_empty_days({0: 0}, 100) == {}


def test_the_busy_threshold_is_inclusive():
    assert suspicious_empty_days({0: 100, 1: 0, 2: 100}, 100) == {1: 100.0}
    assert suspicious_empty_days({0: 99, 1: 0, 2: 99}, 100) == {}


def test_suspicious_empty_days_fail_strict_and_warn_relaxed():
    m = make(empty=(2, 8))
    strict, relaxed = gate(m, "empty_days"), gate(m, "empty_days", "relaxed")
    assert (strict.verdict, strict.days) == ("fail", [2, 8])
    assert (relaxed.verdict, relaxed.days) == ("warn", [2, 8])
    assert "2024-01-03" in strict.detail and "2024-01-09" in strict.detail


def test_unfinished_neighbours_do_not_make_a_day_suspicious():
    m = make(n=3, empty=(1,), status={0: "RUNNING", 2: "PENDING"})
    assert gate(m, "empty_days", "relaxed").verdict == "pass"


def test_an_ok_audit_after_completion_accepts_an_empty_day():
    m = make(empty=(2, 8))
    m.audits = {2: ("ok", T0 + dt.timedelta(hours=1)), 8: ("ok", T0 + dt.timedelta(minutes=5))}
    result = gate(m, "empty_days")
    assert result.verdict == "pass" and "confirmed by an audit" in result.detail and "2024-01-03" in result.detail


@pytest.mark.parametrize("audit", [("ok", T0 - dt.timedelta(hours=1)), ("mismatch", T0 + dt.timedelta(hours=1)), None])
def test_an_audit_before_completion_or_not_ok_accepts_nothing(audit):
    m = make(empty=(2,))
    if audit:
        m.audits = {2: audit}
    assert not audited_ok(m, 2)
    assert gate(m, "empty_days").days == [2]


# -- quarantine ------------------------------------------------------------------------------------------------
def test_the_test_chains_weird_logs_pass_strict():
    m = make(rows={0: (1735, 1543)}, per_day={"quarantined": {0: 9}})
    assert quarantine_shares(m, 5)[0] == pytest.approx(9 / (1735 + 1543 + 9))
    assert gate(m, "quarantine").verdict == "pass"


def test_a_quarantine_burst_fails_strict_but_not_relaxed():
    m = make(per_day={"quarantined": {3: 20}})  # 20 / 520 = 3.8 %
    strict = gate(m, "quarantine")
    assert (strict.verdict, strict.days) == ("fail", [3]) and "3.85%" in strict.detail
    assert gate(m, "quarantine", "relaxed").verdict == "pass"


def test_a_few_quarantined_logs_on_a_quiet_day_are_not_judged():
    m = make(rows={3: (2, 0)}, per_day={"quarantined": {3: 4}})
    assert gate(m, "quarantine").verdict == "pass"
    assert gate(m, "quarantine", quarantine_min_logs=1).verdict == "fail"


# -- the report ------------------------------------------------------------------------------------------------
def report_of(results: list[GateResult]) -> GateReport:
    return GateReport(
        "r1", "strict", "test", T0, results, {d: (START + dt.timedelta(d)).isoformat() for d in range(30)}
    )


def test_warnings_pass_and_failures_name_their_days():
    report = report_of(
        [GateResult("empty_days", "warn", 1, 100, [2], "x"), GateResult("timestamps", "fail", 3, 0, [3, 9], "y")]
    )
    assert not report.passed and report.failed_days() == {"timestamps": [3, 9]}
    assert report_of(report.results[:1]).passed
    line = next(line for line in report.lines() if "timestamps" in line)
    assert "2024-01-04, 2024-01-10" in line and line.startswith("FAIL")


def test_the_json_form_is_plain_json_with_dates():
    report = report_of(
        [GateResult("coverage", "pass", 0, math.inf, [], "ok"), GateResult("malformed", "fail", 1, 0, [6], "bad")]
    )
    doc = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert doc["passed"] is False and doc["gates"][0]["threshold"] is None
    assert doc["gates"][1]["dates"] == ["2024-01-07"]


def test_a_log_line_is_key_value_with_at_most_twenty_days():
    report = report_of([])
    line = log_line(report, GateResult("coverage", "fail", 25, 0, list(range(25)), 'days "lost"'))
    assert " run_id=r1 source=test level=strict gate=coverage verdict=fail value=25 threshold=0 " in line
    assert "days=" + ",".join(map(str, range(20))) + ",+5 " in line
    assert line.endswith('detail="days \\"lost\\""')


# -- the numbers in words --------------------------------------------------------------------------------------
def test_every_check_a_gate_reports_is_phrased():
    import re

    from monitor.gates.report import PHRASES

    source = (Path(__file__).resolve().parents[2] / "monitor" / "gates" / "judge.py").read_text()
    checks = (
        set(re.findall(r'Finding\(\s*"(\w+)"', source))
        | set(re.findall(r'_count\(\s*"(\w+)"', source))
        | set(re.findall(r'_counts\(\s*m,\s*level,\s*t,\s*"(\w+)"', source))
    )
    assert len(checks) > 10 and checks <= set(PHRASES), checks - set(PHRASES)


def test_empty_days_say_what_they_count_and_what_makes_a_day_suspicious():
    result = gate(make(empty=(2, 8)), "empty_days")
    assert (result.value, result.threshold) == (2, 100)  # the numbers as measured (JSON, gate_results)
    assert result.value_text == "2 empty days next to busy ones, not audited"
    assert result.limit_text == "none unaudited, busy meaning a neighbours' median of 100+ rows"


def test_counts_say_at_most_what_and_shares_are_percent():
    assert gate(make(), "duplicates").limit_text == "at most 0 duplicate rows"
    assert gate(make(status={3: "FAILED"}), "coverage", "relaxed").value_text == "1 FAILED day"
    assert gate(make(status={3: "FAILED", 4: "FAILED"}), "coverage", "relaxed").limit_text == "at most 3 FAILED days"
    burst = gate(make(per_day={"quarantined": {3: 20}}), "quarantine")
    assert burst.value_text == "3.85% quarantined on the worst day"
    assert burst.limit_text == "at most 1% quarantined per day"
    assert (
        gate(make(per_day={"quarantined": {3: 20}}), "quarantine", "relaxed").limit_text
        == "at most 5% quarantined per day"
    )


def test_a_threshold_not_judged_at_the_level_says_so():
    assert (
        GateResult("coverage", "pass", 2, math.inf, [], "", "unfinished_days").limit_text == "not judged at this level"
    )


def test_a_report_line_says_found_limit_and_days_as_dates():
    report = report_of([gate(make(empty=(2, 8)), "empty_days")])
    line = report.line(report.results[0])
    assert line.startswith(
        "FAIL empty_days: 2 empty days next to busy ones, not audited; limit: none unaudited, "
        "busy meaning a neighbours' median of 100+ rows; days: 2024-01-03, 2024-01-09 — "
    )
    assert "value=" not in line and "threshold=" not in line and "day 2" not in line
    doc = report.to_json()["gates"][0]
    assert (doc["check"], doc["value"], doc["threshold"], doc["days"]) == ("suspicious_empty_days", 2, 100, [2, 8])


def test_consecutive_days_of_a_report_are_folded():
    report = report_of([GateResult("coverage", "fail", 3, 0, [4, 5, 6], "x", "failed_days")])
    assert "days: 2024-01-05..2024-01-07 — x" in report.line(report.results[0])
