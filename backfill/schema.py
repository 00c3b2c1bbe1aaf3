"""ClickHouse DDL: idempotent, names the operators' runbooks already use (see docs/architecture.md)."""

from __future__ import annotations

ERC20_COLUMNS = ["block_number", "block_timestamp", "tx_hash", "log_index", "token_address",
                 "from_address", "to_address", "value", "_version"]
ERC1155_COLUMNS = ["block_number", "block_timestamp", "tx_hash", "log_index", "batch_index", "token_address",
                   "operator", "from_address", "to_address", "token_id", "value", "_version"]
BLOCK_COLUMNS = ["block_number", "block_hash", "timestamp"]
QUARANTINE_COLUMNS = ["block_number", "log_index", "tx_hash", "address", "topics", "data", "reason", "day_idx", "_version"]
CHECKPOINT_COLUMNS = ["day_idx", "status", "next_block", "erc20_count", "erc1155_count", "quarantined_count",
                      "skipped_count", "worker_id", "shards", "attempts", "failures", "error", "requests", "rpc_errors",
                      "compute_units", "updated_at"]
RPC_USAGE_COLUMNS = ["host", "worker_id", "pid", "endpoint", "requests", "errors", "compute_units", "parked",
                     "updated_at"]
HEARTBEAT_COLUMNS = ["host", "worker_id", "pid", "day_idx", "last_batch", "rows", "updated_at"]
DAY_COLUMNS = ["day_idx", "day", "start_block", "end_block", "clipped"]

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


def ddl() -> list[str]:
    return [sql.strip() for sql in TABLES.values()] + [sql.strip() for sql in VIEWS.values()]
