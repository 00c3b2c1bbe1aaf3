"""ClickHouse access through clickhouse-connect: a server (CLICKHOUSE_URL) or the embedded engine's HTTP endpoint.

The store writes what it is given; it never decides retries or what a day means.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any, Iterable, Sequence

import clickhouse_connect
from clickhouse_connect.driver import options as _driver_options
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from backfill import schema
from backfill.errors import StoreUnavailable
from backfill.native import NativeRows, table_block
from backfill.planner import DayPlan
from backfill.redact import redact_url
from backfill.settings import Settings, StoreTarget

UTC = dt.timezone.utc

# The driver resolves pandas lazily on the first insert (to accept DataFrames) and caches the answer in
# these module globals. We only insert lists, so answer "no pandas" up front: it saves ~0.5 s of import
# in every worker process. Query results are unaffected (we never ask for DataFrames).
for _name in ("pd", "pd_time_test"):
    vars(_driver_options).setdefault(_name, None)


def now_utc() -> dt.datetime:
    return dt.datetime.now(UTC)


def _client(target: StoreTarget, host: str, port: int, database: str, secure: bool):
    return clickhouse_connect.get_client(
        host=host, port=port, username=target.username, password=target.password, database=database,
        secure=secure, compress=False, autogenerate_session_id=False, connect_timeout=10,
        send_receive_timeout=300, query_limit=0,
    )


def resolve_endpoint(settings: Settings, start_embedded: bool = True) -> tuple[StoreTarget, str, int, bool]:
    """Where to connect: the configured server, or the embedded server for the data directory."""
    target = settings.store
    if target.url:
        return target, target.host, target.port, target.secure
    from backfill.embedded import ensure_server, server_url  # only the server process imports chdb

    url = ensure_server(settings.data_dir) if start_embedded else server_url(settings.data_dir)
    if not url:
        raise StoreUnavailable(f"the embedded store of {settings.data_dir} is not running")
    host, _, port = url.removeprefix("http://").partition(":")
    return target, host, int(port), False


class Store:
    def __init__(self, client: Any, label: str):
        self.client = client
        self.label = label
        # (table, columns) -> the columns' ClickHouse types. Without them clickhouse-connect asks the server
        # (DESCRIBE TABLE) before every insert: a round trip per insert, 2 of every 5 requests of a worker.
        self._column_types: dict[tuple[str, tuple[str, ...]], list[Any]] = {}

    @classmethod
    def connect(cls, settings: Settings, *, create: bool = True, start_embedded: bool = True) -> "Store":
        target, host, port, secure = resolve_endpoint(settings, start_embedded)
        label = redact_url(target.url) if target.url else f"embedded store of {settings.data_dir}"
        try:
            if create:
                bootstrap = _client(target, host, port, "default", secure)
                bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{target.database}`")
                bootstrap.close()
            client = _client(target, host, port, target.database, secure)
        except (ClickHouseError, OperationalError, OSError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if target.password:
                msg = msg.replace(target.password, "***")
            raise StoreUnavailable(f"cannot use ClickHouse at {label}: {msg[:200]}") from None
        store = cls(client, label)
        if create:
            store.ensure_schema()
        return store

    def close(self) -> None:
        self.client.close()

    # -- schema -------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        for stmt in schema.ddl():
            self.client.command(stmt)

    # -- generic ------------------------------------------------------------------------
    def query_rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        return self.client.query(sql, parameters=parameters).result_rows

    def scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        rows = self.query_rows(sql, parameters)
        return rows[0][0] if rows else None

    def column_types(self, table: str, columns: Sequence[str]) -> list[Any]:
        key = (table, tuple(columns))
        types = self._column_types.get(key)
        if types is None:
            types = self._column_types[key] = list(self.client.create_insert_context(table, list(columns)).column_types)
        return types

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: list[str]) -> None:
        if rows:
            self.client.insert(table, rows, column_names=columns, column_types=self.column_types(table, columns))

    def insert_columns(self, table: str, columns: dict[str, Sequence[Any]]) -> None:
        """Column-oriented insert: several times faster than rows in clickhouse-connect for wide batches."""
        names = list(columns)
        if names and len(columns[names[0]]):
            self.client.insert(table, list(columns.values()), column_names=names, column_oriented=True,
                               column_types=self.column_types(table, names))

    def insert_native(self, table: str, columns: list[str], rows: Sequence[NativeRows], stamp: dict[int, int],
                      version: int) -> None:
        """Rows the compiled scanner encoded, sent as one Native block (no per-value work in the driver)."""
        types = [t.insert_name for t in self.column_types(table, columns)]
        self.client.raw_insert(table, columns, insert_block=table_block(rows, columns, types, stamp, version),
                               fmt="Native")

    def warm_up(self) -> None:
        """Open the connection and import the insert machinery before the first real insert."""
        self.client.query("SELECT 1")
        import clickhouse_connect.driver.insert  # noqa: F401

    # -- meta ---------------------------------------------------------------------------
    def meta_get(self, key: str) -> str | None:
        return self.scalar("SELECT argMax(value, updated_at) FROM backfill_meta WHERE key = %(k)s HAVING count() > 0",
                           {"k": key})

    def meta_set(self, key: str, value: str) -> None:
        self.insert("backfill_meta", [(key, value, now_utc())], ["key", "value", "updated_at"])

    # -- plan ---------------------------------------------------------------------------
    def read_plan(self) -> list[DayPlan]:
        rows = self.query_rows("SELECT day_idx, day, start_block, end_block, clipped FROM backfill_days FINAL ORDER BY day_idx")
        return [DayPlan(int(r[0]), r[1], int(r[2]), int(r[3]), bool(r[4])) for r in rows]

    def write_plan(self, plans: Iterable[DayPlan]) -> None:
        rows = [(p.day_idx, p.day, p.start_block, p.end_block, int(p.clipped)) for p in plans]
        self.insert("backfill_days", rows, schema.DAY_COLUMNS)

    # -- checkpoints --------------------------------------------------------------------
    def checkpoints(self) -> dict[int, dict[str, Any]]:
        rows = self.client.query(
            f"SELECT {', '.join(schema.CHECKPOINT_COLUMNS)} FROM backfill_checkpoint FINAL").named_results()
        return {int(r["day_idx"]): r for r in rows}

    def write_checkpoint(self, *, day_idx: int, status: str, next_block: int, erc20_count: int, erc1155_count: int,
                         quarantined_count: int, skipped_count: int, worker_id: int, shards: int, attempts: int,
                         failures: int = 0, error: str = "", requests: int = 0, rpc_errors: int = 0,
                         compute_units: int = 0, endpoints: str = "") -> None:
        row = (day_idx, status, next_block, erc20_count, erc1155_count, quarantined_count, skipped_count,
               worker_id, shards, attempts, failures, error, requests, rpc_errors, compute_units, endpoints, now_utc())
        self.insert("backfill_checkpoint", [row], schema.CHECKPOINT_COLUMNS)

    def update_checkpoint(self, day_idx: int, **changes: Any) -> dict[str, Any] | None:
        """Write a new version of a day's latest checkpoint with some fields changed (None if the day has none)."""
        current = self.checkpoints().get(day_idx)
        if current is None:
            return None
        row = {**current, **changes, "updated_at": now_utc()}
        self.insert("backfill_checkpoint", [tuple(row[c] for c in schema.CHECKPOINT_COLUMNS)], schema.CHECKPOINT_COLUMNS)
        return row

    def heartbeat(self, worker_id: int, pid: int, day_idx: int, last_batch: str, rows: int) -> None:
        self.insert("worker_heartbeats", [(socket.gethostname(), worker_id, pid, day_idx, last_batch, rows, now_utc())],
                    schema.HEARTBEAT_COLUMNS)
