"""The on-complete rebuild: a clean run rebuilds, passes, promotes and can be rolled back; a damaged run stops
before anything replaces production; the operators' runbook queries give true answers."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from tests.integration import damage
from tests.integration.harness import Chain, backfill, open_store
from tests.support.truth import ground_truth

pytestmark = pytest.mark.slow

M = 2**256


def signed(v: int) -> int:
    v %= M
    return v - M if v >= M // 2 else v


def expected_balances(truth) -> tuple[dict, dict]:
    erc20: dict = defaultdict(int)
    for _bn, _ts, _tx, _li, token, frm, to, value in truth.erc20:
        erc20[(token, to)] += value
        erc20[(token, frm)] -= value
    erc1155: dict = defaultdict(int)
    for _bn, _ts, _tx, _li, _bi, token, _op, frm, to, token_id, value in truth.erc1155:
        erc1155[(token, token_id, to)] += value
        erc1155[(token, token_id, frm)] -= value
    return {k: signed(v) for k, v in erc20.items()}, {k: signed(v) for k, v in erc1155.items()}


def checksum(store, table: str) -> tuple[int, int]:
    n, h = store.query_rows(f"SELECT count(), sum(toUInt128(cityHash64(*))) FROM {table}")[0]
    return int(n), int(h or 0)


def snapshots(data_dir) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(data_dir.glob("post_rebuild_snapshot_*.json"))]


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    yield path
    from backfill.store.embedded import stop_server

    stop_server(path)


def test_clean_run_rebuilds_promotes_and_rolls_back(chain: Chain, data_dir):
    sql_dir = data_dir / "rebuild.d"
    sql_dir.mkdir(parents=True)
    (sql_dir / "10_top_holders.sql").write_text(
        "-- the operator's own step\nDROP TABLE IF EXISTS top_holders;\n"
        "CREATE TABLE top_holders ENGINE = MergeTree ORDER BY tuple() AS\n"
        "SELECT token_address, wallet, balance FROM erc20_balances WHERE balance > 0 ORDER BY balance DESC LIMIT 10;\n"
    )
    first = backfill(
        ["start", "--foreground", "--promote", "--from", chain.day(0), "--to", chain.day(4), "--confirmations", "0"],
        data_dir,
        chain,
        shards=2,
    )
    assert first.returncode == 0, first.stderr
    store = open_store(data_dir)
    (snap1,) = snapshots(data_dir)
    assert snap1["status"] == "ok" and snap1["promote"] is True
    assert snap1["gates"]["passed"] and snap1["audit"]["passed"]
    assert list(snap1["durations_s"]) == ["dedup", "fingerprints", "audit", "gates", "derived", "promote"]
    production_v1 = checksum(store, "erc20_transfers"), checksum(store, "erc1155_transfers")
    assert production_v1[0][0] == store.scalar("SELECT count() FROM erc20_transfers_staging FINAL")

    # the rest of the days land: the rebuild runs again, promotes, and keeps the first production as a backup
    second = backfill(
        ["start", "--foreground", "--promote", "--from", chain.day(0), "--to", chain.day(9), "--confirmations", "0"],
        data_dir,
        chain,
        shards=2,
    )
    assert second.returncode == 0, second.stderr
    snaps = snapshots(data_dir)
    assert len(snaps) == 2 and snaps[1]["status"] == "ok"
    # the days 0..4 promoted before are unchanged: only the new days' rows are written
    assert {t["mode"] for t in snaps[1]["promotion"]["tables"]} == {"append"}, snaps[1]["promotion"]
    truth = ground_truth(chain.url, chain.day_blocks())
    assert store.scalar("SELECT count() FROM erc20_transfers") == len(truth.erc20)
    assert store.scalar("SELECT count() FROM erc1155_transfers") == len(truth.erc1155)

    # derived tables and the operator's step
    want20, want1155 = expected_balances(truth)
    got20 = {
        (t, w): int(b) for t, w, b in store.query_rows("SELECT token_address, wallet, balance FROM erc20_balances")
    }
    got1155 = {
        (t, int(i), w): int(b)
        for t, i, w, b in store.query_rows("SELECT token_address, token_id, wallet, balance FROM erc1155_balances")
    }
    assert got20 == want20
    assert got1155 == want1155
    assert store.scalar("SELECT count() FROM top_holders") == 10

    # the runbook queries, as written, give true answers
    assert store.scalar("SELECT countIf(status='COMPLETE') FROM backfill_checkpoint") == 10
    for table, key in (
        ("erc20_transfers_staging", "tx_hash, log_index"),
        ("erc1155_transfers_staging", "tx_hash, log_index, batch_index"),
    ):
        assert store.scalar(f"SELECT count() - uniqExact(tuple({key})) FROM {table} FINAL") == 0
        assert store.scalar(f"SELECT count() FROM {table} WHERE toUnixTimestamp(block_timestamp) = 0") == 0
        assert store.scalar(f"SELECT count() FROM {table} WHERE length(tx_hash) != 66") == 0
        assert store.scalar(f"SELECT count() FROM {table}") == store.scalar(f"SELECT count() FROM {table} FINAL")

    # rollback restores the first production row for row
    rollback = backfill(["rollback"], data_dir, chain)
    assert rollback.returncode == 0, rollback.stderr
    assert (checksum(store, "erc20_transfers"), checksum(store, "erc1155_transfers")) == production_v1

    # promoting again keeps a second backup generation until pruned
    promote = backfill(["promote"], data_dir, chain)
    assert promote.returncode == 0, promote.stdout + promote.stderr
    listed = backfill(["backups", "list", "--json"], data_dir, chain)
    assert listed.returncode == 0, listed.stderr
    backups = json.loads(listed.stdout)
    assert len({b["table"] for b in backups if b["table"].startswith("erc20_transfers_backup_")}) == 2
    pruned = backfill(["backups", "prune", "--older-than", "0d"], data_dir, chain)
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(backfill(["backups", "list", "--json"], data_dir, chain).stdout) == []
    store.close()


@pytest.mark.parametrize(
    "corruption, audit_sample, step",
    [
        ("delete_rows", 10, "audit"),  # the audit recounts every day: it finds the loss first
        ("delete_rows", 0, "gates"),  # no audit: the coverage gate sees counts below the checkpoint's
        ("zero_timestamps", 0, "gates"),
        ("same_version_duplicate", 0, "dedup"),
        ("malformed_address", 0, "gates"),
    ],
)
def test_damaged_run_stops_before_promotion(chain: Chain, run_copy, corruption: str, audit_sample: int, step: str):
    store = open_store(run_copy)
    from backfill.store.fingerprints import record_fingerprints

    record_fingerprints(store)  # as the supervisor did while the run went on
    plan = store.read_plan()[6]
    getattr(damage, corruption)(store, plan)
    result = backfill(["rebuild", "--promote"], run_copy, chain, extra_env={"BACKFILL_AUDIT_SAMPLE": str(audit_sample)})
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: rebuild stopped at step"), result.stderr
    assert f"step {step}" in lines[0] and str(plan.day) in lines[0], lines[0]
    assert "production is unchanged" in lines[0]
    tables = {r[0] for r in store.query_rows("SELECT name FROM system.tables WHERE database = currentDatabase()")}
    assert "erc20_transfers" not in tables and "erc1155_transfers" not in tables
    # the derived tables built beside the audit were never swapped in, and nothing of them is left behind
    assert not {t for t in tables if t.endswith("_balances") or t.endswith("_next")}, tables
    (snap,) = snapshots(run_copy)
    assert snap["status"] == "failed" and snap["failed_step"] == step
    log = (run_copy / "backfill" / "on-complete.log").read_text()
    assert "action=stop_pipeline" in log and "step=promote event=start" not in log


def test_status_shows_the_latest_gates_and_audit_verdicts(chain: Chain, run_copy):
    store = open_store(run_copy)
    damage.malformed_address(store, store.read_plan()[6])
    assert backfill(["gates", "--strict"], run_copy, chain).returncode == 1
    assert backfill(["verify", "--days", chain.day(1)], run_copy, chain).returncode == 0
    out = backfill(["status", "--json"], run_copy)
    assert out.returncode == 0, out.stderr
    quality = json.loads(out.stdout)["quality"]
    assert quality["gates"]["level"] == "strict" and 6 in quality["gates"]["failed"]["malformed"]
    assert quality["audit"] == {"run_at": quality["audit"]["run_at"], "days": 1, "not_ok": [], "not_ok_dates": []}
    assert quality["gates"]["failed_dates"]["malformed"][quality["gates"]["failed"]["malformed"].index(6)] == chain.day(
        6
    )
    text = backfill(["status"], run_copy)
    assert "gates (strict" in text.stdout and "FAIL" in text.stdout and "malformed" in text.stdout
    assert "1 days recounted, all match the chain" in text.stdout
