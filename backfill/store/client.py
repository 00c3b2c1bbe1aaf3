"""ClickHouse access through clickhouse-connect: a server (CLICKHOUSE_URL) or the embedded engine's HTTP endpoint.

The store writes what it is given; it never decides what a day means. Every call goes through one policy
(`backfill.store.faults`): an outage or back-pressure waits and tries again with backoff, logged once when
it starts and once when it ends, for as long as the process's patience lasts (workers: until the store is
back or they are told to stop; the supervisor: not at all, its loop treats the outage as a state; commands:
a few minutes). The embedded server's address is read again on every reconnect: it may come back on
another port.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import clickhouse_connect
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver import options as _driver_options
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from backfill.chain.planner import DayPlan
from backfill.errors import ConfigError, StoreUnavailable
from backfill.redact import redact_url, scrub
from backfill.settings import Settings, StoreTarget
from backfill.store import cluster, schema
from backfill.store.faults import BACKPRESSURE, StoreFault, classify, may_retry, retry_delay_s
from backfill.store.native_format import NativeRows, table_block
from backfill.store.records import Checkpoint, Heartbeat, RpcUsage, host_name

UTC = dt.timezone.utc
log = logging.getLogger("store")
# The driver logs each failed request (some with a traceback) before raising it; this module's policy logs an
# outage once, with what it does next. The driver's errors still reach us as exceptions.
for _chatty in ("clickhouse_connect", "urllib3.connectionpool"):
    logging.getLogger(_chatty).setLevel(logging.CRITICAL)
T = TypeVar("T")
STILL_DOWN_EVERY_S = 60.0  # a long outage is logged again this often, with its duration so far
COMMAND_PATIENCE_S = 300.0  # a command (rebuild, promote, sql) waits this long for a store that went away
DDL_THREADS = 8  # schema statements sent side by side (ensure_schema)

# The driver resolves pandas, numpy, pyarrow and polars lazily (on the first insert or query, to accept and
# give DataFrames and arrays) and caches the answer in these module globals. We only insert lists and read
# rows, so answer "none" up front: it saves ~0.5 s of pandas and ~0.08 s of numpy import in every process.
for _name in ("pd", "pd_time_test", "np", "arrow", "pl"):
    vars(_driver_options).setdefault(_name, None)


def now_utc() -> dt.datetime:
    return dt.datetime.now(UTC)


class StoreGone(StoreUnavailable):
    """The embedded server of the data directory is not running (and this process does not start it)."""


class StoreOutage(StoreUnavailable):
    """The store stayed unreachable (or kept pushing back) longer than this process waits."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _client(target: StoreTarget, host: str, port: int, database: str, secure: bool, timeout_s: float):
    return clickhouse_connect.get_client(
        host=host,
        port=port,
        username=target.username,
        password=target.password,
        database=database,
        secure=secure,
        compress=False,
        autogenerate_session_id=False,
        connect_timeout=min(10.0, timeout_s),
        send_receive_timeout=timeout_s,
        query_limit=0,
    )


def side_by_side(*calls: Callable[[], Any]) -> list[Any]:
    """Independent store calls sent at once, each on a thread of its own (the store client is thread-safe):
    one round trip of waiting instead of one per call. Their results in order; the first failure raises."""
    if len(calls) < 2:
        return [call() for call in calls]
    with ThreadPoolExecutor(len(calls), thread_name_prefix="store-side") as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


def on_thread(call: Callable[[], T], name: str) -> Future[T]:
    """A store call begun on a thread of its own (named `name`), its Future returned; the thread ends with it."""
    pool = ThreadPoolExecutor(1, thread_name_prefix=name)
    try:
        return pool.submit(call)
    finally:
        pool.shutdown(wait=False)


def check_cluster(client: Any, name: str) -> None:
    """Refuse a cluster the server does not define, or one of several shards (backfill.store.cluster)."""
    shards, hosts = client.query(
        "SELECT uniqExact(shard_num), count() FROM system.clusters WHERE cluster = %(c)s", parameters={"c": name}
    ).result_rows[0]
    problem = cluster.topology_problem(name, int(shards), int(hosts))
    if problem:
        raise ConfigError(problem)


def resolve_endpoint(settings: Settings, start_embedded: bool = True) -> tuple[StoreTarget, str, int, bool]:
    """Where to connect, as whom: the configured server, or the embedded server for the data directory with the
    credential its server keeps beside it (read again on every reconnect, like the address)."""
    target = settings.store
    if target.url:
        return target, target.host, target.port, target.secure
    from backfill.store.embedded import ensure_server, read_credential, server_url  # only the server imports chdb

    url = ensure_server(settings.data_dir) if start_embedded else server_url(settings.data_dir)
    if not url:
        raise StoreGone(f"the embedded store of {settings.data_dir} is not running")
    host, _, port = url.removeprefix("http://").partition(":")
    credential = read_credential(settings.data_dir)
    if credential is not None:
        target = dataclasses.replace(target, username=credential.user, password=credential.password)
    return target, host, int(port), False


class Outage:
    """One process's view of the store's health, shared by its threads: when it went away, why, and the
    log lines that mark the start and end of each outage (not one per failed call)."""

    def __init__(self, label: str, context: str):
        self.label = label
        self.context = context
        self._lock = threading.Lock()
        self.down_since: float | None = None  # wall clock, for status
        self.kind = ""
        self.reason = ""
        self.retries = 0
        self.recovered_at = 0.0  # wall clock of the end of the last outage (the supervisor judges beats from it)
        self._last_logged = 0.0

    def failed(self, fault: StoreFault, what: str, next_try_s: float) -> None:
        with self._lock:
            now = time.time()
            self.retries += 1
            if self.down_since is None:
                self.down_since, self.kind, self.reason, self._last_logged = now, fault.kind, fault.reason, now
                event = "store_backpressure" if fault.kind == BACKPRESSURE else "store_down"
                action = "slow_down_and_retry" if fault.kind == BACKPRESSURE else "wait_and_retry"
                log.warning(
                    "%sevent=%s store=%s reason=%r during=%s action=%s next_try_s=%.2f",
                    self.context,
                    event,
                    self.label,
                    fault.reason,
                    what,
                    action,
                    next_try_s,
                )
            elif now - self._last_logged >= STILL_DOWN_EVERY_S:
                self._last_logged = now
                self.reason = fault.reason
                log.warning(
                    "%sevent=store_still_%s store=%s reason=%r down_s=%.0f retries=%d action=wait_and_retry",
                    self.context,
                    "backpressure" if self.kind == BACKPRESSURE else "down",
                    self.label,
                    fault.reason,
                    now - self.down_since,
                    self.retries,
                )

    def recovered(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is None:
                return
            log.info(
                "%sevent=%s store=%s down_s=%.1f retries=%d",
                self.context,
                "store_backpressure_over" if self.kind == BACKPRESSURE else "store_back",
                self.label,
                time.time() - self.down_since,
                self.retries,
            )
            self.down_since, self.kind, self.reason, self.retries = None, "", "", 0
            self.recovered_at = time.time()

    def state(self) -> dict[str, Any]:
        """For status: {"reachable": bool, "down_since": epoch | None, "error": str}."""
        with self._lock:
            return {
                "reachable": self.down_since is None or self.kind == BACKPRESSURE,
                "down_since": self.down_since,
                "kind": self.kind,
                "error": self.reason,
            }


class Store:
    """One process's connection to the store. `patience_s`: how long one call waits out an outage (None =
    until the store is back or `abandon` is set, 0 = not at all: the caller handles StoreOutage)."""

    def __init__(
        self,
        factory: Callable[[], Any],
        label: str,
        *,
        patience_s: float | None = COMMAND_PATIENCE_S,
        context: str = "",
        cluster: str = "",
    ):
        self._factory = factory  # builds a client for the store's current address
        self.cluster = cluster  # the ON CLUSTER name of every DDL statement ("" = a single node; docs/cluster.md)
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.label = label
        self.patience_s = patience_s
        self.abandon = threading.Event()  # set when the process is stopping: waiting calls give up at once
        self.closing = threading.Event()  # set to cut a job short: new calls are refused too (not for workers,
        # whose last window is written and checkpointed on a stop)
        self.outage = Outage(label, f"{context} " if context else "")
        # (table, columns) -> the columns' ClickHouse types. Without them clickhouse-connect asks the server
        # (DESCRIBE TABLE) before every insert: a round trip per insert, 2 of every 5 requests of a worker.
        self._column_types: dict[tuple[str, tuple[str, ...]], list[Any]] = {}
        self._catalogue: dict[tuple[str, str], str] = {}  # (table, column) -> type name (learn_columns)

    @classmethod
    def connect(
        cls,
        settings: Settings,
        *,
        create: bool = True,
        start_embedded: bool = True,
        patience_s: float | None = COMMAND_PATIENCE_S,
        connect_patience_s: float | None = 0.0,
        context: str = "",
        timeout_s: float = 300.0,
        abandon: threading.Event | None = None,
    ) -> "Store":
        """A store for these settings. The first contact waits `connect_patience_s` for a store that is down
        (0: a command reports a store that is not there at once; a worker waits for it, until `abandon`)."""
        target = settings.store
        label = redact_url(target.url) if target.url else f"embedded store of {settings.data_dir}"

        def factory() -> Any:
            endpoint, host, port, secure = resolve_endpoint(settings, start_embedded)
            return _client(endpoint, host, port, target.database, secure, timeout_s)

        store = cls(factory, label, patience_s=connect_patience_s, context=context, cluster=settings.clickhouse_cluster)
        if abandon is not None:
            store.abandon = abandon
        try:
            if create:

                def bootstrap(_none: None) -> Any:
                    """A client of the server's default database makes ours, then becomes ours (its handshake,
                    three round trips, is not made twice)."""
                    endpoint, host, port, secure = resolve_endpoint(settings, start_embedded)
                    client = _client(endpoint, host, port, "default", secure, timeout_s)
                    try:
                        if store.cluster:
                            check_cluster(client, store.cluster)
                        client.command(f"CREATE DATABASE IF NOT EXISTS `{target.database}`{store.on_cluster}")
                    except BaseException:
                        client.close()
                        raise
                    client.database = target.database
                    return client

                store._client = store._retrying("connect", bootstrap, need_client=False)
            else:
                store._retrying("connect", lambda client: client)
        except (ClickHouseError, OperationalError, OSError, StoreUnavailable) as exc:
            msg = (
                exc.reason
                if isinstance(exc, StoreOutage)
                else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            )
            msg = scrub(msg, [target.password] if target.password else [])
            raise StoreUnavailable(f"cannot use ClickHouse at {label}: {msg[:200]}") from None
        store.patience_s = patience_s
        if create:
            store.ensure_schema()
        return store

    @property
    def on_cluster(self) -> str:
        """` ON CLUSTER `name`` for the DDL statements this store's tables take ('' on a single node): the one
        place SQL that creates, drops, renames or swaps tables learns the topology (backfill.store.cluster)."""
        return cluster.on_cluster(self.cluster)

    @property
    def client(self) -> Any:
        """The clickhouse-connect client (built on first use, rebuilt after an outage)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._factory()
        return self._client

    def _drop_client(self, broken: Any) -> None:
        """Forget a client after a connection failure: the next call builds one for the current address."""
        with self._client_lock:
            if self._client is broken and broken is not None:
                self._client = None
                try:
                    broken.close()
                except Exception:  # noqa: BLE001 - closing a dead connection pool may fail; it is gone anyway
                    pass

    def close(self) -> None:
        self.abandon.set()
        if self._client is not None:
            self._client.close()

    # -- the one retry policy ---------------------------------------------------------------
    def _retrying(self, what: str, call: Callable[[Any], T], *, idempotent: bool = True, need_client: bool = True) -> T:
        """Run call(client); ride out outages and back-pressure as the policy says, within this store's patience."""
        started = time.monotonic()
        attempt = 0
        if self.closing.is_set():
            raise StoreOutage(f"not sent to ClickHouse at {self.label}: the job is being stopped ({what})", "stopping")
        while True:
            client = None
            try:
                client = self.client if need_client else None
                result = call(client)
            except Exception as exc:
                fault = classify(exc)
                if not may_retry(fault, idempotent):
                    if fault is not None:  # an outage hit a call we must not send twice: say so, plainly
                        raise StoreOutage(
                            f"ClickHouse at {self.label}: {fault.reason} during {what}; the "
                            f"statement may or may not have run, so it was not sent again",
                            fault.reason,
                        ) from None
                    raise
                assert fault is not None
                if fault.kind != BACKPRESSURE:  # the next try connects afresh, to the store's current address
                    self._drop_client(client)
                attempt += 1
                delay = retry_delay_s(fault, attempt)
                waited = time.monotonic() - started
                if self.abandon.is_set() or (self.patience_s is not None and waited + delay > self.patience_s):
                    self.outage.failed(fault, what, 0.0)
                    raise StoreOutage(
                        f"ClickHouse at {self.label} unreachable: {fault.reason} (waited {waited:.0f}s during {what})",
                        fault.reason,
                    ) from None
                self.outage.failed(fault, what, delay)
                if self.abandon.wait(delay):
                    raise StoreOutage(
                        f"ClickHouse at {self.label} unreachable: {fault.reason}; stopped waiting "
                        f"(process stopping) during {what}",
                        fault.reason,
                    ) from None
                continue
            self.outage.recovered()
            return result

    def command(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        *,
        idempotent: bool = True,
    ) -> Any:
        """A statement. Mark it idempotent=False when running it twice would differ from once (EXCHANGE,
        RENAME, DROP without IF EXISTS): after an outage of unknown outcome it is then not sent again."""
        return self._retrying(
            sql.split(None, 1)[0].upper(),
            lambda c: c.command(sql, parameters=parameters, settings=settings),
            idempotent=idempotent,
        )

    # -- schema -------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Every table, migrated column and view there; on a single node, read first and sent only when
        something is missing (docs/architecture.md, The schema)."""
        if self.cluster:  # before any DDL: a database made on a single node is refused, not half converted
            engines = dict(self.query_rows("SELECT name, engine FROM system.tables WHERE database = currentDatabase()"))
            problems = cluster.engine_problems(engines)
            if problems:
                raise ConfigError("\n".join(problems))
            for stmt in cluster.ddl(self.cluster):
                self.command(stmt)
            return
        catalogue = self.learn_columns()
        present = {table for table, _ in catalogue}
        if schema.is_current(present, set(catalogue)):
            return
        # In three steps, each one's statements side by side (~30 round trips, one after the other, were a fifth
        # of a first start): tables, then the migrations of tables that were there before (a table made now
        # has every column), then the views over them.
        steps = schema.ddl_steps(present)
        with ThreadPoolExecutor(DDL_THREADS, thread_name_prefix="ddl") as pool:
            for statements in steps:
                list(pool.map(self.command, statements))
        self.learn_columns()

    def learn_columns(self) -> dict[tuple[str, str], str]:
        """(table, column) -> type name of the database's columns, in one query: the insert paths take their
        types from it, where each table would otherwise cost a DESCRIBE round trip at its first insert."""
        rows = self.query_rows("SELECT table, name, type FROM system.columns WHERE database = currentDatabase()")
        self._catalogue = {(r[0], r[1]): r[2] for r in rows}
        return self._catalogue

    # -- generic ------------------------------------------------------------------------
    def query(self, sql: str, parameters: dict[str, Any] | None = None, *, idempotent: bool = True) -> Any:
        """The driver's QueryResult (column_names, result_rows, named_results()). An operator's ad-hoc SQL is
        idempotent=False: it may write, so an answer lost mid-request is not sent again."""
        return self._retrying("query", lambda c: c.query(sql, parameters=parameters), idempotent=idempotent)

    def query_rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        return self.query(sql, parameters).result_rows

    def named_rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return list(self.query(sql, parameters).named_results())

    def scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        rows = self.query_rows(sql, parameters)
        return rows[0][0] if rows else None

    def column_types(self, table: str, columns: Sequence[str]) -> list[Any]:
        key = (table, tuple(columns))
        types = self._column_types.get(key)
        if types is None and all((table, c) in self._catalogue for c in columns):
            types = self._column_types[key] = [get_from_name(self._catalogue[(table, c)]) for c in columns]
        if types is None:
            types = self._column_types[key] = self._retrying(
                f"describe {table}", lambda c: list(c.create_insert_context(table, list(columns)).column_types)
            )
        return types

    # Inserts are sent again after an outage of unknown outcome: the same rows with the same _version, which
    # ReplacingMergeTree folds into one after FINAL (checkpoints and heartbeats are keyed the same way).
    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: list[str]) -> None:
        if rows:
            types = self.column_types(table, columns)
            self._retrying(f"insert {table}", lambda c: c.insert(table, rows, column_names=columns, column_types=types))

    def insert_columns(self, table: str, columns: Mapping[str, Sequence[Any]]) -> None:
        """Column-oriented insert: several times faster than rows in clickhouse-connect for wide batches."""
        names = list(columns)
        if names and len(columns[names[0]]):
            types = self.column_types(table, names)
            data = list(columns.values())
            self._retrying(
                f"insert {table}",
                lambda c: c.insert(table, data, column_names=names, column_oriented=True, column_types=types),
            )

    def insert_native(
        self, table: str, columns: list[str], rows: Sequence[NativeRows], stamp: dict[int, int], version: int
    ) -> None:
        """Rows the compiled scanner encoded, sent as one Native block (no per-value work in the driver)."""
        types = [t.insert_name for t in self.column_types(table, columns)]
        block = table_block(rows, columns, types, stamp, version)
        self._retrying(f"insert {table}", lambda c: c.raw_insert(table, columns, insert_block=block, fmt="Native"))

    def warm_up(self) -> None:
        """Open the connection, learn the insert column types and import the insert machinery before the first
        real insert (the types once: a table they lack is described at its first insert)."""
        if not self._catalogue:
            self.learn_columns()
        import clickhouse_connect.driver.insert  # noqa: F401

    # -- meta ---------------------------------------------------------------------------
    def meta_get(self, key: str) -> str | None:
        return self.meta_values([key]).get(key)

    def meta_values(self, keys: Iterable[str]) -> dict[str, str]:
        """The keys' values in one query (a key never set is absent)."""
        rows = self.query_rows(
            "SELECT key, argMax(value, updated_at) FROM backfill_meta WHERE key IN %(k)s GROUP BY key",
            {"k": tuple(keys)},
        )
        return {str(k): str(v) for k, v in rows}

    def meta_set(self, key: str, value: str) -> None:
        self.meta_update({key: value})

    def meta_update(self, values: Mapping[str, str]) -> None:
        """Several keys in one insert."""
        stamp = now_utc()
        self.insert("backfill_meta", [(k, v, stamp) for k, v in values.items()], ["key", "value", "updated_at"])

    # -- plan ---------------------------------------------------------------------------
    def read_plan(self) -> list[DayPlan]:
        rows = self.query_rows(
            "SELECT day_idx, day, start_block, end_block, clipped FROM backfill_days FINAL ORDER BY day_idx"
        )
        return [DayPlan(int(r[0]), r[1], int(r[2]), int(r[3]), bool(r[4])) for r in rows]

    def day_count(self) -> int:
        """Days in the plan."""
        return int(self.scalar("SELECT count() FROM backfill_days FINAL") or 0)

    def write_plan(self, plans: Iterable[DayPlan]) -> None:
        rows = [(p.day_idx, p.day, p.start_block, p.end_block, int(p.clipped)) for p in plans]
        self.insert("backfill_days", rows, schema.DAY_COLUMNS)

    # -- the chain's tip ----------------------------------------------------------------
    def record_block_hashes(self, links: Mapping[int, tuple[str, str]]) -> None:
        """block -> (hash, parent hash) of copied blocks that may still be reorganised (backfill.chain.reorg)."""
        if links:
            at = now_utc()
            rows = [(bn, h, parent, at) for bn, (h, parent) in sorted(links.items())]
            self.insert("block_hashes", rows, schema.BLOCK_HASH_COLUMNS)

    def tracked_hashes(self, from_block: int = 0) -> dict[int, str]:
        """The recorded tip hashes at or above from_block: block -> hash."""
        rows = self.query_rows(
            "SELECT block_number, block_hash FROM block_hashes FINAL WHERE block_number >= %(b)s", {"b": from_block}
        )
        return {int(bn): str(h) for bn, h in rows}

    def tip_tracked_from(self) -> int | None:
        """The first block whose hash the workers record as they copy (the final head at planning), or None."""
        text = self.meta_get("tip_tracked_from")
        return int(text) if text else None

    def tracked_top(self) -> int | None:
        """The highest block whose hash is recorded, None when none is."""
        row = self.query_rows("SELECT max(block_number), count() FROM block_hashes FINAL")[0]
        return int(row[0]) if int(row[1]) else None

    # -- checkpoints --------------------------------------------------------------------
    def checkpoints(self) -> dict[int, dict[str, Any]]:
        rows = self.named_rows(f"SELECT {', '.join(schema.CHECKPOINT_COLUMNS)} FROM backfill_checkpoint FINAL")
        return {int(r["day_idx"]): r for r in rows}

    def checkpoint_status_counts(self) -> dict[str, int]:
        """Days per checkpoint status (latest versions)."""
        rows = self.query_rows("SELECT status, count() FROM backfill_checkpoint FINAL GROUP BY status")
        return {str(status): int(n) for status, n in rows}

    def checkpoint_progress_since(self, since: dt.datetime) -> list[dict[str, Any]]:
        """Per day checkpointed at or after `since`: rows and next_block now (rows_now, next_now) and as of the
        last version before `since` (rows_then, next_then, had_before), from every version (not FINAL)."""
        return self.named_rows(
            "SELECT day_idx, argMax(erc20_count + erc1155_count, updated_at) AS rows_now, "
            "argMax(next_block, updated_at) AS next_now, "
            "argMaxIf(erc20_count + erc1155_count, updated_at, updated_at < %(since)s) AS rows_then, "
            "argMaxIf(next_block, updated_at, updated_at < %(since)s) AS next_then, "
            "countIf(updated_at < %(since)s) > 0 AS had_before "
            "FROM backfill_checkpoint GROUP BY day_idx HAVING max(updated_at) >= %(since)s",
            {"since": since},
        )

    def write_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        """The one checkpoint writer: new versions of some days' progress, after the data they describe."""
        self.insert("backfill_checkpoint", [cp.row() for cp in checkpoints], schema.CHECKPOINT_COLUMNS)

    def write_checkpoint(
        self,
        *,
        day_idx: int,
        status: str,
        next_block: int,
        erc20_count: int,
        erc1155_count: int,
        quarantined_count: int,
        skipped_count: int,
        worker_id: int,
        shards: int,
        attempts: int,
        failures: int = 0,
        error: str = "",
        requests: int = 0,
        rpc_errors: int = 0,
        compute_units: int = 0,
        endpoints: str = "",
    ) -> None:
        self.write_checkpoints(
            [
                Checkpoint(
                    day_idx=day_idx,
                    status=status,
                    next_block=next_block,
                    erc20_count=erc20_count,
                    erc1155_count=erc1155_count,
                    quarantined_count=quarantined_count,
                    skipped_count=skipped_count,
                    worker_id=worker_id,
                    shards=shards,
                    attempts=attempts,
                    failures=failures,
                    error=error,
                    requests=requests,
                    rpc_errors=rpc_errors,
                    compute_units=compute_units,
                    endpoints=endpoints,
                    updated_at=now_utc(),
                )
            ]
        )

    def update_checkpoint(self, day_idx: int, **changes: Any) -> dict[str, Any] | None:
        """Write a new version of a day's latest checkpoint with some fields changed (None if the day has none)."""
        current = self.checkpoints().get(day_idx)
        if current is None:
            return None
        row = {**current, **changes, "updated_at": now_utc()}
        self.write_checkpoints([Checkpoint.from_columns(row)])
        return row

    # -- heartbeats ---------------------------------------------------------------------
    def heartbeat(self, worker_id: int, pid: int, day_idx: int, last_batch: str, rows: int) -> None:
        """The one heartbeat writer: this worker process is alive, on this day and batch."""
        beat = Heartbeat(host_name(), worker_id, pid, day_idx, last_batch, rows, now_utc())
        self.insert("worker_heartbeats", [beat.row()], schema.HEARTBEAT_COLUMNS)

    def heartbeats(self, host: str) -> dict[int, Heartbeat]:
        """The one heartbeat reader: the latest beat of each worker slot of this host, by worker_id."""
        rows = self.query_rows(
            f"SELECT {', '.join(schema.HEARTBEAT_COLUMNS)} FROM worker_heartbeats FINAL WHERE host = %(h)s",
            {"h": host},
        )
        beats = [Heartbeat(*r) for r in rows]
        return {int(b.worker_id): b for b in beats}

    # -- RPC usage ----------------------------------------------------------------------
    def record_rpc_usage(self, worker_id: int, pid: int, usage: Iterable[dict[str, Any]]) -> None:
        """The one RPC-usage writer: this process's cumulative use of each endpoint (RpcClient.usage())."""
        stamp = now_utc()
        host = host_name()
        records = [
            RpcUsage(
                host=host,
                worker_id=worker_id,
                pid=pid,
                endpoint=u["endpoint"],
                requests=u["requests"],
                errors=sum(u["errors"].values()),
                compute_units=u["compute_units"],
                parked=int(u["parked"]),
                rps=float(u["rps"] or 0.0),
                limit_answers=u["limit_answers"],
                waits=u["waits"],
                waited_s=u["waited_s"],
                damaged=u["damaged"],
                error_classes={str(k): int(v) for k, v in u["errors"].items() if v},
                updated_at=stamp,
            )
            for u in usage
        ]
        self.insert("rpc_usage", [r.row() for r in records], schema.RPC_USAGE_COLUMNS)

    def rpc_usage_by_endpoint(self) -> list[tuple]:
        """The one RPC-usage reader, summed per endpoint over every process: endpoint, requests, errors,
        compute_units, parked (any), rps and waiting-now (of rows at most a minute old), limit_answers, waits,
        waited_s, damaged; ordered by endpoint."""
        return self.query_rows(
            "SELECT endpoint, sum(requests), sum(errors), sum(compute_units), max(parked), "
            "sumIf(rps, updated_at > now() - 60), sum(limit_answers), sum(waits), sum(waited_s), "
            "maxIf(waits > 0 AND rps > 0, updated_at > now() - 60), sum(damaged) FROM rpc_usage FINAL "
            "GROUP BY endpoint ORDER BY endpoint"
        )

    def rpc_errors_by_kind(self) -> list[tuple]:
        """The RPC errors of every process summed per endpoint and kind (the client's error counters: an
        exception's class, or `range` / `batch` / `quota` / `behind`): endpoint, kind, errors; ordered."""
        return self.query_rows(
            "SELECT endpoint, kind, sum(n) FROM rpc_usage FINAL "
            "ARRAY JOIN mapKeys(error_classes) AS kind, mapValues(error_classes) AS n "
            "GROUP BY endpoint, kind ORDER BY endpoint, kind"
        )
