"""ClickHouse HTTP interface -> chDB: the request translation of the embedded store.

Pure functions and small value types only (no chDB, no aiohttp), so they are unit-testable and
the server in ``backfill.store.embedded`` stays thin. What ClickHouse does and what is mirrored here:

* the SQL is the ``query`` URL parameter, then a newline, then the request body;
* ``INSERT ... FORMAT X`` followed by data: the data starts after the format name, after
  spaces/tabs and at most one line break (``split_insert`` finds that point in a byte stream);
* URL parameters: ``database``, ``default_format``, ``query_id``, ``param_<name>`` (bound
  parameters) and every other name is a setting; a few are transport-only and are ignored;
* errors: ``Code: N. DB::Exception: ...`` bodies, ``X-ClickHouse-Exception-Code`` header and the
  HTTP status ClickHouse derives from the code.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

DEFAULT_FORMAT = "TabSeparated"
MAX_QUERY_HEAD = 262144  # ClickHouse's max_query_size: an INSERT's statement must fit in it

# Request parameters that are HTTP transport, never settings to apply.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "wait_end_of_query",
        "buffer_size",
        "client_protocol_version",
        "quota_key",
        "user",
        "password",
        "role",
        "stacktrace",
    }
)
# Settings that only steer ClickHouse's HTTP layer; chDB knows them but they change nothing here.
HTTP_ONLY_SETTINGS = frozenset(
    {
        "enable_http_compression",
        "http_zlib_compression_level",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close",
        "http_wait_end_of_query",
        "http_response_buffer_size",
        "add_http_cors_header",
        "http_native_compression_disable_checksumming_on_decompress",
        "http_write_exception_in_output_format",
    }
)
# Leading keywords of statements that produce a result set (they get X-ClickHouse-Format).
RESULT_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "("})

_CODE_RE = re.compile(r"Code: (\d+)\.")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
# The engine's lexer (ClickHouse src/Parsers/Lexer.cpp), as far as it decides what is code: strings, quoted
# identifiers and heredocs end where the engine ends them, comments are what it skips. A check of the code (the
# guard's) is only as good as this agreement; tests hold it to the engine on the tricky cases.
_PLAIN_RE = re.compile(
    r"(?P<ws>[ \t\n\r\f\v]+|[^\x00-\x7f]+)"  # non-ASCII: the engine skips Unicode spaces, refuses the rest
    r"|(?P<word>[A-Za-z_$][A-Za-z0-9_$]*)"
    r"|(?P<number>[0-9][0-9A-Za-z_.]*)"  # `$` after a number starts a token (a heredoc, maybe)
    r"|(?P<other>.)",
    re.S,
)
_HEREDOC_TAG_RE = re.compile(r"\$[A-Za-z0-9_]*\$")
_QUOTES = "'\"`"
_FORMAT_WORD = re.compile("format", re.I)

_STATUS_BY_CODE = {
    # the ClickHouse server's exceptionCodeToHTTPStatus, by code number
    **dict.fromkeys(
        (6, 8, 15, 25, 26, 27, 36, 37, 38, 41, 44, 53, 62, 72, 117, 123, 167, 168, 223, 321, 376, 427, 441, 675, 676),
        400,
    ),
    **dict.fromkeys((46, 47, 50, 56, 60, 63, 73, 78, 81, 115, 152, 336, 511), 404),
    497: 403,  # ACCESS_DENIED
    516: 401,  # AUTHENTICATION_FAILED (ClickHouse says 403; 401 tells HTTP clients to send a credential)
    202: 503,  # TOO_MANY_SIMULTANEOUS_QUERIES
    48: 501,
    159: 408,
    229: 413,
}
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values",
    "TSV": "text/tab-separated-values",
    "TabSeparatedWithNames": "text/tab-separated-values",
    "TSVWithNames": "text/tab-separated-values",
    "CSV": "text/csv",
    "CSVWithNames": "text/csv",
    "JSON": "application/json",
    "JSONCompact": "application/json",
    "JSONStrings": "application/json",
    "JSONEachRow": "application/x-ndjson",
    "JSONCompactEachRow": "application/x-ndjson",
}


class NeedMore:
    """Marker: the statement of an INSERT is not complete in the bytes read so far."""


NEED_MORE = NeedMore()


class RequestError(Exception):
    """A request the server refuses before it reaches the engine; carries a ClickHouse error code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class RequestPlan:
    """What a request asks for, apart from its SQL text."""

    query_param: str = ""
    database: str = "default"
    default_format: str = DEFAULT_FORMAT
    query_id: str = ""
    params: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)


@dataclass
class InsertSplit:
    """An ``INSERT ... FORMAT X`` whose data follows in the stream from ``data_start``."""

    statement: str  # the INSERT without its FORMAT clause (what chDB's send_insert takes)
    fmt: str
    data_start: int


def plan_request(params: Iterable[tuple[str, str]], headers: Mapping[str, str], method: str) -> RequestPlan:
    """Sort URL / form parameters into query, database, format, bound parameters and settings."""
    plan = RequestPlan()
    db_header = headers.get("X-ClickHouse-Database")
    if db_header:
        plan.database = db_header
    fmt_header = headers.get("X-ClickHouse-Format")
    if fmt_header:
        plan.default_format = fmt_header
    for key, value in params:
        if key == "decompress" and value not in ("", "0"):
            raise RequestError(
                89,
                "ClickHouse-native compressed bodies (decompress=1) are not supported by "
                "the embedded store; send them plain. (UNKNOWN_COMPRESSION_METHOD)",
            )
        if key.startswith("param_"):
            plan.params[key[6:]] = value
        elif key == "query":
            plan.query_param = value
        elif key == "database":
            plan.database = value or "default"
        elif key == "default_format":
            plan.default_format = value or DEFAULT_FORMAT
        elif key == "query_id":
            plan.query_id = value
        elif key in TRANSPORT_PARAMS or key in HTTP_ONLY_SETTINGS:
            continue
        elif not _NAME_RE.match(key):
            raise RequestError(115, f"Unknown setting '{key}'. (UNKNOWN_SETTING)")
        else:
            plan.settings[key] = value
    if method == "GET" and plan.settings.get("readonly", "0") == "0":
        plan.settings["readonly"] = "2"  # as ClickHouse: GET requests may read, not write
    return plan


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def set_statement(settings: Mapping[str, str]) -> str | None:
    """One ``SET a = 'x', b = 'y'`` for the request's settings; ``readonly`` goes last (it locks the rest)."""
    if not settings:
        return None
    names = sorted(settings, key=lambda n: n == "readonly")
    return "SET " + ", ".join(f"{n} = {quote_string(settings[n])}" for n in names)


def _quoted_end(text: str, pos: int) -> int:
    """End of the quoted token opening at ``pos`` (backslash escapes, a doubled quote), or -1 if unterminated."""
    quote, i = text[pos], pos + 1
    while True:
        q, b = text.find(quote, i), text.find("\\", i)
        if q < 0:
            return -1
        if 0 <= b < q:
            i = b + 2
        elif q + 1 < len(text) and text[q + 1] == quote:
            i = q + 2
        else:
            return q + 1


def _comment_end(text: str, pos: int) -> int:
    """End of the comment opening at ``pos``, 0 if none opens there, -1 if a ``/*`` is never closed (nested)."""
    two = text[pos : pos + 2]
    if two in ("--", "//") or two in ("# ", "#!"):
        end = text.find("\n", pos)
        return len(text) if end < 0 else end
    if two != "/*":
        return 0
    depth, i = 1, pos + 2
    while depth:
        opens, closes = text.find("/*", i), text.find("*/", i)
        if closes < 0:
            return -1
        if 0 <= opens < closes:
            depth, i = depth + 1, opens + 2
        else:
            depth, i = depth - 1, closes + 2
    return i


def tokens(text: str, pos: int = 0) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) of each significant token: ``word``, ``number``, ``quoted`` (a string, a quoted
    identifier or a heredoc: see ``text[start]``) or ``other`` (one character). Whitespace and comments are
    skipped; an unterminated quote or comment comes out as ``other`` (the engine refuses the statement)."""
    n = len(text)
    while pos < n:
        c = text[pos]
        if c in _QUOTES:
            end = _quoted_end(text, pos)
            if end < 0:
                yield "other", pos, pos + 1
                pos += 1
            else:
                yield "quoted", pos, end
                pos = end
            continue
        if c in "-/#":
            end = _comment_end(text, pos)
            if end > 0:
                pos = end
                continue
        elif c == "$" and (tag := _HEREDOC_TAG_RE.match(text, pos)):
            close = text.find(tag.group(), tag.end())
            if close >= 0:
                yield "quoted", pos, close + len(tag.group())
                pos = close + len(tag.group())
                continue
        m = _PLAIN_RE.match(text, pos)
        assert m is not None  # `other` takes any one character
        if m.lastgroup != "ws":
            yield m.lastgroup, pos, m.end()  # type: ignore[misc]
        pos = m.end()


def leading_keyword(sql: str) -> str:
    for kind, start, end in tokens(sql):
        return sql[start:end].upper() if kind == "word" else sql[start:end]
    return ""


def is_result_statement(sql: str) -> bool:
    return leading_keyword(sql) in RESULT_KEYWORDS


def split_insert(buf: bytes | bytearray, eof: bool) -> InsertSplit | NeedMore | None:
    """Find where the data of an ``INSERT ... FORMAT X`` starts in ``buf`` (statement + data so far).

    Returns ``NEED_MORE`` while the statement may still be incomplete, ``None`` if this is not an
    insert with data after it (any other statement, ``INSERT ... VALUES``, ``INSERT ... SELECT``):
    then the whole text is one SQL statement.
    """
    text = bytes(buf[:MAX_QUERY_HEAD]).decode("latin-1")  # 1 byte = 1 char, so offsets are byte offsets
    depth, prev, first = 0, "", True
    toks = tokens(text)
    for kind, start, end in toks:
        if not eof and end >= len(text):
            return NEED_MORE  # this token may continue in the next chunk
        tok = text[start:end]
        if kind == "other" and (tok in "'\"`" or text.startswith("/*", start)):
            # an unterminated quote or comment: wait for more, or let the engine say what is wrong
            return NEED_MORE if not eof and len(buf) < MAX_QUERY_HEAD else None
        word = tok.upper() if kind == "word" else tok
        if first:
            if word != "INSERT":
                return None
            first = False
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        elif depth == 0 and word in ("VALUES", "SELECT", "WITH"):
            return None
        elif depth == 0 and word == "FORMAT" and prev not in ("INTO", "TABLE", "FUNCTION", "."):
            name = next(toks, None)
            if name is None or name[0] != "word":
                return None
            pos = name[2]
            while pos < len(text) and text[pos] in " \t\f":
                pos += 1
            if pos < len(text) and text[pos] == "\r":
                pos += 1
            newline = pos < len(text) and text[pos] == "\n"
            if newline:
                pos += 1
            if not eof and not newline and pos >= len(text):
                return NEED_MORE
            statement = bytes(buf[:start]).decode("utf-8").strip()
            return InsertSplit(statement, text[name[1] : name[2]], pos)
        prev = word
    if eof or len(buf) >= MAX_QUERY_HEAD:
        return None
    return NEED_MORE


def trailing_format(sql: str, known_formats: Mapping[str, str]) -> str | None:
    """The output format named by a trailing ``FORMAT X`` clause (``known_formats``: lower -> name): the last
    ``FORMAT X`` followed by nothing or by SETTINGS. One pass over the tokens, holding four of them."""
    if not _FORMAT_WORD.search(sql):
        return None
    found: str | None = None
    window: list[tuple[str, str]] = []  # the three tokens before the current one: (kind, text), oldest first

    def format_clause(following: str | None) -> bool:
        if len(window) < 3:
            return False
        (_, before), (kind, tok), (name_kind, _name) = window
        return (
            kind == "word"
            and tok.upper() == "FORMAT"
            and name_kind == "word"
            and before != "."
            and (following is None or following.upper() == "SETTINGS")
        )

    for kind, start, end in tokens(sql):
        tok = sql[start:end]
        if tok == ";":  # only a trailing one is valid: the engine takes one statement per request
            continue
        if format_clause(tok):
            found = known_formats.get(window[2][1].lower())
        window = [*window[-2:], (kind, tok)]
    if format_clause(None):
        found = known_formats.get(window[2][1].lower())
    return found


def error_code(message: str) -> int:
    m = _CODE_RE.search(message)
    return int(m.group(1)) if m else 1000


def error_body(message: str, version: str) -> str:
    text = message.strip()
    if not text.startswith("Code:"):
        text = f"Code: {error_code(text)}. DB::Exception: {text}"
    return f"{text} (version {version})\n"


def http_status(code: int) -> int:
    return _STATUS_BY_CODE.get(code, 500)


def content_type(fmt: str) -> str:
    base = _CONTENT_TYPES.get(fmt)
    if base is None:
        return (
            "application/octet-stream"
            if fmt in ("Native", "RowBinary", "Parquet", "Arrow") or fmt.startswith("RowBinary")
            else "text/plain; charset=UTF-8"
        )
    return base + "; charset=UTF-8"


def summary(read_rows=0, read_bytes=0, written_rows=0, written_bytes=0, result_rows=0, elapsed_s=0.0) -> dict:
    return {
        "read_rows": str(read_rows),
        "read_bytes": str(read_bytes),
        "written_rows": str(written_rows),
        "written_bytes": str(written_bytes),
        "total_rows_to_read": str(read_rows),
        "result_rows": str(result_rows),
        "result_bytes": "0",
        "elapsed_ns": str(int(elapsed_s * 1e9)),
    }


def exception_block(message: str, tag: str) -> bytes:
    """A mid-stream error as ClickHouse (25.11+) frames it after the status line was already sent."""
    msg = message.strip().encode()
    return (
        b"__exception__\r\n"
        + tag.encode()
        + b"\r\n"
        + msg
        + b"\n"
        + str(len(msg)).encode()
        + b" "
        + tag.encode()
        + b"\r\n__exception__\r\n"
    )


class BodyDecoder:
    """Incremental Content-Encoding decoder (gzip, deflate, lz4 frames, zstd frames), bounded: it never expands
    more than ``chunk_bytes`` at a time, and refuses a body once it has expanded to more than ``limit`` bytes
    (a compression bomb is a few MB that would expand to many GB). ``limit`` may be changed between feeds."""

    SUPPORTED = ("gzip", "deflate", "lz4", "zstd")

    def __init__(self, encoding: str, limit: int, chunk_bytes: int = 1 << 20):
        self.encoding = encoding.strip().lower()
        if self.encoding not in self.SUPPORTED:
            raise RequestError(
                89,
                f"Unsupported Content-Encoding '{encoding}': the embedded store accepts "
                f"{', '.join(self.SUPPORTED)} or none. (UNKNOWN_COMPRESSION_METHOD)",
            )
        self.limit, self.chunk_bytes, self.decoded = limit, chunk_bytes, 0
        self._tail = b""  # zlib's input not yet expanded (its decompressobj hands it back)
        self._new()  # fails early if the codec's module is missing

    def _new(self):
        if self.encoding in ("gzip", "deflate"):
            self._d = zlib.decompressobj(zlib.MAX_WBITS | (16 if self.encoding == "gzip" else 0))
        elif self.encoding == "lz4":
            try:
                import lz4.frame
            except ImportError as ex:
                raise RequestError(
                    89,
                    "Content-Encoding lz4 needs the lz4 package on the server; "
                    "use compress=False. (UNKNOWN_COMPRESSION_METHOD)",
                ) from ex
            self._d = lz4.frame.LZ4FrameDecompressor()
        else:
            try:
                from compression import zstd  # Python 3.14+
            except ImportError:
                try:
                    from backports import zstd
                except ImportError as ex:
                    raise RequestError(
                        89,
                        "Content-Encoding zstd needs backports.zstd on the server; "
                        "use compress=False. (UNKNOWN_COMPRESSION_METHOD)",
                    ) from ex
            self._d = zstd.ZstdDecompressor()

    def _expand(self, data: bytes) -> tuple[bytes, bool]:
        """At most chunk_bytes of output; and whether the decoder wants more input before it can give more."""
        if self.encoding in ("gzip", "deflate"):
            out = self._d.decompress(self._tail + data, self.chunk_bytes)
            self._tail = self._d.unconsumed_tail
            return out, not self._tail and len(out) < self.chunk_bytes
        out = self._d.decompress(data, self.chunk_bytes)
        return out, self._d.needs_input  # type: ignore[attr-defined]  # bz2/lzma decompressors have it

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of ``data``, in pieces of at most chunk_bytes."""
        while True:
            out, needs_input = self._expand(data)
            data = b""
            if out:
                self.decoded += len(out)
                if self.decoded > self.limit:
                    raise RequestError(
                        229,
                        f"The request body expands to more than {self.limit} bytes "
                        f"({self.encoding}); the embedded store refuses it. (QUERY_IS_TOO_LARGE)",
                    )
                yield out
            if self._d.eof:
                data = self._d.unused_data  # the next frame / gzip member
                if not data:
                    return
                self._new()
                self._tail = b""
            elif needs_input:
                return
