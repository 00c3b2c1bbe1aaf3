"""End to end on a real anvil chain and the real ClickHouse engine: `backfill start` copies every transfer exactly."""

from __future__ import annotations

import subprocess

import pytest

from backfill.decode.decoder import decode_logs
from backfill.decode.reference import reference_rows
from tests.integration.harness import Chain, backfill, open_store, store_rows
from tests.support.oracle import oracle_rows
from tests.support.truth import ground_truth

pytestmark = pytest.mark.slow


def test_three_shards_copy_every_transfer_exactly(chain: Chain, data_dir, finished_run):
    result, store = finished_run
    # the planner is held to the devnet's own record of which blocks it mined into which UTC day (and the run,
    # anchored at the chain's first day, numbers the days as the devnet does)
    plan = {p.day.isoformat(): (p.day_idx, p.start_block, p.end_block) for p in store.read_plan()}
    assert plan == {d["date"]: (d["day_idx"], d["first_block"], d["last_block"]) for d in chain.day_blocks()}
    truth = ground_truth(chain.url, chain.day_blocks())
    assert len(truth.erc20) + len(truth.erc1155) >= 20_000
    # on the chain's own logs, the product's two decoders read what the tests' oracle reads
    oracle = oracle_rows(truth.logs)
    audit_reading = reference_rows(truth.logs)
    worker_reading = decode_logs(truth.logs)
    assert (sorted(audit_reading[0]), sorted(audit_reading[1]), audit_reading[2]) == (
        sorted(oracle[0]),
        sorted(oracle[1]),
        oracle[2],
    )
    assert (
        sorted(worker_reading.erc20),
        sorted(worker_reading.erc1155),
        len(worker_reading.quarantined) + worker_reading.skipped,
    ) == (sorted(oracle[0]), sorted(oracle[1]), oracle[2])

    erc20, erc1155 = store_rows(store)
    assert len(erc20) == len(set(erc20)), "duplicates after FINAL"
    assert len(erc1155) == len(set(erc1155)), "duplicates after FINAL"
    assert set(erc20) - truth.erc20 == set(), "extra ERC-20 rows"
    assert truth.erc20 - set(erc20) == set(), "missing ERC-20 rows"
    assert set(erc1155) - truth.erc1155 == set(), "extra ERC-1155 rows"
    assert truth.erc1155 - set(erc1155) == set(), "missing ERC-1155 rows"

    checkpoints = store.checkpoints()
    assert {d: cp["status"] for d, cp in checkpoints.items()} == {d: "COMPLETE" for d in truth.per_day}
    assert {d: (cp["erc20_count"], cp["erc1155_count"]) for d, cp in checkpoints.items()} == truth.per_day
    # every non-standard log under our topics is either skipped (ERC-721) or quarantined with a reason
    quarantined = store.scalar("SELECT count() FROM transfer_quarantine FINAL")
    skipped = sum(cp["skipped_count"] for cp in checkpoints.values())
    assert quarantined + skipped == truth.rejected and quarantined > 0 and skipped > 0
    assert store.scalar("SELECT countIf(reason = '') FROM transfer_quarantine") == 0
    # the three workers were started while the command planned (monitor/warm.py), and wrote the copy above
    spawns = [
        line for line in (data_dir / "backfill" / "monitor.log").read_text().splitlines() if "event=spawn" in line
    ]
    assert len(spawns) == 3 and all("started=warm" in line for line in spawns), spawns


def test_second_run_changes_nothing_and_runbook_queries_are_true(chain: Chain, data_dir, finished_run):
    _, store = finished_run
    before = {
        t: store.scalar(f"SELECT count() FROM {t}")
        for t in ("erc20_transfers_staging", "erc1155_transfers_staging", "block_timestamps", "backfill_checkpoint")
    }
    again = backfill(
        ["start", "--foreground", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
        data_dir,
        chain,
        shards=3,
    )
    assert again.returncode == 0, again.stderr
    after = {t: store.scalar(f"SELECT count() FROM {t}") for t in before}
    assert after == before, "a second run must not fetch or write COMPLETE days again"
    # the operators' runbook queries, as written
    assert store.scalar("SELECT countIf(status='COMPLETE') FROM backfill_checkpoint") == chain.days
    assert store.scalar("SELECT count() - uniqExact(tuple(tx_hash, log_index)) FROM erc20_transfers_staging FINAL") == 0
    assert (
        store.scalar(
            "SELECT count() - uniqExact(tuple(tx_hash, log_index, batch_index)) FROM erc1155_transfers_staging FINAL"
        )
        == 0
    )
    assert store.scalar("SELECT countIf(block_timestamp = 0) FROM erc20_transfers_staging") == 0
    assert store.scalar("SELECT countIf(length(tx_hash) != 66) FROM erc20_transfers_staging") == 0
    assert (
        store.scalar(
            "SELECT countIf(length(from_address) != 42 OR length(to_address) != 42) FROM erc1155_transfers_staging"
        )
        == 0
    )
    assert store.scalar("SELECT countIf(status = 'COMPLETE') FROM backfill_progress") == chain.days


def test_headers_give_the_same_answer_when_logs_lack_timestamps(chain: Chain, tmp_path_factory):
    """Nodes without `blockTimestamp` in logs: timestamps come from batched header calls, with the same result."""
    data_dir = tmp_path_factory.mktemp("noblockts")
    try:
        two_days = [chain.first_day, chain.day(1)]
        run = backfill(
            ["start", "--foreground", "--from", two_days[0], "--to", two_days[1], "--confirmations", "0"],
            data_dir,
            chain,
            shards=2,
            extra_env={"BACKFILL_USE_LOG_TIMESTAMPS": "0"},
        )
        assert run.returncode == 0, run.stderr
        store = open_store(data_dir)
        truth = ground_truth(chain.url, chain.day_blocks(two_days))
        erc20, erc1155 = store_rows(store)
        assert set(erc20) == truth.erc20 and set(erc1155) == truth.erc1155
        assert len(erc20) == len(truth.erc20)
    finally:
        from backfill.store.embedded import stop_server

        stop_server(data_dir)


def test_embedded_store_answers_curl_while_workers_write(chain: Chain, run_dir):
    """Several worker processes write through the HTTP endpoint while an outside client reads: curl sees the table
    grow while the run is going (a provider answering every eth_getLogs 1 s late keeps it going)."""
    from backfill import control
    from backfill.store.embedded import read_credential, server_url
    from tests.integration.harness import wait_for, wait_run_finished
    from tests.support.proxy import Fault, RpcProxy

    def count() -> int:
        """Rows of the staging table as curl sees them; 0 until the store answers."""
        url, credential = server_url(run_dir), read_credential(run_dir)
        if not (url and credential):
            return 0
        out = subprocess.run(
            [
                "curl",
                "-s",
                "-f",
                "-u",
                f"{credential.user}:{credential.password}",
                f"{url}/?query=SELECT%20count()%20FROM%20backfill.erc20_transfers_staging",
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            return 0
        assert out.stdout.strip().isdigit(), out.stdout
        return int(out.stdout)

    with RpcProxy(chain.url, Fault("TIMEOUT", delay_s=1.0)) as rpc:
        run = backfill(
            ["start", "--from", chain.first_day, "--to", chain.day(4), "--confirmations", "0"],
            run_dir,
            rpc_urls=rpc.url,
            shards=3,
            extra_env={"BACKFILL_WINDOW_BLOCKS": "300", "BACKFILL_ON_COMPLETE": "0"},
        )
        assert run.returncode == 0, run.stderr
        first = wait_for(count, 120, "curl to see the first rows", interval=0.2)
        wait_for(lambda: count() > first, 120, "curl to see the table grow", interval=0.2)
        assert control.running_supervisor(run_dir / "backfill"), "curl should see the table grow during the run"
        rpc.set_faults([])
        state = wait_run_finished(run_dir)
    assert state["phase"] == "complete", state
    assert count() > first


def test_dense_windows_write_rows_ahead_of_the_checkpoint_and_stay_exact(chain: Chain, tmp_path_factory):
    """Memory is bounded by batch_rows: rows leave a window before its checkpoint, counts stay exact."""
    from tests.integration.harness import assert_exact

    data_dir = tmp_path_factory.mktemp("dense")
    try:
        run = backfill(
            ["start", "--foreground", "--from", chain.day(4), "--to", chain.day(6), "--confirmations", "0"],
            data_dir,
            chain,
            shards=1,
            extra_env={"BACKFILL_BATCH_ROWS": "1000", "BACKFILL_ON_COMPLETE": "0"},
        )
        assert run.returncode == 0, run.stderr
        assert "event=flush" in (data_dir / "backfill" / "worker-0.log").read_text()
        assert_exact(open_store(data_dir), chain)
    finally:
        from backfill.store.embedded import stop_server

        stop_server(data_dir)


def test_a_later_to_alone_plans_and_copies_the_new_days(chain: Chain, tmp_path_factory):
    """A run over the first days, then `start --to <a later day>` without --from: the new days are planned and
    copied (they were once left out while the run said "complete"), exactly as the chain has them."""
    data_dir = tmp_path_factory.mktemp("later_to")
    try:
        first = backfill(
            ["start", "--foreground", "--from", chain.first_day, "--to", chain.day(1), "--confirmations", "0"],
            data_dir,
            chain,
            shards=2,
        )
        assert first.returncode == 0, first.stderr
        later = backfill(
            ["start", "--foreground", "--to", chain.day(3), "--confirmations", "0"], data_dir, chain, shards=2
        )
        assert later.returncode == 0, later.stderr
        store = open_store(data_dir)
        planned = sorted(p.day.isoformat() for p in store.read_plan())
        assert planned == [chain.day(i) for i in range(4)]
        truth = ground_truth(chain.url, chain.day_blocks(planned))
        erc20, erc1155 = store_rows(store)
        assert set(erc20) == truth.erc20 and set(erc1155) == truth.erc1155
        assert len(erc20) == len(truth.erc20) and len(erc1155) == len(truth.erc1155)
    finally:
        from backfill.store.embedded import stop_server

        stop_server(data_dir)
