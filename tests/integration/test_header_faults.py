"""Header calls (eth_getBlockByNumber, eth_blockNumber) and JSON-RPC batches failing during a real run.

The run reads every block's timestamp from its header (BACKFILL_USE_LOG_TIMESTAMPS=0), so the worker's header
batches, not only the planner's, meet the faults. Faults are placed at given calls, not at a rate: a dry run
through the same proxy counts the calls planning makes, and the faults hit calls after those, which only the
workers make; the copy must still equal the chain, and the failures must show in the logs and in status.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backfill.store.embedded import stop_server
from tests.integration.harness import Chain, assert_exact, backfill, open_store
from tests.support.proxy import Fault, RpcProxy

pytestmark = pytest.mark.slow
DAYS = (0, 1)
ENV = {"BACKFILL_USE_LOG_TIMESTAMPS": "0", "BACKFILL_RPC_TIMEOUT_S": "1", "BACKFILL_ON_COMPLETE": "0"}


def _range(chain: Chain) -> list[str]:
    return ["--from", chain.day(DAYS[0]), "--to", chain.day(DAYS[-1]), "--confirmations", "0"]


def _logs_text(data_dir: Path) -> str:
    """Every log and captured stderr of the run's processes."""
    files = [p for p in (data_dir / "backfill").rglob("*") if p.suffix in (".log", ".stderr") and p.is_file()]
    return "\n".join(p.read_text(errors="replace") for p in sorted(files))


def test_header_and_batch_faults_during_a_run_leave_the_copy_exact_and_visible(chain: Chain, tmp_path: Path):
    data_dir = tmp_path / "data"
    with RpcProxy(chain.url, seed=1) as proxy:
        # planning makes the same calls in a dry run: what it counts, the faults below come after
        dry = backfill(["start", "--dry-run", *_range(chain)], tmp_path / "dry", rpc_urls=proxy.url, extra_env=ENV)
        assert dry.returncode == 0, dry.stderr
        planned_headers, planned_batches = proxy.received("eth_getBlockByNumber"), proxy.received("batch")
        assert planned_headers > 0 and proxy.received("eth_blockNumber") == 1
        proxy.reset()
        # +1 each: the start's survey is one batch (chain id, genesis header, head), which the HTTP503 below
        # refuses once, so the run sends it twice where the dry run sent it once
        h, b = planned_headers + 1, planned_batches + 1
        headers = {"eth_getBlockByNumber"}
        proxy.set_faults(
            [
                Fault("HTTP503", methods={"eth_blockNumber"}, at={1}),  # the start's survey (one batch with the head)
                Fault("TIMEOUT", methods={"eth_blockNumber"}, at={3}, delay_s=2.5),  # the worker's first look
                Fault("I7", methods=headers, batch="items", at={h + 3, h + 45}),  # one header of a batch missing
                Fault("TIMEOUT", methods=headers, at={h + 12}, delay_s=2.5),  # a header batch unanswered in time
                Fault("HTTP503", methods=headers, at={h + 25}),
                Fault("I7", methods=headers, at={h + 60}),  # a whole batch answered "header not found"
                Fault("I2", methods={"batch"}, at={b + 2}),  # a whole batch refused with one error object
                Fault("BATCH_ORDER", methods={"batch"}),  # and every batch answered out of order
            ]
        )
        run = backfill(
            ["start", "--foreground", *_range(chain)],
            data_dir,
            rpc_urls=proxy.url,
            shards=1,
            extra_env=ENV,
            timeout=300,
        )
        counts = proxy.fault_counts()
        late = {c.fault for c in proxy.calls() if c.method == "eth_getBlockByNumber" and c.nth > h}
        status = backfill(["status", "--json"], data_dir, rpc_urls=proxy.url)
    try:
        assert run.returncode == 0, run.stderr
        assert_exact(open_store(data_dir), chain)
        assert {"HTTP503", "TIMEOUT", "I7", "I2", "BATCH_ORDER"} <= set(counts), counts
        # the worker's header calls got them (a slow header batch may be cut differently from the dry run's, so
        # its timeout can land on the planner's calls instead: the worker's timeouts are shown by its log below)
        assert {"HTTP503", "I7", "I2"} <= late, "meant for the worker's header calls"
        # visible: each failure a retry line of its process, with its reason, and counted in status
        logs = _logs_text(data_dir)
        worker_log = (data_dir / "backfill" / "worker-0.log").read_text()
        worker_retries = [line for line in worker_log.splitlines() if "event=retry" in line]
        reasons = " ".join(worker_retries)
        for reason in ("header not found", "query timeout exceeded", "HTTP 503", "timeout after 1s"):
            assert reason in reasons, (reason, worker_retries)
        survey = [line for line in logs.splitlines() if "event=retry" in line and "eth_blockNumber" in line]
        assert any("HTTP 503" in line for line in survey), "the start's failed survey unlogged"
        report = json.loads(status.stdout)
        assert report["days_complete"] == len(DAYS) and report["days_failed"] == 0
        assert report["rpc"]["errors"] >= 6, report["rpc"]
        for text in (run.stdout, run.stderr, status.stdout, status.stderr, logs):
            assert "Traceback" not in text
    finally:
        stop_server(data_dir)


def test_guard_batches_with_a_failing_item_and_out_of_order_answers_leave_the_head_day_exact(
    chain: Chain, tmp_path: Path
):
    """Near the head eth_blockNumber rides in one batch with eth_getLogs (the lag guard), and the answer is
    checked against headers: an item of those batches erring, every batch answered out of order."""
    data_dir, last = tmp_path / "data", chain.days - 1
    args = ["--from", chain.day(last), "--to", chain.day(last), "--confirmations", "0"]
    # the whole day in the guard's region, in ranges small enough for a dozen batches
    env = {
        "BACKFILL_RPC_TIMEOUT_S": "1",
        "BACKFILL_ON_COMPLETE": "0",
        "BACKFILL_LAG_GUARD_BLOCKS": "3000",
        "BACKFILL_GETLOGS_BLOCKS": "100",
        "BACKFILL_GETLOGS_ANSWER_LOGS": "200",
    }
    with RpcProxy(chain.url, seed=2) as proxy:
        dry = backfill(["start", "--dry-run", *args], tmp_path / "dry", rpc_urls=proxy.url, extra_env=env)
        assert dry.returncode == 0, dry.stderr
        q = proxy.received("eth_blockNumber") + 1  # planning's, and the worker's first look at the heads
        # (from there on each eth_blockNumber rides in a guard batch)
        assert proxy.received("eth_getLogs") == 0
        proxy.reset()
        proxy.set_faults(
            [
                Fault("I7", methods={"eth_blockNumber"}, batch="items", at={q + 2, q + 5}),  # the head item errs
                Fault("I2", methods={"eth_getLogs"}, batch="items", at={4, 8}),  # the logs item errs
                Fault("BATCH_ORDER", methods={"batch"}),
            ]
        )
        run = backfill(
            ["start", "--foreground", *args], data_dir, rpc_urls=proxy.url, shards=1, extra_env=env, timeout=300
        )
        counts = proxy.fault_counts()
        in_batches = {c.fault for c in proxy.calls() if c.batch_size == 2 and c.fault not in (None, "BATCH_ORDER")}
    try:
        assert run.returncode == 0, run.stderr
        assert_exact(open_store(data_dir), chain)
        assert counts["I7"] >= 2 and counts["I2"] >= 2 and counts["BATCH_ORDER"] > 0, counts
        assert in_batches == {"I7", "I2"}, "the items were meant to fail inside the guard's batches"
        worker_log = (data_dir / "backfill" / "worker-0.log").read_text()
        retries = " ".join(line for line in worker_log.splitlines() if "event=retry" in line)
        assert "header not found" in retries and "query timeout exceeded" in retries, retries
        for text in (run.stdout, run.stderr, _logs_text(data_dir)):
            assert "Traceback" not in text
    finally:
        stop_server(data_dir)
