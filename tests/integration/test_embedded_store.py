"""The embedded store, for real: a chDB server process on a temporary data directory, driven by
clickhouse-connect, curl and several client processes. No mocks.

Throughput of 3 concurrent inserting processes is printed by test_three_processes_insert_concurrently
(run with ``-s`` to see it); it is not asserted: speed is measured by scripts/bench, not by the tests.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

clickhouse_connect = pytest.importorskip("clickhouse_connect")
from backfill.store.embedded import ensure_server, read_credential, server_url, stop_server, store_dir  # noqa: E402

COLS = [
    "block_number",
    "log_index",
    "tx_hash",
    "token_address",
    "from_address",
    "to_address",
    "value",
    "block_timestamp",
    "_version",
]
DDL = """CREATE TABLE IF NOT EXISTS {name} (block_number UInt64, log_index UInt32, tx_hash String,
    token_address String, from_address String, to_address String, value UInt256, block_timestamp DateTime,
    _version UInt64) ENGINE = ReplacingMergeTree(_version) PARTITION BY toYYYYMM(block_timestamp)
    ORDER BY (block_number, log_index)"""
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def login(data_dir: Path) -> dict[str, str]:
    """The embedded store's credential, as clickhouse-connect takes it."""
    credential = read_credential(data_dir)
    assert credential is not None
    return {"username": credential.user, "password": credential.password}


def client_for(url: str, data_dir: Path, **kw):
    parts = urllib.parse.urlsplit(url)
    return clickhouse_connect.get_client(host=parts.hostname, port=parts.port, compress=False, **login(data_dir), **kw)


def _curl(url: str, sql: str | None = None, data: bytes | None = None, *extra: str, data_dir: Path | None = None):
    target = url + ("/?query=" + urllib.parse.quote(sql) if sql is not None else "")
    auth = ["-u", "{username}:{password}".format(**login(data_dir))] if data_dir is not None else []
    args = ["curl", "-sS", *auth, *extra, target] + (["--data-binary", "@-"] if data is not None else [])
    return subprocess.run(args, input=data, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("store")
    url = ensure_server(data_dir)
    try:
        yield data_dir, url
    finally:
        stop_server(data_dir)


def test_server_files_and_ping(store):
    data_dir, url = store
    info = json.loads((store_dir(data_dir) / "server.json").read_text())
    assert info["url"] == url and url.startswith("http://127.0.0.1:")
    assert ensure_server(data_dir) == url  # a second call finds the same server
    assert server_url(data_dir) == url


def test_client_roundtrip_uint256_and_strings(store):
    client = client_for(store[1], store[0])
    client.command(DDL.format(name="roundtrip"))
    base = dt.datetime(2024, 1, 31, 23, 59, 59)
    rows = [
        (
            n,
            n % 3,
            "0x" + format(n, "064x"),
            "0x" + "ab" * 20,
            "0x" + "00" * 20,
            "0x" + "ff" * 20,
            v,
            base + dt.timedelta(seconds=n),
            1,
        )
        for n, v in enumerate([0, 1, 2**64, 10**30, 2**255, 2**256 - 1] + list(range(994)))
    ]
    rows[7] = rows[7][:3] + ("tökén ✓ 'quoted' \t tab \\ backslash",) + rows[7][4:]
    summary = client.insert("roundtrip", rows, column_names=COLS)
    assert summary.written_rows == len(rows)
    got = client.query("SELECT * FROM roundtrip ORDER BY block_number").result_rows
    assert got == rows
    assert client.command("SELECT max(value) FROM roundtrip") == 2**256 - 1


def test_command_and_bound_parameters(store):
    client = client_for(store[1], store[0])
    assert client.command("SELECT 1") == 1
    assert client.command("SELECT 'a', 2") == ["a", "2"]
    assert client.query("SELECT {x:UInt64} + 1", parameters={"x": 41}).result_rows == [(42,)]
    text = "it's \\ a\ttab"
    assert client.query("SELECT {s:String}", parameters={"s": text}).result_rows == [(text,)]
    assert client.query("SELECT length({s:String})", parameters={"s": "x" * 10000}).result_rows == [(10000,)]
    assert client.query("SELECT %(x)s * 2", parameters={"x": 21}).result_rows == [(42,)]  # client-side bind
    # settings arrive as URL parameters and apply to that request only
    assert client.command("SELECT getSetting('max_block_size')", settings={"max_block_size": 1000}) == 1000
    assert client.command("SELECT getSetting('max_block_size')") != 1000
    # the database parameter
    client.command("CREATE DATABASE IF NOT EXISTS other")
    assert client_for(store[1], store[0], database="other").command("SELECT currentDatabase()") == "other"
    assert client.command("SELECT currentDatabase()") == "default"


def test_bad_query_raises_clickhouse_error(store):
    client = client_for(store[1], store[0])
    with pytest.raises(clickhouse_connect.driver.exceptions.DatabaseError) as err:
        client.query("SELECT * FROM no_such_table")
    assert "Code: 60" in str(err.value) and "UNKNOWN_TABLE" in str(err.value)
    with pytest.raises(clickhouse_connect.driver.exceptions.DatabaseError, match="SYNTAX_ERROR"):
        client.command("SELEC 1")
    assert client.command("SELECT 2") == 2  # the server is fine afterwards


def test_compressed_request_bodies(store):
    parts = urllib.parse.urlsplit(store[1])
    for compress in ("lz4", "zstd", "gzip"):
        client = clickhouse_connect.get_client(
            host=parts.hostname, port=parts.port, compress=compress, **login(store[0])
        )
        client.command("CREATE TABLE IF NOT EXISTS compressed (a UInt64, s String) ENGINE = MergeTree ORDER BY a")
        client.command("TRUNCATE TABLE compressed")
        assert (
            client.insert("compressed", [(i, "s" * 30) for i in range(50_000)], column_names=["a", "s"]).written_rows
            == 50_000
        )
        assert client.command("SELECT count() FROM compressed") == 50_000


@needs_curl
def test_curl(store):
    data_dir, url = store
    assert _curl(url + "/ping").stdout == b"Ok.\n"  # open: health checks present no credential
    curl = functools.partial(_curl, data_dir=data_dir)
    assert curl(url, "SELECT 1").stdout == b"1\n"
    assert curl(url, "SELECT number, 'x' FROM numbers(2)").stdout == b"0\tx\n1\tx\n"
    assert curl(url, "SELECT 1 AS a FORMAT JSONEachRow").stdout == b'{"a":1}\n'
    assert (
        curl(
            url, "CREATE TABLE curl_t (a UInt64, b String) ENGINE = MergeTree ORDER BY a", None, "-X", "POST"
        ).returncode
        == 0
    )
    assert curl(url, "INSERT INTO curl_t FORMAT TSV", b"1\tone\n2\ttwo\n").stdout == b""
    assert curl(url, "INSERT INTO curl_t FORMAT JSONEachRow", b'{"a":3,"b":"three"}\n').stdout == b""
    assert curl(url, None, b"INSERT INTO curl_t VALUES (4, 'four')").stdout == b""
    assert curl(url + "/?default_format=CSV", None, b"SELECT count(), sum(a) FROM curl_t").stdout == b"4,10\n"
    bad = curl(url, "SELECT * FROM no_such_table", None, "-i")
    head, _, body = bad.stdout.partition(b"\r\n\r\n")
    assert b" 404 " in head.split(b"\r\n")[0] and b"X-ClickHouse-Exception-Code: 60" in head
    assert body.startswith(b"Code: 60. DB::Exception:")


WORKER = r"""
import datetime, json, os, sys, time
import clickhouse_connect
port, wid, batches, rows = (int(a) for a in sys.argv[1:5])
go = sys.argv[5]
cols = sys.argv[6].split(",")
user, password = json.loads(sys.argv[7])
client = clickhouse_connect.get_client(host="127.0.0.1", port=port, compress=False, username=user, password=password)
t0 = datetime.datetime(2024, 1, 1)
def batch(b):
    base = (wid * 1000 + b) * rows
    return [(n, n % 500, "0x%064x" % n, "0x%040x" % (n % 1000), "0x%040x" % (n + 1), "0x%040x" % (n + 2),
             n * 10**24, t0 + datetime.timedelta(seconds=n // 10), 1) for n in range(base, base + rows)]
data = [batch(b) for b in range(batches)]
client.insert("transfers_warmup", data[0][:10], column_names=cols)  # imports and codec outside the timing
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
start, written = time.time(), 0
for d in data:
    written += client.insert("transfers", d, column_names=cols).written_rows
print(json.dumps({"written": written, "start": start, "end": time.time()}), flush=True)
"""


@pytest.mark.slow  # three processes under load for a while
def test_three_processes_insert_concurrently(store, tmp_path):
    data_dir, url = store
    client = client_for(url, data_dir)
    client.command(DDL.format(name="transfers"))
    client.command(DDL.format(name="transfers_warmup"))
    procs, batches, rows, go = 3, 10, 20_000, tmp_path / "go"
    port = str(urllib.parse.urlsplit(url).port)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                port,
                str(w),
                str(batches),
                str(rows),
                str(go),
                ",".join(COLS),
                json.dumps(list(login(data_dir).values())),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(procs)
    ]
    try:
        for w in workers:
            assert w.stdout.readline().strip() == "ready", w.stderr.read()
        go.touch()
        answered = []
        while any(w.poll() is None for w in workers):  # the store still answers reads during the load
            t = time.monotonic()
            if shutil.which("curl"):
                out = _curl(url, "SELECT count() FROM system.one", data_dir=data_dir)
            else:
                out = subprocess.CompletedProcess([], 0, client.command("SELECT count() FROM system.one"))
            answered.append((out.stdout in (b"1\n", 1), time.monotonic() - t))
            time.sleep(0.2)
        results = []
        for w in workers:
            out, errs = w.communicate(timeout=60)
            assert w.returncode == 0, errs
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    total = procs * batches * rows
    assert [r["written"] for r in results] == [batches * rows] * procs
    assert client.command("SELECT count() FROM transfers") == total
    assert client.command("SELECT uniqExact(block_number, log_index) FROM transfers") == total
    assert all(ok for ok, _ in answered)
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    slowest = max((s for _, s in answered), default=0.0)
    print(
        f"\n{procs} processes inserted {total} rows in {seconds:.2f}s = {total / seconds:,.0f} rows/s; "
        f"SELECT during load: {len(answered)} answered, slowest {slowest:.3f}s"
    )


def test_restart_keeps_data_and_one_server_per_dir(tmp_path):
    data_dir = tmp_path / "data"
    url = ensure_server(data_dir)
    try:
        pid = json.loads((store_dir(data_dir) / "server.json").read_text())["pid"]
        # a second server on the same directory refuses to start
        second = subprocess.run(
            [sys.executable, "-m", "backfill.store.embedded", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env=CHILD_ENV,
        )
        assert second.returncode == 3 and "holds" in second.stderr
        client = client_for(url, data_dir)
        client.command(DDL.format(name="durable"))
        rows = [
            (
                i,
                0,
                "0x" + format(i, "064x"),
                "0x" + "11" * 20,
                "0x" + "22" * 20,
                "0x" + "33" * 20,
                2**256 - 1 - i,
                dt.datetime(2025, 6, 1) + dt.timedelta(minutes=i),
                1,
            )
            for i in range(5000)
        ]
        client.insert("durable", rows, column_names=COLS)
        assert stop_server(data_dir) is True
        assert not (store_dir(data_dir) / "server.json").exists()
        assert server_url(data_dir) is None
        url2 = ensure_server(data_dir)
        assert json.loads((store_dir(data_dir) / "server.json").read_text())["pid"] != pid
        client2 = client_for(url2, data_dir)  # the same credential: it lives beside the data
        assert client2.command("SELECT count() FROM durable") == 5000
        assert client2.query("SELECT * FROM durable ORDER BY block_number").result_rows == rows
        log = (data_dir / "backfill" / "store.log").read_text()
        assert log.count("embedded store started") == 2 and "closed cleanly" in log
    finally:
        stop_server(data_dir)
    assert stop_server(data_dir) is False


def test_concurrent_ensure_server_starts_one(tmp_path):
    data_dir = tmp_path / "data"
    code = (
        "import sys; from pathlib import Path; from backfill.store.embedded import ensure_server; "
        "print(ensure_server(Path(sys.argv[1])))"
    )
    callers = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=CHILD_ENV,
        )
        for _ in range(3)
    ]
    try:
        outs = [c.communicate(timeout=60) for c in callers]
        assert all(c.returncode == 0 for c in callers), outs
        urls = {out.strip() for out, _ in outs}
        assert len(urls) == 1 and urls == {server_url(data_dir)}
        log = (data_dir / "backfill" / "store.log").read_text()
        assert log.count("embedded store started") == 1
    finally:
        stop_server(data_dir)


def test_store_inserts_without_importing_pandas(tmp_path):
    """Workers insert plain lists; the driver must not pay a pandas import per process."""
    import subprocess
    import sys

    code = (
        "import sys; from backfill.settings import load_settings; from backfill.store.client import Store; "
        f"s = Store.connect(load_settings({{'data_dir': {str(tmp_path)!r}}}, env={{}})); "
        "s.meta_set('k', 'v'); assert s.meta_get('k') == 'v'; "
        "print('pandas' in sys.modules)"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == "False", out.stderr
    finally:
        from backfill.store.embedded import stop_server

        stop_server(tmp_path)


def test_a_server_started_on_demand_exits_when_idle(tmp_path):
    """Commands start the store when needed; nobody is left with a forgotten server process."""
    import subprocess
    import sys
    import time

    import psutil

    from backfill.store.embedded import server_url

    proc = subprocess.Popen(
        [sys.executable, "-m", "backfill.store.embedded", "--data-dir", str(tmp_path), "--idle-exit-s", "1"]
    )
    try:
        deadline = time.monotonic() + 30
        while not server_url(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server_url(tmp_path)
        assert proc.wait(timeout=20) == 0
        assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
        assert server_url(tmp_path) is None
    finally:
        if proc.poll() is None:
            proc.kill()


def test_schema_is_sent_once_and_repaired_when_a_part_is_missing(tmp_path, monkeypatch):
    """A database that has the whole schema is read once (one catalogue query), not sent ~30 DDL statements
    on every command and worker start; a dropped view or migrated column is put back on the next connect;
    inserts take their column types from the catalogue, with no DESCRIBE round trip."""
    from backfill.settings import load_settings
    from backfill.store.client import Store

    sent: list[str] = []
    real = Store._retrying

    def recording(self, what, call, **kw):
        sent.append(what)
        return real(self, what, call, **kw)

    monkeypatch.setattr(Store, "_retrying", recording)
    settings = load_settings({"data_dir": str(tmp_path)}, env={})
    try:
        Store.connect(settings).close()
        assert sent.count("CREATE") >= 15, sent
        sent.clear()
        store = Store.connect(settings)
        assert [w for w in sent if w not in ("connect", "query")] == [], sent
        store.command("DROP VIEW backfill_progress")
        store.command("ALTER TABLE rpc_usage DROP COLUMN damaged")
        store.close()
        store = Store.connect(settings)
        names = {r[0] for r in store.query_rows("SELECT name FROM system.tables WHERE database = currentDatabase()")}
        assert "backfill_progress" in names
        assert store.scalar("SELECT count() FROM system.columns WHERE table = 'rpc_usage' AND name = 'damaged'") == 1
        store.close()
        sent.clear()
        worker = Store.connect(settings, create=False)
        worker.warm_up()
        worker.meta_set("k", "v")
        assert worker.meta_get("k") == "v"
        assert not [w for w in sent if w.startswith("describe")], sent
        worker.close()
    finally:
        stop_server(tmp_path)


def test_the_connection_that_creates_the_database_works_in_it(tmp_path: Path) -> None:
    """The client that made the database (connected to the server's default one) goes on as the store's: the
    tables land in the configured database, and a reconnect after a fault goes back to it."""
    from backfill.settings import load_settings
    from backfill.store.client import Store

    settings = load_settings({"data_dir": str(tmp_path)}, env={})
    database = settings.store.database
    assert database != "default"
    try:
        store = Store.connect(settings)
        assert store.scalar("SELECT currentDatabase()") == database
        tables = dict(store.query_rows("SELECT database, count() FROM system.tables GROUP BY database"))
        assert tables.get(database, 0) >= 15 and tables.get("default", 0) == 0, tables
        store._drop_client(store.client)  # as after a connection fault: the next call connects afresh
        assert store.scalar("SELECT currentDatabase()") == database
        store.close()
    finally:
        stop_server(tmp_path)
