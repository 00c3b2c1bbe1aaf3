"""The correction runbook: damaged days are caught, fetched again with --redo, compared version by version,
then deduplicated, and nothing outside the range moves."""

from __future__ import annotations

import json

import pytest

from backfill.store.digest import STAGING_TABLES
from backfill.store.fingerprints import record_fingerprints
from tests.integration.damage import raw_digest_outside, zero_timestamps
from tests.integration.harness import Chain, backfill, open_store, store_rows
from tests.support.truth import ground_truth

pytestmark = pytest.mark.slow


def test_redo_replaces_damaged_days_and_dedup_leaves_only_correct_rows(chain: Chain, run_copy):
    store = open_store(run_copy)
    record_fingerprints(store)
    plans = store.read_plan()
    d3, d4 = plans[3], plans[4]
    a, b = d3.start_block, d4.end_block
    truth = ground_truth(chain.url, chain.day_blocks())
    other_checkpoints = {k: v["updated_at"] for k, v in store.checkpoints().items() if k not in (3, 4)}

    # a bug overwrites two days: same keys, a newer _version, zeroed timestamps
    zero_timestamps(store, d3)
    zero_timestamps(store, d4)
    outside_before = raw_digest_outside(store, a, b)

    gates = backfill(["gates", "--strict"], run_copy, chain)
    assert gates.returncode == 1, gates.stdout + gates.stderr
    for day in (chain.day(3), chain.day(4)):
        assert day in gates.stdout, f"strict gates do not name {day}:\n{gates.stdout}"

    redo = backfill(
        ["start", "--from", chain.day(3), "--to", chain.day(4), "--redo", "--foreground", "--confirmations", "0"],
        run_copy,
        chain,
        shards=2,
        extra_env={"BACKFILL_ON_COMPLETE": "0"},
    )
    assert redo.returncode == 0, redo.stderr

    # before dedup: every version side by side per day; the newest matches the chain again
    verify = backfill(["verify", "--days", f"{chain.day(3)}..{chain.day(4)}", "--json"], run_copy, chain)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    days = {r["day_idx"]: r for r in json.loads(verify.stdout)["results"]}
    assert set(days) == {3, 4}
    for d in (3, 4):
        versions = days[d]["versions"]
        assert len(versions) >= 2, versions  # the damaged copy and the redo (the original merges into the redo)
        assert any(v.get("zero_timestamps") for v in versions), versions
        assert days[d]["verdict"] == "ok"

    dedup = backfill(["dedup", "--from", chain.day(3), "--to", chain.day(4)], run_copy, chain)
    assert dedup.returncode == 0, dedup.stdout + dedup.stderr
    assert "verified" in dedup.stdout

    # only correct rows remain in the range: raw (all versions) equals the truth, nothing at timestamp 0
    for table in STAGING_TABLES:
        raw = store.scalar(f"SELECT count() FROM {table} WHERE block_number BETWEEN %(a)s AND %(b)s", {"a": a, "b": b})
        final = store.scalar(
            f"SELECT count() FROM {table} FINAL WHERE block_number BETWEEN %(a)s AND %(b)s", {"a": a, "b": b}
        )
        assert raw == final
        assert store.scalar(f"SELECT count() FROM {table} WHERE toUnixTimestamp(block_timestamp) = 0") == 0
    erc20, erc1155 = store_rows(store)
    assert set(erc20) == truth.erc20 and len(erc20) == len(truth.erc20)
    assert set(erc1155) == truth.erc1155 and len(erc1155) == len(truth.erc1155)
    # and nothing outside the range changed
    assert raw_digest_outside(store, a, b) == outside_before
    assert {k: v["updated_at"] for k, v in store.checkpoints().items() if k not in (3, 4)} == other_checkpoints

    # the audit confirms the genuinely empty days; then the strict gates pass
    confirm = backfill(["verify", "--days", f"{chain.day(2)},{chain.day(8)}"], run_copy, chain)
    assert confirm.returncode == 0, confirm.stdout + confirm.stderr
    gates = backfill(["gates", "--strict"], run_copy, chain)
    assert gates.returncode == 0, gates.stdout + gates.stderr


def test_redo_refuses_without_a_range(chain: Chain, run_copy):
    result = backfill(["start", "--from", chain.day(3), "--redo"], run_copy, chain)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--redo needs --from and --to" in lines[0]


def test_dedup_rejects_bad_partition(chain: Chain, run_copy):
    result = backfill(["dedup", "--partition", "2024-01"], run_copy, chain)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["error: --partition takes a month like 202601, got '2024-01'"]
