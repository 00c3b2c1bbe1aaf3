"""The fault-injecting store proxy itself, in front of the real embedded store, driven by clickhouse-connect:
clean pass-through, ClickHouse's own refusal answers, outages on a kept port, and resets after the insert."""

from __future__ import annotations

import base64
import hashlib
import http.server
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from backfill.store.embedded import ensure_server, read_credential, stop_server
from tests.support.store_proxy import REFUSALS, StoreFault, StoreProxy, statement_of

LOGIN: dict[str, str] = {}  # the embedded store's credential, once the module's server runs


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("store-proxy") / "data"
    try:
        url = ensure_server(data)
        credential = read_credential(data)
        assert credential is not None
        LOGIN.update(username=credential.user, password=credential.password)
        yield url
    finally:
        stop_server(data)


def basic_auth() -> dict[str, str]:
    token = base64.b64encode(f"{LOGIN['username']}:{LOGIN['password']}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def proxy(store_url: str) -> Iterator[StoreProxy]:
    with StoreProxy(store_url) as p:
        yield p


@pytest.fixture
def table(proxy: StoreProxy) -> str:
    """A fresh table, created through the proxy."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    client_for(proxy).command(f"CREATE TABLE {name} (id UInt64, note String) ENGINE = MergeTree ORDER BY id")
    return name


def client_for(proxy: StoreProxy):
    return clickhouse_connect.get_client(
        host="127.0.0.1",
        port=proxy.port,
        compress=False,
        autogenerate_session_id=False,
        connect_timeout=2,
        send_receive_timeout=20,
        **LOGIN,
    )


def count(client, table: str) -> int:
    return client.command(f"SELECT count() FROM {table}")


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, headers=basic_auth() if headers is None else headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# -- pass-through ----------------------------------------------------------------------------------
def test_insert_and_select_pass_through(proxy: StoreProxy, table: str, store_url: str) -> None:
    client = client_for(proxy)
    client.insert(table, [(1, "a"), (2, "b")], column_names=["id", "note"])
    client.raw_insert(table, ["id", "note"], insert_block=b"3\tc\n", fmt="TabSeparated")  # SQL in the body
    rows = client.query(f"SELECT id, note FROM {table} ORDER BY id").result_rows
    assert rows == [(1, "a"), (2, "b"), (3, "c")]
    assert proxy.inserts(table) == 2
    inserts = [r for r in proxy.requests() if r.statement == "INSERT"]
    assert [(r.table, r.status, r.fault) for r in inserts] == [(table, 200, None)] * 2
    assert proxy.refused() == {} and proxy.resets() == 0

    sql = urllib.parse.quote(f"SELECT count() FROM {table}")
    direct = urllib.request.urlopen(
        urllib.request.Request(f"{store_url}/?query={sql}", headers=basic_auth()), timeout=10
    )
    proxied = urllib.request.urlopen(
        urllib.request.Request(f"{proxy.url}/?query={sql}", headers=basic_auth()), timeout=10
    )
    assert proxied.read() == direct.read() == b"3\n"
    names = {k for k in direct.headers if k.startswith("X-ClickHouse-")}
    assert names >= {"X-ClickHouse-Summary", "X-ClickHouse-Format", "X-ClickHouse-Query-Id"}
    assert names == {k for k in proxied.headers if k.startswith("X-ClickHouse-")}
    assert proxied.headers["X-ClickHouse-Format"] == direct.headers["X-ClickHouse-Format"]


def test_request_and_answer_pass_untouched() -> None:
    """Path, query string, credentials and a 24 MiB body reach the upstream as sent; its error status,
    X-ClickHouse-* headers and body come back as it sent them (an echoing stand-in upstream)."""
    seen: dict[str, object] = {}

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            digest, left = hashlib.sha256(), int(self.headers["Content-Length"])
            while left:
                chunk = self.rfile.read(min(left, 1 << 20))
                digest.update(chunk)
                left -= len(chunk)
            seen.update(path=self.path, headers=dict(self.headers), sha=digest.hexdigest())
            body = b"Code: 60. DB::Exception: Unknown table. (UNKNOWN_TABLE)\n"
            self.send_response(404)
            self.send_header("X-ClickHouse-Exception-Code", "60")
            self.send_header("X-ClickHouse-Summary", '{"read_rows":"0"}')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with StoreProxy(f"http://127.0.0.1:{server.server_address[1]}") as proxy:
            body = bytes(range(256)) * (24 * 4096)
            path = "/?database=db&user=u&password=p%26w&query=INSERT%20INTO%20x%20FORMAT%20Native"
            headers = {"Authorization": "Basic dTpw", "X-ClickHouse-Key": "k%&", "Content-Encoding": "zstd"}
            started = time.monotonic()
            status, got, answer = post(proxy.url + path, body, headers)
            assert time.monotonic() - started < 10
    finally:
        server.shutdown()
    assert (status, got["X-ClickHouse-Exception-Code"], got["X-ClickHouse-Summary"]) == (404, "60", '{"read_rows":"0"}')
    assert answer == b"Code: 60. DB::Exception: Unknown table. (UNKNOWN_TABLE)\n"
    assert seen["path"] == path and seen["sha"] == hashlib.sha256(body).hexdigest()
    sent = seen["headers"]
    assert isinstance(sent, dict)
    sent = {k.lower(): v for k, v in sent.items()}
    assert {k: sent.get(k.lower()) for k in headers} == headers
    assert sent["content-length"] == str(len(body))
    assert sent.get("connection", "").lower() != "close"  # hop-by-hop: urllib's `Connection: close` stays
    (record,) = proxy.requests()
    assert (record.statement, record.table, record.status, record.upstream_status, record.bytes_in) == (
        "INSERT",
        "x",
        404,
        404,
        len(body),
    )


# -- refusals --------------------------------------------------------------------------------------
def test_too_many_parts_refuses_inserts_into_the_table_only(proxy: StoreProxy, table: str) -> None:
    client = client_for(proxy)
    other = f"{table}_other"
    client.command(f"CREATE TABLE {other} (id UInt64, note String) ENGINE = MergeTree ORDER BY id")
    proxy.configure(faults=StoreFault("too_many_parts", tables=(table,)))

    with pytest.raises(DatabaseError) as caught:
        client.insert(table, [(1, "a")], column_names=["id", "note"])
    assert caught.value.code == 252 and "TOO_MANY_PARTS" in str(caught.value)
    with pytest.raises(DatabaseError) as caught:
        client.raw_insert(table, ["id", "note"], insert_block=b"2\tb\n", fmt="TabSeparated")
    assert caught.value.code == 252
    client.insert(other, [(1, "a")], column_names=["id", "note"])

    assert count(client, table) == 0 and count(client, other) == 1  # selects pass
    assert proxy.refused() == {"too_many_parts": 2}
    assert proxy.inserts(table) == 0 and proxy.inserts(other) == 1

    sql = urllib.parse.quote(f"INSERT INTO {table} FORMAT TabSeparated")
    status, headers, body = post(f"{proxy.url}/?query={sql}", b"3\tc\n")
    assert status == 500 and body == REFUSALS["too_many_parts"].body
    assert headers["X-ClickHouse-Exception-Code"] == "252"
    assert headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert body.startswith(b"Code: 252. DB::Exception: Too many parts (3001)") and body.endswith(b")\n")
    assert count(client, table) == 0


def test_count_limited_refusal_stops_after_n(proxy: StoreProxy, table: str) -> None:
    client = client_for(proxy)
    proxy.configure(faults=StoreFault("memory_limit", tables=(table,), count=2))
    for _ in range(2):
        with pytest.raises(DatabaseError) as caught:
            client.insert(table, [(1, "a")], column_names=["id", "note"])
        assert caught.value.code == 241 and "MEMORY_LIMIT_EXCEEDED" in str(caught.value)
    client.insert(table, [(1, "a")], column_names=["id", "note"])
    client.insert(table, [(2, "b")], column_names=["id", "note"])
    assert count(client, table) == 2
    assert proxy.refused() == {"memory_limit": 2} and proxy.inserts(table) == 2


def test_deadline_refusal_and_http_503(proxy: StoreProxy, table: str) -> None:
    client = client_for(proxy)
    until = time.monotonic() + 0.5
    proxy.configure(faults=StoreFault("http_503", until=until))
    with pytest.raises(DatabaseError) as caught:
        client.insert(table, [(1, "a")], column_names=["id", "note"])
    assert caught.value.code is None and "503" in str(caught.value)
    status, headers, body = post(f"{proxy.url}/?query=INSERT%20INTO%20{table}%20FORMAT%20TSV", b"9\tz\n")
    assert (status, body, "X-ClickHouse-Exception-Code" in headers) == (503, b"Service Unavailable", False)
    time.sleep(max(0.0, until - time.monotonic()) + 0.05)
    client.insert(table, [(1, "a")], column_names=["id", "note"])
    assert count(client, table) == 1 and proxy.refused() == {"http_503": 2}


# -- outages ---------------------------------------------------------------------------------------
def test_down_refuses_connections_and_up_serves_on_the_same_port(proxy: StoreProxy, table: str) -> None:
    client = client_for(proxy)
    assert count(client, table) == 0  # the client holds a pooled connection now
    port = proxy.port
    proxy.down()
    assert not proxy.listening
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(OperationalError):
        client.insert(table, [(1, "a")], column_names=["id", "note"])
    with pytest.raises(OperationalError):
        count(client, table)
    proxy.up()
    assert proxy.port == port and proxy.listening
    client.insert(table, [(1, "a")], column_names=["id", "note"])
    assert count(client, table) == 1

    proxy.down_for(0.3)
    with pytest.raises(OperationalError):
        count(client, table)
    time.sleep(0.5)
    assert proxy.listening and count(client, table) == 1


def test_reset_after_forwarding_lands_the_rows_and_fails_the_client(proxy: StoreProxy, table: str) -> None:
    client = client_for(proxy)
    proxy.reset_next(2)  # the driver re-sends once after a reset (next test): reset both tries
    with pytest.raises(OperationalError):
        client.insert(table, [(1, "a")], column_names=["id", "note"])
    assert client.query(f"SELECT id, note FROM {table}").result_rows == [(1, "a")] * 2  # both did land
    client.insert(table, [(2, "b")], column_names=["id", "note"])  # the next one is answered
    assert count(client, table) == 3
    assert proxy.resets() == 2 and proxy.inserts(table) == 3 and proxy.refused() == {}
    reset = [r for r in proxy.requests() if r.fault == "reset"]
    assert [(r.statement, r.table, r.status, r.upstream_status) for r in reset] == [("INSERT", table, None, 200)] * 2


def test_driver_resends_an_insert_once_after_a_reset(proxy: StoreProxy, table: str) -> None:
    """clickhouse-connect 1.12 treats inserts as retryable on a remotely closed connection: after one reset
    it sends the insert again by itself and returns normally, so the rows land twice. A client of the
    store must therefore expect duplicates (ReplacingMergeTree keys, FINAL) even without its own retries."""
    client = client_for(proxy)
    proxy.reset_next(1)
    client.insert(table, [(1, "a")], column_names=["id", "note"])
    client.raw_insert(table, ["id", "note"], insert_block=b"2\tb\n", fmt="TabSeparated")  # not reset
    rows = client.query(f"SELECT id, note FROM {table} ORDER BY id").result_rows
    assert rows == [(1, "a"), (1, "a"), (2, "b")]
    assert proxy.resets() == 1 and proxy.inserts(table) == 3


def test_statement_of() -> None:
    assert statement_of("INSERT INTO erc20_transfers_staging (a, b) FORMAT Native") == (
        "INSERT",
        "erc20_transfers_staging",
    )
    assert statement_of("/* x */ insert into `db`.`t` FORMAT Native\n\x00\x01") == ("INSERT", "db.t")
    assert statement_of("INSERT INTO FUNCTION remote('h', d.t) VALUES") == ("INSERT", None)
    assert statement_of("SELECT count() FROM t FINAL") == ("SELECT", "t")
    assert statement_of("SELECT * FROM numbers(3)") == ("SELECT", None)
    assert statement_of("CREATE TABLE IF NOT EXISTS t (a Int8) ENGINE = Memory") == ("CREATE", "t")
    assert statement_of("OPTIMIZE TABLE t FINAL") == ("OPTIMIZE", "t")
    assert statement_of("") == ("", None)


def test_fault_rules_match_statements_and_tables() -> None:
    fault = StoreFault("too_many_parts", tables=("t",), statements=("insert",))
    assert fault.matches("INSERT", "t") and fault.matches("INSERT", "db.t")
    assert not fault.matches("INSERT", "u") and not fault.matches("SELECT", "t")
    assert StoreFault("http_503", statements=()).matches("SELECT", None)
    with pytest.raises(ValueError):
        StoreFault("nope")
