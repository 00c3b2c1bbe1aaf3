"""A daily promotion appends only the new final rows when the rows below the last promotion are unchanged,
and copies staging in full otherwise; either way production equals staging FINAL up to `through_block`, row
for row, and rollback puts back exactly the production before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backfill.store.client import Store
from monitor.promote import PromotionReport, list_backups, promote, rollback
from tests.integration.harness import open_store
from tests.integration.test_derived_incremental import E20, E1155, Staging
from tests.integration.test_promote import settings_of

PAIRS = {E20: "erc20_transfers", E1155: "erc1155_transfers"}
DAYS = [(0, 999), (1000, 1999), (2000, 2999)]  # three days of blocks


def rows(store: Store, table: str, through: int | None = None, final: bool = False) -> list[tuple]:
    where = "" if through is None else f" WHERE block_number <= {through}"
    return sorted(tuple(r) for r in store.query_rows(f"SELECT * FROM {table}{' FINAL' if final else ''}{where}"))


def keys_versions(store: Store, table: str) -> dict[tuple, int]:
    """Sorting key -> _version of every production row (one row per key)."""
    got = store.query_rows(f"SELECT * FROM {table}")
    out = {(r[0], r[3]) if table == "erc20_transfers" else (r[0], r[3], r[4]): r[-1] for r in got}
    assert len(out) == len(got), f"{table} holds a key twice"
    return out


def assert_exact(staging: Staging, through: int) -> None:
    """Production equals staging FINAL up to `through` read back, and the writes the test made (its oracle)."""
    store = staging.store
    for source, prod in PAIRS.items():
        assert rows(store, prod) == rows(store, source, through, final=True)
        oracle = {k: r[-1] for k, r in staging.rows[source].items() if r[0] <= through}
        assert keys_versions(store, prod) == oracle


def modes(report: PromotionReport) -> dict[str, tuple[str, str, int]]:
    return {t.production: (t.mode, t.reason, t.from_block) for t in report.tables}


@pytest.fixture
def staging(tmp_path) -> Iterator[Staging]:
    from backfill.store.embedded import stop_server

    store = open_store(tmp_path / "data")
    try:
        yield Staging(store, seed=5)
    finally:
        store.close()
        stop_server(tmp_path / "data")


@pytest.fixture
def settings(tmp_path):
    return settings_of(Path(tmp_path / "data"))


def promoted_once(staging: Staging, settings) -> PromotionReport:
    staging.batch(*DAYS[0])
    return promote(staging.store, settings, through_block=DAYS[0][1])


def test_the_first_promotion_is_a_full_copy(staging, settings):
    report = promoted_once(staging, settings)
    assert {m[:2] for m in modes(report).values()} == {("full", "no production yet")}
    assert_exact(staging, DAYS[0][1])
    log = (settings.log_dir / "promote.log").read_text()
    assert 'mode=full reason="no production yet"' in log


def test_new_days_are_appended_and_only_their_rows_are_written(staging, settings):
    promoted_once(staging, settings)
    before = {prod: rows(staging.store, prod) for prod in PAIRS.values()}
    staging.batch(*DAYS[1])
    staging.store.command("SYSTEM STOP MERGES")  # part names then show which rows the promotion wrote
    try:
        report = promote(staging.store, settings, through_block=DAYS[1][1])
        written = {}
        for t in report.tables:
            written[t.production] = staging.store.scalar(
                "SELECT sum(rows) FROM system.parts WHERE database = currentDatabase() AND active AND table = %(p)s "
                "AND name NOT IN (SELECT name FROM system.parts WHERE database = currentDatabase() AND active "
                "AND table = %(b)s)",
                {"p": t.production, "b": t.backup},
            )
    finally:
        staging.store.command("SYSTEM START MERGES")
    assert modes(report) == {prod: ("append", "", DAYS[1][0]) for prod in PAIRS.values()}
    assert_exact(staging, DAYS[1][1])
    for source, prod in PAIRS.items():
        new = staging.final_rows(source, *DAYS[1])
        assert new > 0 and written[prod] == new
        assert next(t for t in report.tables if t.production == prod).inserted == new
    # the dated backup (a clone) and _old hold the production before, verified
    backups = {b.production: b for b in list_backups(staging.store)}
    for prod in PAIRS.values():
        assert backups[prod].verified and rows(staging.store, backups[prod].table) == before[prod]
        assert rows(staging.store, f"{prod}_old") == before[prod]
    log = (settings.log_dir / "promote.log").read_text()
    assert f"mode=append from_block={DAYS[1][0]}" in log
    details = staging.store.query_rows(
        "SELECT detail FROM backfill_promotions WHERE action = 'promote' AND startsWith(detail, 'status=ok') "
        "ORDER BY at DESC LIMIT 2"
    )
    assert all(f"mode=append from_block={DAYS[1][0]}" in d for (d,) in details)


def test_rows_above_through_block_stay_out_of_production(staging, settings):
    def assert_final_only(through: int) -> None:
        assert_exact(staging, through)
        for source, prod in PAIRS.items():
            assert staging.store.scalar(f"SELECT max(block_number) FROM {prod}") <= through
            assert staging.store.scalar(f"SELECT count() FROM {source} WHERE block_number > {through}") > 0

    staging.batch(*DAYS[0])
    staging.batch(*DAYS[1])  # an OPEN day at the head: in staging, not final yet
    report = promote(staging.store, settings, through_block=DAYS[0][1])
    assert {m[0] for m in modes(report).values()} == {"full"}
    assert_final_only(DAYS[0][1])
    staging.batch(*DAYS[2])  # the day before becomes final, a new one is OPEN
    report = promote(staging.store, settings, through_block=DAYS[1][1])
    assert modes(report) == {prod: ("append", "", DAYS[1][0]) for prod in PAIRS.values()}
    assert_final_only(DAYS[1][1])
    report = promote(staging.store, settings, through_block=DAYS[2][1])  # every day final
    assert modes(report) == {prod: ("append", "", DAYS[2][0]) for prod in PAIRS.values()}
    assert_exact(staging, DAYS[2][1])


def test_rollback_after_an_append_restores_the_production_before_it(staging, settings):
    promoted_once(staging, settings)
    before = {prod: rows(staging.store, prod) for prod in PAIRS.values()}
    staging.batch(*DAYS[1])
    assert {m[0] for m in modes(promote(staging.store, settings, through_block=DAYS[1][1])).values()} == {"append"}
    assert all(rows(staging.store, prod) != before[prod] for prod in PAIRS.values())
    rollback(staging.store, settings)
    assert {prod: rows(staging.store, prod) for prod in PAIRS.values()} == before
    # production no longer holds what the last promotion recorded: the next one is a full copy
    report = promote(staging.store, settings, through_block=DAYS[1][1])
    assert {m[:2] for m in modes(report).values()} == {("full", "last action on production was a rollback")}
    assert_exact(staging, DAYS[1][1])


def test_rollback_after_an_append_whose_old_is_gone_restores_from_the_clone(staging, settings):
    promoted_once(staging, settings)
    before = {prod: rows(staging.store, prod) for prod in PAIRS.values()}
    staging.batch(*DAYS[1])
    promote(staging.store, settings, through_block=DAYS[1][1])
    for prod in PAIRS.values():
        staging.store.command(f"DROP TABLE {prod}_old SYNC")
    report = rollback(staging.store, settings)
    assert {t.method for t in report.tables} == {"restore"}
    assert {prod: rows(staging.store, prod) for prod in PAIRS.values()} == before


def test_a_redo_below_the_last_promotion_makes_it_full(staging, settings):
    promoted_once(staging, settings)
    staging.batch(*DAYS[1])
    promote(staging.store, settings, through_block=DAYS[1][1])
    # a redo of the first day: newer versions of some of its rows, with other contents
    staging.rewrite(
        [r for r in staging.rows[E20].values() if r[0] <= DAYS[0][1]][::7],
        [r for r in staging.rows[E1155].values() if r[0] <= DAYS[0][1]][::7],
    )
    staging.batch(*DAYS[2])
    report = promote(staging.store, settings, through_block=DAYS[2][1])
    assert {m[:2] for m in modes(report).values()} == {("full", f"staging rows at or below block {DAYS[1][1]} changed")}
    assert_exact(staging, DAYS[2][1])


def test_a_delete_below_the_last_promotion_makes_it_full(staging, settings):
    promoted_once(staging, settings)
    staging.batch(*DAYS[1])
    promote(staging.store, settings, through_block=DAYS[1][1])
    staging.delete_above(1500)  # a reorganisation's rollback below W = 1999
    report = promote(staging.store, settings, through_block=DAYS[1][1])
    assert {m[:2] for m in modes(report).values()} == {("full", f"staging rows at or below block {DAYS[1][1]} changed")}
    assert_exact(staging, DAYS[1][1])
    assert staging.store.scalar("SELECT count() FROM erc20_transfers WHERE block_number > 1500") == 0


def test_production_changed_by_hand_or_a_lower_bound_makes_it_full(staging, settings):
    promoted_once(staging, settings)
    staging.store.command("DELETE FROM erc20_transfers WHERE block_number < 100")
    staging.batch(*DAYS[1])
    report = promote(staging.store, settings, through_block=DAYS[1][1])
    assert modes(report)["erc20_transfers"][:2] == ("full", "production changed since the last promotion")
    assert modes(report)["erc1155_transfers"][0] == "append"
    assert_exact(staging, DAYS[1][1])
    report = promote(staging.store, settings, through_block=DAYS[0][1])
    assert {m[:2] for m in modes(report).values()} == {
        ("full", f"promoted through block {DAYS[1][1]}, beyond through_block {DAYS[0][1]}")
    }
    assert_exact(staging, DAYS[0][1])


def test_a_stop_after_the_swap_of_an_append_is_undone_by_rollback(staging, settings):
    promoted_once(staging, settings)
    before = {prod: rows(staging.store, prod) for prod in PAIRS.values()}
    staging.batch(*DAYS[1])
    promote(staging.store, settings, through_block=DAYS[1][1])
    # as if stopped right after the swaps: the final records never written, the replaced production not yet
    # renamed to `_old`
    staging.store.command(
        "DELETE FROM backfill_promotions WHERE action = 'promote' AND startsWith(detail, 'status=ok') AND at > "
        "(SELECT min(at) FROM backfill_promotions WHERE startsWith(detail, 'status=started') AND other_table != '')"
    )
    for prod in PAIRS.values():
        staging.store.command(f"RENAME TABLE {prod}_old TO {prod}_next")
    last = staging.store.query_rows(
        "SELECT table_name, argMax(detail, at) FROM backfill_promotions WHERE action = 'promote' GROUP BY table_name"
    )
    assert {prod: d.split()[0] for prod, d in last if prod in PAIRS.values()} == dict.fromkeys(
        PAIRS.values(), "status=started"
    )
    report = rollback(staging.store, settings)
    assert {t.method for t in report.tables} == {"restore"}
    assert {prod: rows(staging.store, prod) for prod in PAIRS.values()} == before
    again = promote(staging.store, settings, through_block=DAYS[1][1])
    assert {m[0] for m in modes(again).values()} == {"full"}
    assert_exact(staging, DAYS[1][1])


def test_a_stop_mid_append_leaves_production_as_it_was(staging, settings):
    promoted_once(staging, settings)
    before = {prod: rows(staging.store, prod) for prod in PAIRS.values()}
    staging.batch(*DAYS[1])
    # what a stop mid-INSERT leaves: a half-built `_next`; production and its records untouched
    for source, prod in PAIRS.items():
        staging.store.command(f"CREATE TABLE {prod}_next CLONE AS {prod}")
        staging.store.command(f"INSERT INTO {prod}_next SELECT * FROM {source} FINAL WHERE block_number > 1000 LIMIT 7")
    assert {prod: rows(staging.store, prod) for prod in PAIRS.values()} == before
    report = promote(staging.store, settings, through_block=DAYS[1][1])
    assert {m[0] for m in modes(report).values()} == {"append"}
    assert_exact(staging, DAYS[1][1])
