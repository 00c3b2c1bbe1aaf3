"""Every provider's eth_getLogs cap answer and batch refusal (tests/support/provider_texts.py) is read right.

The oracle is the fixture: the limits and suggestions written there, never what the parser makes of them."""

import orjson
import pytest

from backfill.chain.provider_errors import (
    BatchTooLarge,
    Fatal,
    NodeBehind,
    QuotaExhausted,
    RangeTooLarge,
    RateLimited,
    Transient,
    classify_error,
    classify_http,
    policy,
    stated_limit,
    suggested_range,
)
from tests.support.provider_texts import BATCH_TEXTS, CAP_TEXTS, CapText
from tests.support.proxy_faults import CAP, CATALOGUE_KINDS, KINDS, Fault, error_object, fault_reply

FROM = 1_000


def sample(text: CapText) -> tuple[int, int, tuple[int, int]]:
    """A request over the cap (three times it) and the range a provider would suggest for it."""
    cap = text.max_blocks or 5_000
    to = FROM + 3 * cap - 1
    return FROM, to, (FROM, FROM + (text.max_blocks or cap) - 1)


def rendered(text: CapText) -> tuple[dict, tuple[int, int]]:
    frm, to, suggestion = sample(text)
    return error_object(Fault(text.id), frm, to, suggestion), suggestion


@pytest.mark.parametrize("text", CAP_TEXTS, ids=[t.id for t in CAP_TEXTS])
def test_every_cap_answer_splits_with_its_stated_limit_and_suggestion(text: CapText):
    error, suggestion = rendered(text)
    exc = classify_error(error, text.status)
    assert type(exc) is RangeTooLarge, (exc, error)
    assert policy(exc) == "split"
    assert (exc.max_blocks, exc.max_results) == text.limits, error
    assert exc.suggested == (suggestion if text.suggests else None), error
    assert exc.code == text.code and exc.http_status == text.status


@pytest.mark.parametrize("text", CAP_TEXTS, ids=[t.id for t in CAP_TEXTS])
def test_every_cap_answer_splits_under_any_http_status(text: CapText):
    error, _ = rendered(text)
    for status in (200, 400, 413, 500):
        assert type(classify_error(error, status)) is RangeTooLarge, status


@pytest.mark.parametrize("text", CAP_TEXTS, ids=[t.id for t in CAP_TEXTS])
def test_every_cap_answer_is_a_proxy_fault_kind(text: CapText):
    spec = KINDS[text.id]
    assert spec.category == CAP and spec.status == text.status
    if text.id in CATALOGUE_KINDS:  # the catalogue's kinds keep their text (A1's enforces only 10K logs)
        assert spec.error["code"] == text.code and spec.error["message"] == text.message
        assert spec.max_blocks in (None, text.max_blocks) and spec.max_logs in (None, text.max_logs)
    else:  # added from the fixture: the proxy enforces its caps and renders exactly the fixture's error
        assert (spec.max_blocks, spec.max_logs) == (text.max_blocks, text.max_logs)
        frm, to, suggestion = sample(text)
        fields = {
            "max_blocks": text.max_blocks,
            "max_logs": text.max_logs,
            "span": to - frm + 1,
            "s_from": suggestion[0],
            "s_to": suggestion[1],
            "s_from_hex": hex(suggestion[0]),
            "s_to_hex": hex(suggestion[1]),
            "s_from_HEX": f"0x{suggestion[0]:X}",
            "s_to_HEX": f"0x{suggestion[1]:X}",
            "backoff_s": 30,
        }
        assert error_object(Fault(text.id), frm, to, suggestion) == text.error(fields)


def test_a_fault_with_its_own_cap_states_that_cap():
    error = error_object(Fault("CAP_AVALANCHE", max_blocks=700), 5_000, 7_999, (5_000, 5_699))
    assert error["message"] == "requested too many blocks from 5000 to 7999, maximum is set to 700"
    exc = classify_error(error)
    assert isinstance(exc, RangeTooLarge) and exc.max_blocks == 700 and exc.suggested is None


def test_the_fixtures_cover_forty_odd_providers():
    providers = {t.provider.split(" (")[0] for t in CAP_TEXTS}
    assert len(CAP_TEXTS) >= 40 and len(providers) >= 30, sorted(providers)


@pytest.mark.parametrize("text", BATCH_TEXTS, ids=[t.id for t in BATCH_TEXTS])
def test_every_batch_refusal_shrinks_the_batch(text):
    if text.body is not None:
        exc = classify_http(text.status, text.body)
    else:
        exc = classify_error(text.error(), text.status)
    assert type(exc) is BatchTooLarge, exc
    assert exc.max_items == text.max_items
    assert policy(exc) == "shrink"


def test_a_getlogs_range_refused_with_413_is_still_a_range():
    assert type(classify_http(413, b'{"code":-32614}')) is RangeTooLarge
    nginx = b"<html><title>413 Request Entity Too Large</title></html>"
    assert type(classify_http(413, nginx)) is RangeTooLarge
    assert type(classify_http(413, b"batch requests limit exceeded\n")) is BatchTooLarge


def test_a_catalogue_batch_kind_answers_a_batch_refusal():
    for kind in ("BATCH_GETH", "BATCH_BESU", "BATCH_OFF_JSON"):
        if kind in KINDS:
            assert type(classify_error(KINDS[kind].error, KINDS[kind].status)) is BatchTooLarge, kind


# -- answers that are not range caps ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind,cls",
    [
        ("A4", RateLimited),
        ("I4", RateLimited),
        ("I5", RateLimited),
        ("Q2", RateLimited),
        ("Q3", RateLimited),
        ("Q4", RateLimited),
        ("RETRY_AFTER", RateLimited),
        ("I6", QuotaExhausted),
        ("A5", QuotaExhausted),
        ("I7", Transient),
        ("I2", Transient),
        ("N1_TIMEOUT", Transient),
    ],
)
def test_catalogue_kinds_that_are_not_caps_keep_their_class(kind, cls):
    reply = fault_reply(Fault(kind), 1)
    doc = orjson.loads(reply.body)
    error = doc if KINDS[kind].bare else doc["error"]
    assert type(classify_error(error, reply.status)) is cls


def test_a_disabled_key_in_a_bare_body_parks_the_endpoint():
    reply = fault_reply(Fault("P1"), 1)
    assert type(classify_http(reply.status, reply.body)) is QuotaExhausted


@pytest.mark.parametrize(
    "status,error,cls",
    [
        (200, {"code": -32000, "message": "header not found"}, Transient),
        (200, {"code": -32005, "message": "query timeout exceeded"}, Transient),
        (200, {"code": -32000, "message": "Query timeout exceeded. Consider reducing your block range."}, Transient),
        (200, {"code": -32016, "message": "eth_getLogs request was canceled due to enabled timeout."}, Transient),
        (200, {"code": -32002, "message": "request timed out"}, Transient),
        (200, {"code": -32601, "message": "the method eth_getLogsX does not exist/is not available"}, Fatal),
        (200, {"code": -32601, "message": "Method not found"}, Fatal),
        (200, {"code": 3, "message": "execution reverted"}, Fatal),
        (200, {"code": -32000, "message": "execution reverted: limit exceeded"}, Transient),
        (200, {"code": -32000, "message": "exceeds block gas limit"}, Transient),
        (200, {"code": -32000, "message": "exceed max addresses or topics per search position"}, Transient),
        (200, {"code": -32005, "message": "limit exceeded"}, Transient),  # EIP-1474's generic limit: not a size
        (200, {"code": -32602, "message": "too many arguments, want at most 1"}, Fatal),
        (
            200,
            {"code": -32000, "message": "Unauthorized: You must authenticate your request with an API key."},
            Transient,
        ),
        (200, {"code": -32005, "message": "daily request count exceeded, request rate limited"}, RateLimited),
        (429, {"code": -32005, "message": "project ID request rate exceeded"}, RateLimited),
        (200, {"code": -32012, "message": "credits limited to 6000/sec"}, RateLimited),
        (200, {"code": -32007, "message": "100/second request limit reached - reduce calls per second"}, RateLimited),
    ],
)
def test_near_misses_are_not_range_caps(status, error, cls):
    assert type(classify_error(error, status)) is cls


def test_a_range_past_the_head_is_a_node_behind_not_a_cap():
    exc = classify_error(
        {"code": -32602, "message": "block range extends beyond current head block: requested 105, head 100"}
    )
    assert type(exc) is NodeBehind and exc.head == 100


def test_an_unknown_size_complaint_splits_with_no_limit():
    for message in (
        "the requested span of blocks exceeds what this node serves",
        "too many results for one query",
        "logs over the limit",
    ):
        exc = classify_error({"code": -32099, "message": message})
        assert type(exc) is RangeTooLarge and (exc.max_blocks, exc.max_results) == (None, None), message


# -- the parsing on its own -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "message,data,limits",
    [
        ("eth_getLogs is limited to a 10,000 range", None, (10_000, None)),
        ("range 1000000 exceeds limit of 10000", None, (10_000, None)),
        ("range 10_000_000 exceeds limit of 10_000", None, (10_000, None)),
        ("query exceeds max results 20000, retry with the range 23879634-23879696", None, (None, 20_000)),
        (
            "You can make eth_getLogs requests with up to a 500 block range. Based on your parameters, this block "
            "range should work: [0x1a30dfd, 0x1a30ff0]",
            None,
            (500, None),
        ),
        ("requested too many blocks from 0 to 27842567, maximum is set to 2048", None, (2_048, None)),
        ("query returned more than 10000 results.", {"from": "0x1", "limit": 10000, "to": "0x2"}, (None, 10_000)),
        (
            "Invalid params",
            {"range": "the range 55074203 - 55124202 exceeds the range allowed for your plan (49999 > 2000)."},
            (2_000, None),
        ),
        (
            "getLogs request exceeded max allowed range",
            {"details": {"requestRange": 1048576, "maxAllowedRange": 30000}},
            (30_000, None),
        ),
        ("response size should not greater than 2097152 bytes", None, (None, None)),
        ("block range is too wide", None, (None, None)),
        ("", "range 20000 is bigger than range limit 2000", (2_000, None)),
    ],
)
def test_stated_limit(message, data, limits):
    assert stated_limit(message, data) == limits


@pytest.mark.parametrize(
    "message,data,suggestion",
    [
        ("this block range should work: [0x0, 0xd043b8]", None, (0, 0xD043B8)),
        ("Try with this block range [0xBDE5F8, 0x102DBCC].", None, (0xBDE5F8, 0x102DBCC)),
        ("retry with the range 23879634-23879696", None, (23879634, 23879696)),
        ("Based on your parameters, this block range should work: [100, 199]", None, (100, 199)),
        (
            "query returned more than 10000 results",
            {"from": "0xBDE5F8", "limit": 10000, "to": "0x102DBCC"},
            (0xBDE5F8, 0x102DBCC),
        ),
        (
            "invalid params",
            "Query returned more than 10000 results. Try with this block range [0x800000, 0x800054].",
            (0x800000, 0x800054),
        ),
        ("requested too many blocks from 0 to 27842567, maximum is set to 2048", None, None),
        ("the range 55074203 - 55124202 exceeds the range allowed for your plan (49999 > 2000).", None, None),
        ("query spans 268435456 blocks (1 to 268435456), but only 10000000 are allowed", None, None),
        ("retry with the range 500-100", None, None),
    ],
)
def test_suggested_range(message, data, suggestion):
    assert suggested_range(message, data) == suggestion


def test_the_constructors_stay_backward_compatible():
    exc = RangeTooLarge("x", (1, 2), code=-32602)
    assert exc.suggested == (1, 2) and exc.code == -32602
    assert exc.max_blocks is None and exc.max_results is None
    exc = RangeTooLarge("x", suggested=None, max_blocks=699)
    assert exc.max_blocks == 699
    exc = BatchTooLarge("x", code=-32600, http_status=200)
    assert exc.max_items is None and exc.code == -32600 and policy(exc) == "shrink"


def test_only_a_refusal_of_the_batch_itself_is_a_batch_refusal():
    exc = classify_error({"code": -32602, "message": "L1 batch #1234 was pruned; earliest is 2000"})
    assert type(exc) is not BatchTooLarge
    assert stated_limit("rate exceeded", {"limit": 100}) == (None, None)
