"""The embedded store's guard and request reading, pure: the lexer agrees with the engine's on what is code,
the external-access policy, the credential check, bounded decompression and the FORMAT clause."""

from __future__ import annotations

import base64
import zlib

import pytest

from backfill.store.embedded.guard import Credential, Policy, authenticated, presented
from backfill.store.embedded.http import BodyDecoder, RequestError, tokens, trailing_format

POLICY = Policy.for_engine(
    ["file", "url", "numbers", "python", "eval", "icebergS3", "generate_series"],
    ["MergeTree", "ReplacingMergeTree", "Memory", "File", "Kafka", "QueryRunner", "Ordinary", "Filesystem"],
)
OPEN = Policy.for_engine(["file"], ["File"], allow_external=True)


def code(sql: str) -> list[str]:
    return [sql[s:e] for _, s, e in tokens(sql)]


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT 'a''b', 'c\\'d' x", ["SELECT", "'a''b'", ",", "'c\\'d'", "x"]),
        ('SELECT "a""b", `c\\`d`', ["SELECT", '"a""b"', ",", "`c\\`d`"]),
        ("SELECT $$it's$$, $t1$ $$ $t1$, $a b$", ["SELECT", "$$it's$$", ",", "$t1$ $$ $t1$", ",", "$a", "b$"]),
        ("SELECT 1 /* a /* b */ c */ + 2", ["SELECT", "1", "+", "2"]),  # comments nest, as in the engine
        ("SELECT 1 -- x\n// y\n# z\n#! w\n+ 2", ["SELECT", "1", "+", "2"]),
        ("SELECT #x", ["SELECT", "#", "x"]),  # not a comment for the engine either (it refuses the statement)
        ("SELECT a$$b$$, 1x", ["SELECT", "a$$b$$", ",", "1x"]),  # `$` is a word character after the first
        ("SELECT 'open", ["SELECT", "'", "open"]),  # unterminated: the engine refuses it
        ("SELECT\u00a0\u200b1", ["SELECT", "1"]),  # the engine skips Unicode spaces
    ],
)
def test_tokens_end_strings_and_comments_where_the_engine_does(sql: str, expected: list[str]) -> None:
    assert code(sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "select * from FILE ('/etc/passwd')",
        "SELECT file('/etc/passwd')",
        "SELECT * FROM \"file\"('/etc/passwd')",
        "SELECT * FROM `\\x66ile`('/etc/passwd')",
        "SELECT * FROM file/* c */('/etc/passwd')",
        "SELECT * FROM file\u00a0('/etc/passwd')",
        "SELECT $$'$$, file('/etc/passwd') -- '",
        "SELECT 1 /* /* */ ' */, file('/etc/passwd') -- '",
        "SELECT 1 // '\n, file('/etc/passwd') -- '",
        "INSERT INTO FUNCTION url('http://127.0.0.1:1/', 'CSV') SELECT 1",
        "SELECT * FROM icebergS3('https://bucket')",
        "SELECT * FROM python(df)",
        "SELECT * FROM eval('SELECT 1')",
        "SELECT * FROM remote('host', db.t)",
        "SELECT * FROM s3Cluster('c', 'https://b/x')",
        "SELECT * FROM loop(file('x'))",
        "SELECT 1 INTO OUTFILE '/tmp/x'",
        "INSERT INTO t FROM INFILE '/etc/passwd' FORMAT LineAsString",
        "CREATE TABLE t (s String) ENGINE = File(TSV, '/tmp/x')",
        "CREATE TABLE t (s String) ENGINE Kafka SETTINGS kafka_broker_list = 'h:9092'",
        "CREATE TABLE t (q String) ENGINE = QueryRunner",
        "CREATE DATABASE etc ENGINE = Filesystem('/etc')",
        "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = local, path = '/tmp/')",
        "CREATE DICTIONARY d (k UInt64) PRIMARY KEY k SOURCE(CLICKHOUSE(QUERY 'SELECT 1')) LAYOUT(FLAT()) LIFETIME(0)",
        "CREATE OR REPLACE DICTIONARY d (k UInt64) PRIMARY KEY k SOURCE(NULL()) LAYOUT(FLAT()) LIFETIME(0)",
        "BACKUP TABLE t TO Disk('backups', 'b.zip')",
        "RESTORE TABLE t FROM Disk('backups', 'b.zip')",
        "ATTACH TABLE t FROM '/var/lib/x' (a UInt8) ENGINE = MergeTree ORDER BY a",
        "SELECT 1 SETTINGS dialect = 'prql'",
        "SET `additional_table_filters` = {'t': '1'}",
        "INSERT INTO t SETTINGS input_format_values_interpret_expressions = 1 FORMAT Values",
        "SELECT 1 FORMAT Protobuf SETTINGS format_schema = '/etc/passwd:M'",
        "SYSTEM SHUTDOWN",
        "system kill",
    ],
)
def test_statements_reaching_outside_the_store_are_refused(sql: str) -> None:
    assert POLICY.refusal(sql) is not None


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'file(' AS x, $$url('http://x')$$, \"file\" FROM t",
        "SELECT file_id, url, engine FROM t WHERE engine = 'File' AND url LIKE 'http%'",
        "SELECT * FROM file",  # a table called file
        "SELECT count() FROM numbers(10)",
        "SELECT * FROM generate_series(1, 3)",
        "SELECT name FROM system.table_functions WHERE name = 'file'",
        "CREATE TABLE IF NOT EXISTS backfill.erc20_transfers_staging (block_number UInt64, _version UInt64) "
        "ENGINE = ReplacingMergeTree(_version) PARTITION BY toYYYYMM(now()) ORDER BY block_number",
        "CREATE TABLE t (a UInt8) ENGINE = Memory",
        "CREATE DATABASE promo ENGINE = Ordinary",
        "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS disk = 'default'",
        "EXCHANGE TABLES backfill.erc20_transfers AND backfill.erc20_transfers_next",
        "OPTIMIZE TABLE backfill.erc20_transfers_staging PARTITION 202401 FINAL",
        "INSERT INTO t (a, b) FORMAT Native",
        "INSERT INTO t SELECT * FROM input('a UInt8') FORMAT CSV",
        "ALTER TABLE t DELETE WHERE block_number BETWEEN 1 AND 2",
        "SYSTEM FLUSH LOGS",
        "KILL QUERY WHERE query_id = 'x'",
        "SHOW DICTIONARIES",
        "CREATE TABLE dictionary (a UInt8) ENGINE = Memory",
        "SELECT 1 FORMAT JSON SETTINGS max_threads = 1",
    ],
)
def test_the_stores_own_statements_and_lookalikes_run(sql: str) -> None:
    assert POLICY.refusal(sql) is None, POLICY.refusal(sql)


def test_allowing_external_access_lets_all_but_process_signals_through() -> None:
    assert OPEN.refusal("SELECT * FROM file('/etc/passwd')") is None
    assert OPEN.refusal("SELECT 1 INTO OUTFILE '/tmp/x'") is None
    assert OPEN.refusal("SYSTEM SHUTDOWN") is not None and OPEN.refusal("SYSTEM KILL") is not None
    assert OPEN.setting_refusal(["dialect"]) is None and OPEN.insert_settings() == {}


def test_url_settings_and_streamed_inserts() -> None:
    assert POLICY.setting_refusal(["max_threads", "readonly"]) is None
    assert "format_schema" in (POLICY.setting_refusal(["max_threads", "format_schema"]) or "")
    assert POLICY.setting_refusal(["Dialect"]) is not None
    assert POLICY.insert_settings() == {
        "input_format_values_interpret_expressions": "0",
        "input_format_values_deduce_templates_of_expressions": "0",
    }


def test_local_names_the_engine_lists_stay_allowed() -> None:
    assert "numbers" not in POLICY.functions and "generate_series" not in POLICY.functions
    assert {"icebergs3", "python", "eval", "file"} <= POLICY.functions
    assert {"kafka", "queryrunner", "filesystem"} <= POLICY.engines
    assert not {"mergetree", "replacingmergetree", "memory", "ordinary"} & POLICY.engines


CRED = Credential("backfill", "s3cret-_pw")


def basic(text: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}


@pytest.mark.parametrize(
    "headers, query, ok",
    [
        (basic("backfill:s3cret-_pw"), {}, True),
        ({"X-ClickHouse-User": "backfill", "X-ClickHouse-Key": "s3cret-_pw"}, {}, True),
        ({}, {"user": "backfill", "password": "s3cret-_pw"}, True),
        ({}, {}, False),
        (basic("backfill:wrong"), {}, False),
        (basic("default:s3cret-_pw"), {}, False),
        ({"Authorization": "Basic !!!"}, {}, False),
        ({"X-ClickHouse-User": "backfill"}, {"password": "s3cret-_pw"}, False),  # one method at a time
        ({}, {"password": "s3cret-_pw"}, False),  # the user is `default` then
    ],
)
def test_the_credential_is_taken_where_clickhouse_takes_it(headers, query, ok) -> None:
    assert authenticated(*presented(headers, query), CRED) is ok


def test_the_credential_is_never_in_its_repr() -> None:
    assert "s3cret" not in repr(CRED)


def gzip(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def test_a_compressed_body_expands_a_bounded_piece_at_a_time_and_up_to_its_limit() -> None:
    member = gzip(bytes(8 << 20))  # 8 MiB of zeros in ~8 KB
    dec = BodyDecoder("gzip", limit=20 << 20, chunk_bytes=1 << 20)
    pieces = list(dec.feed(member + member))  # two gzip members
    assert max(map(len, pieces)) <= 1 << 20 and sum(map(len, pieces)) == 16 << 20
    with pytest.raises(RequestError) as refused:
        for _ in dec.feed(member):
            pass
    assert refused.value.code == 229 and dec.decoded <= (20 << 20) + (1 << 20)


@pytest.mark.parametrize("encoding", ["deflate", "lz4", "zstd"])
def test_every_codec_is_bounded(encoding: str) -> None:
    data = bytes(4 << 20)
    if encoding == "deflate":
        body = zlib.compress(data)
    elif encoding == "lz4":
        import lz4.frame

        body = lz4.frame.compress(data)
    else:
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        body = zstd.compress(data)
    dec = BodyDecoder(encoding, limit=1 << 30, chunk_bytes=64 << 10)
    pieces = [p for i in range(0, len(body), 1000) for p in dec.feed(body[i : i + 1000])]
    assert b"".join(pieces) == data and max(map(len, pieces)) <= 64 << 10
    with pytest.raises(RequestError):
        list(BodyDecoder(encoding, limit=1 << 20, chunk_bytes=64 << 10).feed(body))


FORMATS = {"json": "JSON", "tsv": "TSV", "jsoneachrow": "JSONEachRow"}


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT 1 FORMAT JSON", "JSON"),
        ("SELECT 1 FORMAT json;", "JSON"),
        ("SELECT 1 FORMAT JSON SETTINGS max_threads = 1", "JSON"),
        ("SELECT 1 FORMAT TSV FORMAT JSONEachRow", "JSONEachRow"),
        ("SELECT format FROM t", None),
        ("SELECT 1 FORMAT Unknown", None),
        ("SELECT t.format FORMAT JSON", "JSON"),
        ("SELECT 'FORMAT JSON'", None),
        ("FORMAT JSON", None),
    ],
)
def test_trailing_format(sql: str, expected: str | None) -> None:
    assert trailing_format(sql, FORMATS) == expected
