"""The embedded store's server process: chDB (``backfill.store.embedded.engine``) behind an aiohttp ClickHouse-HTTP
front end. Start it with ``backfill.store.embedded.serve`` or ``python -m backfill.store.embedded``.

It serves its owner only and within bounds: every request but ``/ping`` presents the data directory's
credential; statements that reach outside the store are refused unless allowed (``backfill.store.embedded.guard``);
the SQL text of a request is read up to MAX_QUERY_BYTES, insert data is streamed to the engine in pieces and
a compressed body may expand to MAX_INSERT_BYTES; a connection that does not finish its headers within
HEADER_TIMEOUT_S, or pauses longer than RECEIVE_TIMEOUT_S / SEND_TIMEOUT_S while sending its body or
taking the answer, is dropped; beyond MAX_REQUESTS at once a request gets 503 at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from backfill.files.atomic import write_json_atomic
from backfill.store.embedded import http as eh
from backfill.store.embedded.engine import Engine
from backfill.store.embedded.filesystem import filesystem_of
from backfill.store.embedded.guard import Credential, Policy, auth_failure, authenticated, presented
from backfill.store.embedded.store_dir import INFO_NAME, LOCK_NAME, ensure_credential, lock_file, make_store_dir

log = logging.getLogger("backfill.store.embedded")

APPEND_BYTES = 16 << 20  # insert data is handed to chDB in pieces of at most this size
DISPLAY_NAME = "backfill-embedded"
DRAIN_S = 30.0  # on SIGTERM, running requests get this long to finish
MAX_QUERY_BYTES = 16 << 20  # the SQL text of a request (query parameter + body), which is read whole
MAX_INSERT_BYTES = 4 << 30  # what a compressed insert body may expand to (plain data streams unbounded)
DECODE_BYTES = 1 << 20  # a compressed body is expanded this much at a time
MAX_REQUESTS = 64  # requests served at once; the next ones get 503 (TOO_MANY_SIMULTANEOUS_QUERIES)
HEADER_TIMEOUT_S = 20.0  # to send a request's headers, from the connection or the previous answer
RECEIVE_TIMEOUT_S = 30.0  # the longest pause in a request body
SEND_TIMEOUT_S = 30.0  # the longest a client may leave a piece of a streamed answer untaken
DISCARD_S, DISCARD_BYTES = 10.0, 1 << 30  # the rest of a refused body is read (and dropped) within these
AUTH_LOG_EVERY_S = 60.0  # refused credentials are logged once, then at most this often (with a count)
JUDGE_INLINE_CHARS = 64 << 10  # longer SQL texts are judged on the pool: reading tokens is Python, ~1 µs each


ENGINE = web.AppKey("engine", Engine)
CREDENTIAL = web.AppKey("credential", Credential)
STOPPING = web.AppKey("stopping", bool)
ACTIVE = web.AppKey("active", set)
LAST_REQUEST = web.AppKey("last_request", float)
AUTH_LOG = web.AppKey("auth_log", dict)  # refused credentials: {"refused": n since the last line, "at": time}


def _headers(engine: Engine, qid: str, stats: dict | None = None, fmt: str | None = None) -> dict:
    h = {
        "X-ClickHouse-Query-Id": qid,
        "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
        "X-ClickHouse-Timezone": engine.timezone,
        "Content-Type": eh.content_type(fmt) if fmt else "text/plain; charset=UTF-8",
    }
    if fmt:
        h["X-ClickHouse-Format"] = fmt
    if stats is not None:
        h["X-ClickHouse-Summary"] = json.dumps(stats, separators=(",", ":"))
    return h


def _error(engine: Engine, code: int, message: str, qid: str = "") -> web.Response:
    """A ClickHouse-style error answer: the status the code maps to, the code in a header, the text as body."""
    headers = _headers(engine, qid or str(uuid.uuid4()))
    headers["X-ClickHouse-Exception-Code"] = str(code)
    if code == 516:
        headers["WWW-Authenticate"] = 'Basic realm="backfill embedded store", charset="UTF-8"'
    return web.Response(status=eh.http_status(code), text=eh.error_body(message, engine.version), headers=headers)


def _log_refused_credential(app: web.Application, request: web.Request, user: str) -> None:
    """One line for the first refusal, then one a minute at most, with the count: a scan cannot flood the log.
    The user name is shown (truncated); what was presented as the password never is."""
    state = app[AUTH_LOG]
    state["refused"] += 1
    now = time.monotonic()
    if now - state["at"] >= AUTH_LOG_EVERY_S:
        log.warning(
            "refused a request without the store's credential: user=%r peer=%s path=%s (%d refused since "
            "the last such line)",
            user[:64],
            request.remote,
            request.path,
            state["refused"],
        )
        state["refused"], state["at"] = 0, now


def _admission(request: web.Request) -> web.Response | None:
    """The answer for a request that is not let in (no valid credential, shutting down, too many requests
    at once), or None. Headers only: decided before a byte of the body is read."""
    app, engine = request.app, request.app[ENGINE]
    user, password = presented(request.headers, request.query)
    if not authenticated(user, password, app[CREDENTIAL]):
        _log_refused_credential(app, request, user)
        return _error(engine, 516, auth_failure(user))
    if app[STOPPING]:  # draining for shutdown: finish what runs, take nothing new
        resp = _error(engine, 236, "Code: 236. DB::Exception: The embedded store is shutting down. (ABORTED)")
        resp.force_close()
        return resp
    if len(app[ACTIVE]) >= MAX_REQUESTS:
        resp = _error(
            engine,
            202,
            f"Code: 202. DB::Exception: Too many simultaneous queries: the embedded store "
            f"serves {MAX_REQUESTS} requests at once. (TOO_MANY_SIMULTANEOUS_QUERIES)",
        )
        resp.headers["Retry-After"] = "1"
        return resp
    return None


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: a request that is not let in is answered before its body is sent."""
    refusal = _admission(request)
    if refusal is not None:
        refusal.force_close()  # the client holds its body back; nothing of it follows on this connection
        return refusal
    if request.version == (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
    return None


async def _read(request: web.Request) -> bytes:
    """The next piece of the body (b"" at its end); a pause longer than RECEIVE_TIMEOUT_S ends the request."""
    try:
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            return await request.content.readany()
    except TimeoutError:
        raise eh.RequestError(
            159,
            f"Timeout exceeded while reading the request body: nothing came for "
            f"{RECEIVE_TIMEOUT_S:.0f}s. (TIMEOUT_EXCEEDED)",
        ) from None


async def _body(request: web.Request, decoder: eh.BodyDecoder | None):
    while chunk := await _read(request):
        if decoder is None:
            yield chunk
        else:
            for piece in decoder.feed(chunk):
                yield piece


async def _discard(request: web.Request, limit: int = DISCARD_BYTES) -> None:
    """Read and drop the rest of a body (bounded), so a client still sending it reads the answer, not a reset."""
    try:
        async with asyncio.timeout(DISCARD_S):
            while limit > 0 and (chunk := await request.content.readany()):
                limit -= len(chunk)
    except Exception:  # noqa: BLE001 - the client went away or is too slow: nothing to answer
        pass


async def _send(resp: web.StreamResponse, data: bytes) -> None:
    """Write a piece of a streamed answer; a client that takes none of it for SEND_TIMEOUT_S is gone."""
    try:
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await resp.write(data)
    except TimeoutError:
        raise ConnectionResetError(f"the client took nothing of the answer for {SEND_TIMEOUT_S:.0f}s") from None


async def handle_ping(request: web.Request) -> web.Response:
    return web.Response(text="Ok.\n")


async def handle_replicas_status(request: web.Request) -> web.Response:
    return _admission(request) or web.Response(text="Ok.\n")


async def handle_query(request: web.Request) -> web.StreamResponse:
    engine: Engine = request.app[ENGINE]
    refusal = _admission(request)
    if refusal is not None:
        return refusal  # aiohttp reads and drops what is left of the body (lingering) before it closes
    active: set = request.app[ACTIVE]
    active.add(task := asyncio.current_task())
    try:
        return await _handle_query(request, engine)
    finally:
        active.discard(task)


async def _handle_query(request: web.Request, engine: Engine) -> web.StreamResponse:
    qid, sql_for_log, policy = "", "", engine.policy
    try:
        plan = eh.plan_request(await _params(request), request.headers, request.method)
        qid = plan.query_id or str(uuid.uuid4())
        if (refused := policy.setting_refusal(plan.settings)) is not None:
            raise eh.RequestError(497, f"{refused}. (ACCESS_DENIED)")
        if request.method in ("GET", "HEAD") and not plan.query_param:
            return web.Response(text="Ok.\n")
        encoding = request.headers.get("Content-Encoding", "").strip()
        decoder = (
            eh.BodyDecoder(encoding, MAX_QUERY_BYTES, DECODE_BYTES)
            if encoding and encoding.lower() != "identity"
            else None
        )
        chunks, eof = _body(request, decoder), False
        buf = bytearray(plan.query_param.encode() + b"\n" if plan.query_param else b"")
        while (split := eh.split_insert(buf, eof)) is eh.NEED_MORE:
            chunk = await anext(chunks, None)
            eof = chunk is None
            buf += chunk or b""
        if isinstance(split, eh.InsertSplit):
            sql_for_log = split.statement
            if (refused := policy.refusal(split.statement)) is not None:
                raise eh.RequestError(497, f"{refused}. (ACCESS_DENIED)")
            if decoder is not None:
                decoder.limit = MAX_INSERT_BYTES
            plan.settings.update(policy.insert_settings())
            return await _insert(request, engine, plan, qid, split, buf, chunks)
        sql = await _sql_text(buf, chunks)
        del buf
        sql_for_log = sql[:1000]
        judge = (policy, sql, engine.output_formats, plan.default_format)
        refused, fmt = _judge(*judge) if len(sql) <= JUDGE_INLINE_CHARS else await engine.call(_judge, *judge)
        if refused is not None:
            raise eh.RequestError(497, f"{refused}. (ACCESS_DENIED)")
        if fmt is None:
            body, stats = await engine.call(engine.execute, plan, sql, plan.default_format)
            return web.Response(body=body, headers=_headers(engine, qid, stats))
        return await _select(request, engine, plan, qid, sql, fmt)
    except Exception as ex:  # noqa: BLE001 - every failure becomes a ClickHouse-style error answer
        return await _failed(request, engine, ex, qid, sql_for_log)


async def _params(request: web.Request) -> list[tuple[str, str]]:
    """The request's settings and query: URL parameters, then the fields of a multipart form."""
    params = list(request.query.items())
    if request.content_type == "multipart/form-data":
        for key, value in (await request.post()).items():  # bounded by the app's client_max_size
            if not isinstance(value, str):
                raise eh.RequestError(48, "External data (file parts) is not supported here")
            params.append((key, value))
    return params


async def _sql_text(buf: bytearray, chunks: Any) -> str:
    """The rest of a statement that is not an INSERT with data: read whole, bounded, as UTF-8 text."""
    async for chunk in chunks:
        buf += chunk
        if len(buf) > MAX_QUERY_BYTES:
            raise eh.RequestError(
                229,
                f"The query is longer than {MAX_QUERY_BYTES} bytes, the most the embedded "
                f"store reads as SQL text; send data as INSERT ... FORMAT. "
                f"(QUERY_IS_TOO_LARGE)",
            )
    try:
        sql = buf.decode("utf-8").strip()
    except UnicodeDecodeError as ex:
        raise eh.RequestError(36, f"The query is not valid UTF-8: {ex}") from None
    if not sql:
        raise eh.RequestError(62, "Empty query. (SYNTAX_ERROR)")
    return sql


async def _failed(request: web.Request, engine: Engine, ex: Exception, qid: str, sql_for_log: str) -> web.Response:
    """A failure as ClickHouse answers it (code, message), logged in one line with the statement's start."""
    code = ex.code if isinstance(ex, eh.RequestError) else eh.error_code(str(ex))
    message = str(ex) if str(ex).startswith("Code:") else f"Code: {code}. DB::Exception: {ex}"
    log.warning(
        "query %s failed: %s | %s",
        qid or "-",
        (message.strip().splitlines() or [""])[0][:500],
        " ".join(sql_for_log[:600].split())[:300],
    )
    resp = _error(engine, code, message, qid)
    if code == 159:  # a client too slow to send its body is not waited for again
        resp.force_close()
    else:
        await _discard(request)  # so a client still sending its body reads this answer, not a broken pipe
    return resp


def _judge(policy: Policy, sql: str, formats: dict[str, str], default_format: str) -> tuple[str | None, str | None]:
    """(why the statement is refused or None, its output format or None when it has no result set)."""
    refused = policy.refusal(sql)
    if refused is not None or not eh.is_result_statement(sql):
        return refused, None
    return None, eh.trailing_format(sql, formats) or default_format


async def _insert(request, engine, plan, qid, split, buf, chunks) -> web.Response:
    conn, handle = await engine.call(engine.begin_insert, plan, split.statement, split.fmt)
    try:
        # The body's pieces are joined once per append: growing one buffer by every piece off the socket cost
        # a copy of the whole insert again and again (~1 cpu-s per million rows, on the event loop's thread).
        pieces, size = [bytes(buf[split.data_start :])], len(buf) - split.data_start
        del buf[:]
        async for chunk in chunks:
            pieces.append(chunk)
            size += len(chunk)
            if size >= APPEND_BYTES:
                await engine.call(engine.append, conn, handle, b"".join(pieces))
                pieces, size = [], 0
        if size:
            await engine.call(engine.append, conn, handle, b"".join(pieces))
    except BaseException:
        await asyncio.shield(engine.call(engine.finish_insert, conn, handle, True))
        raise
    stats = await engine.call(engine.finish_insert, conn, handle)
    return web.Response(headers=_headers(engine, qid, stats))


async def _select(request, engine, plan, qid, sql, fmt) -> web.StreamResponse:
    first, stats, next_chunk = await engine.call(engine.begin_select, plan, sql, fmt)
    headers = _headers(engine, qid, stats, fmt)
    if next_chunk is None:
        return web.Response(body=first, headers=headers)
    tag = secrets.token_hex(8)
    headers["X-ClickHouse-Exception-Tag"] = tag
    resp = web.StreamResponse(headers=headers)
    try:
        await resp.prepare(request)
        await _send(resp, first)
        while chunk := await engine.call(next_chunk):
            await _send(resp, chunk)
    except ConnectionError as ex:  # the client went away: stop the query, nobody is left to answer
        log.info("query %s: client disconnected while reading the result (%s)", qid, ex)
        await asyncio.shield(engine.call(next_chunk.cancel))
        resp.force_close()
        return resp
    except asyncio.CancelledError:
        await asyncio.shield(engine.call(next_chunk.cancel))
        raise
    except Exception as ex:  # noqa: BLE001 - status already sent: frame the error in the stream
        log.warning("query %s failed while streaming: %s", qid, str(ex).splitlines()[0][:500])
        await asyncio.shield(engine.call(next_chunk.cancel))
        resp.force_close()
        try:
            await _send(resp, eh.exception_block(eh.error_body(str(ex), engine.version), tag))
        except ConnectionError:
            return resp
    try:
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await resp.write_eof()
    except TimeoutError:
        resp.force_close()
    return resp


def make_app(engine: Engine, credential: Credential) -> web.Application:
    # client_max_size bounds what aiohttp itself buffers: only multipart form bodies (request.post())
    app = web.Application(client_max_size=MAX_QUERY_BYTES)
    app[ENGINE], app[CREDENTIAL], app[STOPPING], app[ACTIVE] = engine, credential, False, set()
    app[AUTH_LOG] = {"refused": 0, "at": -AUTH_LOG_EVERY_S}
    app.router.add_route("*", "/ping", handle_ping)
    app.router.add_route("*", "/replicas_status", handle_replicas_status, expect_handler=_expect)
    app.router.add_route("*", "/", handle_query, expect_handler=_expect)
    return app


def _remove_info(info: Path) -> None:
    try:
        if json.loads(info.read_text()).get("pid") == os.getpid():
            info.unlink()
    except (OSError, ValueError):
        pass


def _idle_middleware(app: web.Application) -> Any:
    @web.middleware
    async def touch(request: web.Request, handler: Any) -> web.StreamResponse:
        app[LAST_REQUEST] = time.monotonic()
        return await handler(request)

    return touch


async def _exit_when_idle(app: web.Application, stop: asyncio.Event, idle_exit_s: float) -> None:
    """A server started on demand (by a CLI command) goes away after idle_exit_s without a request."""
    while not stop.is_set():
        await asyncio.sleep(min(5.0, idle_exit_s / 2))
        if not app[ACTIVE] and time.monotonic() - app[LAST_REQUEST] > idle_exit_s:
            log.info("embedded store idle for %.0fs: stopping (pid %d)", idle_exit_s, os.getpid())
            stop.set()


async def _listen(runner: web.AppRunner, host: str, port: int) -> tuple[web.SockSite, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    site = web.SockSite(runner, sock)
    await site.start()
    return site, f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{sock.getsockname()[1]}"


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not the main thread: the caller stops us
    return stop


async def _drain(app: web.Application, site: web.SockSite, info: Path) -> None:
    """Stop taking connections, let the requests running finish (inserts above all), within DRAIN_S."""
    log.info("embedded store stopping (pid %d): finishing %d running requests", os.getpid(), len(app[ACTIVE]))
    _remove_info(info)
    app[STOPPING] = True
    await site.stop()  # no new connections
    if app[ACTIVE]:  # aiohttp's own shutdown stops reading request bodies: let inserts finish first
        await asyncio.wait(list(app[ACTIVE]), timeout=DRAIN_S)  # type: ignore[index]


def _say_filesystem(path: Path) -> None:
    """A store on a filesystem that makes every part expensive to create is named once, with what to do."""
    fs = filesystem_of(path)
    if fs is not None and fs.slow_file_creation:
        log.warning(
            "embedded store: %s is on %s, where every file the engine creates costs a scan of recently freed "
            "inodes (small inserts up to 3x slower, up to twice the engine's CPU in a copy); a data directory on "
            "a journalled filesystem (ext4 with its journal, xfs) avoids it",
            path,
            fs.describe(),
        )


async def serve_async(
    data_dir: Path, host: str, port: int, threads: int, idle_exit_s: float | None = None, allow_external: bool = False
) -> None:
    path = make_store_dir(data_dir)
    lock_fd = lock_file(path / LOCK_NAME, wait_s=1.0)
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, f"{os.getpid()}\n".encode())
    info, runner, engine = path / INFO_NAME, None, None
    try:
        t0 = time.monotonic()
        credential = ensure_credential(data_dir)  # before server.json: a client that finds the server finds it too
        engine = Engine(path, threads, allow_external)
        app = make_app(engine, credential)
        app[LAST_REQUEST] = time.monotonic()
        app.middlewares.append(_idle_middleware(app))
        # No access log: URLs may carry a password (`?password=`). keepalive_timeout is also the header deadline:
        # aiohttp closes a connection that has not delivered a whole request by then, from its first byte on.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=5.0, auto_decompress=False, keepalive_timeout=HEADER_TIMEOUT_S
        )
        await runner.setup()
        site, url = await _listen(runner, host, port)
        stop = _stop_on_signals()
        idle_task = asyncio.create_task(_exit_when_idle(app, stop, idle_exit_s)) if idle_exit_s else None
        write_json_atomic(info, {"url": url, "pid": os.getpid()})
        log.info(
            "embedded store started: %s serves %s (pid %d, chDB engine %s, %d threads, %.1fs); credential "
            "required; statements reaching outside the store %s",
            url,
            path,
            os.getpid(),
            engine.version,
            threads,
            time.monotonic() - t0,
            "allowed" if allow_external else "refused",
        )
        _say_filesystem(path)
        await stop.wait()
        if idle_task:
            idle_task.cancel()
        await _drain(app, site, info)
    finally:
        _remove_info(info)
        if runner is not None:
            await runner.cleanup()
        if engine is not None:
            engine.close()
            log.info("embedded store stopped: %s closed cleanly (pid %d)", path, os.getpid())
        os.close(lock_fd)
