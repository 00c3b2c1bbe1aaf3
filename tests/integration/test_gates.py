"""Quality gates on a finished run: the clean run passes strict once its empty days are audited, and each
corruption injected into it is caught by the gate meant for it, naming the day."""

from __future__ import annotations

import datetime as dt
import json

from backfill.settings import load_settings
from backfill.store import digest, schema
from backfill.store.client import Store, now_utc
from backfill.store.fingerprints import record_fingerprints
from monitor.gates.judge import run_gates
from tests.integration.harness import backfill, open_store

EMPTY_DAYS = [2, 8]  # the test chain has no transfers at all on these days


def settings_of(data_dir):
    return load_settings({"data_dir": data_dir}, env={}, toml_path=data_dir / "none.toml")


def audit_ok(store: Store, days: list[int]) -> None:
    """Stand for `backfill verify`: an audit that recounted these days from RPC and agreed."""
    plan = {p.day_idx: p.day for p in store.read_plan()}
    store.insert(
        "audit_results",
        [
            (
                "test-audit",
                now_utc(),
                d,
                plan[d],
                "anvil#0",
                "ok",
                0,
                0,
                0,
                0,
                0,
                0,
                "0" * 32,
                "0" * 32,
                "0" * 32,
                "",
                "",
            )
            for d in days
        ],
        schema.AUDIT_COLUMNS,
    )


def span(store: Store, day_idx: int) -> tuple[int, int]:
    p = next(p for p in store.read_plan() if p.day_idx == day_idx)
    return p.start_block, p.end_block


def by_gate(report) -> dict:
    return {r.gate: r for r in report.results}


def test_clean_run_passes_strict_once_its_empty_days_are_audited(run_copy, chain):
    store = open_store(run_copy)
    settings = settings_of(run_copy)

    strict = run_gates(store, settings, "strict", record=False)
    assert strict.failed_days() == {"empty_days": EMPTY_DAYS}, strict.lines()
    assert all(r.verdict == "pass" for r in strict.results if r.gate != "empty_days"), strict.lines()
    empty = by_gate(strict)["empty_days"]
    assert chain.day(2) in empty.detail and chain.day(8) in empty.detail
    # the Weird contract's malformed logs are quarantined, well under the strict share
    assert 0 < by_gate(strict)["quarantine"].value < by_gate(strict)["quarantine"].threshold

    relaxed = run_gates(store, settings, "relaxed", record=False)
    assert relaxed.passed and by_gate(relaxed)["empty_days"].verdict == "warn", relaxed.lines()

    audit_ok(store, EMPTY_DAYS)
    assert run_gates(store, settings, "strict", record=False).passed
    result = backfill(["gates", "--strict"], run_copy, chain)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "strict gates passed" in result.stdout


def damage(store: Store, genesis: int) -> None:
    """One corruption per day (days 2 and 8 stay empty), each meant for one gate."""
    cmd = store.client.command
    e20, e1155 = "erc20_transfers_staging", "erc1155_transfers_staging"

    def copy(select: str, replace: str, table: str) -> None:
        """Insert changed copies of the rows `select` picks (picked first: REPLACE's aliases would leak into
        the WHERE of the same SELECT)."""
        before = int(store.scalar(f"SELECT count() FROM {table}"))
        cmd(f"INSERT INTO {table} SELECT * REPLACE ({replace}) FROM ({select})")
        assert int(store.scalar(f"SELECT count() FROM {table}")) > before, select

    # day 1 -> coverage: rows deleted inside the day (one block's ERC-20 transfers)
    a, b = span(store, 1)
    block = store.scalar(f"SELECT min(block_number) FROM {e20} WHERE block_number BETWEEN {a} AND {b}")
    cmd(f"ALTER TABLE {e20} DELETE WHERE block_number = {block} SETTINGS mutations_sync = 2")
    # day 3 -> timestamps (and coverage, by the hash): newer-version copies of the day's rows with timestamp 0
    a, b = span(store, 3)
    copy(
        f"SELECT * FROM {e20} WHERE block_number BETWEEN {a} AND {b}",
        "toDateTime(0, 'UTC') AS block_timestamp, _version + 1 AS _version",
        e20,
    )
    # day 4 -> duplicates: a second row for one key at the same _version with another value (ambiguous);
    # day 0: an exact copy at the same _version (harmless)
    for day, change in ((4, "value + 1 AS value"), (0, "value AS value")):
        a, b = span(store, day)
        copy(
            f"SELECT * FROM {e20} WHERE block_number BETWEEN {a} AND {b} ORDER BY block_number, log_index LIMIT 1",
            change,
            e20,
        )
    # day 5 -> duplicates: a row's key (tx_hash, log_index) copied under another block of the day (with that
    # block's timestamp): FINAL keeps both
    a, b = span(store, 5)
    block, li = store.query_rows(
        f"SELECT block_number, log_index FROM {e20} WHERE block_number BETWEEN {a} AND {b} "
        f"ORDER BY log_index DESC LIMIT 1"
    )[0]
    other = store.scalar(
        f"SELECT block_number FROM {e20} WHERE block_number BETWEEN {a} AND {b} "
        f"GROUP BY block_number HAVING max(log_index) < {li} ORDER BY block_number LIMIT 1"
    )
    copy(
        f"SELECT * FROM {e20} WHERE block_number = {block} AND log_index = {li}",
        f"{other} AS block_number, (SELECT timestamp FROM block_timestamps FINAL WHERE block_number = {other}) "
        f"AS block_timestamp",
        e20,
    )
    # day 6 -> malformed: a newer-version copy of one ERC-1155 row with an uppercase from_address
    a, b = span(store, 6)
    copy(
        f"SELECT * FROM {e1155} WHERE block_number BETWEEN {a} AND {b} AND match(from_address, '[a-f]') "
        f"ORDER BY block_number, log_index, batch_index LIMIT 1",
        "concat('0x', upper(substring(from_address, 3))) AS from_address, _version + 1 AS _version",
        e1155,
    )
    # day 7 -> missing_timestamps: the block_timestamps row of a block with transfers removed
    a, b = span(store, 7)
    block = store.scalar(f"SELECT max(block_number) FROM {e20} WHERE block_number BETWEEN {a} AND {b}")
    cmd(f"ALTER TABLE block_timestamps DELETE WHERE block_number = {block} SETTINGS mutations_sync = 2")
    # day 9 -> timestamps and malformed: one block re-timed before genesis (so outside its day and earlier
    # than the block before), with an uppercase block_hash
    a, b = span(store, 9)
    block = store.scalar(f"SELECT max(block_number) FROM block_timestamps WHERE block_number BETWEEN {a} AND {b}")
    cmd(
        f"INSERT INTO block_timestamps SELECT block_number, upper(block_hash), toDateTime({genesis - 100}, 'UTC') "
        f"FROM block_timestamps FINAL WHERE block_number = {block}"
    )
    # day 0 -> quarantine: a burst of quarantined logs (over 1 % of the day's logs, under 5 %)
    a, _ = span(store, 0)
    store.insert(
        "transfer_quarantine",
        [
            (a, 100_000 + i, "0x" + "ab" * 32, "0x" + "cd" * 20, ["0x" + "ef" * 32], "0x", "test burst", 0, 1)
            for i in range(100)
        ],
        schema.QUARANTINE_COLUMNS,
    )


def test_each_corruption_is_caught_by_its_gate_naming_the_day(run_copy, chain):
    store = open_store(run_copy)
    settings = settings_of(run_copy)
    record_fingerprints(store)  # the days as they completed; the damage comes after
    audit_ok(store, EMPTY_DAYS)
    genesis = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()) - 3600
    store.meta_set("genesis_timestamp", str(genesis))
    damage(store, genesis)

    report = run_gates(store, settings, "strict", source="test")
    gates = by_gate(report)
    assert not report.passed
    assert {1, 3, 5, 6} <= set(gates["coverage"].days) <= {1, 3, 4, 5, 6}, gates["coverage"].detail  # 4: dedup's pick
    assert f"{chain.day(1)}: store " in gates["coverage"].detail  # rows vs the checkpoint's counts
    duplicates = gates["duplicates"]
    assert duplicates.days == [4, 5] and "exact copies" in duplicates.detail, duplicates.detail
    assert f"same newest _version: 1 (at most 0 allowed) on {chain.day(4)}" in duplicates.detail, duplicates.detail
    assert f"sharing a key after FINAL: 2 (at most 0 allowed) on {chain.day(5)}" in duplicates.detail, duplicates.detail
    assert "erc20_transfers_staging 1" in duplicates.detail  # the runbook's count() - uniqExact(...)
    assert gates["timestamps"].days == [3, 9], gates["timestamps"].detail
    assert gates["malformed"].days == [6, 9] and "address" in gates["malformed"].detail, gates["malformed"].detail
    assert gates["missing_timestamps"].days == [7], gates["missing_timestamps"].detail
    assert gates["quarantine"].days == [0] and gates["quarantine"].verdict == "fail"
    assert gates["empty_days"].verdict == "pass"
    for gate in ("coverage", "duplicates", "timestamps", "malformed", "missing_timestamps"):
        assert gates[gate].verdict == "fail", gate
    assert report.failed_days()["timestamps"] == [3, 9]

    relaxed = by_gate(run_gates(store, settings, "relaxed", record=False))
    assert relaxed["quarantine"].verdict == "pass"  # 3 % is tolerated while backfilling, not before promotion
    assert relaxed["timestamps"].verdict == "fail" and relaxed["timestamps"].days == [3, 9]

    # recorded: one gate_results row per gate of the run, one gates.log line per gate
    rows = store.query_rows("SELECT gate, verdict, days FROM gate_results WHERE run_id = %(r)s", {"r": report.run_id})
    assert {r[0]: (r[1], list(r[2])) for r in rows}["missing_timestamps"] == ("fail", [7])
    assert len(rows) == 7
    log_lines = [
        line
        for line in (run_copy / "backfill" / "gates.log").read_text().splitlines()
        if f"run_id={report.run_id}" in line
    ]
    assert len(log_lines) == 7
    assert any("gate=duplicates verdict=fail" in line and "days=4,5 " in line for line in log_lines), log_lines

    # as a user: exit code 1, the damaged days named by date; --json parses
    result = backfill(["gates", "--strict"], run_copy, chain)
    assert result.returncode == 1, result.stdout + result.stderr
    for day in (1, 3, 4, 6, 7):
        assert chain.day(day) in result.stdout
    missing_line = next(line for line in result.stdout.splitlines() if line.startswith("FAIL missing_timestamps"))
    assert chain.day(7) in missing_line
    result = backfill(["gates", "--json"], run_copy, chain)
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["level"] == "relaxed" and doc["passed"] is False
    assert {g["gate"]: g["dates"] for g in doc["gates"]}["duplicates"] == [chain.day(4), chain.day(5)]
    assert store.scalar("SELECT uniqExact(run_id) FROM gate_results") == 3


def test_thresholds_come_from_backfill_toml_and_an_unknown_name_is_one_clear_error(run_copy, chain):
    toml = run_copy.parent / "backfill.toml"  # read from the working directory, as an operator keeps it
    toml.write_text("[gates.strict]\nquarantine_shar = 0.02\n")
    result = backfill(["gates", "--strict"], run_copy, chain)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error:") and "quarantine_share" in result.stderr
    assert "Traceback" not in result.stderr

    for share, verdict in (("0.002", "fail"), ("0.02", "pass")):  # the clean run's noisiest day is at 0.27 %
        toml.write_text(f"[gates.strict]\nquarantine_share = {share}\n")
        doc = json.loads(backfill(["gates", "--strict", "--json"], run_copy, chain).stdout)
        quarantine = {g["gate"]: g for g in doc["gates"]}["quarantine"]
        assert (quarantine["verdict"], quarantine["threshold"]) == (verdict, float(share))


def test_the_rebuilds_gates_take_what_dedup_and_the_fingerprints_read_and_read_every_other_day(run_copy, chain):
    """The rebuild hands its gates the days it fingerprinted and dedup's key counts, read moments before with no
    staging row written since: those are not read again, and every other day still is."""
    from monitor.dedup import dedup_range, full_range
    from monitor.gates.measure import Known, measure

    store = open_store(run_copy)
    settings = settings_of(run_copy)
    audit_ok(store, EMPTY_DAYS)
    dedup = dedup_range(store, *full_range(store))
    for table, counts in dedup.key_counts.items():  # what the gates' own scan of the whole table reads
        assert counts == tuple(int(v) for v in store.query_rows(digest.key_counts_sql(table))[0]), table
    assert set(dedup.key_counts) == set(digest.STAGING_TABLES)  # a clean copy: every key one raw row
    store.command("TRUNCATE TABLE day_fingerprints")
    fresh = record_fingerprints(store)  # the rebuild's fingerprints step: every day, as the store holds it now
    assert sorted(fresh) == list(range(chain.days))
    a, b = span(store, 3)  # then day 3 loses a block's rows: a day not handed over is read, and fails
    store.command(
        f"DELETE FROM erc20_transfers_staging WHERE block_number = (SELECT min(block_number) "
        f"FROM erc20_transfers_staging WHERE block_number BETWEEN {a} AND {b})"
    )
    known = Known(digests={d: t for d, t in fresh.items() if d != 3}, key_counts=dedup.key_counts)
    coverage = by_gate(run_gates(store, settings, "strict", record=False, measured=measure(store, known)))["coverage"]
    assert coverage.days == [3], coverage.detail
    rows, hash_ = fresh[1]["erc20_transfers_staging"]  # a day handed over is taken as given, not read again
    known.digests[1] = {**fresh[1], "erc20_transfers_staging": (rows + 1, hash_)}
    coverage = by_gate(run_gates(store, settings, "strict", record=False, measured=measure(store, known)))["coverage"]
    assert coverage.days == [1, 3], coverage.detail
