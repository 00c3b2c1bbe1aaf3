"""Cluster mode without a cluster: the replicated schema and the rewriting statements, rendered for a named
cluster and checked by the real engine (chDB in this process, nothing served).

The engine parses every statement (`formatQuery`, which parses without running), and builds every table of
both schemas: the single-node tables are created, the replicated ones attached as a replica would load them
(ATTACH with a UUID and the {shard}/{replica} macros expanded as a server's <macros> would; without Keeper a
replicated table opens read-only, which is all a description needs). The two are then compared as the engine
sees them — columns and their types, partition, sorting and primary keys, engine family and version column.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError

from backfill.errors import ConfigError
from backfill.store import cluster, schema
from backfill.store.client import Store, check_cluster
from monitor import derived, promote

chdb = pytest.importorskip("chdb")

CLUSTER = "ch-main"
ON = f"ON CLUSTER `{CLUSTER}`"


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    conn = chdb.connect(":memory:")
    yield conn
    conn.close()


def rows(engine: Any, sql: str, **params: str) -> list[list[Any]]:
    # a parameter's value is read as an escaped (TSV) field: a bare newline would end it
    escaped = {k: v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n") for k, v in params.items()}
    return json.loads(engine.query(sql, "JSONCompact", params=escaped).bytes())["data"]


def parsed(engine: Any, sql: str) -> str:
    """The statement as the engine's parser reads it (formatQuery raises a syntax error, runs nothing)."""
    return rows(engine, "SELECT formatQuery({q:String})", q=sql)[0][0]


# -- building both schemas in the engine ----------------------------------------------------------------------
def create_single(engine: Any, database: str, statements: list[str]) -> None:
    engine.query(f"CREATE DATABASE IF NOT EXISTS {database}")
    for sql in statements:
        engine.query(re.sub(r"^\s*CREATE TABLE (IF NOT EXISTS )?", f"CREATE TABLE {database}.", sql, count=1))


def attach_replicated(engine: Any, database: str, statements: list[str]) -> None:
    """Each CREATE … ON CLUSTER as one replica's server loads it: ATTACH with the UUID the initiator of the ON
    CLUSTER query would have passed, the servers' macros expanded, the rest of the statement as rendered."""
    engine.query(f"CREATE DATABASE IF NOT EXISTS {database}")
    head = re.compile(r"^\s*CREATE TABLE (?:IF NOT EXISTS )?(\w+) " + re.escape(ON))
    for sql in statements:
        attach, n = head.subn(lambda m: f"ATTACH TABLE {database}.{m[1]} UUID '{uuid.uuid4()}'", sql, count=1)
        assert n == 1, sql
        engine.query(attach.replace("{shard}", "01").replace("{replica}", "replica-1"))


def engine_args(engine_full: str, engine_name: str) -> tuple[str, ...]:
    """The engine's parameters as the engine stored them, without a replicated engine's path and replica."""
    m = re.match(r"\w+(?:\(([^)]*)\))?", engine_full)
    assert m is not None, engine_full
    args = tuple(a.strip() for a in m[1].split(",")) if m[1] else ()
    return args[2:] if engine_name.startswith("Replicated") else args


def describe(engine: Any, database: str) -> dict[str, dict[str, Any]]:
    """Per table, what a query of it depends on, as the engine built it."""
    columns: dict[str, list[tuple[str, ...]]] = {}
    for table, *column in rows(
        engine,
        "SELECT table, name, type, default_kind, default_expression FROM system.columns "
        "WHERE database = {d:String} ORDER BY table, position",
        d=database,
    ):
        columns.setdefault(table, []).append(tuple(column))
    return {
        name: {
            "columns": columns[name],
            "family": engine_name.removeprefix("Replicated"),
            "engine_args": engine_args(full, engine_name),  # ReplacingMergeTree's version column
            "partition_key": partition_key,
            "sorting_key": sorting_key,
            "primary_key": primary_key,
        }
        for name, engine_name, full, partition_key, sorting_key, primary_key in rows(
            engine,
            "SELECT name, engine, engine_full, partition_key, sorting_key, primary_key FROM system.tables "
            "WHERE database = {d:String}",
            d=database,
        )
    }


def differences(single: dict[str, dict[str, Any]], replicated: dict[str, dict[str, Any]]) -> list[str]:
    out = [f"{t}: only on a single node" for t in sorted(single.keys() - replicated.keys())]
    out += [f"{t}: only on the cluster" for t in sorted(replicated.keys() - single.keys())]
    for table in sorted(single.keys() & replicated.keys()):
        for what, value in single[table].items():
            if replicated[table][what] != value:
                out.append(f"{table}: {what} {value!r} on a single node, {replicated[table][what]!r} on the cluster")
    return out


def derived_creates(render_for: str) -> list[str]:
    return [cluster.table_ddl(spec.create.format(name=name), render_for) for name, spec in derived.DERIVED.items()]


# -- the schema -----------------------------------------------------------------------------------------------
def test_a_single_node_gets_the_schema_and_statements_it_always_got():
    assert cluster.ddl("") == schema.ddl()
    assert cluster.on_cluster("") == ""
    for name, spec in derived.DERIVED.items():
        assert cluster.table_ddl(spec.create.format(name=name), "") == spec.create.format(name=name)
    assert cluster.clone_statements("a", "b", "") == ["CREATE TABLE `b` CLONE AS `a`"]


def test_every_cluster_statement_parses_and_names_the_cluster(engine):
    statements = cluster.ddl(CLUSTER)
    assert len(statements) == len(schema.ddl())
    for sql in statements:
        text = parsed(engine, sql)
        assert ON in text, text
    tables = [parsed(engine, sql) for sql in statements if sql.startswith("CREATE TABLE")] + [
        parsed(engine, sql) for sql in derived_creates(CLUSTER)
    ]
    assert len(tables) == len(schema.TABLES) + len(derived.DERIVED)
    for text in tables:
        assert re.search(
            r"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/\{uuid\}/\{shard\}', '\{replica\}'", text
        )
        assert f"SETTINGS {cluster.NO_INSERT_DEDUP}" in text, text


def test_the_replicated_tables_are_the_single_node_tables_column_for_column_and_key_for_key(engine):
    single_ddl = [sql.strip() for sql in schema.TABLES.values()] + derived_creates("")
    create_single(engine, "single", single_ddl)
    attach_replicated(engine, "replicated", [s for s in cluster.ddl(CLUSTER) if s.startswith("CREATE TABLE")])
    attach_replicated(engine, "replicated", derived_creates(CLUSTER))
    single, replicated = describe(engine, "single"), describe(engine, "replicated")
    assert set(single) == set(schema.TABLES) | set(derived.DERIVED)
    assert differences(single, replicated) == []
    assert single["erc20_transfers_staging"]["engine_args"] == ("_version",)  # the comparison sees versions
    engines = dict(rows(engine, "SELECT name, engine FROM system.tables WHERE database = 'replicated'"))
    assert all(e.startswith("Replicated") for e in engines.values()), engines
    assert cluster.engine_problems(engines) == []
    full = rows(engine, "SELECT engine_full FROM system.tables WHERE database = 'replicated'")
    # the engine took the settings (an unknown one is refused) and kept {uuid} a macro: a CREATE … AS gets its own
    assert all(cluster.NO_INSERT_DEDUP in f and "/clickhouse/tables/{uuid}/01" in f for (f,) in full), full


def test_the_comparison_fails_on_a_cluster_schema_that_drifted(engine):
    drifted = []
    for sql in cluster.ddl(CLUSTER):
        if "CREATE TABLE IF NOT EXISTS erc20_transfers_staging " in sql:
            sql = sql.replace("log_index UInt32", "log_index UInt64")
        if "CREATE TABLE IF NOT EXISTS backfill_checkpoint " in sql:
            sql = sql.replace("'{replica}', updated_at)", "'{replica}')")  # lost its version column
        if "CREATE TABLE IF NOT EXISTS block_hashes " in sql:
            sql = sql.replace("ORDER BY block_number", "ORDER BY (block_number, block_hash)")
        if sql.startswith("CREATE TABLE") and "CREATE TABLE IF NOT EXISTS rpc_usage " not in sql:
            drifted.append(sql)
    create_single(engine, "single_again", [sql.strip() for sql in schema.TABLES.values()])
    attach_replicated(engine, "drifted", drifted)
    found = differences(describe(engine, "single_again"), describe(engine, "drifted"))
    assert found == [
        "rpc_usage: only on a single node",
        "backfill_checkpoint: engine_args ('updated_at',) on a single node, () on the cluster",
        "block_hashes: sorting_key 'block_number' on a single node, 'block_number, block_hash' on the cluster",
        "block_hashes: primary_key 'block_number' on a single node, 'block_number, block_hash' on the cluster",
        "erc20_transfers_staging: columns "
        + repr(describe(engine, "single_again")["erc20_transfers_staging"]["columns"])
        + " on a single node, "
        + repr(describe(engine, "drifted")["erc20_transfers_staging"]["columns"])
        + " on the cluster",
    ]
    assert "'log_index', 'UInt64'" in found[-1]


def test_what_cannot_be_rendered_is_refused_not_guessed():
    with pytest.raises(ValueError, match="cannot place ON CLUSTER"):
        cluster.table_ddl("CREATE TEMPORARY TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a", CLUSTER)
    with pytest.raises(ValueError, match="not one plain MergeTree-family engine"):
        cluster.table_ddl("CREATE TABLE t (a UInt8) ENGINE = ReplicatedMergeTree ORDER BY a", CLUSTER)
    with pytest.raises(ValueError, match="not one plain MergeTree-family engine"):
        cluster.table_ddl(
            "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS index_granularity = 1", CLUSTER
        )
    with pytest.raises(ValueError, match="not one plain MergeTree-family engine"):
        cluster.table_ddl("CREATE TABLE t (a UInt8) ENGINE = Memory", CLUSTER)
    with pytest.raises(ValueError, match="not a cluster name"):
        cluster.on_cluster("x` SYNC; DROP DATABASE backfill; --")


# -- the statements that rewrite tables -------------------------------------------------------------------------
class Recorder:
    """A store that keeps the statements sent to it; every table holds the same 5 rows."""

    def __init__(self, cluster_name: str, refuse_exchange: bool = False, refuse_clone: bool = False):
        self.cluster = cluster_name
        self.refuse_exchange = refuse_exchange
        self.refuse_clone = refuse_clone
        self.sent: list[str] = []

    @property
    def on_cluster(self) -> str:
        return cluster.on_cluster(self.cluster)

    def command(self, sql: str, parameters: Any = None, settings: Any = None, *, idempotent: bool = True) -> None:
        if self.refuse_exchange and sql.startswith("EXCHANGE"):
            raise ClickHouseError("Code: 48. DB::Exception: EXCHANGE is not supported. (NOT_IMPLEMENTED)")
        if self.refuse_clone and "CLONE AS" in sql:  # ClickHouse Cloud's answer (a Replicated database)
            raise ClickHouseError(
                "Code: 344. DB::Exception: CREATE CLONE AS is not supported with Replicated databases. Consider "
                "using separate CREATE and INSERT queries.. (SUPPORT_IS_DISABLED)"
            )
        self.sent.append(sql)

    def query_rows(self, sql: str, parameters: Any = None) -> list[tuple]:
        return [("a",)] if "system.columns" in sql else [(5, 7)]

    def scalar(self, sql: str, parameters: Any = None) -> Any:
        return 1


def rewrites(cluster_name: str) -> list[str]:
    """What a promotion and a derived build send for one table: copy, clone, swaps (EXCHANGE, and the RENAMEs
    of an engine that refuses it), a first swap-in, the derived table's build and swap."""
    store: Any = Recorder(cluster_name)
    promote._copy(store, "erc20_transfers_staging", "erc20_transfers_next", like="erc20_transfers_staging", final=True)
    promote._clone(store, "erc20_transfers", "erc20_transfers_backup_x", (5, f"{7:032x}"))
    promote._swap_in(store, "erc20_transfers", "erc20_transfers_next", prod_exists=True)
    promote._swap_in(store, "erc20_transfers", "erc20_transfers_next", prod_exists=False)
    refusing: Any = Recorder(cluster_name, refuse_exchange=True)
    promote._exchange(refusing, "erc20_transfers", "erc20_transfers_old")
    promote._swap_in(refusing, "erc20_transfers", "erc20_transfers_next", prod_exists=True)
    store.command(
        cluster.table_ddl(derived.DERIVED["erc20_balances"].create.format(name="erc20_balances_next"), cluster_name)
    )
    derived.swap_in(store, "erc20_balances_next", "erc20_balances")
    return store.sent + refusing.sent


def test_a_single_node_rewrites_tables_with_the_statements_it_always_sent():
    sent = rewrites("")
    assert sent[:10] == [
        "DROP TABLE IF EXISTS `erc20_transfers_next` SYNC",
        "CREATE TABLE `erc20_transfers_next` AS `erc20_transfers_staging`",
        "INSERT INTO `erc20_transfers_next` SELECT * FROM `erc20_transfers_staging` FINAL",
        "DROP TABLE IF EXISTS `erc20_transfers_backup_x` SYNC",
        "CREATE TABLE `erc20_transfers_backup_x` CLONE AS `erc20_transfers`",
        "EXCHANGE TABLES `erc20_transfers_next` AND `erc20_transfers`",
        "DROP TABLE IF EXISTS `erc20_transfers_old` SYNC",
        "RENAME TABLE `erc20_transfers_next` TO `erc20_transfers_old`",
        "RENAME TABLE `erc20_transfers_next` TO `erc20_transfers`",
        derived.DERIVED["erc20_balances"].create.format(name="erc20_balances_next"),
    ]
    assert sent[10:] == [
        "EXCHANGE TABLES erc20_balances_next AND erc20_balances",
        "DROP TABLE IF EXISTS erc20_balances_next",
        "RENAME TABLE `erc20_transfers` TO `erc20_transfers_swap_tmp`, `erc20_transfers_old` TO `erc20_transfers`, "
        "`erc20_transfers_swap_tmp` TO `erc20_transfers_old`",
        "DROP TABLE IF EXISTS `erc20_transfers_old` SYNC",
        "RENAME TABLE `erc20_transfers` TO `erc20_transfers_old`, `erc20_transfers_next` TO `erc20_transfers`",
    ]


def test_on_a_cluster_ddl_goes_on_cluster_rows_go_to_this_replica_and_all_of_it_parses(engine):
    sent = rewrites(CLUSTER)
    assert len(sent) == len(rewrites("")) + 1  # a clone is two statements: CREATE … AS and ATTACH PARTITION
    for sql in sent:
        text = parsed(engine, sql)
        if sql.startswith(("INSERT", "ALTER")):  # rows: the replicated table's log takes them to the others
            assert "ON CLUSTER" not in text, text
        else:
            assert ON in text, text
    assert "CREATE TABLE `erc20_transfers_backup_x` ON CLUSTER `ch-main` AS `erc20_transfers`" in sent
    assert "ALTER TABLE `erc20_transfers_backup_x` ATTACH PARTITION ALL FROM `erc20_transfers`" in sent
    assert not any("CLONE AS" in sql for sql in sent)
    assert "EXCHANGE TABLES `erc20_transfers_next` AND `erc20_transfers` ON CLUSTER `ch-main`" in sent
    assert "DROP TABLE IF EXISTS `erc20_transfers_old` ON CLUSTER `ch-main` SYNC" in sent
    assert any(sql.startswith("CREATE TABLE erc20_balances_next ON CLUSTER `ch-main` (") for sql in sent)


def test_a_database_that_refuses_clone_as_gets_its_clone_as_create_and_attach(engine):
    store: Any = Recorder("", refuse_clone=True)  # ClickHouse Cloud: a single node's SQL, a Replicated database
    assert promote._clone(store, "erc20_transfers", "erc20_transfers_backup_x", (5, f"{7:032x}")) == (5, f"{7:032x}")
    assert store.sent == [
        "DROP TABLE IF EXISTS `erc20_transfers_backup_x` SYNC",
        "DROP TABLE IF EXISTS `erc20_transfers_backup_x` SYNC",
        "CREATE TABLE `erc20_transfers_backup_x` AS `erc20_transfers`",
        "ALTER TABLE `erc20_transfers_backup_x` ATTACH PARTITION ALL FROM `erc20_transfers`",
    ]
    for sql in store.sent:
        parsed(engine, sql)


# -- the server's side: topology and an existing database -----------------------------------------------------
def test_a_cluster_of_one_shard_is_accepted_and_anything_else_refused_in_one_line():
    assert cluster.topology_problem("main", 1, 3) is None
    assert cluster.topology_problem("main", 1, 1) is None  # one replica: a cluster that will grow
    missing = cluster.topology_problem("mian", 0, 0)
    assert missing is not None and "'mian', which the server does not define" in missing
    sharded = cluster.topology_problem("main", 2, 4)
    assert sharded is not None and "has 2 shards; backfill runs on one shard with replicas" in sharded
    assert "\n" not in missing + sharded


class FakeClient:
    """clickhouse-connect's client as Store uses it: answers with `answers` (sql fragment -> rows), keeps commands."""

    def __init__(self, answers: dict[str, list[tuple]]):
        self.answers = answers
        self.commands: list[str] = []

    def query(self, sql: str, parameters: Any = None) -> Any:
        found = [r for fragment, r in self.answers.items() if fragment in sql]
        return type("Result", (), {"result_rows": found[0] if found else []})()

    def command(self, sql: str, parameters: Any = None, settings: Any = None) -> None:
        self.commands.append(sql)

    def close(self) -> None:
        pass


def test_the_store_checks_the_cluster_the_server_defines():
    check_cluster(FakeClient({"system.clusters": [(1, 2)]}), "main")
    with pytest.raises(ConfigError, match="has 3 shards"):
        check_cluster(FakeClient({"system.clusters": [(3, 6)]}), "main")
    with pytest.raises(ConfigError, match="does not define"):
        check_cluster(FakeClient({"system.clusters": [(0, 0)]}), "main")


@pytest.mark.parametrize("name", ["", CLUSTER])
def test_the_store_creates_the_schema_for_its_topology(name):
    client = FakeClient({"system.tables": []})
    store = Store(lambda: client, "test", patience_s=0, cluster=name)
    store.ensure_schema()
    if name:  # one statement at a time, in order, ON CLUSTER
        assert client.commands == cluster.ddl(name)
    else:  # a single node: each step's statements side by side; a new database needs no migration
        tables, migrations, views = schema.ddl_steps(set())
        assert migrations == []
        assert sorted(client.commands[: len(tables)]) == sorted(tables)
        assert sorted(client.commands[len(tables) :]) == sorted(views)
    assert store.on_cluster == ("" if not name else f" ON CLUSTER `{name}`")


def test_a_database_made_on_a_single_node_is_refused_in_cluster_mode_before_any_ddl():
    client = FakeClient({"system.tables": [("erc20_transfers_staging", "ReplacingMergeTree"), ("x", "Memory")]})
    store = Store(lambda: client, "test", patience_s=0, cluster=CLUSTER)
    with pytest.raises(ConfigError, match="table erc20_transfers_staging is ReplacingMergeTree, not replicated"):
        store.ensure_schema()
    assert client.commands == []
    made_there = FakeClient({"system.tables": [("erc20_transfers_staging", "ReplicatedReplacingMergeTree")]})
    Store(lambda: made_there, "test", patience_s=0, cluster=CLUSTER).ensure_schema()
    assert made_there.commands == cluster.ddl(CLUSTER)
