"""A fault-injecting proxy in front of a ClickHouse HTTP interface, for integration tests of store outages.

`with StoreProxy(store_url) as proxy: ... clickhouse_connect.get_client(host="127.0.0.1", port=proxy.port)`
runs an aiohttp server on 127.0.0.1 in a background thread with its own event loop. Every HTTP request is
forwarded to the upstream as it came (method, path, query string, headers but the hop-by-hop ones, body
streamed chunk by chunk, credentials untouched), and the answer is streamed back as the upstream gave it
(status, headers including every `X-ClickHouse-*`, body, compressed or not), unless a fault answers instead.

Faults (StoreFault) are matched against the request's SQL: the `query` URL parameter, else the start of the
body (clickhouse-connect sends `INSERT INTO t (a, b) FORMAT Native` in either place; commands put the SQL in
the body). A fault names the statements (leading keywords, default INSERT) and tables it takes, and lasts
until a time.monotonic() deadline, for a number of requests, or both (whichever ends first), or until
reconfigured. The first live fault in list order that matches a request answers it:

- "too_many_parts" / "memory_limit": HTTP 500 with `X-ClickHouse-Exception-Code` 252 / 241 and the body a
  ClickHouse 24.8 server writes, without forwarding (nothing is inserted);
- "http_503": 503 `Service Unavailable` with no ClickHouse code (a load balancer in front of a waking
  ClickHouse Cloud service), without forwarding;
- "reset": forwarded, so the server executes it, then the client connection is dropped with a TCP RST and
  no answer (the outcome-unknown case a client handles by sending again).

down() closes the listening socket and resets every open connection (clients get connection refused),
up() listens again on the same port; down_for(s) comes back by itself. Every request is recorded
(StoreRequest); requests(), refused(), resets() and inserts(table) read the records from any thread.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from tests.support.background_server import BackgroundServer

__all__ = ["KINDS", "REFUSALS", "StoreFault", "StoreProxy", "StoreRequest", "statement_of"]

log = logging.getLogger(__name__)

_VERSION = "(version 24.8.4.13 (official build))"


@dataclass(frozen=True)
class _Refusal:
    status: int
    body: bytes
    code: int | None  # the ClickHouse error code; None: not a ClickHouse answer


REFUSALS: dict[str, _Refusal] = {
    "too_many_parts": _Refusal(
        500,
        (
            "Code: 252. DB::Exception: Too many parts (3001) in partition 202401. Merges are processing "
            f"significantly slower than inserts. (TOO_MANY_PARTS) {_VERSION}\n"
        ).encode(),
        252,
    ),
    "memory_limit": _Refusal(
        500,
        (
            "Code: 241. DB::Exception: Memory limit (total) exceeded: would use 28.01 GiB (attempt to allocate "
            "chunk of 4.00 MiB bytes), maximum: 28.00 GiB. OvercommitTracker decision: Query was selected to "
            f"stop by OvercommitTracker. (MEMORY_LIMIT_EXCEEDED) {_VERSION}\n"
        ).encode(),
        241,
    ),
    "http_503": _Refusal(503, b"Service Unavailable", None),
}
KINDS = (*REFUSALS, "reset")

# RFC 9110 hop-by-hop headers, plus what the proxy's own HTTP stack sets (Host, Expect: 100-continue)
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "expect",
    }
)
_PEEK_BYTES = 8192  # of a body holding the SQL: enough for `INSERT INTO db.table` after any comment

_SQL_TOKEN_RE = re.compile(
    r"(?P<skip>\s+|--[^\n]*|#[^\n]*|/\*.*?(?:\*/|\Z))"
    r"|(?P<quoted>`(?:[^`\\]|\\.|``)*`|\"(?:[^\"\\]|\\.|\"\")*\")"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)"
    r"|(?P<other>'(?:[^'\\]|\\.|'')*'|.)",
    re.S,
)
# the table is the name after the first of these words (after TABLE / IF [NOT] EXISTS / TEMPORARY)
_TABLE_MARKERS = frozenset({"INTO", "TABLE", "TABLES", "FROM", "VIEW", "DICTIONARY"})
_TABLE_FILLERS = frozenset({"TABLE", "IF", "NOT", "EXISTS", "TEMPORARY"})


def statement_of(sql: str) -> tuple[str, str | None]:
    """The leading keyword of `sql` (upper case, "" if none) and the table it names, as written
    (`db.table` when qualified, unquoted), or None. Best effort over the first few dozen tokens:
    `INSERT INTO [TABLE] t`, `… TABLE [IF [NOT] EXISTS] t`, `SELECT … FROM t`, `DELETE FROM t`."""
    tokens = [
        (m.lastgroup, m.group())
        for m in itertools.islice((m for m in _SQL_TOKEN_RE.finditer(sql) if m.lastgroup != "skip"), 48)
    ]
    if not tokens or tokens[0][0] != "word":
        return "", None
    keyword = tokens[0][1].upper()
    words = [text.upper() if kind == "word" else None for kind, text in tokens]
    marker = next((i for i, w in enumerate(words) if i and w in _TABLE_MARKERS), None)
    if marker is None:
        return keyword, None
    at = marker + 1
    while at < len(words) and words[at] in _TABLE_FILLERS:
        at += 1
    parts: list[str] = []
    while at < len(tokens) and tokens[at][0] in ("word", "quoted") and words[at] != "FUNCTION":
        kind, text = tokens[at]
        parts.append(_unquote(text) if kind == "quoted" else text)
        if at + 1 < len(tokens) and tokens[at + 1][1] == "." and len(parts) == 1:
            at += 2
            continue
        break
    if words[marker] == "FROM" and at + 1 < len(tokens) and tokens[at + 1][1] == "(":  # `FROM numbers(3)`
        return keyword, None
    return keyword, ".".join(parts) or None


def _unquote(text: str) -> str:
    quote = text[0]
    return re.sub(r"\\(.)", r"\1", text[1:-1].replace(quote * 2, quote))


def _same_table(table: str | None, wanted: str) -> bool:
    """`db.t` and `t` name the same table when `wanted` is unqualified."""
    if table is None:
        return False
    return table == wanted or ("." not in wanted and table.rpartition(".")[2] == wanted)


@dataclass(frozen=True)
class StoreFault:
    """One fault rule. kind: one of KINDS. statements: leading keywords it takes (() = any); tables: table
    names it takes (() = any, also none). until: a time.monotonic() deadline; count: how many requests it
    answers; None = no such limit (with neither it lasts until reconfigured)."""

    kind: str
    tables: tuple[str, ...] = ()
    statements: tuple[str, ...] = ("INSERT",)
    until: float | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        for name in ("tables", "statements"):
            value = getattr(self, name)
            value = (value,) if isinstance(value, str) else tuple(value)
            object.__setattr__(self, name, tuple(v.upper() for v in value) if name == "statements" else value)
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0 or None")

    def matches(self, statement: str, table: str | None) -> bool:
        return (not self.statements or statement in self.statements) and (
            not self.tables or any(_same_table(table, t) for t in self.tables)
        )


@dataclass
class _Armed:
    fault: StoreFault
    left: int | None  # requests it still answers; None: no count

    def live(self, now: float) -> bool:
        return (self.left is None or self.left > 0) and (self.fault.until is None or now < self.fault.until)


@dataclass(frozen=True)
class StoreRequest:
    """One HTTP request as the proxy saw and answered it."""

    seq: int
    at: float  # time.monotonic() when it arrived
    method: str
    path: str
    statement: str  # leading SQL keyword, upper case ("" if none was found)
    table: str | None  # the table the statement names, as written
    fault: str | None  # the fault kind that answered it, else None
    status: int | None  # HTTP status sent to the client; None when the connection was dropped
    upstream_status: int | None  # the upstream's status; None when not forwarded or it failed
    bytes_in: int  # request body bytes read from the client

    @property
    def forwarded(self) -> bool:
        return self.upstream_status is not None


@dataclass
class _Exchange:
    """A request while it is served; becomes a StoreRequest."""

    seq: int
    at: float
    method: str
    path: str
    statement: str = ""
    table: str | None = None
    fault: str | None = None
    status: int | None = None
    upstream_status: int | None = None
    bytes_in: int = 0


class StoreProxy(BackgroundServer):
    name = "store proxy"
    """A ClickHouse HTTP proxy on 127.0.0.1 that injects store failures; see the module docstring.

    port: the port to listen on (0 = a free one); it is kept across down() / up().
    faults: the initial fault rules (configure(faults=...) replaces them at any time).
    """

    def __init__(
        self,
        upstream_url: str,
        port: int = 0,
        *,
        faults: Iterable[StoreFault] | StoreFault = (),
        upstream_timeout_s: float = 300.0,
    ) -> None:
        super().__init__()
        self.upstream_url = upstream_url.rstrip("/")
        self.upstream_timeout_s = upstream_timeout_s
        self._wanted_port = port
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []
        self.configure(faults=faults)
        self._seq = 0
        self._records: list[StoreRequest] = []
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._up_timer: asyncio.TimerHandle | None = None

    # -- lifecycle (start / stop / with: BackgroundServer) -------------------------------------------
    @property
    def listening(self) -> bool:
        return self._site is not None

    def down(self) -> None:
        """Stop listening and reset every open connection; returns when the port refuses connections."""
        self._call(self._down())

    def up(self) -> None:
        """Listen again on the same port (cancels a pending down_for)."""
        self._call(self._up())

    def down_for(self, seconds: float) -> None:
        """down() now, up() after `seconds` in the background."""
        self._call(self._down(up_after_s=seconds))

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("the store proxy is not running")
        asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=15)

    async def _serve(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.upstream_timeout_s)
            # bytes pass through as they are: no decompression, no cookies, no headers of aiohttp's own
            self._session = aiohttp.ClientSession(
                timeout=timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            )
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, auto_decompress=False)
            await self._runner.setup()
            await self._listen()
            ready.set()
            await self._stopping.wait()
        except Exception as exc:
            self._startup_error = exc
            ready.set()
        finally:
            if self._up_timer is not None:
                self._up_timer.cancel()
            if self._runner is not None:
                await self._runner.cleanup()
            self._site = None
            if self._session is not None:
                await self._session.close()

    async def _listen(self) -> None:
        assert self._runner is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the same port again after down()
            sock.bind(("127.0.0.1", self._port or self._wanted_port))  # bound by us: no race for a free port
            site = web.SockSite(self._runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            raise
        self._port, self._site = sock.getsockname()[1], site

    async def _down(self, up_after_s: float | None = None) -> None:
        self._cancel_up_timer()
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
            assert self._runner is not None and self._runner.server is not None
            for handler in self._runner.server.connections:
                _abort(handler.transport)
            log.info("store proxy down port=%s", self._port)
        if up_after_s is not None:
            loop = asyncio.get_running_loop()
            self._up_timer = loop.call_later(up_after_s, lambda: loop.create_task(self._timed_up()))

    async def _up(self) -> None:
        self._cancel_up_timer()
        if self._site is None:
            await self._listen()
            log.info("store proxy up port=%s", self._port)

    async def _timed_up(self) -> None:
        self._up_timer = None
        try:
            await self._up()
        except OSError as exc:
            log.error("store proxy could not listen again on port %s: %r", self._port, exc)

    def _cancel_up_timer(self) -> None:
        if self._up_timer is not None:
            self._up_timer.cancel()
            self._up_timer = None

    # -- configuration (any thread, any time) --------------------------------------------------
    def configure(self, *, faults: Iterable[StoreFault] | StoreFault | None = ()) -> None:
        """Replace the fault rules (None or () = none); each count starts afresh."""
        rules = () if faults is None else (faults,) if isinstance(faults, StoreFault) else tuple(faults)
        if not all(isinstance(f, StoreFault) for f in rules):
            raise TypeError("faults must be StoreFault objects")
        with self._lock:
            self._armed = [_Armed(f, f.count) for f in rules]

    def add(self, fault: StoreFault) -> None:
        """Add one rule after the current ones."""
        if not isinstance(fault, StoreFault):
            raise TypeError("fault must be a StoreFault")
        with self._lock:
            self._armed.append(_Armed(fault, fault.count))

    def reset_next(self, n: int = 1, statements: Iterable[str] = ("INSERT",), tables: Iterable[str] = ()) -> None:
        """Forward the next n matching requests, then drop their connections unanswered."""
        self.add(StoreFault("reset", tables=tuple(tables), statements=tuple(statements), count=n))

    def _pick(self, statement: str, table: str | None) -> StoreFault | None:
        """The first live rule that takes this request, its count taken."""
        with self._lock:
            now = time.monotonic()
            for armed in self._armed:
                if armed.live(now) and armed.fault.matches(statement, table):
                    if armed.left is not None:
                        armed.left -= 1
                    return armed.fault
        return None

    # -- records (any thread) ------------------------------------------------------------------
    def requests(self) -> list[StoreRequest]:
        with self._lock:
            return list(self._records)

    def refused(self) -> Counter[str]:
        """Requests answered by a refusal (not forwarded), by kind."""
        with self._lock:
            return Counter(r.fault for r in self._records if r.fault in REFUSALS)

    def resets(self) -> int:
        """Requests forwarded and then dropped unanswered."""
        with self._lock:
            return sum(r.fault == "reset" for r in self._records)

    def inserts(self, table: str) -> int:
        """INSERTs into `table` the upstream executed with success (including those whose answer a reset
        dropped: their rows landed)."""
        with self._lock:
            return sum(
                r.statement == "INSERT"
                and _same_table(r.table, table)
                and r.upstream_status is not None
                and 200 <= r.upstream_status < 300
                for r in self._records
            )

    def clear_records(self) -> None:
        with self._lock:
            self._records.clear()

    def _record(self, ex: _Exchange) -> None:
        rec = StoreRequest(
            ex.seq,
            ex.at,
            ex.method,
            ex.path,
            ex.statement,
            ex.table,
            ex.fault,
            ex.status,
            ex.upstream_status,
            ex.bytes_in,
        )
        with self._lock:
            self._records.append(rec)
        if rec.fault is not None:
            log.debug(
                "store proxy seq=%s %s table=%s fault=%s status=%s upstream=%s",
                rec.seq,
                rec.statement,
                rec.table,
                rec.fault,
                rec.status,
                rec.upstream_status,
            )

    # -- serving --------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._seq += 1
            ex = _Exchange(self._seq, time.monotonic(), request.method, request.path)
        try:
            sql = request.query.get("query", "")
            head = b""
            if not sql and request.can_read_body:
                head = await _peek(request.content, _PEEK_BYTES)
                sql = head.decode("utf-8", "replace")
            ex.statement, ex.table = statement_of(sql)
            fault = self._pick(ex.statement, ex.table)
            ex.fault = fault.kind if fault is not None else None
            if fault is not None and fault.kind in REFUSALS:
                ex.bytes_in = len(head) + await _drain(request.content)
                response = _refusal(REFUSALS[fault.kind], request)
                ex.status = response.status
                return response
            return await self._forward(request, head, ex, reset=fault is not None)
        finally:
            self._record(ex)

    async def _forward(self, request: web.Request, head: bytes, ex: _Exchange, reset: bool) -> web.StreamResponse:
        assert self._session is not None
        url = URL(self.upstream_url + request.raw_path, encoded=True)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        body = _body(request.content, head, ex) if head or request.can_read_body else None
        out: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            ) as answer:
                ex.upstream_status = answer.status
                if reset:
                    async for _ in answer.content.iter_any():  # the server has finished: then drop
                        pass
                    return _reset(request)
                out = web.StreamResponse(status=answer.status, reason=answer.reason)
                for name, value in answer.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        out.headers.add(name, value)
                await out.prepare(request)
                async for chunk in answer.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                ex.status = answer.status
                return out
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            transport = request.transport
            if out is not None or transport is None or transport.is_closing():  # the client is gone
                log.debug("store proxy seq=%s: connection lost mid-answer: %r", ex.seq, exc)
                return _reset(request)
            log.warning("store proxy upstream failed: %r", exc)
            ex.upstream_status = None
            ex.status = 502
            return web.Response(status=502, text="upstream unreachable")


async def _peek(content: aiohttp.StreamReader, limit: int) -> bytes:
    """At least `limit` bytes of the body (or all of it, if shorter); the rest is left in the stream."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.readany()
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


async def _drain(content: aiohttp.StreamReader) -> int:
    size = 0
    async for chunk in content.iter_any():
        size += len(chunk)
    return size


async def _body(content: aiohttp.StreamReader, head: bytes, ex: _Exchange) -> AsyncIterator[bytes]:
    """The request body as it arrives, after the bytes already peeked at."""
    if head:
        ex.bytes_in += len(head)
        yield head
    async for chunk in content.iter_any():
        ex.bytes_in += len(chunk)
        yield chunk


def _refusal(refusal: _Refusal, request: web.Request) -> web.Response:
    """The answer a ClickHouse server (or the balancer in front of it) gives."""
    if refusal.code is None:
        return web.Response(status=refusal.status, body=refusal.body, content_type="text/plain")
    headers = {
        "X-ClickHouse-Query-Id": request.query.get("query_id") or str(uuid.uuid4()),
        "X-ClickHouse-Exception-Code": str(refusal.code),
        "Content-Type": "text/plain; charset=UTF-8",
    }
    return web.Response(status=refusal.status, body=refusal.body, headers=headers)


def _abort(transport: asyncio.BaseTransport | None) -> None:
    """Close a connection with a TCP RST."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


def _reset(request: web.Request) -> web.Response:
    """Drop the client's connection with no answer."""
    _abort(request.transport)
    return web.Response(status=204)  # never sent: the transport is gone
