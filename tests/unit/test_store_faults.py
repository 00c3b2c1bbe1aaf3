"""The store's retry policy: which failures are waited out, which are ours, and which may not be sent twice."""

from __future__ import annotations

import random
import socket

import clickhouse_connect
import pytest
import urllib3.exceptions
from clickhouse_connect.driver._backend.httpcommon import build_http_error
from clickhouse_connect.driver.exceptions import OperationalError

from backfill.store.faults import BACKPRESSURE, OUTAGE, StoreFault, classify, may_retry, retry_delay_s

URL = "http://127.0.0.1:8123"


def server_error(status: int, code: str | None, body: str, retried: bool = False):
    """The exception clickhouse-connect raises for an HTTP error answer, built by the driver's own code."""
    return build_http_error(status, code, body, True, URL, retried)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_store_that_is_not_listening_is_an_outage_and_nothing_was_sent():
    with pytest.raises(Exception) as info:
        clickhouse_connect.get_client(host="127.0.0.1", port=closed_port(), connect_timeout=2)
    assert classify(info.value) == StoreFault(OUTAGE, "connection refused", False)


@pytest.mark.parametrize(
    "code, name", [(252, "TOO_MANY_PARTS"), (241, "MEMORY_LIMIT_EXCEEDED"), (202, "TOO_MANY_SIMULTANEOUS_QUERIES")]
)
def test_the_engine_asking_to_slow_down_is_backpressure(code, name):
    exc = server_error(
        500,
        str(code),
        f"Code: {code}. DB::Exception: Too many parts (3001). Merges are processing "
        f"significantly slower than inserts. ({name}) (version 24.8.4.13)",
    )
    assert classify(exc) == StoreFault(BACKPRESSURE, name, False)


def test_a_shutting_down_server_is_an_outage_whose_outcome_is_unknown():
    exc = server_error(500, "236", "Code: 236. DB::Exception: The embedded store is shutting down. (ABORTED)")
    fault = classify(exc)
    assert fault is not None and fault.kind == OUTAGE and fault.maybe_executed


@pytest.mark.parametrize("status, executed", [(502, True), (503, False), (504, True)])
def test_a_load_balancer_answering_for_a_missing_server_is_an_outage(status, executed):
    fault = classify(server_error(status, None, "Service Unavailable", retried=True))
    assert fault == StoreFault(OUTAGE, f"HTTP {status}", executed)


def test_http_429_is_backpressure():
    assert classify(server_error(429, None, "Too Many Requests", retried=True)).kind == BACKPRESSURE


@pytest.mark.parametrize(
    "code, body",
    [
        (62, "Code: 62. DB::Exception: Syntax error: failed at position 1. (SYNTAX_ERROR)"),
        (60, "Code: 60. DB::Exception: Table backfill.nope does not exist. (UNKNOWN_TABLE)"),
        (516, "Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)"),
    ],
)
def test_our_own_mistakes_are_not_retried(code, body):
    assert classify(server_error(500 if code != 516 else 403, str(code), body)) is None


def test_a_connection_reset_mid_request_may_have_been_executed():
    try:
        try:
            raise urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset by peer"))
        except urllib3.exceptions.ProtocolError as inner:
            raise OperationalError(f"Error {inner} executing HTTP request attempt 2 ({URL})") from inner
    except OperationalError as exc:
        fault = classify(exc)
    assert fault == StoreFault(OUTAGE, "connection lost mid-request", True)


def test_plain_bugs_are_not_store_faults():
    assert classify(ValueError("bad column")) is None
    assert classify(KeyError("erc20_count")) is None


def test_only_idempotent_calls_are_sent_again_when_the_outcome_is_unknown():
    unknown = StoreFault(OUTAGE, "connection lost mid-request", True)
    refused = StoreFault(OUTAGE, "connection refused", False)
    assert may_retry(unknown, idempotent=True) and not may_retry(unknown, idempotent=False)
    assert may_retry(refused, idempotent=False)
    assert not may_retry(None, idempotent=True)


def test_delays_grow_to_a_cap_and_backpressure_waits_longer_than_an_outage():
    rng = random.Random(3)
    outage, pressure = StoreFault(OUTAGE, "x", False), StoreFault(BACKPRESSURE, "y", False)
    outage_delays = [retry_delay_s(outage, n, rng) for n in range(1, 20)]
    pressure_delays = [retry_delay_s(pressure, n, rng) for n in range(1, 20)]
    assert 0.125 <= outage_delays[0] <= 0.25 and max(outage_delays) <= 5.0
    assert 0.25 <= pressure_delays[0] <= 0.5 and max(pressure_delays) <= 10.0
    assert min(outage_delays[-5:]) >= 2.5 and min(pressure_delays[-5:]) >= 5.0
