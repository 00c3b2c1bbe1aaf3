"""Derived balances built from the new rows only equal a full build and an oracle computed here from the rows
written; a redo, a rollback or a replaced table below the last build makes the next build a full one."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import random
from pathlib import Path
from typing import Any

import pytest

from backfill.store.client import Store
from backfill.store.schema import ERC20_COLUMNS, ERC1155_COLUMNS
from monitor.derived import build_derived, run_sql_steps
from tests.integration.harness import open_store

E20, E1155 = "erc20_transfers_staging", "erc1155_transfers_staging"
ZERO = "0x" + "00" * 20
WALLETS = [ZERO] + ["0x" + f"{n:02x}" * 20 for n in range(1, 7)]
TOKENS = ["0x" + f"{n:02x}" * 20 for n in (0xA1, 0xA2, 0xA3)]
TOP = 2**256
BATCHES = [(0, 999), (1000, 1999), (2000, 2999)]
BALANCE_FIELDS = "wallet, balance, received, sent, transfers_in, transfers_out, first_block, last_block"


class Staging:
    """The staging tables as written by the test: per sorting key the row of the newest _version."""

    def __init__(self, store: Store, seed: int):
        self.store = store
        self.rng = random.Random(seed)
        self.version = itertools.count(1_700_000_000_000_000_000, 1000)  # like a writer's clock in ns, rising
        self.rows: dict[str, dict[tuple, tuple]] = {E20: {}, E1155: {}}

    def write(self, table: str, rows: list[tuple]) -> None:
        self.store.insert(table, rows, ERC20_COLUMNS if table == E20 else ERC1155_COLUMNS)
        for row in rows:
            key = (row[0], row[3]) if table == E20 else (row[0], row[3], row[4])
            if key not in self.rows[table] or self.rows[table][key][-1] < row[-1]:
                self.rows[table][key] = row

    def value(self) -> int:
        return self.rng.choice([0, 1, TOP - 1, 2**255, 2**255 - 1, self.rng.randrange(TOP), self.rng.randrange(10**6)])

    def wallet_pair(self) -> tuple[str, str]:
        frm = ZERO if self.rng.random() < 0.15 else self.rng.choice(WALLETS[1:])  # mints
        to = ZERO if self.rng.random() < 0.15 else self.rng.choice(WALLETS[1:])  # burns (and self-transfers)
        return frm, to

    def erc20_row(self, block: int, log_index: int, version: int) -> tuple:
        frm, to = self.wallet_pair()
        ts = dt.datetime.fromtimestamp(1_700_000_000 + block * 1200, dt.timezone.utc)  # spans two months
        tx = "0x" + f"{block:032x}{log_index:032x}"
        return (block, ts, tx, log_index, self.rng.choice(TOKENS), frm, to, self.value(), version)

    def erc1155_row(self, block: int, log_index: int, batch_index: int, version: int) -> tuple:
        frm, to = self.wallet_pair()
        ts = dt.datetime.fromtimestamp(1_700_000_000 + block * 1200, dt.timezone.utc)
        tx = "0x" + f"{block:032x}{log_index:032x}"
        token_id = self.rng.choice([0, 1, 7, TOP - 1, self.rng.randrange(TOP)])
        op = self.rng.choice(WALLETS[1:])
        return (
            block,
            ts,
            tx,
            log_index,
            batch_index,
            self.rng.choice(TOKENS[:2]),
            op,
            frm,
            to,
            token_id,
            self.value(),
            version,
        )

    def batch(self, first: int, last: int, n20: int = 150, n1155: int = 100) -> None:
        """Transfers in blocks first..last; some rows written again (in later inserts) with newer versions and
        other contents, once or twice: the newest wins."""
        v = next(self.version)
        blocks20 = sorted(self.rng.sample(range(first, last + 1), n20))
        rows20 = [self.erc20_row(b, self.rng.randrange(4), v) for b in blocks20]
        blocks1155 = sorted(self.rng.sample(range(first, last + 1), n1155))
        rows1155 = [self.erc1155_row(b, 9, bi, v) for b in blocks1155 for bi in range(self.rng.randrange(1, 4))]
        self.write(E20, rows20)
        self.write(E1155, rows1155)
        for share in (4, 12):  # newer versions of a quarter of the rows, then of a twelfth
            self.rewrite(rows20[::share], rows1155[::share])

    def rewrite(self, rows20: list[tuple], rows1155: list[tuple]) -> None:
        """New versions of these rows (same sorting key, other contents), as a redo writes them."""
        v = next(self.version)
        self.write(E20, [self.erc20_row(r[0], r[3], v) for r in rows20])
        self.write(E1155, [self.erc1155_row(r[0], r[3], r[4], v) for r in rows1155])

    def delete_above(self, block: int) -> None:
        """A rollback after a reorganisation: a lightweight DELETE of every row above `block`."""
        for table in (E20, E1155):
            self.store.command(f"DELETE FROM {table} WHERE block_number > %(b)s", {"b": block})
            self.rows[table] = {k: r for k, r in self.rows[table].items() if r[0] <= block}

    def final_rows(self, table: str, first: int, last: int) -> int:
        return sum(1 for r in self.rows[table].values() if first <= r[0] <= last)

    def balances(self, through: int) -> tuple[dict, dict]:
        """The oracle: per (token[, id], wallet) what EVM arithmetic gives for the rows up to `through`."""
        out20: dict[tuple, list[int]] = {}
        out1155: dict[tuple, list[int]] = {}
        legs = [(r[0], (r[4],), r[5], r[6], r[7]) for r in self.rows[E20].values()]
        legs += [(r[0], (r[5], r[9]), r[7], r[8], r[10]) for r in self.rows[E1155].values()]
        for block, token, frm, to, value in legs:
            if block > through:
                continue
            out = out20 if len(token) == 1 else out1155
            for wallet, leg in ((to, 0), (frm, 1)):
                acc = out.setdefault((*token, wallet), [0, 0, 0, 0, block, block])
                acc[leg] += value  # received, sent
                acc[2 + leg] += 1  # transfers in, out
                acc[4], acc[5] = min(acc[4], block), max(acc[5], block)

        def shape(acc: list[int]) -> tuple[int, ...]:
            received, sent = acc[0] % TOP, acc[1] % TOP
            balance = (received - sent) % TOP
            return (balance - TOP if balance >= 2**255 else balance, received, sent, *acc[2:])

        return {k: shape(a) for k, a in out20.items()}, {k: shape(a) for k, a in out1155.items()}


def derived_tables(store: Store) -> tuple[dict, dict]:
    got20 = store.query_rows(f"SELECT token_address, {BALANCE_FIELDS} FROM erc20_balances")
    got1155 = store.query_rows(f"SELECT token_address, token_id, {BALANCE_FIELDS} FROM erc1155_balances")
    return (
        {(r[0], r[1]): tuple(int(v) for v in r[2:]) for r in got20},
        {(r[0], int(r[1]), r[2]): tuple(int(v) for v in r[3:]) for r in got1155},
    )


def modes(result: dict[str, Any]) -> set[str]:
    return {t["mode"] for t in result.values()}


def assert_exact(staging: Staging, through: int) -> None:
    """The derived tables equal the oracle, and a full build from scratch gives them row for row too."""
    got = derived_tables(staging.store)
    assert got == staging.balances(through)
    full = build_derived(staging.store, through, incremental=False)
    assert modes(full) == {"full: asked"}
    assert derived_tables(staging.store) == got


@pytest.fixture
def staging(tmp_path) -> Staging:
    from backfill.store.embedded import stop_server

    store = open_store(tmp_path / "data")
    try:
        yield Staging(store, seed=11)
    finally:
        store.close()
        stop_server(tmp_path / "data")


def test_each_batch_is_added_incrementally_and_equals_a_full_build_and_the_oracle(staging, caplog):
    caplog.set_level(logging.INFO, logger="on_complete")
    previous = None
    for first, last in BATCHES:
        staging.batch(first, last)
        result = build_derived(staging.store, through_block=last)
        want = "full: first build" if previous is None else f"incremental from block {previous + 1}"
        assert modes(result) == {want}
        assert result["erc20_balances"]["new_rows"] == staging.final_rows(E20, first, last)
        assert result["erc1155_balances"]["new_rows"] == staging.final_rows(E1155, first, last)
        assert (result["erc20_balances"]["from_block"], result["erc20_balances"]["to_block"]) == (
            0 if previous is None else first,
            last,
        )
        assert_exact(staging, last)
        previous = last
    assert f'step=derived table=erc1155_balances mode="incremental from block {BATCHES[-1][0]}"' in caplog.text
    # nothing new: the tables are kept as they are (not rebuilt: the same tables, by UUID); the call without
    # arguments covers every row
    uuids = staging.store.query_rows("SELECT name, uuid FROM system.tables WHERE name LIKE '%_balances'")
    again = build_derived(staging.store)
    assert modes(again) == {f"unchanged: no new rows from block {BATCHES[-1][1] + 1}"}
    assert {t["new_rows"] for t in again.values()} == {0}
    assert staging.store.query_rows("SELECT name, uuid FROM system.tables WHERE name LIKE '%_balances'") == uuids
    assert derived_tables(staging.store) == staging.balances(BATCHES[-1][1])
    # and the next rows after that are added to them incrementally, exactly
    staging.batch(BATCHES[-1][1] + 1, BATCHES[-1][1] + 200)
    assert modes(build_derived(staging.store)) == {f"incremental from block {BATCHES[-1][1] + 1}"}
    assert_exact(staging, BATCHES[-1][1] + 200)


def test_removing_superseded_versions_below_the_last_build_keeps_the_build_incremental(staging):
    staging.batch(*BATCHES[0])
    # older versions of some rows in another partition (a zeroed timestamp): no merge removes them by itself
    stale = [
        (r[0], dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc), *r[2:7], 1, r[-1] - 1)
        for r in list(staging.rows[E20].values())[::5]
    ]
    staging.store.insert(E20, stale, ERC20_COLUMNS)
    build_derived(staging.store, BATCHES[0][1])
    # what dedup and background merges do: the superseded versions go, the rows after FINAL stay
    staging.store.command(f"DELETE FROM {E20} WHERE toYear(block_timestamp) = 1970")
    for table in (E20, E1155):
        staging.store.command(f"OPTIMIZE TABLE {table} FINAL")
    staging.batch(*BATCHES[1])
    assert modes(build_derived(staging.store, BATCHES[1][1])) == {f"incremental from block {BATCHES[1][0]}"}
    assert_exact(staging, BATCHES[1][1])


def test_a_redo_below_the_last_build_forces_a_full_build_that_is_exact(staging):
    for batch in BATCHES[:2]:
        staging.batch(*batch)
    w = BATCHES[1][1]
    build_derived(staging.store, w)
    rows20 = [r for r in staging.rows[E20].values() if r[0] <= w][::10]
    rows1155 = [r for r in staging.rows[E1155].values() if r[0] <= w][::10]
    staging.rewrite(rows20, rows1155)  # re-fetched days: newer versions of rows below W, other values
    staging.batch(*BATCHES[2])
    result = build_derived(staging.store, BATCHES[2][1])
    assert modes(result) == {f"full: rows at or below block {w} changed"}
    assert_exact(staging, BATCHES[2][1])


def test_a_rollback_below_the_last_build_forces_a_full_build_that_is_exact(staging):
    for batch in BATCHES:
        staging.batch(*batch)
    w = BATCHES[2][1]
    build_derived(staging.store, w)
    staging.delete_above(1500)  # a reorganisation: rows above block 1500 are gone
    assert modes(build_derived(staging.store, w)) == {f"full: rows at or below block {w} changed"}
    assert_exact(staging, w)
    # the days re-fetched: as many rows again in the same blocks, newer versions
    staging.batch(1501, w, n20=150, n1155=100)
    assert modes(build_derived(staging.store, w)) == {f"full: rows at or below block {w} changed"}
    assert_exact(staging, w)


def test_losing_the_newest_version_of_one_row_below_the_last_build_forces_a_full_build(staging):
    staging.batch(*BATCHES[0])
    w = BATCHES[0][1]
    key, newest = next(iter(staging.rows[E20].items()))
    # an older version of that row with other contents, in another partition (a zeroed timestamp), where no
    # merge removes it: FINAL shows the newest
    older = (newest[0], dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) + newest[2:7] + (12345, newest[-1] - 1)
    staging.store.insert(E20, [older], ERC20_COLUMNS)
    build_derived(staging.store, w)
    assert_exact(staging, w)
    # a correction that removes the newest version: the older one shows again, as many rows as before
    staging.store.command(
        f"DELETE FROM {E20} WHERE block_number = %(b)s AND log_index = %(i)s AND _version = %(v)s",
        {"b": newest[0], "i": newest[3], "v": newest[-1]},
    )
    staging.rows[E20][key] = older
    result = build_derived(staging.store, w)
    assert result["erc20_balances"]["mode"] == f"full: rows at or below block {w} changed"
    assert result["erc1155_balances"]["mode"] == f"unchanged: no new rows from block {w + 1}"
    assert_exact(staging, w)


def test_through_block_below_the_newest_rows_leaves_them_out(staging):
    for batch in BATCHES:
        staging.batch(*batch)
    result = build_derived(staging.store, through_block=1499)
    assert modes(result) == {"full: first build"}
    assert derived_tables(staging.store) == staging.balances(1499)
    assert staging.store.scalar("SELECT max(last_block) FROM erc20_balances") <= 1499
    assert modes(build_derived(staging.store, 2999)) == {"incremental from block 1500"}
    assert_exact(staging, 2999)
    assert modes(build_derived(staging.store, 999)) == {"full: built through block 2999, beyond through_block 999"}
    assert_exact(staging, 999)


def test_a_table_dropped_or_replaced_since_its_build_is_built_in_full(staging):
    staging.batch(*BATCHES[0])
    build_derived(staging.store, BATCHES[0][1])
    staging.batch(*BATCHES[1])
    staging.store.command("DROP TABLE erc20_balances")
    # the same rows under another table, swapped in without the build's record (as a crash between the
    # swap and the record would leave it)
    staging.store.command("CREATE TABLE copy AS erc1155_balances")
    staging.store.command("INSERT INTO copy SELECT * FROM erc1155_balances")
    staging.store.command("EXCHANGE TABLES copy AND erc1155_balances")
    result = build_derived(staging.store, BATCHES[1][1])
    assert result["erc20_balances"]["mode"] == "full: table missing"
    assert result["erc1155_balances"]["mode"] == "full: table replaced or changed since its build"
    assert_exact(staging, BATCHES[1][1])


def test_a_build_swapped_in_without_its_record_is_not_added_to_again(staging):
    from monitor.derived import meta_key

    staging.batch(*BATCHES[0])
    build_derived(staging.store, BATCHES[0][1])
    records = {name: staging.store.meta_get(meta_key(name)) for name in ("erc20_balances", "erc1155_balances")}
    staging.batch(*BATCHES[1])
    build_derived(staging.store, BATCHES[1][1])
    for name, text in records.items():  # as a crash between the swap and the record would leave it
        staging.store.meta_set(meta_key(name), text or "")
    result = build_derived(staging.store, BATCHES[1][1])
    assert modes(result) == {"full: table replaced or changed since its build"}
    assert_exact(staging, BATCHES[1][1])


def test_operator_sql_steps_see_the_new_block_range(staging, tmp_path: Path):
    folder = tmp_path / "rebuild.d"
    folder.mkdir()
    (folder / "10_ranges.sql").write_text(
        "CREATE TABLE IF NOT EXISTS seen (from_block UInt64, to_block UInt64, transfers UInt64) "
        "ENGINE = MergeTree ORDER BY tuple();\n"
        "INSERT INTO seen SELECT {from_block:UInt64}, {to_block:UInt64}, count() FROM erc20_transfers_staging FINAL "
        "WHERE block_number BETWEEN {from_block:UInt64} AND {to_block:UInt64};\n"
        "-- a statement without the parameters runs as before, a literal '%' included\n"
        "CREATE TABLE IF NOT EXISTS plain ENGINE = MergeTree ORDER BY tuple() AS "
        "SELECT count() AS n FROM erc20_balances WHERE wallet LIKE '0x%' AND 10 % 3 = 1;\n"
    )
    ranges = []
    for first, last in BATCHES[:2]:
        staging.batch(first, last)
        built = build_derived(staging.store, last)["erc20_balances"]
        run_sql_steps(staging.store, folder, built["from_block"], built["to_block"])
        ranges.append((built["from_block"], built["to_block"], built["new_rows"]))
    assert ranges == [
        (0, BATCHES[0][1], staging.final_rows(E20, 0, BATCHES[0][1])),
        (BATCHES[1][0], BATCHES[1][1], staging.final_rows(E20, *BATCHES[1])),
    ]
    assert staging.store.query_rows("SELECT * FROM seen ORDER BY from_block") == ranges
    assert staging.store.scalar("SELECT n FROM plain") > 0
    # without a range: from block 0 through the newest stored block
    staging.batch(*BATCHES[2])
    staging.store.command("TRUNCATE TABLE seen")
    run_sql_steps(staging.store, folder)
    newest = max(r[0] for rows in staging.rows.values() for r in rows.values())
    assert staging.store.query_rows("SELECT from_block, to_block FROM seen") == [(0, newest)]
