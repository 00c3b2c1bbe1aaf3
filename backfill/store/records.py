"""Typed rows of the operational tables: a day's checkpoint, a worker's heartbeat, a process's RPC usage.

Each record's fields are its table's columns, in the order of `backfill.store.schema` (stated once, there);
`row()` is what an insert sends. Each has one writer and one reader on `backfill.store.client.Store`
(`write_checkpoints` / `checkpoints`, `heartbeat` / `heartbeats`, `record_rpc_usage` / `rpc_usage_by_endpoint`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
from typing import Any

from backfill.store import schema


def _row(record: Any, columns: list[str]) -> tuple:
    return tuple(getattr(record, c) for c in columns)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One version of a day's progress (backfill_checkpoint, ReplacingMergeTree(updated_at) by day_idx)."""

    day_idx: int
    status: str
    next_block: int
    erc20_count: int
    erc1155_count: int
    quarantined_count: int
    skipped_count: int
    worker_id: int
    shards: int
    attempts: int
    failures: int
    error: str
    requests: int
    rpc_errors: int
    compute_units: int
    endpoints: str
    updated_at: dt.datetime

    def row(self) -> tuple:
        return _row(self, schema.CHECKPOINT_COLUMNS)

    @classmethod
    def from_columns(cls, values: dict[str, Any]) -> "Checkpoint":
        return cls(**{c: values[c] for c in schema.CHECKPOINT_COLUMNS})


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """A worker's latest sign of life (worker_heartbeats, ReplacingMergeTree(updated_at) by host, worker_id)."""

    host: str
    worker_id: int
    pid: int
    day_idx: int
    last_batch: str
    rows: int
    updated_at: dt.datetime

    def row(self) -> tuple:
        return _row(self, schema.HEARTBEAT_COLUMNS)

    def last_update(self) -> float:
        """When the beat was written, epoch seconds (the column is UTC; the driver reads it back naive)."""
        return self.updated_at.replace(tzinfo=dt.timezone.utc).timestamp()


def host_name() -> str:
    """The name this process's host goes by in heartbeats, RPC usage and leases: BACKFILL_HOST_NAME (a pod's
    or a container's stable name, or hosts simulated on one machine), else the machine's hostname."""
    return os.environ.get("BACKFILL_HOST_NAME") or socket.gethostname()


# rpc_usage rows of calls no worker made, so that every call billed is counted: the follower's polls (the
# supervisor's process) and the audit's recount (by hand or the rebuild's).
FOLLOWER_USAGE_ID = 65535
AUDIT_USAGE_ID = 65534


@dataclasses.dataclass(frozen=True)
class RpcUsage:
    """A process's cumulative use of one endpoint (rpc_usage, by host, worker_id, pid, endpoint): a worker's, or
    the follower's / the audit's under FOLLOWER_USAGE_ID / AUDIT_USAGE_ID."""

    host: str
    worker_id: int
    pid: int
    endpoint: str
    requests: int
    errors: int
    compute_units: int
    parked: int
    rps: float
    limit_answers: int
    waits: int
    waited_s: float
    damaged: int
    error_classes: dict[str, int]
    updated_at: dt.datetime

    def row(self) -> tuple:
        return _row(self, schema.RPC_USAGE_COLUMNS)


for _record, _columns in (
    (Checkpoint, schema.CHECKPOINT_COLUMNS),
    (Heartbeat, schema.HEARTBEAT_COLUMNS),
    (RpcUsage, schema.RPC_USAGE_COLUMNS),
):  # the field order is the table's column order: a mismatch fails at import, not in an insert
    assert [f.name for f in dataclasses.fields(_record)] == _columns, _record
