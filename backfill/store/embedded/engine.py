"""chDB for one data directory, the only module that imports chDB (in the server process only).

Every request gets its own chDB connection (opening one costs ~0.3 ms), so ``database``, settings and
``USE``/``SET`` never leak between requests; statements run on a thread pool, because chDB runs the
queries of different connections in parallel.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from backfill.store.embedded import http as eh
from backfill.store.embedded.guard import Policy

log = logging.getLogger("backfill.store.embedded")

FIRST_BYTES = 1 << 20  # results up to this size are answered whole (Content-Length, full summary)


class Engine:
    """chDB for one directory; all methods but ``call`` block and run on the pool."""

    def __init__(self, path: Path, threads: int, allow_external: bool = False):
        import chdb  # noqa: F401  (bootstraps the engine library)
        from chdb import _chdb

        self._chdb, self.path = _chdb, str(path)
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        self.anchor = _chdb.connect(self.path)  # type: ignore[attr-defined]  # a compiled module  # keeps the engine up while requests come and go
        row = self.anchor.query("SELECT version(), timezone()", "TabSeparated").bytes().decode()
        self.version, self.timezone = row.strip().split("\t")
        names = self.anchor.query("SELECT name FROM system.formats WHERE is_output", "TabSeparated")
        self.output_formats = {n.lower(): n for n in names.bytes().decode().split()}
        self.policy = Policy.for_engine(
            self._names("system.table_functions"),
            self._names("system.table_engines") + self._names("system.database_engines"),
            allow_external,
        )
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="chdb")

    def _names(self, table: str) -> list[str]:
        return self.anchor.query(f"SELECT name FROM {table}", "TabSeparated").bytes().decode().split()

    async def call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def connect(self, plan: eh.RequestPlan):
        conn = self._chdb.connect(self.path)  # type: ignore[attr-defined]
        with self._lock:
            self._open.add(conn)
        try:
            if plan.database != "default":
                conn.query(f"USE {eh.quote_identifier(plan.database)}", "TabSeparated")
            set_sql = eh.set_statement(plan.settings)
            if set_sql:
                conn.query(set_sql, "TabSeparated")
        except BaseException:
            self.release(conn)
            raise
        return conn

    def release(self, conn) -> None:
        with self._lock:
            self._open.discard(conn)
        conn.close()

    def execute(self, plan: eh.RequestPlan, sql: str, fmt: str):
        conn = self.connect(plan)
        try:
            res = conn.query(sql, fmt, params=plan.params)
            stats = eh.summary(
                res.rows_read(),
                res.bytes_read(),
                res.rows_written(),
                res.bytes_written(),
                res.rows_read(),
                res.elapsed(),
            )
            return res.bytes(), stats
        finally:
            self.release(conn)

    def begin_select(self, plan: eh.RequestPlan, sql: str, fmt: str):
        """Run a result statement; returns (first bytes, stats, next_chunk or None when complete)."""
        conn = self.connect(plan)
        try:
            stream = conn.send_query(sql, fmt, params=plan.params)
        except RuntimeError as ex:
            if "Streaming query is not supported" not in str(ex):
                self.release(conn)
                raise
            try:
                res = conn.query(sql, fmt, params=plan.params)
                return (
                    res.bytes(),
                    eh.summary(res.rows_read(), res.bytes_read(), result_rows=res.rows_read(), elapsed_s=res.elapsed()),
                    None,
                )
            finally:
                self.release(conn)
        state = {"rows": 0, "bytes": 0, "elapsed": 0.0, "done": False}

        def next_chunk() -> bytes:
            data = b""
            if state["done"]:
                return data
            try:
                res = conn.streaming_fetch_result(stream)
                if res is not None:  # an empty chunk ends the stream (a JSON footer comes with 0 rows)
                    data = res.bytes()
                    state["rows"] += res.rows_read()
                    state["bytes"] += res.bytes_read()
                    state["elapsed"] = max(state["elapsed"], res.elapsed())
            finally:
                if not data:
                    state["done"] = True
                    self.release(conn)
            return data

        def cancel() -> None:
            if not state["done"]:
                state["done"] = True
                try:
                    conn.streaming_cancel_query(stream)
                finally:
                    self.release(conn)

        first = bytearray()
        while len(first) < FIRST_BYTES:
            chunk = next_chunk()
            if not chunk:
                break
            first += chunk
        rows = state["rows"]
        stats = eh.summary(rows, state["bytes"], result_rows=rows, elapsed_s=state["elapsed"])
        next_chunk.cancel = cancel  # type: ignore[attr-defined]
        return bytes(first), stats, (None if state["done"] else next_chunk)

    def begin_insert(self, plan: eh.RequestPlan, statement: str, fmt: str):
        conn = self.connect(plan)
        try:
            return conn, conn.send_insert(statement, fmt)
        except BaseException:
            self.release(conn)
            raise

    def append(self, conn, handle, data: bytes) -> None:
        conn.insert_append(handle, data)

    def finish_insert(self, conn, handle, cancel: bool = False):
        try:
            if cancel:  # after a failure: keep the first error, not one from the abort
                try:
                    conn.insert_cancel(handle)
                except Exception as ex:  # noqa: BLE001
                    log.debug("insert cancel failed: %s", ex)
                return None
            res = conn.insert_done(handle)
            rows, size = res.rows_written(), res.bytes_written()
            return eh.summary(rows, size, rows, size, 0, res.elapsed())
        finally:
            self.release(conn)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for conn in list(self._open):
            self.release(conn)
        self.anchor.close()
