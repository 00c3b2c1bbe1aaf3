"""Cluster mode: the schema and the statements that rewrite tables, for one ClickHouse shard with N replicas.

Pure text in, text out (no connection): `clickhouse_cluster` empty returns every statement as it was, byte for
byte, so a single node runs the SQL it always ran. docs/cluster.md says why one shard and how to set it up.

What reaches every replica, and how:
- DDL (CREATE TABLE / VIEW / DATABASE, DROP, RENAME, EXCHANGE, ALTER … ADD COLUMN) changes each server's own
  metadata, so it is sent `ON CLUSTER` (`on_cluster`), through the cluster's distributed DDL queue;
- rows (INSERT, lightweight DELETE, OPTIMIZE merges, ATTACH PARTITION FROM) travel in the replicated table's
  own log: sent to the replica this process is connected to, which waits for itself (alter_sync=1) and, for a
  DELETE, for every replica (lightweight_deletes_sync=2). Sent ON CLUSTER instead, an OPTIMIZE would run on
  whichever replica takes the DDL task and return before the merge reached ours (dedup's check right after it
  would read unmerged rows), and the DDL queue gives up waiting after distributed_ddl_task_timeout (180 s),
  shorter than an OPTIMIZE FINAL of a large month.
"""

from __future__ import annotations

import re

from backfill.settings import CLUSTER_NAME
from backfill.store import schema

# `{uuid}`, not the table's name: ClickHouse writes {database} and {table} into a table's metadata as they were
# when it was created, so `CREATE TABLE b AS a` (the promotion's copies, its backups) would get a's path and fail
# with REPLICA_ALREADY_EXISTS, and so would a table re-created under a name whose dropped twin the server still
# holds (a DROP without SYNC waits 8 minutes). {uuid} stays a macro in the metadata and is the new table's own
# UUID, the same on every replica because ON CLUSTER passes the initiator's. {shard} and {replica} are the
# servers' macros (<macros> in each server's config).
ZOOKEEPER_PATH = "/clickhouse/tables/{uuid}/{shard}"
REPLICA_NAME = "{replica}"

# The replicated deduplication trap: a replicated table drops an INSERT whose block hashes like one of its last
# `replicated_deduplication_window` blocks (10000 blocks / 1 h by default in 26.x), and says nothing. The copy's
# staging rows carry a new `_version` on every write (time.time_ns() per window), so a redo never repeats a
# block; block_timestamps has no version: after a fork's rollback DELETEs a block's row, a later copy of the
# same canonical block (A -> B -> A) would insert the identical block and be dropped, leaving transfers without
# their timestamp. Off, per table (not per INSERT): the promotion's and the derived builds' INSERT … SELECT, an
# operator's SQL, and every table made AS one of these (the setting travels with CREATE … AS) are covered too.
# What the window would have given — an INSERT resent after an outage of unknown outcome kept once — the tables
# already give: the resent rows have the same key and version, which ReplacingMergeTree folds (FINAL, OPTIMIZE),
# exactly as on a single node, where MergeTree keeps no insert window at all (non_replicated_deduplication_window
# = 0).
NO_INSERT_DEDUP = "replicated_deduplication_window = 0, replicated_deduplication_window_for_async_inserts = 0"

_CREATE_TABLE = re.compile(r"^(\s*CREATE TABLE (?:IF NOT EXISTS )?`?\w+`?)(?= \()")
_CREATE_VIEW = re.compile(r"^(\s*CREATE VIEW (?:IF NOT EXISTS )?`?\w+`?)(?=\s+AS\s)")
_ALTER_TABLE = re.compile(r"^(\s*ALTER TABLE `?\w+`?)(?= )")
_ENGINE = re.compile(r"ENGINE = (\w*MergeTree)(?:\(([^()]*)\))?")


def on_cluster(cluster: str) -> str:
    """` ON CLUSTER `name`` to put after the object a DDL statement names; '' on a single node."""
    if not cluster:
        return ""
    if not CLUSTER_NAME.match(cluster):  # settings refuse such a name; this is a caller's bug
        raise ValueError(f"not a cluster name: {cluster!r}")
    return f" ON CLUSTER `{cluster}`"


def _after_name(sql: str, head: re.Pattern[str], cluster: str) -> str:
    rendered, n = head.subn(lambda m: m.group(1) + on_cluster(cluster), sql, count=1)
    if n != 1:
        raise ValueError(f"cannot place ON CLUSTER in: {sql.strip()[:80]}")
    return rendered


def replicated_engine(sql: str) -> str:
    """The statement's `ENGINE = XMergeTree(args)` as `ReplicatedXMergeTree(path, replica, args)`, with the insert
    deduplication window off (NO_INSERT_DEDUP): same columns, keys and version column."""
    engines = _ENGINE.findall(sql)
    if len(engines) != 1 or engines[0][0].startswith("Replicated") or "SETTINGS" in sql:
        raise ValueError(f"not one plain MergeTree-family engine: {sql.strip()[:80]}")
    family, args = engines[0]
    replicated = ", ".join([f"'{ZOOKEEPER_PATH}'", f"'{REPLICA_NAME}'", *([args] if args else [])])
    return _ENGINE.sub(f"ENGINE = Replicated{family}({replicated})", sql) + f"\n        SETTINGS {NO_INSERT_DEDUP}"


def table_ddl(sql: str, cluster: str) -> str:
    """A CREATE TABLE of a MergeTree-family table for this topology: as it is on a single node; ON CLUSTER with
    the Replicated engine in cluster mode."""
    if not cluster:
        return sql
    return replicated_engine(_after_name(sql, _CREATE_TABLE, cluster))


def ddl(cluster: str) -> list[str]:
    """schema.ddl() for a cluster: tables replicated, and every statement ON CLUSTER."""
    if not cluster:
        return schema.ddl()
    tables = [table_ddl(sql.strip(), cluster) for sql in schema.TABLES.values()]
    migrations = [_after_name(sql, _ALTER_TABLE, cluster) for sql in schema.MIGRATIONS]
    views = [_after_name(sql.strip(), _CREATE_VIEW, cluster) for sql in schema.VIEWS.values()]
    return tables + migrations + views


def clone_statements(source: str, dest: str, cluster: str, *, attach: bool = False) -> list[str]:
    """`dest` holding `source`'s parts, hard-linked (no data copied). A cluster does it in two statements:
    CREATE … CLONE AS ON CLUSTER creates the replicas and copies no part (ClickHouse #75219); ATTACH PARTITION ALL
    FROM, on this replica, reaches the others through the table's log. `attach`: the two statements on a single
    node too, for a Replicated database (ClickHouse Cloud), which refuses CLONE AS."""
    if not cluster and not attach:
        return [f"CREATE TABLE `{dest}` CLONE AS `{source}`"]
    return [
        f"CREATE TABLE `{dest}`{on_cluster(cluster)} AS `{source}`",
        f"ALTER TABLE `{dest}` ATTACH PARTITION ALL FROM `{source}`",
    ]


def topology_problem(cluster: str, shards: int, hosts: int) -> str | None:
    """Why the server's definition of `cluster` (system.clusters: distinct shards, hosts) is not one backfill
    runs on, or None."""
    if hosts == 0:
        return (
            f"BACKFILL_CLICKHOUSE_CLUSTER names {cluster!r}, which the server does not define (system.clusters); "
            f"name a cluster of its remote_servers, or leave it empty for a single node"
        )
    if shards > 1:
        return (
            f"cluster {cluster!r} has {shards} shards; backfill runs on one shard with replicas "
            f"(docs/cluster.md: ReplacingMergeTree folds a key's versions only within one shard)"
        )
    return None


def engine_problems(engines: dict[str, str]) -> list[str]:
    """Tables of the schema (name -> engine, from system.tables) that cluster mode would not replicate: a
    database created on a single node, which CREATE TABLE IF NOT EXISTS leaves as it is."""
    return [
        f"table {name} is {engine}, not replicated: this database was created without BACKFILL_CLICKHOUSE_CLUSTER "
        f"(docs/cluster.md: moving a database to a cluster)"
        for name, engine in sorted(engines.items())
        if name in schema.TABLES and not engine.startswith(("Replicated", "Shared"))
    ]
