"""Promotion on a finished run's copy: verified backups, the swap, `_old`, rollback, backup generations and
pruning, a failure before the swap, and the fallback to RENAME where EXCHANGE is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backfill.settings import load_settings
from backfill.store.client import Store
from monitor.promote import checksum, list_backups, promote, rollback
from tests.integration.harness import backfill, open_store

PAIRS = {"erc20_transfers_staging": "erc20_transfers", "erc1155_transfers_staging": "erc1155_transfers"}
REDO_DAY = 3


def settings_of(data_dir: Path, **flags):
    return load_settings({"data_dir": data_dir, **flags}, env={}, toml_path=data_dir / "none.toml")


def rows(store: Store, table: str, final: bool = False) -> list[tuple]:
    """Every row of `table` (all columns), sorted: equal lists mean equal tables row for row."""
    return sorted(tuple(r) for r in store.query_rows(f"SELECT * FROM {table}{' FINAL' if final else ''}"))


def tables(store: Store) -> set[str]:
    return {r[0] for r in store.query_rows("SELECT name FROM system.tables WHERE database = currentDatabase()")}


def redo_one_day(store: Store, day_idx: int = REDO_DAY) -> None:
    """What a redo of one day writes: the same keys with a newer _version (here with another value)."""
    plan = {p.day_idx: p for p in store.read_plan()}[day_idx]
    for staging in PAIRS:
        cols = [
            r[0]
            for r in store.query_rows(
                "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = %(t)s ORDER BY position",
                {"t": staging},
            )
        ]
        select = ", ".join("value + 1" if c == "value" else "_version + 1" if c == "_version" else c for c in cols)
        store.client.command(
            f"INSERT INTO {staging} SELECT {select} FROM {staging} FINAL "
            f"WHERE block_number BETWEEN {plan.start_block} AND {plan.end_block}"
        )


def backups_json(data_dir: Path) -> list[dict]:
    result = backfill(["backups", "list", "--json"], data_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_error_line(result, *fragments: str) -> None:
    assert result.returncode != 0
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert "Traceback" not in result.stderr


def test_promote_then_rollback_restores_the_previous_production_row_for_row(run_copy, chain):
    store = open_store(run_copy)
    first = backfill(["promote", "--skip-gates"], run_copy, chain)
    assert first.returncode == 0, first.stderr
    assert "--skip-gates" in first.stderr and "NOT run" in first.stderr
    staged = {prod: rows(store, staging, final=True) for staging, prod in PAIRS.items()}
    for staging, prod in PAIRS.items():
        assert staged[prod] and rows(store, prod) == staged[prod]
        assert checksum(store, prod) == checksum(store, staging, final=True)
    first_sums = {prod: checksum(store, prod) for prod in PAIRS.values()}

    redo_one_day(store)
    second = backfill(["promote", "--skip-gates"], run_copy, chain)
    assert second.returncode == 0, second.stderr
    backups = backups_json(run_copy)
    assert sorted(b["production"] for b in backups) == sorted(PAIRS.values())
    for b in backups:  # a verified copy of the first production
        assert b["verified"] and (b["rows"], b["checksum"]) == first_sums[b["production"]]
        assert rows(store, b["table"]) == staged[b["production"]]
    for staging, prod in PAIRS.items():
        assert rows(store, prod) == rows(store, staging, final=True) != staged[prod]
        assert checksum(store, prod) == checksum(store, staging, final=True) != first_sums[prod]
        assert rows(store, f"{prod}_old") == staged[prod]
    promoted = {prod: rows(store, prod) for prod in PAIRS.values()}

    back = backfill(["rollback"], run_copy)
    assert back.returncode == 0, back.stderr
    for prod in PAIRS.values():
        assert rows(store, prod) == staged[prod]
        assert checksum(store, prod) == first_sums[prod]
        assert rows(store, f"{prod}_old") == promoted[prod]  # what was rolled back stays at hand

    again = backfill(["rollback"], run_copy)
    assert_one_error_line(again, "nothing to roll back", "already rolled back")
    assert all(checksum(store, prod) == first_sums[prod] for prod in PAIRS.values())
    log = (run_copy / "backfill" / "promote.log").read_text()
    assert "event=promote_done" in log and "event=rollback_done" in log and "action=backup" in log
    store.close()


def test_two_promotions_keep_two_backup_generations_until_pruned(run_copy, chain):
    store = open_store(run_copy)
    settings = settings_of(run_copy)
    promote(store, settings)  # the first production: nothing to back up yet
    assert list_backups(store) == []
    generations = []
    for _ in range(2):
        redo_one_day(store)
        generations.append({t.production: (t.rows, t.checksum) for t in promote(store, settings).tables})
    backups = backups_json(run_copy)
    assert len({b["created"] for b in backups}) == 2
    for prod in PAIRS.values():
        mine = [b for b in backups if b["production"] == prod]
        assert len(mine) == 2 and all(b["verified"] for b in mine)
        # the newer backup is the production the second promotion replaced
        assert (mine[1]["rows"], mine[1]["checksum"]) == generations[0][prod]

    kept = backfill(["backups", "prune", "--older-than", "30d"], run_copy)
    assert kept.returncode == 0, kept.stderr
    assert len(backups_json(run_copy)) == 4
    pruned = backfill(["backups", "prune", "--older-than", "0d"], run_copy)
    assert pruned.returncode == 0, pruned.stderr
    assert "4 backups" in pruned.stdout
    assert backups_json(run_copy) == []
    assert not any("_backup_" in t for t in tables(store))
    assert store.scalar("SELECT count() FROM backfill_promotions WHERE action = 'prune'") == 4
    store.close()


def test_rollback_restores_from_the_backup_when_old_is_gone(run_copy):
    store = open_store(run_copy)
    settings = settings_of(run_copy)
    promote(store, settings)
    previous = {prod: rows(store, prod) for prod in PAIRS.values()}
    redo_one_day(store)
    promote(store, settings)
    for prod in PAIRS.values():
        store.client.command(f"DROP TABLE {prod}_old SYNC")
    report = rollback(store, settings)
    assert {t.method for t in report.tables} == {"restore"}
    for prod in PAIRS.values():
        assert rows(store, prod) == previous[prod]
    store.close()


def _corrupt_parts(store: Store, table: str) -> int:
    """Overwrite the middle of every data file of `table`'s active parts: reading it fails as on a bad disk."""
    damaged = 0
    for (path,) in store.query_rows(
        "SELECT path FROM system.parts WHERE database = currentDatabase() AND table = %(t)s AND active", {"t": table}
    ):
        for data in Path(path).glob("*.bin"):
            size = data.stat().st_size
            with open(data, "r+b") as fh:
                fh.seek(size // 2)
                fh.write(b"\xde\xad\xbe\xef" * 16)
            damaged += 1
    return damaged


def test_a_failure_before_the_swap_leaves_production_untouched(run_copy, chain):
    store = open_store(run_copy)
    settings = settings_of(run_copy)
    promote(store, settings)
    redo_one_day(store)
    promote(store, settings)
    before = {t: checksum(store, t) for prod in PAIRS.values() for t in (prod, f"{prod}_old")}
    redo_one_day(store)  # staging now differs from production: a promotion would change it
    assert _corrupt_parts(store, "erc1155_transfers_staging") > 0

    result = backfill(["promote", "--skip-gates"], run_copy, chain)
    assert_one_error_line(result, "before the swap", "erc1155_transfers_next", "production untouched")
    assert {t: checksum(store, t) for t in before} == before
    assert not any(t.endswith("_next") for t in tables(store))
    assert store.scalar("SELECT count() FROM backfill_promotions WHERE startsWith(detail, 'status=failed')") == 1
    # the rollback layers are as they were: rollback still restores the production before the last promotion
    report = rollback(store, settings)
    assert {t.production: (t.rows, t.checksum) for t in report.tables} == {
        prod: before[f"{prod}_old"] for prod in PAIRS.values()
    }
    store.close()


def test_sequential_rename_where_the_engine_refuses_exchange(run_copy):
    from backfill.store.embedded import server_url
    from tests.integration.harness import store_url

    store = open_store(run_copy)
    # an Ordinary database: ClickHouse refuses EXCHANGE TABLES there
    store.client.command(
        "CREATE DATABASE promo_ordinary ENGINE = Ordinary", settings={"allow_deprecated_database_ordinary": 1}
    )
    settings = settings_of(run_copy, clickhouse_url=store_url(run_copy, server_url(run_copy), "promo_ordinary"))
    other = Store.connect(settings)
    for table in [*PAIRS, "backfill_days"]:
        other.client.command(f"INSERT INTO promo_ordinary.{table} SELECT * FROM backfill.{table}")
    assert {t.method for t in promote(other, settings).tables} == {"first"}
    first = {prod: rows(other, prod) for prod in PAIRS.values()}
    redo_one_day(other)
    assert {t.method for t in promote(other, settings).tables} == {"rename"}
    for staging, prod in PAIRS.items():
        assert rows(other, prod) == rows(other, staging, final=True) != first[prod]
        assert rows(other, f"{prod}_old") == first[prod]
    assert {t.method for t in rollback(other, settings).tables} == {"rename"}
    assert {prod: rows(other, prod) for prod in PAIRS.values()} == first
    other.close()
    store.close()


def test_bad_input_gives_one_error_line(run_copy):
    assert_one_error_line(backfill(["backups", "prune", "--older-than", "banana"], run_copy), "banana", "30d")
    assert_one_error_line(backfill(["rollback"], run_copy), "nothing to roll back")


def test_promote_runs_the_strict_gates_and_a_failure_changes_nothing(run_copy, chain):
    pytest.importorskip("monitor.gates.judge")
    store = open_store(run_copy)
    promote(store, settings_of(run_copy))  # a production in place
    production = {prod: checksum(store, prod) for prod in PAIRS.values()}
    plan = {p.day_idx: p for p in store.read_plan()}[4]
    # a malformed address written as a newer version of one row: the strict gates must refuse it
    store.client.command(
        "INSERT INTO erc20_transfers_staging SELECT block_number, block_timestamp, tx_hash, log_index, token_address, "
        "'0xnot-an-address', to_address, value, _version + 1 FROM erc20_transfers_staging FINAL "
        f"WHERE block_number BETWEEN {plan.start_block} AND {plan.end_block} LIMIT 1"
    )
    result = backfill(["promote"], run_copy, chain)
    assert result.returncode == 1, result.stderr
    assert "promotion refused" in result.stderr and "FAIL malformed" in result.stderr
    assert {prod: checksum(store, prod) for prod in PAIRS.values()} == production
    assert list_backups(store) == [] and not any(t.endswith(("_next", "_old")) for t in tables(store))
    assert store.scalar("SELECT count() FROM backfill_promotions WHERE action = 'backup'") == 0
    store.close()
