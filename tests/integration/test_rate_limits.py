"""Hosted providers at their limits: endpoints behind a per-second call budget (a batch costs one per call), a
monthly quota, batch caps and refusals, as the fault-injecting proxy serves them in front of the real node.

Every run is the whole CLI, as an operator starts it; exactness is judged against the ground truth read
straight from the node (tests/support/truth.py), and the proxy counts what was really sent.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from backfill.devnet.node import Anvil
from backfill.store.embedded import stop_server
from tests.integration.harness import Chain, assert_exact, backfill, open_store, wait_for, wait_run_finished
from tests.support.proxy import RpcProxy
from tests.support.truth import rpc

pytestmark = pytest.mark.slow


def logs_text(data_dir: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace")
        for p in sorted((data_dir / "backfill").glob("*"))
        if p.is_file() and (p.suffix in (".log", ".stderr"))
    )


def assert_no_traceback(data_dir: Path, *runs: subprocess.CompletedProcess) -> None:
    text = logs_text(data_dir) + "".join(r.stdout + r.stderr for r in runs)
    assert "Traceback" not in text, text[text.find("Traceback") - 500 :][:3000]


def whole_run(
    chain: Chain, data_dir: Path, urls: str, shards: int = 2, days: tuple[int, int] | None = None, **env: str
) -> tuple[subprocess.CompletedProcess, float]:
    first, last = days if days else (0, chain.days - 1)
    t0 = time.monotonic()
    run = backfill(
        ["start", "--foreground", "--from", chain.day(first), "--to", chain.day(last), "--confirmations", "0"],
        data_dir,
        rpc_urls=urls,
        shards=shards,
        extra_env=env,
        timeout=600,
    )
    return run, time.monotonic() - t0


def test_two_endpoints_at_10_calls_per_second_finish_exact_at_the_pace_allowed(chain: Chain, tmp_path):
    data_dir = tmp_path / "data"
    with RpcProxy(chain.url, rate_limit_rps=10) as a, RpcProxy(chain.url, rate_limit_rps=10, rate_limit_kind="I4") as b:
        run, wall = whole_run(chain, data_dir, f"{a.url},{b.url}")
        calls = len(a.calls()) + len(b.calls())
        limited = a.limit_answers() + b.limit_answers()
        refused = a.limit_requests() + b.limit_requests()  # a refused batch once: the answer its client learns from
        requests = a.requests_seen + b.requests_seen
        peak = max(a.calls_per_second_max(), b.calls_per_second_max())
    try:
        assert run.returncode == 0, run.stderr[-3000:]
        store = open_store(data_dir)
        assert_exact(store, chain)
        assert not [d for d, cp in store.checkpoints().items() if cp["status"] == "FAILED"]
        assert_no_traceback(data_dir, run)
        floor = calls / 20
        assert wall <= 1.5 * (floor + 10), (wall, calls, floor)
        assert refused <= 0.15 * requests, (refused, requests, limited, calls)
        assert peak <= 20  # the budget held: the proxy let at most rps + burst through in any second
        assert "waiting_for_budget" in logs_text(data_dir) or "rate_limited" in logs_text(data_dir)
    finally:
        stop_server(data_dir)


def test_a_known_plan_is_shared_by_the_fleet_and_never_refused(chain: Chain, tmp_path):
    """BACKFILL_RPC_MAX_RPS states the plan: the workers divide it and the provider never has to refuse."""
    data_dir = tmp_path / "data"
    with RpcProxy(chain.url, rate_limit_rps=12) as a:
        run, _ = whole_run(
            chain, data_dir, a.url, shards=3, days=(0, 3), BACKFILL_RPC_MAX_RPS="10", BACKFILL_ON_COMPLETE="0"
        )
        limited, calls = a.limit_answers(), len(a.calls())
    try:
        assert run.returncode == 0, run.stderr[-3000:]
        assert_exact(open_store(data_dir), chain)
        assert limited <= 0.05 * calls, (limited, calls)
    finally:
        stop_server(data_dir)


def test_an_endpoint_whose_quota_runs_out_is_parked_and_the_audit_uses_the_other(chain: Chain, tmp_path):
    data_dir = tmp_path / "data"
    with RpcProxy(chain.url, quota_calls=40) as spent, RpcProxy(chain.url) as healthy:
        run, _ = whole_run(chain, data_dir, f"{spent.url},{healthy.url}", BACKFILL_AUDIT_SAMPLE="3")
        refused = [c for c in spent.calls() if c.fault == "I6"]
    try:
        assert run.returncode == 0, run.stderr[-3000:]
        store = open_store(data_dir)
        assert_exact(store, chain)
        assert_no_traceback(data_dir, run)
        # the first process that met it parked it, and the others read that (data/backfill/endpoints.json)
        assert 1 <= len({c.seq for c in refused}) <= 3, len({c.seq for c in refused})
        audit = store.query_rows("SELECT day_idx, verdict, endpoint FROM audit_results")
        assert audit and all(verdict == "ok" for _, verdict, _ in audit), audit
        assert all("#1" in endpoint for _, _, endpoint in audit), audit  # recounted on the healthy endpoint
        assert "event=parked" in logs_text(data_dir)
    finally:
        stop_server(data_dir)


@pytest.mark.parametrize(
    "limits",
    [
        {"refuse_batches": True},
        {"refuse_batches": "BATCH_OFF_JSON"},
        {"max_batch": 10},
        {"max_batch": 10, "batch_refusal": "besu"},
    ],
    ids=["refuses-batches-text", "refuses-batches-json", "caps-at-10-geth", "caps-at-10-besu"],
)
def test_endpoints_that_refuse_or_cap_batches_give_exact_data(chain: Chain, tmp_path, limits):
    data_dir = tmp_path / "data"
    with RpcProxy(chain.url, **limits) as proxy:
        run, _ = whole_run(chain, data_dir, proxy.url, days=(4, chain.days - 1), BACKFILL_ON_COMPLETE="0")
        refused = [c for c in proxy.calls() if c.fault is not None and c.fault.startswith("BATCH")]
        served_batches = [c.batch_size for c in proxy.calls() if c.batch_size and c.fault is None]
    try:
        assert run.returncode == 0, run.stderr[-3000:]
        assert_exact(open_store(data_dir), chain)
        assert_no_traceback(data_dir, run)
        assert refused, "the endpoint was never asked for a batch it refuses"
        # the first process to meet the refusal learns it and the others read what it learnt: a few refused
        # requests in all, then every batch within the cap
        assert len({c.seq for c in refused}) <= 3, len({c.seq for c in refused})
        if "max_batch" in limits:  # and batches are still used where the endpoint takes them
            assert max(served_batches, default=0) >= 5, served_batches[:20]
    finally:
        stop_server(data_dir)


def test_planning_a_thousand_days_behind_batch_caps_and_a_budget_is_economical(tmp_path):
    """An hourly chain of 1,000 days; the endpoint takes 100 calls a batch and 100 calls/s (the budget binds: the
    plan and the copy together need a few thousand calls)."""
    genesis = 1_704_067_200 - 1800  # 2024-01-01 00:00 UTC - 30 min
    with Anvil(genesis_timestamp=genesis) as node:
        rpc(node.url, "anvil_mine", [hex(24 * 1001), hex(3600)])  # and the first hours of day 1,000
        with RpcProxy(node.url, max_batch=100, rate_limit_rps=100) as proxy:
            data_dir = tmp_path / "data"
            run = backfill(
                ["start", "--foreground", "--from", "2024-01-01", "--to", "2026-09-26", "--confirmations", "0"],
                data_dir,
                rpc_urls=proxy.url,
                shards=2,
                extra_env={"BACKFILL_ON_COMPLETE": "0"},
                timeout=600,
            )
            calls = proxy.calls()
    try:
        assert run.returncode == 0, run.stderr[-3000:]
        store = open_store(data_dir)
        days = store.read_plan()
        assert len(days) == 1000 and all(cp["status"] == "COMPLETE" for cp in store.checkpoints().values())
        assert len(calls) <= 5 * len(days), len(calls)
        refused = [c for c in calls if c.fault is not None and c.fault.startswith("BATCH")]
        assert len({c.seq for c in refused}) <= 1, "a refused batch after the first"
        assert_no_traceback(data_dir, run)
    finally:
        stop_server(data_dir)


def test_a_budget_too_small_for_anything_still_makes_progress_shows_the_wait_and_stops(chain: Chain, tmp_path):
    data_dir = tmp_path / "data"
    with RpcProxy(chain.url, rate_limit_rps=1) as proxy:
        # the last two days: the lag guard's header checks near the head alone take minutes at 1 call/s
        started = backfill(
            ["start", "--from", chain.day(chain.days - 2), "--to", chain.day(chain.days - 1), "--confirmations", "0"],
            data_dir,
            rpc_urls=proxy.url,
            shards=1,
            extra_env={"BACKFILL_STALL_S": "20", "BACKFILL_ON_COMPLETE": "0", "BACKFILL_WINDOW_BLOCKS": "2000"},
            timeout=300,
        )  # checkpoints every 1,000 blocks
        assert started.returncode == 0, started.stderr
        try:

            def waiting() -> dict | None:
                status = backfill(["status", "--json"], data_dir, rpc_urls=proxy.url)
                doc = json.loads(status.stdout) if status.returncode == 0 else {}
                eps = (doc.get("rpc") or {}).get("endpoints") or []
                progress = doc.get("days_complete", 0) >= 1  # the empty day before the last one is done
                return doc if progress and any(e.get("waits") for e in eps) else None

            doc = wait_for(waiting, 150, "progress, and status showing the wait for the endpoint's budget", 2.0)
            assert doc["supervisor"]["alive"]
            text = backfill(["status"], data_dir, rpc_urls=proxy.url).stdout
            assert "budget" in text, text
            assert proxy.calls_per_second_max() <= 2
        finally:
            stopped = backfill(["stop"], data_dir, rpc_urls=proxy.url, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        state = wait_run_finished(data_dir, timeout=60)
        assert state.get("phase") == "stopped", state
    try:
        assert_no_traceback(data_dir, started, stopped)
        status = backfill(["status"], data_dir, rpc_urls=chain.url)
        assert "not running" in status.stdout
    finally:
        stop_server(data_dir)
