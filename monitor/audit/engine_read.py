"""The audit's reading of eth_getLogs answers: in an engine of its own (chDB in this process, in memory), in SQL.

The copy reads answers with its compiled scanner (backfill/decode/_fastlogs.c) and decoder.py; the audit's
recount must not share that code, and used to parse every log with orjson and decode it with eth-abi (~26k
logs/s). Here the answer's bytes go to the engine as they came: its JSON parser reads the logs into typed columns,
SQL checks every field's form, decodes the transfers and writes each row's canonical text (backfill.store.digest);
once the block headers' timestamps are known, the rows' hashes are summed there too. No Python object is made
per log.

The engine takes only what it reads exactly as the reference does (backfill/decode/reference.py, eth-abi): an
answer in the plain JSON-RPC form, every log in the form a node writes (lowercase hex, canonical quantities,
`removed` a boolean or absent, one hash a block, no escapes), ERC-1155 batches in the canonical ABI layout. Any
other answer is handed back (read() returns None) and takes the reference path, so the reference decides every
case this module does not; tests/unit/test_engine_read.py holds the two to the same digests on near misses.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import sys
import threading
from array import array
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from backfill.chain.answers import ReadAnswer
from backfill.decode.events import ERC20_TRANSFER, ERC1155_BATCH, ERC1155_SINGLE

log = logging.getLogger("monitor.audit.recount")

# -- the envelope (pure) ---------------------------------------------------------------------------------------------
# ids as JSON writes integers (no leading zero: orjson, the reference, refuses "id":07 and so must we)
_HEAD = re.compile(rb'\s*\{(?:"jsonrpc":"2\.0",)?(?:"id":(0|[1-9][0-9]*),)?(?:"jsonrpc":"2\.0",)?"result":')
_TAIL = re.compile(rb'(?:,"jsonrpc":"2\.0")?(?:,"id":(0|[1-9][0-9]*))?(?:,"jsonrpc":"2\.0")?\}\s*\Z')
ENGINE_THREADS = 2  # answers read at once (the engine releases the GIL: both cores work while the node serves)
CONNECTION_SETTINGS = (
    # a thread each: answers are read side by side
    "SET max_threads = 1, "
    # Every branch of these statements is safe to evaluate on every log (no function here throws), and
    # evaluating them all is cheaper than masking them: a quarter of the engine's time.
    "short_circuit_function_evaluation = 'disable', "
    # Each answer is a few statements over a table of its own, each planned afresh: planning is most of a small
    # answer's cost. These passes buy nothing on a one-thread scan of a Memory table (no expression repeats often
    # enough to pay for its JIT compilation, no plan to reorder, no AND chain to widen), and skipping them saves
    # ~10 ms an answer, a tenth of a 20,000-log answer.
    "compile_expressions = 0, query_plan_enable_optimizations = 0, optimize_and_compare_chain = 0"
)
_EDGE = 256  # bytes at either end where the envelope's other members are looked for


def split_envelope(body: bytes, start: int = 0, end: int | None = None) -> tuple[int, int, str | None] | None:
    """(start, end, id) of the logs array inside a plain answer {"jsonrpc","id","result":[...]} found in
    body[start:end], None when the answer has another form. The array itself is judged by the engine's parser."""
    end = len(body) if end is None else end
    head = _HEAD.match(body, start, end)
    if head is None:
        return None
    tail = _TAIL.search(body, max(head.end(), end - _EDGE), end)
    if tail is None:
        return None
    a, b = head.end(), tail.start()
    if b - a < 2 or body[a : a + 1] != b"[" or body[b - 1 : b] != b"]":
        return None
    rid = head.group(1) or tail.group(1)
    return a, b, rid.decode() if rid else None


def split_batch(body: bytes) -> tuple[int, int, list[tuple[str, str | None]]] | None:
    """(start, end, batch) of the lag guard's batch answer [eth_blockNumber's, eth_getLogs'] (either order):
    where the logs array lies and [(id as JSON text, string result or None for the logs)]; None for any other form."""
    text = body.rstrip()
    if not (text.startswith(b"[{") and text.endswith(b"}]")):
        return None
    first_end = text.find(b"},", 0, _EDGE)  # the small item first: [{"...","result":"0x..."},{...logs...}]
    if first_end > 0:
        small, logs_at = _string_item(text[1 : first_end + 1]), (first_end + 2, len(text) - 1)
    else:
        last_start = text.rfind(b"},{", max(0, len(text) - _EDGE))  # or last: [{...logs...},{"...":"0x..."}]
        if last_start < 0:
            return None
        small, logs_at = _string_item(text[last_start + 2 : -1]), (1, last_start + 1)
    if small is None:
        return None
    found = split_envelope(text, *logs_at)
    if found is None or found[2] is None:
        return None
    return found[0], found[1], [small, (found[2], None)]


def _string_item(item: bytes) -> tuple[str, str] | None:
    """(id text, result) of a small batch item whose result is a string; None otherwise."""
    try:
        doc = orjson.loads(item)
    except orjson.JSONDecodeError:
        return None
    if not (isinstance(doc, dict) and isinstance(doc.get("result"), str) and type(doc.get("id")) is int):
        return None
    if "error" in doc:
        return None
    return str(doc["id"]), doc["result"]


# -- the SQL ---------------------------------------------------------------------------------------------------------
INPUT_COLUMNS = (
    "address String, topics Array(String), data String, blockHash Nullable(String), blockNumber String, "
    "blockTimestamp Nullable(String), transactionHash String, logIndex String, removed Variant(Bool, String)"
)
# The parser as strict as orjson + the reference's type checks: no value read as another JSON type.
INPUT_SETTINGS = (
    "input_format_skip_unknown_fields = 1, input_format_json_read_bools_as_strings = 0, "
    "input_format_json_read_bools_as_numbers = 0, input_format_json_read_numbers_as_strings = 0, "
    "input_format_json_read_arrays_as_strings = 0, input_format_json_read_objects_as_strings = 0, "
    "input_format_json_try_infer_numbers_from_strings = 0, input_format_null_as_default = 0, "
    "input_format_allow_errors_num = 0, input_format_allow_errors_ratio = 0, input_format_json_ignore_unnecessary_fields = 0"
)


def _word(index: str) -> str:
    """The UInt256 in 32-byte word `index` (an SQL expression, 0-based) of the log's data."""
    return f"reinterpretAsUInt256(reverse(unhex(substring(data, 3 + 64 * ({index}), 64))))"


def _quantity(field: str, digits: int) -> str:
    return f"match({field}, '^0x(0|[1-9a-f][0-9a-f]{{0,{digits - 1}}})$')"


_ZERO = "'" + "0" * 24 + "'"
_ADDR = "concat('0x', substring({t}, 27))"  # the address in an indexed topic (its 12 leading zero bytes checked)
_T20, _T1, _TB = (f"'{e.topic0}'" for e in (ERC20_TRANSFER, ERC1155_SINGLE, ERC1155_BATCH))
_KEY = "toString(bn), '|', toString(li), '|'"
_PARTIES = f"transactionHash, '|', address, '|', {_ADDR.format(t='t1')}, '|', {_ADDR.format(t='t2')}"

# Each log's fields checked and its kind found, in layers, each reading the columns of the one below (one flat
# SELECT of these expressions cost the analyser ~20 ms per answer).
_FORMS = f"""
SELECT
    reinterpretAsUInt64(reverse(unhex(leftPad(substring(blockNumber, 3), 16, '0')))) AS bn,
    reinterpretAsUInt32(reverse(unhex(leftPad(substring(logIndex, 3), 8, '0')))) AS li,
    ifNull(blockHash, '') AS bh,
    ifNull(variantElement(removed, 'Bool'), false) AS gone,
    length(topics) AS nt, topics[1] AS t0, topics[2] AS t1, topics[3] AS t2, topics[4] AS t3,
    address, transactionHash, data,
    match(address, '^0x[0-9a-f]{{40}}$')
        AND nt BETWEEN 1 AND 4 AND arrayAll(t -> match(t, '^0x[0-9a-f]{{64}}$'), topics)
        AND t0 IN ({_T20}, {_T1}, {_TB})
        AND length(data) % 2 = 0 AND match(data, '^0x[0-9a-f]*$')
        AND {_quantity("blockNumber", 16)} AND {_quantity("logIndex", 8)}
        AND match(transactionHash, '^0x[0-9a-f]{{64}}$')
        AND (blockHash IS NULL OR match(blockHash, '^0x[0-9a-f]{{64}}$'))
        AND (blockTimestamp IS NULL OR {_quantity("blockTimestamp", 8)})
        AND variantType(removed) IN ('Bool', 'None') AS canonical
FROM {{table}}
"""
_KINDS = f"""
SELECT bn, li, bh, gone, canonical, t0, t1, t2, t3, address, transactionHash, data,
    substring(t1, 3, 24) = {_ZERO} AND substring(t2, 3, 24) = {_ZERO} AS z2,
    t0 = {_T20} AND nt = 3 AND length(data) = 66 AND z2 AS erc20,
    t0 = {_T1} AND nt = 4 AND length(data) = 130 AND z2 AND substring(t3, 3, 24) = {_ZERO} AS single,
    t0 = {_TB} AND nt = 4 AND z2 AND substring(t3, 3, 24) = {_ZERO} AS batch,
    if(batch AND length(data) >= 194, {_word("2")}, toUInt256(0)) AS n_ids
FROM ({_FORMS})
"""
_BATCHES = f"""
SELECT bn, li, bh, gone, canonical, t0, t1, t2, t3, address, transactionHash, data, erc20, single, batch, n_ids,
    batch AND n_ids < 65536 AND {_word("0")} = 64 AND {_word("1")} = 96 + 32 * n_ids
        AND length(data) = 2 + 64 * (4 + 2 * n_ids) AND {_word("3 + toUInt32(n_ids)")} = n_ids AS batch_ok
FROM ({_KINDS})
"""
# Per log: its block (and hash), whether the engine reads it as the reference would (`odd` when not: the whole
# answer goes to the reference) and how many rows it gives.
DECODED = f"""
SELECT bn, bh, NOT canonical OR (NOT gone AND batch AND NOT batch_ok) AS odd,
    multiIf(gone OR odd, 0, batch_ok, toUInt32(n_ids), erc20 OR single, 1, 0) AS rows
FROM ({_BATCHES})
"""

SUMMARY = f"""
SELECT toUInt64(sum(logs)) AS logs, toUInt64(sum(odd)) AS odd, toUInt64(max(hashes)) AS hashes,
       groupArray((bn, h, rows)) AS blocks
FROM (SELECT bn, count() AS logs, countIf(odd) AS odd, uniqExactIf(bh, bh != '') AS hashes, anyIf(bh, bh != '') AS h,
             toUInt64(sum(rows)) AS rows
      FROM ({DECODED}) GROUP BY bn)
SETTINGS output_format_json_quote_64bit_integers = 0
"""

# The rows of an answer the engine took (every log canonical, every batch in the canonical layout: what
# DECODED checked), by kind: 0 none (removed, or not a valid transfer), 1 ERC-20, 2 ERC-1155 single, 3 a batch of n.
_ROWS = f"""
SELECT
    reinterpretAsUInt64(reverse(unhex(leftPad(substring(blockNumber, 3), 16, '0')))) AS bn,
    reinterpretAsUInt32(reverse(unhex(leftPad(substring(logIndex, 3), 8, '0')))) AS li,
    length(topics) AS nt, topics[1] AS t0, topics[2] AS t1, topics[3] AS t2, topics[4] AS t3,
    address, transactionHash, data,
    substring(t1, 3, 24) = {_ZERO} AND substring(t2, 3, 24) = {_ZERO} AS z2,
    multiIf(ifNull(variantElement(removed, 'Bool'), false), 0,
        t0 = {_T20} AND nt = 3 AND length(data) = 66 AND z2, 1,
        nt = 4 AND z2 AND substring(t3, 3, 24) = {_ZERO}, multiIf(t0 = {_T1} AND length(data) = 130, 2, t0 = {_TB}, 3, 0),
        0) AS kind,
    toUInt32(if(kind = 3, {_word("2")}, 0)) AS n
FROM {{table}}
"""

# The canonical text of each row (backfill.store.digest: the store hashes the same text) with its block's
# timestamp, hashed; per standard and block: rows, the hashes' sum, the hashes. {table}, {blocks} and {stamps}
# are filled in. One text for the three kinds (an ERC-20 row lacks the batch index, the operator and the second
# value), so that each row decodes two words, not the five of three texts built side by side.
_TS = "toString(transform(bn, {blocks}, {stamps}, 0))"
_VALUE = _word("if(kind = 3, 3 + bi, 0)")  # ERC-20 value, ERC-1155 single id, the batch's id
_SECOND = _word("if(kind = 3, 4 + n + bi, 1)")  # ERC-1155 single value, the batch's value
DIGESTS = f"""
SELECT std, bn, count() AS n, toString(sum(toUInt128(h))) AS total,
       arrayStringConcat(groupArray(leftPad(hex(h), 16, '0'))) AS hashes
FROM (
    SELECT if(kind = 1, 20, 1155) AS std, bn, arrayJoin(if(kind = 3, range(n), [toUInt32(0)])) AS bi,
        kind = 1 AS e20,
        reinterpretAsUInt64(MD5(concat({_KEY}, if(e20, '', concat(toString(bi), '|')), {_PARTIES},
            if(e20, '', concat('|', {_ADDR.format(t="t3")})), '|', toString({_VALUE}),
            if(e20, '', concat('|', toString({_SECOND}))), '|', {_TS}))) AS h
    FROM ({_ROWS}) WHERE kind != 0
)
GROUP BY std, bn
SETTINGS output_format_json_quote_64bit_integers = 0
"""

STANDARD = {20: "erc20", 1155: "erc1155"}


def _fill(sql: str, **values: str) -> str:
    """The statement with its {name} places filled in (not str.format: the patterns hold braces of their own)."""
    for name, value in values.items():
        sql = sql.replace("{" + name + "}", value)
    return sql


# -- the reader (I/O: the engine) ------------------------------------------------------------------------------------
class EngineAnswer(ReadAnswer):
    """An answer the engine took: its logs decoded into a table of their own until the recount finishes them."""

    __slots__ = ("body", "_batch", "n_logs", "blocks", "row_blocks", "table")

    def __init__(self, body: bytes, batch: list[tuple[str, str | None]] | None, n_logs: int, table: str):
        self.body, self._batch, self.n_logs, self.table = body, batch, n_logs, table
        self.blocks: dict[int, str] = {}  # every block the logs name -> its hash ("" when none given)
        self.row_blocks: list[int] = []  # the blocks with transfer rows

    def __len__(self) -> int:
        return self.n_logs

    @property
    def batch(self) -> list[tuple[str, str | None]] | None:
        return self._batch

    def block_hashes(self) -> dict[int, str]:
        return dict(self.blocks)

    def fallback_logs(self) -> list[Any]:
        return []  # the engine takes an answer whole or not at all


class EngineReader:
    """One in-memory engine for an audit run. Calling it is the RPC client's reader of eth_getLogs answers (see
    backfill.chain.client.Reader); finish() sums the hashes of an answer's rows once its blocks' timestamps are
    known; close() drops everything. An engine that cannot start or fails on an answer hands answers back.

    Every call runs on `executor`, one thread of its own: the client reads answers there, off the event loop
    (the engine releases the GIL, so the next answers keep arriving while it works), and the recount awaits
    finish() and discard() there (run())."""

    def __init__(self, threads: int = ENGINE_THREADS) -> None:
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="audit-engine")
        self._local = threading.local()  # each thread's connection (the tables are the process's, shared)
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self._broken = False
        self._names = itertools.count(1)
        self._tables: set[str] = set()
        self.taken = self.handed_back = 0  # answers read here / left to the reference (the run's log says)
        self.executor.submit(lambda: self._conn)  # the engine's ~0.1 s import, while the run probes its endpoints

    @property
    def _conn(self) -> Any:
        """This thread's connection (opened on first use), None when the engine cannot start."""
        conn = getattr(self._local, "conn", None)
        if conn is None and not self._broken:
            try:
                import chdb  # noqa: F401  (bootstraps the engine library)
                from chdb import _chdb

                conn = _chdb.connect(":memory:")  # type: ignore[attr-defined]  # a compiled module
                conn.query(CONNECTION_SETTINGS, "TabSeparated")
                self._local.conn = conn
                with self._lock:
                    self._conns.append(conn)
            except Exception as exc:  # noqa: BLE001 - no engine: every answer takes the reference path
                self._broken = True
                log.warning("event=engine_unavailable reason=%r action=reference_path", str(exc).splitlines()[0][:200])
        return conn

    def _query(self, sql: str, fmt: str = "TabSeparated") -> bytes:
        return self._conn.query(sql, fmt).bytes()

    def __call__(self, body: bytes) -> EngineAnswer | None:
        return self.read(body)

    async def run(self, fn: Any, *args: Any) -> Any:
        """fn(*args) on the engine's thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def read(self, body: bytes) -> EngineAnswer | None:
        """The engine's reading of a 200 answer, or None to leave it to orjson (and the reference)."""
        batch = None
        found = split_envelope(body)
        if found is None:
            cut = split_batch(body)
            if cut is None:
                return self._hand_back()
            start, end, batch = cut
        else:
            start, end, _ = found
        if b"\\" in body or self._conn is None:
            return self._hand_back()
        table = f"answer_{next(self._names)}"
        try:
            self._query(f"CREATE TABLE {table} ({INPUT_COLUMNS}) ENGINE = Memory")
            self._tables.add(table)
            handle = self._conn.send_insert(f"INSERT INTO {table} SETTINGS {INPUT_SETTINGS}", "JSONEachRow")
            self._conn.insert_append(handle, body[start:end])
            self._conn.insert_done(handle)
            summary = orjson.loads(self._query(_fill(SUMMARY, table=table), "JSONEachRow"))
        except RuntimeError as exc:  # the parser refused it (not one JSON array of logs in the form asked for)
            log.debug("event=engine_refused reason=%r", str(exc).splitlines()[0][:200])
            self._drop(table)
            return self._hand_back()
        if summary["odd"] or summary["hashes"] > 1:
            self._drop(table)
            return self._hand_back()
        answer = EngineAnswer(body, batch, int(summary["logs"]), table)
        answer.blocks = {int(bn): h for bn, h, _ in summary["blocks"]}
        answer.row_blocks = sorted(int(bn) for bn, _, rows in summary["blocks"] if rows)
        self.taken += 1
        return answer

    def _hand_back(self) -> EngineAnswer | None:
        """None: the answer is left to orjson and the reference; counted for the run's log."""
        self.handed_back += 1
        return None

    def finish(self, answer: EngineAnswer, timestamps: dict[int, int]) -> list[tuple[str, int, int, int, bytes]]:
        """The answer's rows with their blocks' timestamps, per standard and block: (standard, block, rows, hash
        sum, the rows' hashes: 8 bytes each, big-endian, read by hash_values); the answer's table is dropped."""
        missing = [bn for bn in answer.row_blocks if bn not in timestamps]
        if missing:
            raise ValueError(f"no timestamp for block {missing[0]}")
        out: list[tuple[str, int, int, int, bytes]] = []
        try:
            if answer.row_blocks:
                blocks = "[" + ",".join(map(str, answer.row_blocks)) + "]"
                stamps = "[" + ",".join(str(timestamps[bn]) for bn in answer.row_blocks) + "]"
                sql = _fill(DIGESTS, blocks=blocks, stamps=stamps, table=answer.table)
                for line in self._query(sql, "JSONEachRow").splitlines():
                    row = orjson.loads(line)
                    std = STANDARD[int(row["std"])]
                    out.append((std, int(row["bn"]), int(row["n"]), int(row["total"]), bytes.fromhex(row["hashes"])))
        finally:
            self.discard(answer)
        return out

    def discard(self, answer: EngineAnswer) -> None:
        if answer.table:
            self._drop(answer.table)

    def _drop(self, table: str) -> None:
        self._tables.discard(table)
        if self._broken:
            return
        try:
            self._query(f"DROP TABLE IF EXISTS {table}")
        except RuntimeError as exc:
            log.debug("event=engine_drop_failed table=%s reason=%r", table, str(exc)[:200])

    def close(self) -> None:
        """Drop the engine (on its thread) and stop the thread."""
        self.executor.submit(self._close).result()
        self.executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            for table in list(self._tables):
                self._drop(table)
        for conn in self._conns:
            conn.close()
        self._conns.clear()


def hash_values(blob: bytes) -> array:
    """The row hashes of finish() as integers."""
    out = array("Q")
    out.frombytes(blob)
    if sys.byteorder == "little":
        out.byteswap()
    return out
