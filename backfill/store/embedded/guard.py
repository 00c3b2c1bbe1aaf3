"""Who may use the embedded store, and what it will not do for them. Pure: no sockets, no chDB, no files.

* **The credential.** One user and a random password per data directory (``backfill.store.embedded`` keeps them in
  ``<data_dir>/clickhouse/credentials.json``, owner-only). Every request but ``/ping`` presents them as
  ClickHouse accepts them: HTTP basic auth, ``X-ClickHouse-User`` / ``X-ClickHouse-Key``, or ``user`` /
  ``password`` URL parameters; anything else is AUTHENTICATION_FAILED.
* **The store stays a store.** chDB is clickhouse-local: it reads and writes any file the process may, fetches
  URLs, talks to other databases and object stores, runs programs. Unless the operator allows it
  (``embedded_allow_external``), a statement that would reach outside the data directory is refused before
  the engine sees it, judged on its tokens (``embedded_http.tokens``, the engine's lexer): a table function
  or engine that reaches out, ``INTO OUTFILE``, ``FROM INFILE``, dictionaries (their sources load from
  anywhere and run SQL held in strings), ``BACKUP`` / ``RESTORE``, and the settings that read or write
  paths, switch the SQL dialect or evaluate SQL held in strings. ``SYSTEM SHUTDOWN`` / ``SYSTEM KILL``
  signal the server's whole process group, so they are refused always (``backfill db stop`` stops it).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

from backfill.store.embedded.http import tokens

STORE_USER = "backfill"

# Table functions whose data stays in the store (or is made up); every other one the engine lists is refused.
LOCAL_TABLE_FUNCTIONS = frozenset(
    {
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "primes",
        "generate_series",
        "generateseries",
        "generaterandom",
        "values",
        "sqlstandardvalues",
        "null",
        "view",
        "viewifpermitted",
        "viewexplain",
        "merge",
        "loop",
        "input",
        "format",
        "dictionary",
        "mergetreeindex",
        "mergetreeprojection",
        "mergetreeanalyzeindexes",
        "mergetreeanalyzeindexesuuid",
        "mergetreecodecblockcounts",
        "mergetreetextindex",
        "fuzzjson",
        "fuzzquery",
    }
)
# Refused whether or not the engine lists them (lower case: the check ignores case). `disk(...)` defines a disk
# at any path or bucket in a table's SETTINGS; hasColumnInTable takes a host to connect to.
EXTERNAL_FUNCTIONS = frozenset(
    {
        "file",
        "filecluster",
        "url",
        "urlcluster",
        "remote",
        "remotesecure",
        "cluster",
        "clusterallreplicas",
        "s3",
        "s3cluster",
        "gcs",
        "oss",
        "cosn",
        "hdfs",
        "hdfscluster",
        "azureblobstorage",
        "azureblobstoragecluster",
        "mysql",
        "postgresql",
        "odbc",
        "jdbc",
        "mongodb",
        "redis",
        "sqlite",
        "executable",
        "python",
        "eval",
        "filesystem",
        "arrowstream",
        "bigquery",
        "ytsaurus",
        "hive",
        "iceberg",
        "deltalake",
        "hudi",
        "paimon",
        "prometheusquery",
        "prometheusqueryrange",
        "disk",
        "hascolumnintable",
    }
)
# Table and database engines whose data lives in the store; every other one the engine lists is refused.
LOCAL_ENGINES = frozenset(
    {
        "memory",
        "log",
        "tinylog",
        "stripelog",
        "null",
        "set",
        "join",
        "buffer",
        "merge",
        "dictionary",
        "view",
        "materializedview",
        "liveview",
        "windowview",
        "alias",
        "loop",
        "timeseries",
        "embeddedrocksdb",
        "generaterandom",
        "fuzzjson",
        "fuzzquery",
        "atomic",
        "ordinary",
        "lazy",
        "replicated",
        "overlay",
    }
)
EXTERNAL_ENGINES = frozenset(
    {
        "file",
        "url",
        "s3",
        "s3queue",
        "hdfs",
        "mysql",
        "postgresql",
        "materializedpostgresql",
        "materializedmysql",
        "mongodb",
        "odbc",
        "jdbc",
        "sqlite",
        "redis",
        "kafka",
        "rabbitmq",
        "nats",
        "filelog",
        "azureblobstorage",
        "azurequeue",
        "executable",
        "executablepool",
        "distributed",
        "remote",
        "remotesecure",
        "externaldistributed",
        "filesystem",
        "backup",
        "datalakecatalog",
        "hive",
        "iceberg",
        "deltalake",
        "hudi",
        "paimon",
        "gcs",
        "oss",
        "cosn",
        "ytsaurus",
        "bigquery",
        "arrowstream",
        "queryrunner",
    }
)
# Settings that name files to read or write, switch the parser to another dialect (whose text the token check
# cannot read), or hold SQL the engine evaluates; and the two that let Values data carry expressions.
EXTERNAL_SETTINGS = frozenset(
    {
        "format_schema",
        "format_schema_source",
        "format_template_resultset",
        "format_template_row",
        "output_format_schema",
        "input_format_record_errors_file_path",
        "dialect",
        "polyglot_dialect",
        "enable_json_ast_dialect",
        "enable_trino_dialect",
        "allow_experimental_kusto_dialect",
        "allow_experimental_prql_dialect",
        "allow_experimental_polyglot_dialect",
        "additional_table_filters",
        "additional_result_filter",
        "allow_experimental_eval_table_function",
        "input_format_values_interpret_expressions",
        "input_format_values_deduce_templates_of_expressions",
    }
)
# Data streamed after `INSERT ... FORMAT Values` is never seen by the token check: it may hold literals only.
INSERT_SETTINGS = {
    "input_format_values_interpret_expressions": "0",
    "input_format_values_deduce_templates_of_expressions": "0",
}
ALLOW_HINT = "set BACKFILL_EMBEDDED_ALLOW_EXTERNAL=1 for the server to allow it"
# Words without which no refusal can fire (besides the names in the lists).
KEYWORDS = frozenset({"system", "backup", "restore", "dictionary", "outfile", "infile", "attach"})
_HEX_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})|\\(.)", re.S)
# bytes.translate table: word characters of the engine's lexer kept (letters lower-cased), all else a space
_WORD_BYTES = bytes(
    c + 32 if 65 <= c <= 90 else c if chr(c).isascii() and (chr(c).isalnum() or chr(c) in "_$") else 32
    for c in range(256)
)
_WINDOW = 1 << 20


@dataclass(frozen=True)
class Credential:
    user: str
    password: str = field(repr=False)


def presented(headers: Mapping[str, str], query: Mapping[str, str]) -> tuple[str, str]:
    """The (user, password) a request presents, in the places ClickHouse looks; ("default", "") for none."""
    if "X-ClickHouse-User" in headers or "X-ClickHouse-Key" in headers:
        return headers.get("X-ClickHouse-User", "default"), headers.get("X-ClickHouse-Key", "")
    auth = headers.get("Authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        return user, password
    if "user" in query or "password" in query:
        return query.get("user", "default"), query.get("password", "")
    return "default", ""


def authenticated(user: str, password: str, credential: Credential) -> bool:
    """Constant-time comparison of both parts (no early exit on a wrong user name)."""
    user_ok = hmac.compare_digest(user.encode(), credential.user.encode())
    password_ok = hmac.compare_digest(password.encode(), credential.password.encode())
    return user_ok & password_ok


def auth_failure(user: str) -> str:
    return (
        f"Code: 516. DB::Exception: {user[:64]}: Authentication failed: password is incorrect, or there is no "
        f"user with such name. The embedded store's credential is in <data_dir>/clickhouse/credentials.json "
        f"(`backfill db credentials` prints it). (AUTHENTICATION_FAILED)"
    )


def _name(text: str, kind: str, start: int, end: int) -> str | None:
    """The identifier a token names (lower case), or None for strings, numbers and punctuation."""
    if kind == "word":
        return text[start:end].lower()
    if kind == "quoted" and text[start] in '"`':
        inner = text[start + 1 : end - 1].replace(text[start] * 2, text[start])
        # escapes as the engine reads them where they could spell a name: \x66ile is file
        return _HEX_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else m.group(2), inner).lower()
    return None


def _pairs(sql: str) -> Iterator[tuple[tuple[str, int, int], tuple[str, int, int] | None]]:
    it = tokens(sql)
    cur = next(it, None)
    while cur is not None:
        nxt = next(it, None)
        yield cur, nxt
        cur = nxt


@dataclass(frozen=True)
class Policy:
    """What the server refuses. ``for_engine`` completes the lists with what the running engine offers."""

    allow_external: bool = False
    functions: frozenset[str] = EXTERNAL_FUNCTIONS
    engines: frozenset[str] = EXTERNAL_ENGINES

    @classmethod
    def for_engine(
        cls, table_functions: Iterable[str], engines: Iterable[str], allow_external: bool = False
    ) -> "Policy":
        listed_functions = {n.lower() for n in table_functions}
        listed_engines = {n.lower() for n in engines}
        return cls(
            allow_external,
            frozenset((EXTERNAL_FUNCTIONS | listed_functions) - LOCAL_TABLE_FUNCTIONS),
            frozenset(
                (EXTERNAL_ENGINES | listed_engines)
                - LOCAL_ENGINES
                - {n for n in listed_engines if n.endswith("mergetree")}
            ),
        )

    @functools.cached_property
    def _suspects(self) -> frozenset[bytes]:
        return frozenset(w.encode() for w in self.functions | self.engines | EXTERNAL_SETTINGS | KEYWORDS)

    def _suspect(self, sql: str) -> bool:
        """Whether the text holds a word some refusal needs (any case, whole words as the engine cuts them), or a
        backslash (an escape in a quoted identifier may spell one). At C speed, a window at a time: a statement
        without any cannot be refused, and a long one need not be read token by token."""
        data = sql.encode("utf-8", "surrogatepass")
        if b"\\" in data:
            return True
        words = data.translate(_WORD_BYTES)
        for at in range(0, len(words), _WINDOW):
            if not self._suspects.isdisjoint(words[max(0, at - 64) : at + _WINDOW].split()):
                return True
        return False

    def insert_settings(self) -> dict[str, str]:
        """Settings forced on a streamed insert (its data is not checked)."""
        return {} if self.allow_external else dict(INSERT_SETTINGS)

    def setting_refusal(self, names: Iterable[str]) -> str | None:
        if self.allow_external:
            return None
        for name in names:
            if name.lower() in EXTERNAL_SETTINGS:
                return f"setting {name} is refused by the embedded store ({ALLOW_HINT})"
        return None

    def refusal(self, sql: str) -> str | None:
        """Why the statement may not run here, or None. A search at C speed for a suspect word, then, if there is
        one, a pass over the tokens."""
        if not self._suspect(sql):
            return None
        words: list[str] = []  # the first few words (upper case): what kind of statement this is
        prev = ""  # the previous token, upper case
        engine_next = False  # the next name is an ENGINE's
        for (kind, start, end), nxt in _pairs(sql):
            tok = sql[start:end].upper()
            if kind == "word" and len(words) < 5:
                words.append(tok)
                if words[:2] in (["SYSTEM", "SHUTDOWN"], ["SYSTEM", "KILL"]):
                    return f"SYSTEM {words[1]} would signal the server's whole process group; use `backfill db stop`"
            if self.allow_external:
                continue
            if len(words) == 1 and kind == "word" and tok in ("BACKUP", "RESTORE"):
                return f"{tok} reads or writes backups outside the store ({ALLOW_HINT})"
            if tok == "DICTIONARY" and words in (
                ["CREATE", "DICTIONARY"],
                ["ATTACH", "DICTIONARY"],
                ["REPLACE", "DICTIONARY"],
                ["CREATE", "OR", "REPLACE", "DICTIONARY"],
            ):
                return f"dictionaries load from sources outside the store ({ALLOW_HINT})"
            if (prev, tok) in (("INTO", "OUTFILE"), ("FROM", "INFILE")):
                return f"{prev} {tok} reaches the file system outside the store ({ALLOW_HINT})"
            if words[:1] == ["ATTACH"] and prev == "FROM" and kind == "quoted" and sql[start] == "'":
                return f"ATTACH ... FROM a path reaches the file system outside the store ({ALLOW_HINT})"
            name = _name(sql, kind, start, end)
            if name is not None:
                if name in EXTERNAL_SETTINGS:
                    return f"setting {name} is refused by the embedded store ({ALLOW_HINT})"
                if engine_next and name in self.engines:
                    return f"ENGINE {sql[start:end]} reaches outside the store ({ALLOW_HINT})"
                if name in self.functions and nxt is not None and sql[nxt[1] : nxt[2]] == "(":
                    return f"{sql[start:end]}() reaches outside the store ({ALLOW_HINT})"
            engine_next = tok == "ENGINE" or (engine_next and tok == "=")
            prev = tok
        return None
