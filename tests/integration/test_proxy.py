"""The fault-injecting RPC proxy itself, on a real anvil chain: clean forwarding, catalogue answers,
range caps that go away when the range is small, lagging heads, and exact accounting."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import http.client
import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from backfill.decode.events import LOG_FILTER_TOPICS
from backfill.devnet.node import Anvil, DevnetParams, start_devnet
from tests.support.proxy import RpcProxy
from tests.support.proxy_faults import ALL_FAULTS_MIX, CAP, DAMAGE_MODES, KINDS, LAG, QUOTA, Fault, kinds_in

PARAMS = DevnetParams.with_defaults(dt.date(2024, 1, 1), 4, 500, 7)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    anvil, _, _ = start_devnet(PARAMS, tmp_path_factory.mktemp("proxy-devnet") / "state.json")
    try:
        yield anvil
    finally:
        anvil.stop()


@pytest.fixture
def proxy(node: Anvil) -> Iterator[RpcProxy]:
    with RpcProxy(node.url, seed=1) as p:
        yield p


# -- a plain client --------------------------------------------------------------------------------
def post(url: str, doc: Any, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def call(method: str, params: list[Any], id_: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def getlogs(from_block: int, to_block: int, id_: int = 1) -> dict[str, Any]:
    return call(
        "eth_getLogs", [{"fromBlock": hex(from_block), "toBlock": hex(to_block), "topics": LOG_FILTER_TOPICS}], id_
    )


def blocks_batch(numbers: list[int]) -> list[dict[str, Any]]:
    return [call("eth_getBlockByNumber", [hex(n), False], 100 + i) for i, n in enumerate(numbers)]


def result(url: str, doc: Any) -> Any:
    status, _, body = post(url, doc)
    assert status == 200, body[:300]
    return json.loads(body)["result"]


def head(url: str) -> int:
    return int(result(url, call("eth_blockNumber", [])), 16)


def wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- clean forwarding ------------------------------------------------------------------------------
def test_clean_proxy_answers_exactly_like_the_node(node: Anvil, proxy: RpcProxy) -> None:
    requests = [
        getlogs(0, 300),
        getlogs(1200, 1500, id_=9),
        call("eth_blockNumber", []),
        call("eth_chainId", []),
        blocks_batch([0, 1, 700, 2000]),
        [call("eth_blockNumber", [], 5), getlogs(10, 20, id_=6)],
    ]
    for doc in requests:
        direct, via_proxy = post(node.url, doc), post(proxy.url, doc)
        assert via_proxy[0] == direct[0] == 200
        assert via_proxy[2] == direct[2]
    assert proxy.getlogs_ranges() == [(0, 300), (1200, 1500), (10, 20)]
    assert [c.method for c in proxy.calls("eth_getBlockByNumber")] == ["eth_getBlockByNumber"] * 4
    assert {c.batch_size for c in proxy.calls("eth_getBlockByNumber")} == {4}
    assert all(c.fault is None and c.status == 200 and c.ok for c in proxy.calls())


def test_url_with_key_is_served_and_the_path_recorded(proxy: RpcProxy) -> None:
    url = proxy.url_with_key("k3y-s3cr3t")
    assert url.endswith("/v2/k3y-s3cr3t") and url.startswith(proxy.url)
    assert head(url) == head(proxy.url)
    assert [c.path for c in proxy.calls()] == ["/v2/k3y-s3cr3t", "/"]


# -- catalogue answers -----------------------------------------------------------------------------
ENVELOPE_FAULTS = [  # kind, HTTP status, JSON-RPC code, start of the message
    ("A4", 429, 429, "Your app has exceeded its compute units per second capacity."),
    ("I4", 429, -32005, "project ID request rate exceeded"),
    ("I5", 429, -32005, "daily request count exceeded, request rate limited"),
    ("Q2", 429, 429, "The requests per second (RPS) of your requests are higher than your plan allows."),
    ("Q4", 200, -32012, "credits limited to 6000/sec"),
    ("RETRY_AFTER", 429, 429, "Too Many Requests"),
    ("I2", 200, -32005, "query timeout exceeded"),
    ("N1_TIMEOUT", 200, -32016, "eth_getLogs request was canceled due to enabled timeout."),
    ("I6", 402, 402, "Payment Required"),
    ("A5", 403, -32600, "Monthly capacity limit exceeded."),
    ("I7", 200, -32000, "header not found"),
]


@pytest.mark.parametrize("kind,status,code,message", ENVELOPE_FAULTS, ids=[f[0] for f in ENVELOPE_FAULTS])
def test_fault_answers_with_the_catalogue_envelope(
    proxy: RpcProxy, kind: str, status: int, code: int, message: str
) -> None:
    proxy.set_faults([Fault(kind)])
    got_status, headers, body = post(proxy.url, getlogs(0, 10, id_=42))
    doc = json.loads(body)
    assert got_status == status
    assert doc["jsonrpc"] == "2.0" and doc["id"] == 42
    assert doc["error"]["code"] == code and doc["error"]["message"].startswith(message)
    if kind == "I5":
        assert doc["error"]["data"]["rate"]["backoff_seconds"] == 30
    if kind == "I6":
        assert doc["error"]["event"] == -33000 and "daily credit limit" in doc["error"]["details"]
    if kind == "RETRY_AFTER":
        assert headers["Retry-After"] == "1"
    [rec] = proxy.calls()
    assert (rec.fault, rec.status, rec.ok, rec.params) == (kind, status, False, (0, 10))
    assert proxy.getlogs_ranges() == []


RAW_FAULTS = [  # kind, HTTP status, content type, exact body
    ("H1", 502, "text/html", KINDS["H1"].body),
    ("CF502", 502, "application/json", b"502 Bad Gateway"),
    ("H2", 200, "text/plain", b"Invalid host specified"),
    ("HTTP500", 500, "text/plain", b"500 Internal Server Error"),
    ("HTTP503", 503, "text/plain", b"503 Service Unavailable"),
    (
        "P1",
        401,
        "application/json",
        b'{"error":"message: API key disabled, reason: tenant disabled, json-rpc code: -32051, rest code: 403"}',
    ),
    (
        "Q3",
        429,
        "application/json",
        b'{"code":-32007,"message":"100/second request limit reached - reduce '
        b'calls per second or upgrade your account at quicknode.com"}',
    ),
]


@pytest.mark.parametrize("kind,status,content_type,body", RAW_FAULTS, ids=[f[0] for f in RAW_FAULTS])
def test_fault_answers_with_the_catalogue_body(
    proxy: RpcProxy, kind: str, status: int, content_type: str, body: bytes
) -> None:
    proxy.set_faults([Fault(kind, methods={"eth_blockNumber"})])
    got_status, headers, got_body = post(proxy.url, call("eth_blockNumber", []))
    assert (got_status, got_body) == (status, body)
    assert headers["Content-Type"].startswith(content_type)
    assert result(proxy.url, getlogs(0, 1)) is not None  # the default filter would not hit eth_getLogs
    assert [(c.method, c.fault) for c in proxy.calls()] == [("eth_blockNumber", kind), ("eth_getLogs", None)]


def test_fault_settings_change_status_and_retry_after(proxy: RpcProxy) -> None:
    proxy.set_faults([Fault("RETRY_AFTER", retry_after_s=3), Fault("Q3")])
    status, headers, _ = post(proxy.url, getlogs(0, 1))
    assert (status, headers["Retry-After"]) == (429, "3")
    proxy.set_faults([Fault("Q3", status=200), Fault("I5", retry_after_s=2)])
    assert post(proxy.url, getlogs(0, 1))[0] == 200
    proxy.set_faults([Fault("I5", retry_after_s=2)])
    assert json.loads(post(proxy.url, getlogs(0, 1))[2])["error"]["data"]["rate"]["backoff_seconds"] == 2


def test_truncated_answer_is_a_prefix_of_the_true_one(node: Anvil, proxy: RpcProxy) -> None:
    proxy.set_faults([Fault("H3")])
    status, _, body = post(proxy.url, getlogs(0, 50))
    full = post(node.url, getlogs(0, 50))[2]
    assert status == 200 and 0 < len(body) < len(full) and full.startswith(body)
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    assert proxy.calls()[0].fault == "H3" and proxy.getlogs_ranges() == []


def test_reset_drops_the_connection(proxy: RpcProxy) -> None:
    proxy.set_faults([Fault("RESET")])
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, urllib.error.URLError)):
        post(proxy.url, getlogs(0, 1))
    wait_for(lambda: len(proxy.calls()) == 1)
    assert (proxy.calls()[0].fault, proxy.calls()[0].status) == ("RESET", None)


def test_timeout_holds_the_request_past_the_client_deadline(node: Anvil, proxy: RpcProxy) -> None:
    proxy.set_faults([Fault("TIMEOUT", delay_s=0.6)])
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        post(proxy.url, getlogs(0, 5), timeout=0.2)
    wait_for(lambda: len(proxy.calls()) == 1)
    assert (proxy.calls()[0].fault, proxy.calls()[0].status, proxy.calls()[0].ok) == ("TIMEOUT", None, False)
    t0 = time.monotonic()
    status, _, body = post(proxy.url, getlogs(0, 5), timeout=5)  # a patient client gets the true answer late
    assert time.monotonic() - t0 >= 0.6
    assert status == 200 and body == post(node.url, getlogs(0, 5))[2]
    assert proxy.getlogs_ranges() == [(0, 5)]


# -- range caps ------------------------------------------------------------------------------------
SUGGESTED = re.compile(r"\[(0x[0-9a-fA-F]+), (0x[0-9a-fA-F]+)\]|the range (\d+)-(\d+)")


def suggestion(message: str) -> tuple[int, int] | None:
    m = SUGGESTED.search(message)
    if m is None:
        return None
    return (int(m[1], 16), int(m[2], 16)) if m[1] else (int(m[3]), int(m[4]))


@pytest.mark.parametrize("kind", kinds_in(CAP))
def test_range_cap_goes_away_when_the_range_fits(proxy: RpcProxy, kind: str) -> None:
    proxy.set_faults([Fault(kind, max_blocks=100)])
    status, _, body = post(proxy.url, getlogs(1000, 1300))
    error = json.loads(body)["error"]
    assert status == KINDS[kind].status and error["code"] == KINDS[kind].error["code"]  # type: ignore[index]
    suggested = suggestion(error["message"])
    if suggested is not None:
        assert suggested == (1000, 1099)
    assert result(proxy.url, getlogs(1000, 1099)) is not None
    assert result(proxy.url, getlogs(1100, 1199)) is not None
    assert proxy.getlogs_ranges() == [(1000, 1099), (1100, 1199)]
    assert [c.fault for c in proxy.calls()] == [kind, None, None]


@pytest.mark.parametrize("kind", ["I1", "R1", "N1", "A1"])
def test_result_cap_suggests_a_range_under_the_cap(node: Anvil, proxy: RpcProxy, kind: str) -> None:
    proxy.set_faults([Fault(kind, max_logs=40)])
    assert len(result(node.url, getlogs(0, 400))) > 40
    status, _, body = post(proxy.url, getlogs(0, 400))
    error = json.loads(body)["error"]
    assert status == 200
    if kind != "A1":  # Alchemy's text names its own caps
        assert "40" in error["message"]
    if kind == "I1":
        assert error["data"]["limit"] == 40
    if kind != "N1":  # nethermind names no range
        frm, to = suggestion(error["message"])  # type: ignore[misc]
        logs = result(proxy.url, getlogs(frm, to))
        assert frm == 0 and 0 < len(logs) <= 40
        assert len(result(node.url, getlogs(frm, to + 1))) > 40  # the longest range that fits
    assert proxy.calls()[0].fault == kind


# -- batches ---------------------------------------------------------------------------------------
def test_batch_fails_as_one_error_object(proxy: RpcProxy) -> None:
    proxy.set_faults([Fault("A4", methods={"batch"})])
    status, _, body = post(proxy.url, blocks_batch([1, 2, 3]))
    doc = json.loads(body)
    assert status == 429 and isinstance(doc, dict) and doc["id"] is None and doc["error"]["code"] == 429
    assert head(proxy.url) > 0  # single calls are not batches
    assert [c.fault for c in proxy.calls()] == ["A4", "A4", "A4", None]


def test_batch_items_fail_one_by_one(node: Anvil, proxy: RpcProxy) -> None:
    numbers = list(range(40))
    truth = {a["id"]: a for a in json.loads(post(node.url, blocks_batch(numbers))[2])}
    proxy.set_faults([Fault("Q4", rate=0.5, methods={"eth_getBlockByNumber"})])
    status, _, body = post(proxy.url, blocks_batch(numbers))
    answers = json.loads(body)
    assert status == 200 and [a["id"] for a in answers] == [100 + n for n in numbers]
    failed = [a for a in answers if "error" in a]
    assert 5 < len(failed) < 35 and all(a["error"]["code"] == -32012 for a in failed)
    assert all(a == truth[a["id"]] for a in answers if "result" in a)
    assert sum(c.fault == "Q4" for c in proxy.calls()) == len(failed)


def test_items_mode_can_be_asked_for_any_envelope_kind(proxy: RpcProxy) -> None:
    proxy.set_faults([Fault("I4", methods={"batch"}, batch="items")])
    status, _, body = post(proxy.url, blocks_batch([1, 2]))
    assert status == 200 and [a["error"]["code"] for a in json.loads(body)] == [-32005, -32005]


# -- lagging node ----------------------------------------------------------------------------------
LAG_BLOCKS = 300


def test_lagging_node_hides_blocks_above_its_head(node: Anvil, proxy: RpcProxy) -> None:
    true_head = head(node.url)
    lagged = true_head - LAG_BLOCKS
    proxy.configure(lag_blocks=LAG_BLOCKS)
    assert head(proxy.url) == lagged
    answers = json.loads(post(proxy.url, blocks_batch([lagged - 1, lagged, lagged + 1, true_head]))[2])
    assert [a["result"] is None for a in answers] == [False, False, True, True]
    assert result(proxy.url, call("eth_getBlockByNumber", ["latest", False]))["number"] == hex(lagged)

    frm = lagged - 200
    seen, truth = result(proxy.url, getlogs(frm, true_head)), result(node.url, getlogs(frm, true_head))
    assert seen == result(node.url, getlogs(frm, lagged)) and 0 < len(seen) < len(truth)  # partial, no error
    assert result(proxy.url, getlogs(lagged + 1, true_head)) == []
    assert result(proxy.url, getlogs(frm, lagged)) == seen
    assert proxy.getlogs_ranges() == [(frm, lagged)]  # only the answer that was complete

    proxy.configure(lag_getlogs="empty", lag_block_lookup="I7")
    assert result(proxy.url, getlogs(frm, true_head)) == []
    error = json.loads(post(proxy.url, call("eth_getBlockByNumber", [hex(true_head), False]))[2])["error"]
    assert error == {"code": -32000, "message": "header not found"}

    proxy.configure(lag_getlogs="error")
    error = json.loads(post(proxy.url, getlogs(frm, true_head))[2])["error"]
    assert error["message"] == (f"block range extends beyond current head block: requested {true_head}, head {lagged}")

    proxy.configure(lag_blocks=0)
    assert head(proxy.url) == true_head and result(proxy.url, getlogs(frm, true_head)) == truth


def test_getlogs_only_lag_keeps_the_head_truthful(node: Anvil) -> None:
    true_head = head(node.url)
    frm = true_head - LAG_BLOCKS - 200
    with RpcProxy(node.url, lag_blocks=LAG_BLOCKS, getlogs_lag_only=True) as proxy:
        assert head(proxy.url) == true_head
        assert result(proxy.url, call("eth_getBlockByNumber", [hex(true_head), False])) is not None
        seen = result(proxy.url, getlogs(frm, true_head))
        assert seen == result(node.url, getlogs(frm, true_head - LAG_BLOCKS))
        assert len(seen) < len(result(node.url, getlogs(frm, true_head)))
        assert [(c.method, c.fault) for c in proxy.calls()][-1] == ("eth_getLogs", "LAG")


def test_strip_block_timestamp(node: Anvil) -> None:
    with RpcProxy(node.url, strip_block_timestamp=True) as proxy:
        seen, truth = result(proxy.url, getlogs(0, 100)), result(node.url, getlogs(0, 100))
    assert truth and all("blockTimestamp" in log for log in truth)
    assert seen == [{k: v for k, v in log.items() if k != "blockTimestamp"} for log in truth]


# -- accounting and the RNG ------------------------------------------------------------------------
def test_getlogs_ranges_count_exactly_what_clients_received(proxy: RpcProxy) -> None:
    proxy.set_faults([Fault("A4", rate=0.3), Fault("A2", max_blocks=50)])
    rng = random.Random(5)
    ranges = [(a, a + rng.choice([10, 40, 80])) for a in (rng.randrange(0, 1900) for _ in range(120))]
    ranges += ranges[:20]  # the same range asked twice counts twice

    def ask(r: tuple[int, int]) -> tuple[int, int] | None:
        status, _, body = post(proxy.url, getlogs(*r))
        return r if status == 200 and "result" in json.loads(body) else None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        received = [r for r in pool.map(ask, ranges) if r is not None]
    assert Counter(proxy.getlogs_ranges()) == Counter(received)
    assert len(proxy.calls("eth_getLogs")) == len(ranges)
    counts = proxy.fault_counts()
    assert counts["A4"] > 0 and counts["A2"] > 0
    assert all(r[1] - r[0] + 1 <= 50 for r in received)
    proxy.reset()
    assert proxy.calls() == [] and proxy.getlogs_ranges() == []


def test_same_seed_same_faults(node: Anvil) -> None:
    def faults_seen(seed: int) -> list[str | None]:
        with RpcProxy(node.url, [Fault("A4", rate=0.3), Fault("H2", rate=0.3)], seed=seed) as proxy:
            for i in range(30):
                post(proxy.url, getlogs(i, i + 1))
            return [c.fault for c in proxy.calls()]

    first = faults_seen(11)
    assert first == faults_seen(11) and first != faults_seen(12)
    assert {"A4", "H2", None} == set(first)


def test_all_faults_mix_spreads_the_rate_over_every_class() -> None:
    mix = ALL_FAULTS_MIX(0.3)
    kinds = {f.kind for f in mix}
    assert not kinds & set(kinds_in(QUOTA, LAG)) and {"A4", "I1", "H1", "RESET", "TIMEOUT", "Q4"} <= kinds
    rng, hits = random.Random(3), Counter[str]()
    trials = 40_000
    for _ in range(trials):  # the proxy's draw: in list order, first hit wins
        hits[next((f.kind for f in mix if rng.random() < f.rate), "none")] += 1
    assert abs(hits["none"] / trials - 0.7) < 0.01
    assert all(abs(hits[k] / trials - 0.3 / len(mix)) < 0.005 for k in kinds)


def test_stop_does_not_wait_for_held_requests(node: Anvil) -> None:
    proxy = RpcProxy(node.url, [Fault("TIMEOUT", delay_s=60)]).start()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post, proxy.url, getlogs(0, 1), 30)
        wait_for(lambda: proxy.requests_seen == 1)
        t0 = time.monotonic()
        proxy.stop()
        assert time.monotonic() - t0 < 20  # not the 60 s hold (its own shutdown takes about 1 s)
        try:
            status: int | None = pending.result(timeout=10)[0]
        except (ConnectionError, http.client.HTTPException, urllib.error.URLError):
            status = None
    assert status != 200  # a 204 or a dropped connection, never the held answer
    assert not any(t.name == "rpc-proxy" and t.is_alive() for t in threading.enumerate())


def test_unknown_fault_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("Z9")
    with pytest.raises(ValueError):
        Fault("A4", rate=1.5)


# -- a hosted provider at its limits: budget, quota, batch caps -------------------------------------
A4_TEXT = KINDS["A4"].error["message"]  # type: ignore[index]


def chain_ids(n: int, first_id: int = 1) -> list[dict[str, Any]]:
    return [call("eth_chainId", [], first_id + i) for i in range(n)]


def test_budget_holds_under_hammering(node: Anvil) -> None:
    rps = 10  # burst: one second's worth
    with RpcProxy(node.url, rate_limit_rps=rps) as proxy:
        t0 = time.monotonic()
        stop_at = t0 + 3.0

        def hammer(worker: int) -> Counter[str]:
            got: Counter[str] = Counter()
            while time.monotonic() < stop_at:
                doc: Any = call("eth_chainId", [], worker) if worker % 2 else chain_ids(3)
                status, _, body = post(proxy.url, doc)
                answer = json.loads(body)
                calls = len(doc) if isinstance(doc, list) else 1
                if status == 200:
                    assert all("result" in a for a in (answer if isinstance(doc, list) else [answer]))
                    got["served"] += calls
                else:  # a batch is refused whole, as one object
                    assert status == 429 and isinstance(answer, dict), body[:200]
                    assert answer["error"] == {"code": 429, "message": A4_TEXT}
                    assert answer["id"] == (None if isinstance(doc, list) else worker)
                    got["refused"] += calls
                time.sleep(0.005)
            return got

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = sum(pool.map(hammer, range(4)), Counter[str]())
        elapsed = time.monotonic() - t0
        assert rps * elapsed * 0.7 < got["served"] <= rps * elapsed + rps  # the refill plus the burst
        assert got["refused"] > got["served"]
        assert proxy.budget_calls() == got["served"] and proxy.limit_answers() == got["refused"]
        assert rps <= proxy.calls_per_second_max() <= rps + rps
        first, last = proxy.first_request_at(), proxy.last_request_at()
        assert first is not None and last is not None and 2.5 < last - first <= elapsed
        assert proxy.fault_counts() == Counter({"A4": got["refused"]})
        assert len(proxy.calls()) == got["served"] + got["refused"]


def test_batch_over_the_budget_is_refused_whole_or_item_by_item(node: Anvil) -> None:
    numbers = list(range(15))
    truth = {a["id"]: a for a in json.loads(post(node.url, blocks_batch(numbers))[2])}
    with RpcProxy(node.url, rate_limit_rps=10) as proxy:
        status, _, body = post(proxy.url, blocks_batch(numbers))  # 15 calls never fit a bucket of 10
        assert status == 429
        assert json.loads(body) == {"jsonrpc": "2.0", "id": None, "error": {"code": 429, "message": A4_TEXT}}

        proxy.configure(rate_limit_mode="items")  # the refusal was free: the bucket is still full
        status, _, body = post(proxy.url, blocks_batch(numbers))
        answers = json.loads(body)
        assert status == 200 and [a["id"] for a in answers] == [100 + n for n in numbers]
        assert answers[:10] == [truth[100 + n] for n in numbers[:10]]
        assert answers[10:] == [
            {"jsonrpc": "2.0", "id": 100 + n, "error": {"code": -32012, "message": "credits limited to 6000/sec"}}
            for n in numbers[10:]
        ]
        assert proxy.fault_counts() == Counter({"A4": 15, "Q4": 5})
        assert (proxy.limit_answers(), proxy.budget_calls()) == (20, 10)
        assert [c.ok for c in proxy.calls()][15:] == [True] * 10 + [False] * 5

        status, _, body = post(proxy.url, call("eth_chainId", [], 7))  # the bucket is empty
        assert status == 200 and json.loads(body)["error"]["code"] == -32012 and json.loads(body)["id"] == 7


RATE_LIMIT_KINDS = [("A4", 429), ("Q2", 429), ("I4", 429), ("I5", 429), ("Q3", 429), ("RETRY_AFTER", 429)]


@pytest.mark.parametrize("kind,status", RATE_LIMIT_KINDS, ids=[k for k, _ in RATE_LIMIT_KINDS])
def test_budget_answers_with_the_configured_kind(proxy: RpcProxy, kind: str, status: int) -> None:
    proxy.configure(rate_limit_rps=0.2, rate_limit_kind=kind)  # one token, then one every 5 s
    assert post(proxy.url, call("eth_chainId", []))[0] == 200
    got_status, headers, body = post(proxy.url, call("eth_chainId", [], 9))
    doc, error = json.loads(body), KINDS[kind].error
    assert got_status == status
    if kind == "Q3":  # bare, no envelope
        assert doc == error
    else:
        assert doc["id"] == 9 and (doc["error"]["code"], doc["error"]["message"]) == (error["code"], error["message"])
    if kind == "RETRY_AFTER":  # the whole seconds until the call would fit
        assert 1 <= int(headers["Retry-After"]) <= 5
    if kind == "I5":
        assert 1 <= doc["error"]["data"]["rate"]["backoff_seconds"] <= 5
    assert [c.fault for c in proxy.calls()] == [None, kind] and proxy.limit_answers() == 1


def test_quota_answers_402_from_the_call_after_it(node: Anvil) -> None:
    with RpcProxy(node.url, quota_calls=20) as proxy:
        for i in range(15):
            assert post(proxy.url, call("eth_chainId", [], i))[0] == 200
        status, _, body = post(proxy.url, chain_ids(5))  # each call of a batch counts
        assert status == 200 and all("result" in a for a in json.loads(body))
        status, _, body = post(proxy.url, call("eth_chainId", [], 21))
        doc = json.loads(body)
        assert status == 402 and doc["id"] == 21
        assert doc["error"] == KINDS["I6"].error
        status, _, body = post(proxy.url, chain_ids(3))
        assert status == 402 and json.loads(body)["id"] is None  # a batch gets one object
        assert post(proxy.url, call("eth_chainId", []))[0] == 402  # refused calls did not count, still gone
        proxy.configure(quota_kind="P1")
        assert post(proxy.url, call("eth_chainId", []))[::2] == (401, KINDS["P1"].body)
        proxy.configure(quota_calls=25)  # more quota
        assert post(proxy.url, call("eth_chainId", []))[0] == 200
        assert proxy.fault_counts() == Counter({"I6": 5, "P1": 1}) and proxy.budget_calls() == 21
        assert proxy.limit_answers() == 0


def test_max_batch_refuses_a_larger_batch_as_geth_does(node: Anvil) -> None:
    numbers = list(range(11))
    with RpcProxy(node.url, max_batch=10) as proxy:
        status, _, body = post(proxy.url, blocks_batch(numbers[:10]))
        assert status == 200 and body == post(node.url, blocks_batch(numbers[:10]))[2]
        status, _, body = post(proxy.url, blocks_batch(numbers))
        assert status == 200
        assert json.loads(body) == [
            {"jsonrpc": "2.0", "id": 100, "error": {"code": -32600, "message": "batch too large"}}
        ]
        proxy.configure(batch_refusal="besu")
        status, _, body = post(proxy.url, blocks_batch(numbers))
        assert status == 200
        assert json.loads(body) == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32005, "message": "Number of requests exceeds max batch size"},
        }
        proxy.configure(batch_refusal="zkevm")
        assert post(proxy.url, blocks_batch(numbers))[::2] == (413, b"batch requests limit exceeded\n")
        assert proxy.fault_counts() == Counter({"BATCH_GETH": 11, "BATCH_BESU": 11, "BATCH_ZKEVM": 11})
        assert proxy.budget_calls() == 10


def test_refuse_batches_refuses_even_a_batch_of_one(node: Anvil) -> None:
    with RpcProxy(node.url, refuse_batches=True, rate_limit_rps=0.2, rate_limit_burst=1) as proxy:
        status, headers, body = post(proxy.url, [call("eth_chainId", [])])
        assert (status, body) == (400, b"batch requests are disabled\n")
        assert headers["Content-Type"].startswith("text/plain")
        proxy.configure(refuse_batches="BATCH_OFF_JSON")
        status, _, body = post(proxy.url, [call("eth_chainId", [])])
        assert status == 200 and json.loads(body) == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32600, "message": "batch requests are not supported"},
        }
        chain_id = result(node.url, call("eth_chainId", []))
        assert result(proxy.url, call("eth_chainId", [])) == chain_id  # the one token: refusals were free
        assert [c.fault for c in proxy.calls()] == ["BATCH_OFF", "BATCH_OFF_JSON", None]
        assert proxy.budget_calls() == 1


def test_limits_are_checked_quota_then_batch_caps_then_budget(node: Anvil) -> None:
    with RpcProxy(
        node.url,
        quota_calls=3,
        max_batch=2,
        rate_limit_rps=0.2,
        rate_limit_burst=3,
        faults=[Fault("H2", methods={"eth_blockNumber"})],
    ) as proxy:
        assert post(proxy.url, chain_ids(3))[0] == 200 and proxy.budget_calls() == 0  # over max_batch
        assert post(proxy.url, chain_ids(2))[0] == 200  # 3 tokens -> 1
        assert post(proxy.url, chain_ids(2))[0] == 429  # 2 calls do not fit the 1 token left
        assert post(proxy.url, call("eth_blockNumber", []))[::2] == (200, b"Invalid host specified")  # faults
        assert post(proxy.url, chain_ids(3))[0] == 402  # the quota comes first
        assert post(proxy.url, call("eth_chainId", []))[0] == 402
        assert [c.fault for c in proxy.calls()] == (["BATCH_GETH"] * 3 + [None] * 2 + ["A4"] * 2 + ["H2"] + ["I6"] * 4)


def test_configure_changes_the_budget_at_runtime(proxy: RpcProxy) -> None:
    assert post(proxy.url, chain_ids(50))[0] == 200  # no budget
    proxy.configure(rate_limit_rps=0.2, rate_limit_burst=5)  # switched on: a full bucket of 5
    assert post(proxy.url, chain_ids(6))[0] == 429  # never fits
    assert post(proxy.url, chain_ids(5))[0] == 200
    assert post(proxy.url, call("eth_chainId", []))[0] == 429  # empty, refilled in 5 s
    proxy.configure(rate_limit_rps=100, rate_limit_burst=None)  # a bucket of 100, refilled at 100/s
    time.sleep(0.3)
    assert post(proxy.url, chain_ids(20))[0] == 200
    proxy.configure(rate_limit_rps=None)
    assert post(proxy.url, chain_ids(200))[0] == 200
    assert proxy.budget_calls() == 50 + 5 + 20 + 200 and proxy.limit_answers() == 7
    proxy.configure(rate_limit_rps=0.2, rate_limit_burst=3, quota_calls=278)
    assert post(proxy.url, chain_ids(3))[0] == 200  # switched on again: full; the quota now spent
    assert post(proxy.url, call("eth_chainId", []))[0] == 402
    proxy.reset(limits=True)  # a new month, a full bucket
    assert (proxy.budget_calls(), proxy.limit_answers(), proxy.calls()) == (0, 0, [])
    assert proxy.first_request_at() is None
    assert post(proxy.url, chain_ids(3))[0] == 200 and post(proxy.url, chain_ids(1))[0] == 429
    with pytest.raises(ValueError):
        proxy.configure(rate_limit_mode="sometimes")
    with pytest.raises(ValueError):
        proxy.configure(quota_kind="A4")
    with pytest.raises(ValueError):
        proxy.configure(lag_getlogs="sometimes")  # the older options are still checked


# -- faults at given calls, in batches, out of order -------------------------------------------------
def test_a_fault_at_given_calls_hits_exactly_those_calls(proxy: RpcProxy) -> None:
    proxy.set_faults([Fault("HTTP503", methods={"eth_getBlockByNumber"}, at={3, 5})])
    statuses = [post(proxy.url, call("eth_getBlockByNumber", [hex(n), False]))[0] for n in range(6)]
    assert statuses == [200, 200, 503, 200, 503, 200]
    assert head(proxy.url) > 0  # another method is counted apart and not hit
    assert [(c.nth, c.fault) for c in proxy.calls("eth_getBlockByNumber")] == [
        (1, None),
        (2, None),
        (3, "HTTP503"),
        (4, None),
        (5, "HTTP503"),
        (6, None),
    ]
    assert (proxy.received("eth_getBlockByNumber"), proxy.received("eth_blockNumber")) == (6, 1)
    proxy.reset()  # ordinals start again
    assert post(proxy.url, call("eth_getBlockByNumber", ["0x1", False]))[0] == 200
    assert post(proxy.url, call("eth_getBlockByNumber", ["0x1", False]))[0] == 200
    assert post(proxy.url, call("eth_getBlockByNumber", ["0x1", False]))[0] == 503


def test_a_fault_after_a_call_hits_every_later_one_at_its_rate(proxy: RpcProxy) -> None:
    proxy.set_faults([Fault("I7", methods={"eth_blockNumber"}, after=2)])
    answers = [json.loads(post(proxy.url, call("eth_blockNumber", [], i))[2]) for i in range(5)]
    assert ["result" in a for a in answers] == [True, True, False, False, False]
    assert answers[2] == {"jsonrpc": "2.0", "id": 2, "error": {"code": -32000, "message": "header not found"}}
    proxy.reset(seed=4)
    proxy.set_faults([Fault("HTTP500", methods={"eth_blockNumber"}, after=10, rate=0.5)])
    statuses = [post(proxy.url, call("eth_blockNumber", []))[0] for _ in range(60)]
    assert set(statuses[:10]) == {200} and 10 < statuses[10:].count(500) < 40


def test_a_call_inside_a_batch_fails_alone_at_its_ordinal(node: Anvil, proxy: RpcProxy) -> None:
    numbers = list(range(10))
    truth = json.loads(post(node.url, blocks_batch(numbers))[2])
    proxy.set_faults([Fault("I7", methods={"eth_getBlockByNumber"}, batch="items", at={5, 14})])
    assert result(proxy.url, call("eth_getBlockByNumber", ["0x0", False]))  # 1st
    assert result(proxy.url, call("eth_getBlockByNumber", ["0x1", False]))  # 2nd
    status, _, body = post(proxy.url, blocks_batch(numbers))  # the 3rd..12th: the 5th is its third item
    answers = json.loads(body)
    assert status == 200 and [a["id"] for a in answers] == [a["id"] for a in truth]
    assert answers[2] == {"jsonrpc": "2.0", "id": 102, "error": {"code": -32000, "message": "header not found"}}
    assert answers[:2] + answers[3:] == truth[:2] + truth[3:]
    answers = json.loads(post(proxy.url, blocks_batch(numbers))[2])  # the 13th..22nd: its second item
    assert ["error" in a for a in answers] == [i == 1 for i in range(10)]
    assert [c.nth for c in proxy.calls() if c.fault == "I7"] == [5, 14]


def test_a_whole_batch_is_refused_at_its_ordinal(proxy: RpcProxy) -> None:
    proxy.set_faults([Fault("I2", methods={"batch"}, at={2}), Fault("H1", methods={"eth_getBlockByNumber"}, at={25})])
    assert all("result" in a for a in json.loads(post(proxy.url, blocks_batch([1, 2]))[2]))
    status, _, body = post(proxy.url, blocks_batch([1, 2]))
    assert status == 200 and json.loads(body) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32005, "message": "query timeout exceeded"},
    }
    assert all("result" in a for a in json.loads(post(proxy.url, blocks_batch([1, 2]))[2]))
    status, _, body = post(proxy.url, blocks_batch(list(range(20))))  # calls 7..26 hold the 25th
    assert status == 502 and body == KINDS["H1"].body
    assert [c.fault for c in proxy.calls()] == [None] * 2 + ["I2"] * 2 + [None] * 2 + ["H1"] * 20
    assert proxy.received("batch") == 4


def test_a_batch_answered_out_of_order_holds_every_true_answer(node: Anvil, proxy: RpcProxy) -> None:
    doc = blocks_batch([0, 1, 2, 3]) + [call("eth_blockNumber", [], 7), getlogs(0, 50, id_=8)]
    truth = json.loads(post(node.url, doc)[2])
    proxy.set_faults([Fault("BATCH_ORDER", methods={"batch"})])
    answers = json.loads(post(proxy.url, doc)[2])
    assert [a["id"] for a in answers] == [8, 7, 103, 102, 101, 100]
    assert sorted(answers, key=lambda a: a["id"]) == sorted(truth, key=lambda a: a["id"])
    assert head(proxy.url) > 0  # a single call has no order to change
    assert [c.fault for c in proxy.calls()] == ["BATCH_ORDER"] * 6 + [None]
    assert proxy.getlogs_ranges() == [(0, 50)]  # the true answer reached the client
    # with a call of the batch failing too: that one errs, the rest answer, all in reverse
    proxy.set_faults([Fault("BATCH_ORDER", methods={"batch"}), Fault("Q4", methods={"eth_getBlockByNumber"}, at={6})])
    answers = json.loads(post(proxy.url, blocks_batch([0, 1, 2]))[2])
    assert [a["id"] for a in answers] == [102, 101, 100]
    assert "error" in answers[1] and "result" in answers[0] and "result" in answers[2]


# -- damaged logs ----------------------------------------------------------------------------------
def assert_damaged_as(mode: str, true_log: dict[str, Any], log: dict[str, Any]) -> None:
    """`log` is `true_log` with exactly the damage `mode` names."""
    changed = {k for k in set(true_log) | set(log) if true_log.get(k, None) != log.get(k, None)}
    if mode == "non_hex_topic":
        assert changed == {"topics"} and len(log["topics"]) == len(true_log["topics"])
        [(was, now)] = [(a, b) for a, b in zip(true_log["topics"], log["topics"]) if a != b]
        assert now == was[:-1] + "g" and len(now) == 66
    elif mode == "short_tx_hash":
        assert changed == {"transactionHash"} and log["transactionHash"] == true_log["transactionHash"][:10]
        assert len(bytes.fromhex(log["transactionHash"][2:])) == 4
    elif mode == "five_topics":
        assert changed == {"topics"} and len(log["topics"]) == 5
        assert log["topics"][: len(true_log["topics"])] == true_log["topics"]
    elif mode == "address_21_bytes":
        assert changed == {"address"} and log["address"].startswith(true_log["address"])
        assert len(bytes.fromhex(log["address"][2:])) == 21
    elif mode == "block_hash_number":
        assert changed == {"blockHash"} and log["blockHash"] == 7
    elif mode == "empty_timestamp":
        assert changed == {"blockTimestamp"} and log["blockTimestamp"] == "0x"
    else:
        raise AssertionError(mode)


@pytest.mark.parametrize("mode", DAMAGE_MODES)
def test_damage_rewrites_logs_of_an_answer_as_its_mode_says(node: Anvil, proxy: RpcProxy, mode: str) -> None:
    truth = result(node.url, getlogs(0, 400))
    assert len(truth) > 10 and all(len(t["topics"]) < 5 for t in truth)
    proxy.set_faults([Fault("DAMAGE", damage=(mode,), damage_logs=3)])
    status, _, body = post(proxy.url, getlogs(0, 400))
    got = json.loads(body)["result"]  # still valid JSON, in the envelope
    assert status == 200 and len(got) == len(truth)
    damaged = [i for i, (a, b) in enumerate(zip(truth, got)) if a != b]
    assert len(damaged) == 3
    for i in damaged:
        assert_damaged_as(mode, truth[i], got[i])
    [rec] = proxy.calls()
    assert (rec.fault, rec.ok, rec.damage) == ("DAMAGE", False, (mode,) * 3)
    assert proxy.damage_counts() == Counter({mode: 1}) and proxy.damaged_answers() == 1
    assert proxy.getlogs_ranges() == []  # the client did not get the true answer


def test_damage_in_a_batch_hits_the_chosen_calls_each_with_a_drawn_mode(node: Anvil, proxy: RpcProxy) -> None:
    doc = [getlogs(0, 300, id_=1), call("eth_blockNumber", [], 2), getlogs(300, 700, id_=3), getlogs(700, 1100, id_=4)]
    truth = {a["id"]: a["result"] for a in json.loads(post(node.url, doc)[2])}
    proxy.set_faults([Fault("DAMAGE", at={2, 3}, damage_logs=40)])  # the 2nd and 3rd eth_getLogs of the batch
    answers = {a["id"]: a["result"] for a in json.loads(post(proxy.url, doc)[2])}
    assert answers[1] == truth[1] and answers[2] == truth[2]
    modes: Counter[str] = Counter()
    for id_ in (3, 4):
        bad = [(t, g) for t, g in zip(truth[id_], answers[id_]) if t != g]
        assert len(bad) == min(40, len(truth[id_]))
        for t, g in bad:
            mode = next(m for m in DAMAGE_MODES if _is_damaged_as(m, t, g))
            modes[mode] += 1
    assert set(modes) == set(DAMAGE_MODES)  # 80 draws: every mode at least once
    recorded = [c.damage for c in proxy.calls("eth_getLogs")]
    assert recorded[0] == () and Counter(m for d in recorded for m in d) == modes
    assert proxy.damaged_answers() == 2 and proxy.damage_counts() == Counter({m: 2 for m in DAMAGE_MODES})
    assert proxy.getlogs_ranges() == [(0, 300)]


def _is_damaged_as(mode: str, true_log: dict[str, Any], log: dict[str, Any]) -> bool:
    try:
        assert_damaged_as(mode, true_log, log)
    except AssertionError:
        return False
    return True


def test_damage_is_drawn_from_the_seed_and_the_call_alone(node: Anvil) -> None:
    ranges = [(a, a + 60) for a in range(0, 2000, 60) if result(node.url, getlogs(a, a + 60))]
    assert len(ranges) > 15

    def served(seed: int, order: list[tuple[int, int]]) -> tuple[dict[int, bytes], Counter[str]]:
        with RpcProxy(node.url, [Fault("DAMAGE", rate=0.4, damage_logs=2)], seed=seed) as proxy:
            bodies = {}
            for i, r in enumerate(order):
                bodies[i] = post(proxy.url, getlogs(*r))[2]
            return bodies, proxy.damage_counts()

    first, counts = served(5, ranges)
    again, counts_again = served(5, ranges)
    assert first == again and counts == counts_again and sum(counts.values()) > 0
    other, _ = served(6, ranges)
    assert other != first
    # the n-th eth_getLogs is damaged the same way whichever range it asks: the draw does not depend on the
    # order in which concurrent clients' calls arrive
    swapped, _ = served(5, list(reversed(ranges)))
    damaged = {i for i in first if first[i] != post(node.url, getlogs(*ranges[i]))[2]}
    damaged_swapped = {i for i in swapped if swapped[i] != post(node.url, getlogs(*ranges[::-1][i]))[2]}
    assert damaged == damaged_swapped


def test_an_answer_without_logs_is_not_damaged(node: Anvil, proxy: RpcProxy) -> None:
    proxy.set_faults([Fault("DAMAGE")])
    empty = call("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "0x100", "address": "0x" + "11" * 20}])
    assert post(proxy.url, empty)[2] == post(node.url, empty)[2]
    assert proxy.damaged_answers() == 0 and proxy.calls("eth_getLogs")[0].fault is None


def test_new_fault_options_are_checked() -> None:
    with pytest.raises(ValueError, match="at must"):
        Fault("A4", at={0})
    with pytest.raises(ValueError, match="after"):
        Fault("A4", after=-1)
    with pytest.raises(ValueError, match="damage must"):
        Fault("DAMAGE", damage=("rot13",))
    with pytest.raises(ValueError, match="damage_logs"):
        Fault("DAMAGE", damage_logs=0)
    assert Fault("A4", at=range(3, 5)).at == frozenset({3, 4}) and Fault("A4", at=7).selects(7)
