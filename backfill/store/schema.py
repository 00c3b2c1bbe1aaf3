"""ClickHouse DDL: idempotent, names the operators' runbooks already use (see docs/architecture.md)."""

from __future__ import annotations

import re

ERC20_COLUMNS = [
    "block_number",
    "block_timestamp",
    "tx_hash",
    "log_index",
    "token_address",
    "from_address",
    "to_address",
    "value",
    "_version",
]
ERC1155_COLUMNS = [
    "block_number",
    "block_timestamp",
    "tx_hash",
    "log_index",
    "batch_index",
    "token_address",
    "operator",
    "from_address",
    "to_address",
    "token_id",
    "value",
    "_version",
]
BLOCK_COLUMNS = ["block_number", "block_hash", "timestamp"]
BLOCK_HASH_COLUMNS = ["block_number", "block_hash", "parent_hash", "recorded_at"]
QUARANTINE_COLUMNS = [
    "block_number",
    "log_index",
    "tx_hash",
    "address",
    "topics",
    "data",
    "reason",
    "day_idx",
    "_version",
]
CHECKPOINT_COLUMNS = [
    "day_idx",
    "status",
    "next_block",
    "erc20_count",
    "erc1155_count",
    "quarantined_count",
    "skipped_count",
    "worker_id",
    "shards",
    "attempts",
    "failures",
    "error",
    "requests",
    "rpc_errors",
    "compute_units",
    "endpoints",
    "updated_at",
]
RPC_USAGE_COLUMNS = [
    "host",
    "worker_id",
    "pid",
    "endpoint",
    "requests",
    "errors",
    "compute_units",
    "parked",
    "rps",
    "limit_answers",
    "waits",
    "waited_s",
    "damaged",
    "error_classes",
    "updated_at",
]
HEARTBEAT_COLUMNS = ["host", "worker_id", "pid", "day_idx", "last_batch", "rows", "updated_at"]
DAY_COLUMNS = ["day_idx", "day", "start_block", "end_block", "clipped"]
FINGERPRINT_COLUMNS = [
    "day_idx",
    "erc20_count",
    "erc1155_count",
    "erc20_hash",
    "erc1155_hash",
    "endpoints",
    "completed_at",
    "recorded_at",
]
GATE_COLUMNS = ["run_id", "run_at", "level", "gate", "verdict", "value", "threshold", "days", "detail"]
AUDIT_COLUMNS = [
    "run_id",
    "run_at",
    "day_idx",
    "day",
    "endpoint",
    "verdict",
    "chain_erc20",
    "chain_erc1155",
    "store_erc20",
    "store_erc1155",
    "recorded_erc20",
    "recorded_erc1155",
    "chain_hash",
    "store_hash",
    "recorded_hash",
    "versions",
    "detail",
]
PROMOTION_COLUMNS = ["at", "action", "table_name", "other_table", "rows", "checksum", "detail"]

TABLES: dict[str, str] = {
    "erc20_transfers_staging": """
        CREATE TABLE IF NOT EXISTS erc20_transfers_staging (
            block_number UInt64,
            block_timestamp DateTime('UTC'),
            tx_hash String,
            log_index UInt32,
            token_address String,
            from_address String,
            to_address String,
            value UInt256,
            _version UInt64
        ) ENGINE = ReplacingMergeTree(_version)
        PARTITION BY toYYYYMM(block_timestamp)
        ORDER BY (block_number, log_index)""",
    "erc1155_transfers_staging": """
        CREATE TABLE IF NOT EXISTS erc1155_transfers_staging (
            block_number UInt64,
            block_timestamp DateTime('UTC'),
            tx_hash String,
            log_index UInt32,
            batch_index UInt32,
            token_address String,
            operator String,
            from_address String,
            to_address String,
            token_id UInt256,
            value UInt256,
            _version UInt64
        ) ENGINE = ReplacingMergeTree(_version)
        PARTITION BY toYYYYMM(block_timestamp)
        ORDER BY (block_number, log_index, batch_index)""",
    "block_timestamps": """
        CREATE TABLE IF NOT EXISTS block_timestamps (
            block_number UInt64,
            block_hash String,
            timestamp DateTime('UTC')
        ) ENGINE = ReplacingMergeTree
        ORDER BY block_number""",
    # The hashes of copied blocks that were not final when they were copied (above head - finality depth),
    # and of the final block below them: what a fork of the chain's tip is found by (backfill.chain.reorg).
    "block_hashes": """
        CREATE TABLE IF NOT EXISTS block_hashes (
            block_number UInt64,
            block_hash String,
            parent_hash String,
            recorded_at DateTime64(6, 'UTC')
        ) ENGINE = ReplacingMergeTree(recorded_at)
        ORDER BY block_number""",
    "backfill_days": """
        CREATE TABLE IF NOT EXISTS backfill_days (
            day_idx UInt32,
            day Date,
            start_block UInt64,
            end_block Int64,
            clipped UInt8,
            planned_at DateTime64(6, 'UTC') DEFAULT now64(6)
        ) ENGINE = ReplacingMergeTree(planned_at)
        ORDER BY day_idx""",
    "backfill_checkpoint": """
        CREATE TABLE IF NOT EXISTS backfill_checkpoint (
            day_idx UInt32,
            status LowCardinality(String),
            next_block UInt64,
            erc20_count UInt64,
            erc1155_count UInt64,
            quarantined_count UInt64,
            skipped_count UInt64,
            worker_id UInt16,
            shards UInt16,
            attempts UInt32,
            failures UInt32,
            error String,
            requests UInt64,
            rpc_errors UInt64,
            compute_units UInt64,
            endpoints String,
            updated_at DateTime64(6, 'UTC')
        ) ENGINE = ReplacingMergeTree(updated_at)
        ORDER BY day_idx""",
    "worker_heartbeats": """
        CREATE TABLE IF NOT EXISTS worker_heartbeats (
            host String,
            worker_id UInt16,
            pid UInt32,
            day_idx Int64,
            last_batch String,
            rows UInt64,
            updated_at DateTime64(6, 'UTC')
        ) ENGINE = ReplacingMergeTree(updated_at)
        ORDER BY (host, worker_id)""",
    # Per worker process and endpoint: cumulative requests, errors and estimated compute units.
    "rpc_usage": """
        CREATE TABLE IF NOT EXISTS rpc_usage (
            host String,
            worker_id UInt16,
            pid UInt32,
            endpoint String,
            requests UInt64,
            errors UInt64,
            compute_units UInt64,
            parked UInt8,
            rps Float64,  -- the process's current pace on the endpoint (calls/s); 0 = not limited
            limit_answers UInt64,  -- calls refused by rate-limit answers (sent again, not errors)
            waits UInt64,  -- requests that waited for the endpoint's budget
            waited_s Float64,
            damaged UInt64,  -- answers refused as damaged (answer_check): not what a node can produce
            error_classes Map(String, UInt64),  -- the errors by kind (Transient, range, quota, ...): sum = errors
            updated_at DateTime64(6, 'UTC')
        ) ENGINE = ReplacingMergeTree(updated_at)
        ORDER BY (host, worker_id, pid, endpoint)""",
    # Re-runs write the same keys again; ReplacingMergeTree keeps one row per log after FINAL.
    "transfer_quarantine": """
        CREATE TABLE IF NOT EXISTS transfer_quarantine (
            block_number UInt64,
            log_index UInt32,
            tx_hash String,
            address String,
            topics Array(String),
            data String,
            reason String,
            day_idx UInt32,
            _version UInt64
        ) ENGINE = ReplacingMergeTree(_version)
        ORDER BY (block_number, log_index)""",
    # What a COMPLETE day looked like in the store when it completed: counts, a content hash per table
    # (backfill.store.digest) and the endpoints that served its logs. A later mismatch names the day.
    "day_fingerprints": """
        CREATE TABLE IF NOT EXISTS day_fingerprints (
            day_idx UInt32,
            erc20_count UInt64,
            erc1155_count UInt64,
            erc20_hash String,
            erc1155_hash String,
            endpoints String,
            completed_at DateTime64(6, 'UTC'),
            recorded_at DateTime64(6, 'UTC')
        ) ENGINE = ReplacingMergeTree(recorded_at)
        ORDER BY day_idx""",
    # One row per gate per run of `backfill gates` (by hand, by the supervisor, by the rebuild).
    "gate_results": """
        CREATE TABLE IF NOT EXISTS gate_results (
            run_id String,
            run_at DateTime64(6, 'UTC'),
            level LowCardinality(String),
            gate LowCardinality(String),
            verdict LowCardinality(String),
            value Float64,
            threshold Float64,
            days Array(UInt32),
            detail String
        ) ENGINE = MergeTree
        ORDER BY (run_at, gate)""",
    # One row per audited day per run of `backfill verify`.
    "audit_results": """
        CREATE TABLE IF NOT EXISTS audit_results (
            run_id String,
            run_at DateTime64(6, 'UTC'),
            day_idx UInt32,
            day Date,
            endpoint String,
            verdict LowCardinality(String),
            chain_erc20 Int64,
            chain_erc1155 Int64,
            store_erc20 Int64,
            store_erc1155 Int64,
            recorded_erc20 Int64,
            recorded_erc1155 Int64,
            chain_hash String,
            store_hash String,
            recorded_hash String,
            versions String,
            detail String
        ) ENGINE = MergeTree
        ORDER BY (run_at, day_idx)""",
    # Promotions, backups and rollbacks: what was swapped, with row counts and checksums.
    "backfill_promotions": """
        CREATE TABLE IF NOT EXISTS backfill_promotions (
            at DateTime64(6, 'UTC'),
            action LowCardinality(String),
            table_name String,
            other_table String,
            rows UInt64,
            checksum String,
            detail String
        ) ENGINE = MergeTree
        ORDER BY at""",
    # Leases (backfill/store/leases.py): one holder at a time for a shard, the plan, a rebuild, across hosts.
    # A claim's versions are stamped with the server's clock; the earliest live claim of a name holds it.
    "leases": """
        CREATE TABLE IF NOT EXISTS leases (
            name String,
            holder String,
            host String,
            pid UInt32,
            claimed_at DateTime64(6, 'UTC'),
            renewed_at DateTime64(6, 'UTC'),
            ttl_s Float64,
            released UInt8
        ) ENGINE = ReplacingMergeTree(renewed_at)
        ORDER BY (name, holder)""",
    "backfill_meta": """
        CREATE TABLE IF NOT EXISTS backfill_meta (
            key String,
            value String,
            updated_at DateTime64(6, 'UTC') DEFAULT now64(6)
        ) ENGINE = ReplacingMergeTree(updated_at)
        ORDER BY key""",
}

# Views that resolve the latest version, for runbook queries that must not double count.
VIEWS: dict[str, str] = {
    "backfill_progress": """
        CREATE VIEW IF NOT EXISTS backfill_progress AS
        SELECT d.day_idx AS day_idx, d.day AS day, d.start_block AS start_block, d.end_block AS end_block,
               if(c.day_idx = d.day_idx, c.status, 'PENDING') AS status,
               c.next_block AS next_block, c.erc20_count AS erc20_count, c.erc1155_count AS erc1155_count,
               c.quarantined_count AS quarantined_count, c.skipped_count AS skipped_count,
               c.worker_id AS worker_id, c.attempts AS attempts, c.failures AS failures, c.error AS error, c.updated_at AS updated_at
        FROM (SELECT * FROM backfill_days FINAL) AS d
        LEFT JOIN (SELECT * FROM backfill_checkpoint FINAL) AS c ON c.day_idx = d.day_idx""",
    "erc20_transfers_staging_final": "CREATE VIEW IF NOT EXISTS erc20_transfers_staging_final AS SELECT * FROM erc20_transfers_staging FINAL",
    "erc1155_transfers_staging_final": "CREATE VIEW IF NOT EXISTS erc1155_transfers_staging_final AS SELECT * FROM erc1155_transfers_staging FINAL",
}


# Columns added after a table was first released: databases created earlier gain them on the next start.
MIGRATIONS = [
    "ALTER TABLE backfill_checkpoint ADD COLUMN IF NOT EXISTS endpoints String AFTER compute_units",
    "ALTER TABLE rpc_usage ADD COLUMN IF NOT EXISTS rps Float64 AFTER parked",
    "ALTER TABLE rpc_usage ADD COLUMN IF NOT EXISTS limit_answers UInt64 AFTER rps",
    "ALTER TABLE rpc_usage ADD COLUMN IF NOT EXISTS waits UInt64 AFTER limit_answers",
    "ALTER TABLE rpc_usage ADD COLUMN IF NOT EXISTS waited_s Float64 AFTER waits",
    "ALTER TABLE rpc_usage ADD COLUMN IF NOT EXISTS damaged UInt64 AFTER waited_s",
    "ALTER TABLE rpc_usage ADD COLUMN IF NOT EXISTS error_classes Map(String, UInt64) AFTER damaged",
]


def ddl() -> list[str]:
    return [statement for step in ddl_steps() for statement in step]


def ddl_steps(present: set[str] | None = None) -> list[list[str]]:
    """The schema in dependency order: the tables, then the migrations, then the views; each step's statements
    independent of each other. `present`: the tables that exist already, when known; only their migrations
    are needed (a table created from TABLES has every column). None: every migration."""
    migrations = [sql for sql, (table, _) in zip(MIGRATIONS, migrated_columns()) if present is None or table in present]
    return [[sql.strip() for sql in TABLES.values()], migrations, [sql.strip() for sql in VIEWS.values()]]


_MIGRATION = re.compile(r"ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+) ")


def migrated_columns() -> list[tuple[str, str]]:
    """(table, column) of every migration: the columns a current database has beyond the first release."""
    found = [_MIGRATION.match(sql) for sql in MIGRATIONS]
    assert all(found), "every migration adds one column: ALTER TABLE t ADD COLUMN IF NOT EXISTS c ..."
    return [(m.group(1), m.group(2)) for m in found if m]


def is_current(names: set[str], columns: set[tuple[str, str]]) -> bool:
    """Whether a database with these tables and views, and these (table, column) pairs, already has the whole
    schema: then the ~30 idempotent DDL statements need not be sent (each costs a round trip and a metadata
    write on every command and every worker start)."""
    wanted = set(TABLES) | set(VIEWS)
    return wanted <= names and set(migrated_columns()) <= columns
