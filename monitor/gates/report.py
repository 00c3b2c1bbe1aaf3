"""The gates' numbers in words: what a gate's value counts and what its threshold allows, per check.

A gate's `value` and `threshold` are those of its worst finding (monitor/gates/judge.py `combine`), and each check
measures something else: a count of days, of rows, of keys, a share of logs, or (empty_days) a count of days
judged against a neighbours' median. `value=2 threshold=100` says none of that; `2 empty days next to busy
ones, not audited` and `none unaudited (busy: neighbours' median of 100+ rows)` do. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def fmt_value(x: float) -> str:
    """A value or threshold for people: integers without a fraction, inf for not judged."""
    if math.isinf(x):
        return "inf"
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"


def percent(share: float) -> str:
    """0.05 -> 5%, 0.0027 -> 0.27%, 0.0385 -> 3.85%."""
    return f"{share * 100:.3g}%"


def _things(n: float, one: str, many: str | None = None) -> str:
    return f"{fmt_value(n)} {one if n == 1 else (many or one + 's')}"


def _count(
    one: str, many: str, limit_one: str, limit_many: str | None = None
) -> tuple[Callable[[float], str], Callable[[float], str]]:
    """(value, limit) phrasing of a check that counts things: `3 FAILED days`, `at most 0 FAILED days`."""
    return (lambda v: _things(v, one, many)), (lambda t: f"at most {_things(t, limit_one, limit_many)}")


# check (Finding.check) -> (value in words, threshold in words)
PHRASES: dict[str, tuple[Callable[[float], str], Callable[[float], str]]] = {
    "failed_days": _count("FAILED day", "FAILED days", "FAILED day"),
    "unfinished_days": _count("day not COMPLETE", "days not COMPLETE", "day not COMPLETE", "days not COMPLETE"),
    "plan_gaps": _count(
        "gap or overlap in the plan", "gaps or overlaps in the plan", "gap or overlap", "gaps or overlaps"
    ),
    "count_mismatch": _count(
        "day differs from its checkpoint", "days differ from their checkpoint", "such day", "such days"
    ),
    "fingerprint_mismatch": _count(
        "day changed since it completed", "days changed since they completed", "changed day"
    ),
    "no_plan": ((lambda v: "no planned day"), (lambda t: "at least 1 planned day")),
    "duplicate_rows": _count("row sharing its key after FINAL", "rows sharing a key after FINAL", "duplicate row"),
    "ambiguous_keys": _count("key with two rows at one version", "keys with two rows at one version", "ambiguous key"),
    "runbook_duplicates": _count("duplicate key after FINAL", "duplicate keys after FINAL", "duplicate key"),
    "exact_copies": ((lambda v: f"{_things(v, 'exact copy', 'exact copies')}, harmless"), (lambda t: "any number")),
    "bad_timestamp_rows": _count("row with a wrong timestamp", "rows with a wrong timestamp", "wrong timestamp"),
    "bad_timestamp_blocks": _count("block with a wrong timestamp", "blocks with a wrong timestamp", "wrong timestamp"),
    "malformed_rows": _count("malformed hash or address", "malformed hashes or addresses", "malformed value"),
    # the value counts days; the threshold is the neighbours' median that makes an empty day suspicious
    "suspicious_empty_days": (
        (lambda v: _things(v, "empty day next to busy ones, not audited", "empty days next to busy ones, not audited")),
        (lambda t: f"none unaudited, busy meaning a neighbours' median of {fmt_value(t)}+ rows"),
    ),
    "audited_empty_days": (
        (lambda v: _things(v, "empty day confirmed by an audit", "empty days confirmed by an audit")),
        (lambda t: "any number"),
    ),
    "quarantine_share": (
        (lambda v: f"{percent(v)} quarantined on the worst day"),
        (lambda t: f"at most {percent(t)} quarantined per day"),
    ),
    "missing_timestamp_blocks": _count(
        "block without its timestamp row",
        "blocks without their timestamp row",
        "missing timestamp row",
        "missing timestamp rows",
    ),
}
# A result built by hand (no check named) is phrased as its gate's main check.
GATE_CHECK = {
    "coverage": "unfinished_days",
    "duplicates": "duplicate_rows",
    "timestamps": "bad_timestamp_rows",
    "malformed": "malformed_rows",
    "empty_days": "suspicious_empty_days",
    "quarantine": "quarantine_share",
    "missing_timestamps": "missing_timestamp_blocks",
}


def _phrases(gate: str, check: str) -> tuple[Callable[[float], str], Callable[[float], str]] | None:
    return PHRASES.get(check) or PHRASES.get(GATE_CHECK.get(gate, ""))


def value_text(gate: str, check: str, value: float) -> str:
    """What the gate found, in words: `2 empty days next to busy ones, not audited`."""
    phrases = _phrases(gate, check)
    return phrases[0](value) if phrases else fmt_value(value)


def limit_text(gate: str, check: str, threshold: float) -> str:
    """What the gate allows, in words: `at most 0 duplicate keys`, `at most 1% quarantined per day`."""
    if math.isinf(threshold):
        return "not judged at this level"
    phrases = _phrases(gate, check)
    return phrases[1](threshold) if phrases else f"at most {fmt_value(threshold)}"
