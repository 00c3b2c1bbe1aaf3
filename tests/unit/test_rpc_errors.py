"""Provider error texts (verbatim from the catalogue) map to the right policy."""

import pytest

from backfill.chain.provider_errors import (
    Fatal,
    QuotaExhausted,
    RangeTooLarge,
    RateLimited,
    Transient,
    classify_error,
    classify_http,
    policy,
)

A1 = (
    "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit on the "
    "response size, or you can request any block range with a cap of 10K logs in the response. Based on your "
    "parameters and the response size limit, this block range should work: [0x0, 0xd043b8]"
)


@pytest.mark.parametrize(
    "status,error,kind,suggested",
    [
        (200, {"code": -32602, "message": A1}, RangeTooLarge, (0, 0xD043B8)),
        (
            400,
            {
                "code": -32600,
                "message": "You can make eth_getLogs requests with up to a 500 block range. Based on your "
                "parameters, this block range should work: [0x1a30dfd, 0x1a30ff0]",
            },
            RangeTooLarge,
            (0x1A30DFD, 0x1A30FF0),
        ),
        (
            200,
            {
                "code": -32005,
                "message": "query returned more than 10000 results. Try with this block range [0xBDE5F8, 0x102DBCC].",
                "data": {"from": "0xBDE5F8", "limit": 10000, "to": "0x102DBCC"},
            },
            RangeTooLarge,
            (0xBDE5F8, 0x102DBCC),
        ),
        (200, {"code": -32602, "message": "range 1000000 exceeds limit of 10000"}, RangeTooLarge, None),
        (
            200,
            {"code": -32602, "message": "query exceeds max results 20000, retry with the range 23879634-23879696"},
            RangeTooLarge,
            (23879634, 23879696),
        ),
        (200, {"code": -32600, "message": "block range is too wide"}, RangeTooLarge, None),
        (200, {"code": -32000, "message": "maximum [from, to] blocks distance: 10000"}, RangeTooLarge, None),
        (
            200,
            {
                "code": -32047,
                "message": "Invalid eth_getLogs request. 'fromBlock'-'toBlock' range too large. Max range: 800",
            },
            RangeTooLarge,
            None,
        ),
        (
            200,
            {"code": -32602, "message": "query block range exceeds server limit, narrow your filter: 1000"},
            RangeTooLarge,
            None,
        ),
        (
            200,
            {"code": -32005, "message": "Too many logs requested. Max logs per response is 20000."},
            RangeTooLarge,
            None,
        ),
        (
            429,
            {
                "code": 429,
                "message": "Your app has exceeded its compute units per second capacity. If you have retries "
                "enabled, you can safely ignore this message.",
            },
            RateLimited,
            None,
        ),
        (429, {"code": -32005, "message": "project ID request rate exceeded"}, RateLimited, None),
        (
            200,
            {"code": -32007, "message": "100/second request limit reached - reduce calls per second"},
            RateLimited,
            None,
        ),
        (200, {"code": -32000, "message": "header not found"}, Transient, None),
        (200, {"code": -32005, "message": "query timeout exceeded"}, Transient, None),
        (200, {"code": -32601, "message": "the method eth_foo does not exist/is not available"}, Fatal, None),
    ],
)
def test_catalogue_texts_map_to_policies(status, error, kind, suggested):
    exc = classify_error(error, status)
    assert type(exc) is kind
    if kind is RangeTooLarge:
        assert exc.suggested == suggested


def test_infura_backoff_seconds_is_the_wait():
    exc = classify_error(
        {
            "code": -32005,
            "message": "daily request count exceeded, request rate limited",
            "data": {"rate": {"allowed_rps": 1, "backoff_seconds": 30}},
        },
        429,
    )
    assert isinstance(exc, RateLimited) and exc.retry_after_s == 30


def test_retry_after_header_wins():
    assert classify_http(429, b"slow down", retry_after_s=7).retry_after_s == 7


@pytest.mark.parametrize(
    "status,body,kind",
    [
        (502, b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n</html>\r\n", Transient),
        (413, b'{"code":-32614}', RangeTooLarge),
        (200, b"Invalid host specified", Transient),
        (401, b'{"error":"message: API key disabled, reason: tenant disabled"}', QuotaExhausted),
        (402, b"Payment Required", QuotaExhausted),
        (200, b'{"error":"message: API key disabled, reason: tenant disabled, json-rpc code: -32051"}', QuotaExhausted),
    ],
)
def test_bodies_that_break_the_envelope(status, body, kind):
    assert type(classify_http(status, body)) is kind


@pytest.mark.parametrize(
    "status,error",
    [
        (
            402,
            {
                "code": 402,
                "event": -33000,
                "message": "Payment Required",
                "details": "You have reached your daily credit limit. To continue making requests, upgrade your plan",
            },
        ),
        (
            403,
            {
                "code": -32600,
                "message": "Monthly capacity limit exceeded. Visit https://dashboard.alchemyapi.io/settings/"
                "billing to upgrade your scaling policy for continued service.",
            },
        ),
        (429, {"code": -32600, "message": "Monthly capacity limit exceeded."}),  # a quota reported as a 429
    ],
)
def test_quota_answers_park_the_endpoint(status, error):
    exc = classify_error(error, status)
    assert isinstance(exc, QuotaExhausted) and policy(exc) == "park"


def test_every_class_has_a_policy():
    assert policy(classify_error({"code": 429, "message": "x"}, 429)) == "wait"
    assert policy(classify_error({"code": -32000, "message": "header not found"})) == "switch"
    assert policy(classify_error({"code": -32602, "message": "range 1000000 exceeds limit of 10000"})) == "split"
    assert policy(classify_error({"code": -32601, "message": "method not found"})) == "fail"
