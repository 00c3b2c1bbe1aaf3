"""The embedded store serves its owner only, stays a store and stays within bounds: a real server on a
temporary data directory, driven by curl and raw sockets, its memory watched through psutil. No mocks."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from backfill.store.embedded import ensure_server, read_credential, stop_server, store_dir
from backfill.store.embedded.guard import Credential

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20
RSS_LIMIT = 1 << 30


class Store:
    def __init__(self, data_dir: Path, url: str, credential: Credential):
        self.data_dir, self.url, self.credential = data_dir, url, credential
        self.port = urllib.parse.urlsplit(url).port
        self.pid = json.loads((store_dir(data_dir) / "server.json").read_text())["pid"]

    @property
    def auth(self) -> str:
        return f"{self.credential.user}:{self.credential.password}"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    data_dir = tmp_path_factory.mktemp("secure") / "data"
    url = ensure_server(data_dir)
    try:
        credential = read_credential(data_dir)
        assert credential is not None
        yield Store(data_dir, url, credential)
    finally:
        stop_server(data_dir)


def curl(
    url: str, sql: str | None = None, *extra: str, body: Path | bytes | None = None, timeout: float = 60
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; the SQL goes in the `query` parameter, a body from a file or bytes."""
    target = url + ("/?query=" + urllib.parse.quote(sql) if sql is not None else "")
    data = [] if body is None else ["--data-binary", f"@{body}" if isinstance(body, Path) else "@-"]
    out = subprocess.run(
        ["curl", "-sS", "-i", *extra, target, *data],
        capture_output=True,
        timeout=timeout,
        input=body if isinstance(body, bytes) else None,
    )
    assert out.returncode == 0, out.stderr
    answer = out.stdout
    while answer.startswith(b"HTTP/1.1 100"):  # `100 Continue` before the answer to a large body
        answer = answer.partition(b"\r\n\r\n")[2]
    head, _, text = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, text


class RssWatch:
    """The server's peak resident memory while the block runs (sampled every 20 ms)."""

    def __init__(self, pid: int):
        self.proc, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()

    def __enter__(self) -> "RssWatch":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def gzip_of_zeros(path: Path, total: int, member: int = 64 * MB) -> Path:
    """A gzip body that expands to `total` zero bytes: one member compressed once (streaming, 1 MiB at a time),
    written total/member times (a gzip stream may hold any number of members)."""
    comp, zeros, parts = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(MB), []
    for _ in range(member // MB):
        parts.append(comp.compress(zeros))
    one = b"".join(parts) + comp.flush()
    with open(path, "wb") as f:
        for _ in range(total // member):
            f.write(one)
    return path


# -- the credential ---------------------------------------------------------------------------------
def test_without_the_credential_curl_gets_401_and_ping_stays_open(store: Store) -> None:
    status, headers, body = curl(store.url, "SELECT 1")
    assert status == 401 and headers["X-ClickHouse-Exception-Code"] == "516"
    assert body.startswith(b"Code: 516. DB::Exception:") and b"AUTHENTICATION_FAILED" in body
    wrong = [
        ("-u", f"{store.credential.user}:nope"),
        ("-H", f"X-ClickHouse-User: {store.credential.user}"),
        ("-u", f"default:{store.credential.password}"),
    ]
    for args in wrong:
        assert curl(store.url, "SELECT 1", *args)[0] == 401, args
    assert curl(store.url + "/?user=backfill&password=x&query=SELECT%201")[0] == 401
    assert curl(store.url + "/replicas_status")[0] == 401
    assert curl(store.url + "/ping")[:3:2] == (200, b"Ok.\n")  # health checks present nothing, learn nothing
    # a client that waits for `100 Continue` is refused before it sends its body
    status, _, _ = curl(store.url, "INSERT INTO t FORMAT TSV", "-H", "Expect: 100-continue", body=b"x" * (4 * MB))
    assert status == 401


def test_with_the_credential_select_1_works_in_each_way_clickhouse_takes_it(store: Store) -> None:
    c = store.credential
    assert curl(store.url, "SELECT 1", "-u", store.auth)[::2] == (200, b"1\n")
    headers = ["-H", f"X-ClickHouse-User: {c.user}", "-H", f"X-ClickHouse-Key: {c.password}"]
    assert curl(store.url, "SELECT 1", *headers)[::2] == (200, b"1\n")
    assert curl(store.url + f"/?user={c.user}&password={c.password}", None, body=b"SELECT 1")[::2] == (200, b"1\n")
    basic = base64.b64encode(store.auth.encode()).decode()
    assert curl(store.url + "/replicas_status", None, "-H", f"Authorization: Basic {basic}")[::2] == (200, b"Ok.\n")


def test_the_credential_file_is_owner_only_and_db_credentials_prints_it(store: Store) -> None:
    path = store_dir(store.data_dir) / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"user": store.credential.user, "password": store.credential.password}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "backfill.cli.app", "db", "credentials", "--data-dir", str(store.data_dir)]
    lines = subprocess.run(cli, capture_output=True, text=True, timeout=60, env=env, check=True).stdout.splitlines()
    assert [line.split() for line in lines] == [
        ["url", store.url],
        ["user", store.credential.user],
        ["password", store.credential.password],
    ]
    line = subprocess.run([*cli, "--curl"], capture_output=True, text=True, timeout=60, env=env, check=True).stdout
    assert subprocess.run(line, shell=True, capture_output=True, timeout=30).stdout == b"1\n"


# -- the store stays a store -------------------------------------------------------------------------
REFUSED = [
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
    "INSERT INTO FUNCTION file('{out}', 'LineAsString') SELECT 'x'",
    "SELECT file('/etc/passwd')",  # the scalar function too
    "SELECT * FROM \"file\"('/etc/passwd', 'LineAsString')",  # a quoted identifier names it as well
    "SELECT * FROM `\\x66ile`('/etc/passwd', 'LineAsString')",
    "SELECT $$it's$$, * FROM file('/etc/passwd', 'LineAsString') -- '",  # a heredoc holds the quote
    "SELECT 1 /* a /* nested */ ' */, * FROM file('/etc/passwd', 'LineAsString') -- '",
    "SELECT 1 // '\n, * FROM file('/etc/passwd', 'LineAsString') -- '",
    "SELECT * FROM file\u00a0('/etc/passwd', 'LineAsString')",
    "SELECT 'x' INTO OUTFILE '{out}'",
    "CREATE TABLE ext (s String) ENGINE = File(LineAsString, '{out}')",
    "CREATE DATABASE etc ENGINE = Filesystem('/etc')",
    "SELECT * FROM remote('127.0.0.1:1', system.one)",
    "SELECT 1 SETTINGS dialect = 'prql'",
    "SYSTEM SHUTDOWN",
    "SYSTEM KILL",
]


def test_statements_that_reach_outside_the_store_are_refused(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "written-by-the-store"
    for sql in REFUSED:
        status, headers, body = curl(store.url, None, "-u", store.auth, body=sql.format(out=out).encode())
        assert (status, headers.get("X-ClickHouse-Exception-Code")) == (403, "497"), (sql, body)
        assert b"ACCESS_DENIED" in body and b"root:" not in body, sql
    status, _, body = curl(store.url + "/?format_schema=/etc/passwd:M", "SELECT 1", "-u", store.auth)
    assert status == 403 and b"format_schema" in body
    assert not out.exists()
    assert psutil.pid_exists(store.pid)  # SYSTEM SHUTDOWN / KILL did not reach the server


def test_own_statements_and_lookalikes_still_run(store: Store) -> None:
    def run(sql: str) -> bytes:
        status, _, body = curl(store.url, None, "-u", store.auth, body=sql.encode())
        assert status == 200, (sql, body)
        return body

    assert run("SELECT 'file(' AS x") == b"file(\n"
    assert (
        run("SELECT 'url(http://x)', $$file('/etc/passwd')$$ FORMAT TSVRaw") == b"url(http://x)\tfile('/etc/passwd')\n"
    )
    run("CREATE TABLE looks (file_id UInt64, url String, engine String) ENGINE = ReplacingMergeTree ORDER BY file_id")
    run("INSERT INTO looks VALUES (1, 'http://127.0.0.1:1/', 'File')")
    run("CREATE TABLE looks_next AS looks")
    run("EXCHANGE TABLES looks AND looks_next")
    run("OPTIMIZE TABLE looks_next FINAL")
    assert run("SELECT file_id, url, engine FROM looks_next FINAL") == b"1\thttp://127.0.0.1:1/\tFile\n"
    assert run("SELECT count() FROM numbers(3)") == b"3\n"
    assert run("SELECT count() > 0 FROM system.tables WHERE engine = 'File' OR name = 'looks'") == b"1\n"


def test_allow_external_lets_a_server_read_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_EMBEDDED_ALLOW_EXTERNAL", "1")
    data_dir = tmp_path / "open"
    url = ensure_server(data_dir)
    try:
        credential = read_credential(data_dir)
        assert credential is not None
        (tmp_path / "note.txt").write_text("outside\n")
        sql = f"SELECT * FROM file('{tmp_path / 'note.txt'}', 'LineAsString')"
        assert curl(url, sql, "-u", f"{credential.user}:{credential.password}")[::2] == (200, b"outside\n")
        assert curl(url, "SYSTEM KILL", "-u", f"{credential.user}:{credential.password}")[0] == 403  # never
    finally:
        stop_server(data_dir)


# -- bounds --------------------------------------------------------------------------------------------
def test_a_large_query_and_a_gzip_bomb_are_refused_in_bounded_memory(store: Store, tmp_path: Path) -> None:
    big = tmp_path / "big.sql"
    with open(big, "wb") as f:  # 80 MB of SQL: one string literal
        f.write(b"SELECT length('")
        for _ in range(80):
            f.write(b"x" * MB)
        f.write(b"')")
    bomb = gzip_of_zeros(tmp_path / "bomb.gz", 10 << 30)  # 10 GiB of zeros in ~10 MB
    assert bomb.stat().st_size < 20 * MB
    with RssWatch(store.pid) as rss:
        status, headers, body = curl(store.url, None, "-u", store.auth, body=big)
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (413, "229"), body
        assert b"QUERY_IS_TOO_LARGE" in body
        status, headers, body = curl(store.url, None, "-u", store.auth, "-H", "Content-Encoding: gzip", body=bomb)
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (413, "229"), body
    assert rss.peak < RSS_LIMIT, f"server RSS peaked at {rss.peak / MB:.0f} MB"
    # insert data is not SQL text: a compressed body expands past the query limit (up to MAX_INSERT_BYTES)
    assert (
        curl(store.url, "CREATE TABLE sink (b FixedString(256)) ENGINE = Null", "-u", store.auth, "-X", "POST")[0]
        == 200
    )
    status, headers, body = curl(
        store.url,
        "INSERT INTO sink FORMAT RowBinary",
        "-u",
        store.auth,
        "-H",
        "Content-Encoding: gzip",
        body=gzip_of_zeros(tmp_path / "data.gz", 64 * MB),
    )
    assert status == 200, body
    assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == str(64 * MB // 256)
    assert curl(store.url, "SELECT 1", "-u", store.auth)[::2] == (200, b"1\n")


@pytest.mark.slow  # waits out the 20 s header deadline
def test_a_client_trickling_its_headers_is_dropped_while_others_are_answered(store: Store) -> None:
    trickler = socket.create_connection(("127.0.0.1", store.port))
    silent = socket.create_connection(("127.0.0.1", store.port))
    trickler.settimeout(0.2)
    silent.settimeout(0.0)
    trickler.sendall(b"POST /?query=SELECT HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started, dropped, answered = time.monotonic(), {}, 0
    try:
        while len(dropped) < 2 and time.monotonic() - started < 32:
            for name, sock in (("trickler", trickler), ("silent", silent)):
                if name in dropped:
                    continue
                try:
                    if name == "trickler":
                        sock.sendall(b"a")
                    if sock.recv(1024) == b"":
                        dropped[name] = time.monotonic() - started
                except (BlockingIOError, TimeoutError):
                    pass
                except OSError:
                    dropped[name] = time.monotonic() - started
            assert curl(store.url, "SELECT 1", "-u", store.auth, timeout=5)[::2] == (200, b"1\n")
            answered += 1
            time.sleep(0.5)
    finally:
        trickler.close()
        silent.close()
    assert set(dropped) == {"trickler", "silent"} and max(dropped.values()) < 30, dropped
    assert answered >= 10


def test_requests_beyond_the_limit_get_503_at_once(store: Store) -> None:
    from backfill.store.embedded.server import MAX_REQUESTS

    basic = base64.b64encode(store.auth.encode()).decode()
    head = (
        f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\r\nContent-Length: 100\r\n\r\nSELECT "
    ).encode()  # the rest of the body never comes: each holds a request open
    held = [socket.create_connection(("127.0.0.1", store.port)) for _ in range(MAX_REQUESTS)]
    try:
        for sock in held:
            sock.sendall(head)
        deadline = time.monotonic() + 10
        while True:
            t = time.monotonic()
            status, headers, body = curl(store.url, "SELECT 1", "-u", store.auth, timeout=5)
            if status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (status, headers.get("X-ClickHouse-Exception-Code")) == (503, "202"), body
        assert time.monotonic() - t < 4  # answered at once (curl and all), not queued until curl gives up at 5 s
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while curl(store.url, "SELECT 1", "-u", store.auth)[0] != 200:
        assert time.monotonic() < deadline, "the slots were not given back"
        time.sleep(0.05)


def test_the_password_never_reaches_the_log(store: Store) -> None:
    curl(store.url + f"/?user=backfill&password={store.credential.password}&query=SELEC%201")  # fails: logged
    log = (store.data_dir / "backfill" / "store.log").read_text()
    assert "query" in log and "refused a request without the store's credential" in log
    assert store.credential.password not in log
