"""RPC usage of several clients of one process summed per endpoint (the audit's clients, the follower's polls)."""

from __future__ import annotations

from backfill.chain.usage import merge_usage


def usage(endpoint: str, requests: int, errors: dict, rps: float | None = None, parked: bool = False) -> dict:
    return {
        "endpoint": endpoint,
        "requests": requests,
        "errors": errors,
        "compute_units": 10 * requests,
        "parked": parked,
        "rps": rps,
        "limit_answers": 1,
        "waits": 2,
        "waited_s": 0.5,
        "damaged": 0,
    }


def test_counts_and_errors_by_kind_are_summed_per_endpoint() -> None:
    merged = merge_usage(
        [usage("a", 3, {"Transient": 1}, rps=5.0), usage("b", 1, {})],
        [usage("a", 4, {"Transient": 2, "range": 1}, parked=True)],
    )
    a, b = sorted(merged, key=lambda u: u["endpoint"])
    assert (a["requests"], a["compute_units"], a["limit_answers"], a["waits"], a["waited_s"]) == (7, 70, 2, 4, 1.0)
    assert dict(a["errors"]) == {"Transient": 3, "range": 1}
    assert a["parked"] is True and a["rps"] == 5.0  # the last pace known
    assert (b["requests"], dict(b["errors"])) == (1, {})


def test_nothing_merged_is_nothing() -> None:
    assert merge_usage() == [] and merge_usage([], []) == []
