"""The audit's pure parts: which days, which endpoints, how big a range, what verdict; and the reference
decoder it recounts with agrees with the worker's decoder."""

import datetime as dt
import random

import pytest
from eth_abi import encode

from backfill.chain.planner import DayPlan
from backfill.decode.decoder import decode_logs
from backfill.decode.events import ERC20_TRANSFER, ERC1155_BATCH, ERC1155_SINGLE
from backfill.decode.reference import reference_rows, with_timestamps
from backfill.errors import ConfigError
from backfill.store.digest import digest_rows
from monitor.audit.recount import (
    MAX_SPAN,
    SAME_ENDPOINT,
    AuditReport,
    DayAudit,
    EndpointSet,
    Recount,
    VersionSummary,
    audit_endpoints,
    choose_days,
    day_indices,
    decide,
    endpoint_sets,
    judge,
    next_span,
    opening_span,
    parse_days,
    recheck_sets,
    span_plans,
    split_span,
)

D = dt.date


START = D(2024, 1, 1)


def plan(days=10, start=START):
    return [DayPlan(i, start + dt.timedelta(days=i), 1 + 2000 * i, 2000 * (i + 1)) for i in range(days)]


# -- --days ------------------------------------------------------------------------------------------------------
def test_days_accepts_dates_and_ranges_in_order_without_repeats():
    assert parse_days("2024-01-03,2024-01-05..2024-01-07, 2024-01-03") == [
        D(2024, 1, 3),
        D(2024, 1, 5),
        D(2024, 1, 6),
        D(2024, 1, 7),
    ]


def test_days_range_crosses_a_month():
    assert parse_days("2024-01-31..2024-02-01") == [D(2024, 1, 31), D(2024, 2, 1)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("2024-13-01", "--days: '2024-13-01' is not a date like 2024-01-03"),
        ("yesterday", "--days: 'yesterday' is not a date"),
        ("2024-01-07..2024-01-05", "--days: the range '2024-01-07..2024-01-05' ends before it starts"),
        ("", "--days is empty"),
        ("2024-01-03,,2024-01-04", "--days has an empty item"),
        ("2024-01-03..", "--days: '' is not a date"),
    ],
)
def test_bad_days_text_is_one_clear_config_error(text, message):
    with pytest.raises(ConfigError) as err:
        parse_days(text)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_days_map_to_planned_day_idx():
    assert day_indices("2024-01-03,2024-01-05..2024-01-07", plan()) == [2, 4, 5, 6]


def test_a_date_outside_the_plan_is_named():
    with pytest.raises(
        ConfigError, match=r"^--days: 2024-02-01 is not a planned day \(planned: 2024-01-01..2024-01-10\)$"
    ):
        day_indices("2024-01-09,2024-02-01", plan())
    with pytest.raises(ConfigError, match=r"^--days: 2024-01-11 and 21 more days are not planned"):
        day_indices("2024-01-09..2024-02-01", plan())


# -- choosing days ------------------------------------------------------------------------------------------------
def test_only_complete_days_are_audited_and_the_others_reported():
    sel = choose_days([0, 1, 3], days=[1, 2, 3])
    assert sel.days == [1, 3] and sel.skipped == [2]


def test_all_takes_every_complete_day():
    assert choose_days([5, 0, 3], all_days=True, sample=1).days == [0, 3, 5]


def test_sample_is_seeded_and_draws_distinct_complete_days():
    complete = list(range(100))
    a = choose_days(complete, sample=5, seed=42).days
    assert a == choose_days(complete, sample=5, seed=42).days
    assert len(set(a)) == 5 and set(a) <= set(complete)
    assert any(choose_days(complete, sample=5, seed=s).days != a for s in range(1, 5))


def test_sample_adds_to_listed_and_included_days():
    sel = choose_days(range(10), days=[1], include=[8], sample=3, seed=1)
    assert {1, 8} <= set(sel.days) and len(sel.days) == 5


def test_sample_larger_than_the_run_takes_every_day():
    assert choose_days([1, 2], sample=10).days == [1, 2]


def test_included_days_that_are_not_complete_are_skipped():
    sel = choose_days([0, 1], include=[1, 7], sample=0)
    assert sel.days == [1] and sel.skipped == [7]


# -- sampled spans of big days -----------------------------------------------------------------------------------
def _plan(day_idx: int, a: int, b: int) -> DayPlan:
    return DayPlan(day_idx, START + dt.timedelta(days=day_idx), a, b)


def test_a_sampled_day_of_more_rows_than_the_budget_is_narrowed_to_a_span_of_about_the_budget():
    plans = [_plan(0, 0, 999), _plan(1, 1000, 1999)]
    out, spans = span_plans(plans, [0, 1], {0: 250_000, 1: 1_000_000}, 50_000, seed=3)
    assert set(spans) == {0, 1}
    assert [(p.end_block - p.start_block + 1) for p in out] == [200, 50]  # blocks x budget / rows
    for p, whole in zip(out, plans):
        assert whole.start_block <= p.start_block <= p.end_block <= whole.end_block
        assert (spans[p.day_idx].from_block, spans[p.day_idx].to_block) == (p.start_block, p.end_block)
        assert (spans[p.day_idx].day_from, spans[p.day_idx].day_to) == (whole.start_block, whole.end_block)
    assert "blocks" in spans[0].text() and "of the day's 0-999" in spans[0].text()


def test_spans_are_seeded_and_spread_over_the_day():
    plans = [_plan(0, 0, 9_999)]
    starts = {span_plans(plans, [0], {0: 10**6}, 10_000, seed=s)[0][0].start_block for s in range(40)}
    assert span_plans(plans, [0], {0: 10**6}, 10_000, seed=5) == span_plans(plans, [0], {0: 10**6}, 10_000, seed=5)
    assert len(starts) > 30 and min(starts) < 2_000 and max(starts) > 7_000


def test_small_days_listed_days_and_a_zero_budget_are_recounted_whole():
    plans = [_plan(0, 0, 999), _plan(1, 1000, 1999), _plan(2, 2000, 2000)]
    rows = {0: 40_000, 1: 900_000, 2: 900_000}
    out, spans = span_plans(plans, [0, 2], rows, 50_000, seed=1)  # 1 listed, not sampled; 2 has one block
    assert out == plans and spans == {}
    assert span_plans(plans, [0, 1, 2], rows, 0, seed=1) == (plans, {})


def test_a_days_first_range_is_sized_by_its_checkpoint_rows_in_even_answers():
    assert opening_span(2_000, 4_000, 20_000, remembered=50) == 2_000  # a sparse day: one answer
    assert opening_span(160, 40_000, 20_000, remembered=50) == 80  # two even answers, not 20k + a remnant
    assert opening_span(160, 50_000, 20_000, remembered=50) == 54  # three
    assert opening_span(50_000, 10, 20_000, remembered=50) == MAX_SPAN
    assert opening_span(1_000, 10**9, 20_000, remembered=50) == 1


def test_a_day_the_store_holds_nothing_of_starts_where_the_last_recount_left_off():
    # the store's zero may be the very loss the audit looks for: no guess from it
    assert opening_span(2_000, 0, 20_000, remembered=50) == 50
    assert opening_span(2_000, None, 20_000, remembered=800) == 800


# -- endpoints ----------------------------------------------------------------------------------------------------
URLS = [
    "http://127.0.0.1:8545",
    "http://localhost:8545/?key=0123456789abcdef0123456789abcdef",
    "https://eth.example.com/v2/k",
]


def test_another_endpoint_than_the_one_that_filled_the_day():
    assert audit_endpoints(URLS, "127.0.0.1#0") == [1, 2]
    assert audit_endpoints(URLS, "127.0.0.1#0,eth.example.com#2") == [1]


def test_every_endpoint_when_all_of_them_filled_the_day_or_there_is_one():
    assert audit_endpoints(URLS, "127.0.0.1#0,localhost#1,eth.example.com#2") == [0, 1, 2]
    assert audit_endpoints(URLS[:1], "127.0.0.1#0") == [0]


def test_unknown_filler_means_any_endpoint():
    assert audit_endpoints(URLS, "") == [0, 1, 2]
    assert audit_endpoints(URLS, "gone.example.org#0") == [0, 1, 2]


def test_endpoint_sets_try_the_others_first_then_the_ones_that_filled_the_day():
    assert endpoint_sets(URLS, "127.0.0.1#0") == [EndpointSet((1, 2)), EndpointSet((0,), same=True)]
    assert endpoint_sets(URLS, "localhost#1, eth.example.com#2") == [EndpointSet((0,)), EndpointSet((1, 2), same=True)]


def test_endpoint_sets_when_every_endpoint_filled_the_day_are_one_set_marked_same():
    assert endpoint_sets(URLS, "127.0.0.1#0,localhost#1,eth.example.com#2") == [EndpointSet((0, 1, 2), same=True)]
    assert endpoint_sets(URLS[:1], "127.0.0.1#0") == [EndpointSet((0,), same=True)]


def test_endpoint_sets_with_an_unknown_filler_are_one_independent_set():
    assert endpoint_sets(URLS, "") == [EndpointSet((0, 1, 2))]
    assert endpoint_sets(URLS, "gone.example.org#0") == [EndpointSet((0, 1, 2))]
    assert endpoint_sets([], "127.0.0.1#0") == []


def test_recheck_goes_to_endpoints_the_first_recount_did_not_use_the_fillers_last():
    assert recheck_sets(URLS, "127.0.0.1#0", ["localhost#1"]) == [EndpointSet((2,)), EndpointSet((0,), same=True)]
    assert recheck_sets(URLS, "127.0.0.1#0", ["localhost#1", "eth.example.com#2"]) == [EndpointSet((0,), same=True)]
    assert recheck_sets(URLS, "127.0.0.1#0", ["127.0.0.1#0"]) == [EndpointSet((1, 2))]


def test_recheck_after_a_recount_every_endpoint_took_part_in_asks_each_one_alone():
    everyone = ["127.0.0.1#0", "localhost#1", "eth.example.com#2"]
    assert recheck_sets(URLS, ",".join(everyone), everyone) == [
        EndpointSet((0,), True),
        EndpointSet((1,), True),
        EndpointSet((2,), True),
    ]


def test_no_recheck_with_a_single_endpoint():
    assert recheck_sets(URLS[:1], "127.0.0.1#0", ["127.0.0.1#0"]) == []


# -- ranges -------------------------------------------------------------------------------------------------------
def test_range_grows_on_quiet_answers_and_shrinks_after_big_ones():
    assert next_span(50, 0) == 200
    assert next_span(50, 10) == 200  # at most 4x
    assert next_span(1000, 50_000) == 100  # proportional toward the target
    assert next_span(5000, 0) == MAX_SPAN
    assert next_span(1, 10**9) == 1


def test_refused_range_uses_the_providers_suggestion_or_halves():
    assert split_span(2000, 100, (100, 599)) == 500
    assert split_span(2000, 100, None) == 1000
    assert split_span(2000, 100, (50, 99)) == 1000  # a suggestion for another start is not ours
    assert split_span(1, 100, None) is None


# -- verdict ------------------------------------------------------------------------------------------------------
CHAIN = {"erc20": (1829, 111), "erc1155": (12, 222)}


def test_equal_everywhere_is_ok():
    assert judge(CHAIN, dict(CHAIN), dict(CHAIN)) == ("ok", "")
    assert judge(CHAIN, dict(CHAIN), None) == ("ok", "")


def test_empty_day_everywhere_is_ok():
    assert judge({}, {}, {"erc20": (0, 0), "erc1155": (0, 0)}) == ("ok", "")


def test_lost_rows_name_both_counts():
    verdict, detail = judge(CHAIN, {**CHAIN, "erc20": (1828, 100)}, None)
    assert verdict == "mismatch" and detail == "erc20: chain 1829 rows / store 1828 rows"


def test_same_count_other_content_says_hash_differs():
    assert judge(CHAIN, {**CHAIN, "erc1155": (12, 999)}, None) == ("mismatch", "erc1155 hash differs, same count")


def test_store_that_moved_since_its_fingerprint_is_named():
    verdict, detail = judge(CHAIN, {**CHAIN, "erc20": (1828, 100)}, CHAIN)
    assert verdict == "mismatch"
    assert (
        detail
        == "erc20: chain 1829 rows / store 1828 rows; store differs from its fingerprint (erc20 1828 rows, recorded 1829)"
    )


def test_fingerprint_alone_differing_is_a_mismatch():
    assert judge(CHAIN, dict(CHAIN), {**CHAIN, "erc20": (1829, 5)}) == (
        "mismatch",
        "store differs from its fingerprint",
    )


# -- fallback and re-check (decide) ------------------------------------------------------------------------------
LOST = {**CHAIN, "erc20": (1828, 100)}  # the store lost a row


def test_recount_equal_to_the_store_is_ok_without_a_recheck():
    assert decide(Recount(CHAIN, "localhost#1"), CHAIN, CHAIN) == ("ok", "", "")


def test_recount_on_the_filling_endpoint_says_it_is_less_independent_and_why():
    verdict, detail, problem = decide(
        Recount(CHAIN, "127.0.0.1#0", same=True, failures=("localhost#1: NoEndpoint: every endpoint is parked",)),
        CHAIN,
        CHAIN,
    )
    assert (verdict, problem) == ("ok", "")
    assert detail == (
        f"recounted on 127.0.0.1#0, which filled the day ({SAME_ENDPOINT}): the others could not "
        "(localhost#1: NoEndpoint: every endpoint is parked)"
    )


def test_a_day_no_endpoint_could_recount_is_an_error_never_a_mismatch():
    first = Recount(None, failures=("localhost#1: QuotaExhausted: Payment Required", "127.0.0.1#0: Transient: timeout"))
    assert decide(first, LOST, CHAIN) == (
        "error",
        "could not be recounted from RPC: localhost#1: QuotaExhausted: Payment Required; "
        "127.0.0.1#0: Transient: timeout",
        "unrecounted",
    )


def test_a_difference_confirmed_by_a_second_recount_is_a_mismatch():
    verdict, detail, problem = decide(Recount(CHAIN, "localhost#1"), LOST, None, Recount(CHAIN, "127.0.0.1#0"))
    assert (verdict, problem) == ("mismatch", "")
    assert detail == "erc20: chain 1829 rows / store 1828 rows; confirmed by a second recount on 127.0.0.1#0"


def test_a_difference_with_no_other_endpoint_is_a_mismatch_not_rechecked():
    verdict, detail, _ = decide(Recount(CHAIN, "127.0.0.1#0", same=True), LOST, None, None)
    assert verdict == "mismatch" and detail.endswith("; not re-checked: one endpoint")


def test_a_difference_whose_recheck_failed_is_a_mismatch_saying_why():
    verdict, detail, _ = decide(
        Recount(CHAIN, "localhost#1"), LOST, None, Recount(None, failures=("127.0.0.1#0: NodeBehind: short answer",))
    )
    assert verdict == "mismatch" and detail.endswith("; not re-checked: 127.0.0.1#0: NodeBehind: short answer")


def test_recounts_that_disagree_are_an_error_of_the_endpoints_not_of_the_store():
    short = {**CHAIN, "erc20": (916, 7)}
    verdict, detail, problem = decide(Recount(short, "lagging#1"), CHAIN, CHAIN, Recount(CHAIN, "healthy#2"))
    assert (verdict, problem) == ("error", "disagree")
    assert detail.startswith(
        "recounts disagree between endpoints lagging#1 and healthy#2: a node is serving wrong "
        "or short answers (lagging#1: erc20 916 rows, erc1155 12 rows; healthy#2: erc20 1829 rows"
    )
    assert detail.endswith("; the recount on healthy#2 equals the store")


def test_recounts_that_disagree_on_a_store_that_moved_since_its_fingerprint_still_report_the_store():
    verdict, detail, problem = decide(Recount({**CHAIN, "erc20": (1, 1)}, "a#1"), LOST, CHAIN, Recount(CHAIN, "b#2"))
    assert (verdict, problem) == ("mismatch", "disagree")
    assert detail.startswith("store differs from its fingerprint (erc20 1828 rows, recorded 1829); recounts disagree")


def _day(verdict="ok", detail="", versions=()):
    store = {**CHAIN, "erc20": (1828, 5)} if verdict == "mismatch" else CHAIN
    return DayAudit(
        3,
        D(2024, 1, 4),
        "localhost#1",
        verdict,
        detail,
        CHAIN if verdict != "error" else None,
        store,
        CHAIN,
        list(versions),
    )


def test_report_lines_name_day_endpoint_counts_and_hashes():
    line = _day("mismatch", "erc20: chain 1829 rows / store 1828 rows").line()
    assert line.startswith("2024-01-04 day=3 endpoint=localhost#1 MISMATCH")
    assert "erc20 chain=1829 store=1828 recorded=1829 hash=differs" in line
    assert "erc1155 chain=12 store=12 recorded=12 hash=equal" in line
    assert line.endswith("-- erc20: chain 1829 rows / store 1828 rows")


def test_versions_are_listed_side_by_side_only_when_there_are_several():
    old = VersionSummary(10, {"erc20": 1829, "erc1155": 12}, {}, 0, equals_chain=True, not_on_chain=0)
    new = VersionSummary(
        11, {"erc20": 1829, "erc1155": 12}, {}, 1841, latest=True, equals_chain=False, not_on_chain=1841
    )
    assert len(_day(versions=[old]).lines()) == 1
    lines = _day("mismatch", "erc20 hash differs, same count", [old, new]).lines()
    assert len(lines) == 3
    assert "version 10:" in lines[1] and "equals the chain" in lines[1]
    assert (
        "version 11 (latest)" in lines[2]
        and "zero_timestamps=1841" in lines[2]
        and "1841 rows not on chain" in lines[2]
    )


def test_report_passes_only_without_mismatch_or_error():
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert AuditReport("r", now, "cli", 1, [_day(), _day()]).passed
    bad = AuditReport("r", now, "cli", 1, [_day(), _day("mismatch", "x")])
    assert not bad.passed and bad.mismatched_days == [3]
    err = AuditReport("r", now, "cli", 1, [_day("error", "recount from RPC failed: Transient: timeout")])
    assert not err.passed and err.error_days == [3] and err.to_json()["results"][0]["chain"] is None


def _report(*days):
    return AuditReport("r", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "rebuild", 1, list(days))


def _at(idx, verdict, detail="", problem=""):
    return DayAudit(
        idx,
        START + dt.timedelta(days=idx),
        "localhost#1",
        verdict,
        detail,
        None if verdict == "error" else CHAIN,
        CHAIN,
        CHAIN,
        [],
        problem,
    )


def test_failure_text_names_the_days_of_each_class_and_never_an_empty_list():
    report = _report(
        _at(0, "ok"),
        _at(2, "error", "could not be recounted from RPC: localhost#1: QuotaExhausted: 402", "unrecounted"),
        _at(4, "error", "could not be recounted from RPC: localhost#1: QuotaExhausted: 402", "unrecounted"),
        _at(9, "mismatch", "erc20: chain 1981 rows / store 916 rows"),
    )
    assert report.failure_text() == (
        "the recount from RPC differs from the store on day(s) 2024-01-10; "
        "day(s) 2024-01-03, 2024-01-05 could not be recounted from RPC (localhost#1: QuotaExhausted: 402)"
    )
    assert report.unrecounted_days == [2, 4] and report.mismatched_days == [9]


def test_failure_text_of_errors_only_does_not_speak_of_a_difference():
    report = _report(
        _at(1, "error", "could not be recounted from RPC: a#0: x", "unrecounted"),
        _at(3, "error", "could not be recounted from RPC: a#0: y", "unrecounted"),
    )
    text = report.failure_text(lambda days: ",".join(map(str, days)))
    assert text == "day(s) 1,3 could not be recounted from RPC (a#0: x; and 1 other reason(s))"
    assert "differs" not in text


def test_failure_text_names_days_whose_recounts_disagree():
    report = _report(_at(5, "error", "recounts disagree between endpoints a#1 and b#2: …", "disagree"))
    assert report.failure_text() == (
        "the recounts from RPC disagree between endpoints on day(s) 2024-01-06 "
        "(a node is serving wrong or short answers)"
    )
    assert report.error_days == [5] and report.unrecounted_days == [] and report.disagreeing_days == [5]
    assert _report(_at(0, "ok")).failure_text() == ""


# -- the reference decoder agrees with the worker's decoder ------------------------------------------------------
def _topic(addr):
    return "0x" + "0" * 24 + addr[2:]


def _log(topics, data, bn, li):
    return {
        "blockNumber": hex(bn),
        "logIndex": hex(li),
        "transactionHash": "0x" + f"{bn:064x}",
        "address": "0x" + "ee" * 20,
        "topics": topics,
        "data": "0x" + data.hex(),
        "blockHash": "0x" + "22" * 32,
    }


def sample_logs(n=600, seed=3):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = ("0x" + rng.randbytes(20).hex() for _ in range(3))
        kind = rng.randrange(6)
        bn = 100 + i // 7
        if kind == 0:
            out.append(
                _log([ERC20_TRANSFER.topic0, _topic(a), _topic(b)], encode(["uint256"], [rng.getrandbits(256)]), bn, i)
            )
        elif kind == 1:
            out.append(
                _log(
                    [ERC1155_SINGLE.topic0, _topic(c), _topic(a), _topic(b)],
                    encode(["uint256", "uint256"], [rng.getrandbits(256), rng.getrandbits(8)]),
                    bn,
                    i,
                )
            )
        elif kind == 2:
            ids = [rng.getrandbits(256) for _ in range(rng.randrange(4))]
            out.append(
                _log(
                    [ERC1155_BATCH.topic0, _topic(c), _topic(a), _topic(b)],
                    encode(["uint256[]", "uint256[]"], [ids, ids[::-1]]),
                    bn,
                    i,
                )
            )
        elif kind == 3:  # ERC-721 style: 4 topics
            out.append(_log([ERC20_TRANSFER.topic0, _topic(a), _topic(b), "0x" + "00" * 31 + "07"], b"", bn, i))
        elif kind == 4:  # short data
            out.append(_log([ERC20_TRANSFER.topic0, _topic(a), _topic(b)], b"\x01" * 31, bn, i))
        else:  # a reorged-out log
            entry = _log([ERC20_TRANSFER.topic0, _topic(a), _topic(b)], encode(["uint256"], [1]), bn, i)
            entry["removed"] = True
            out.append(entry)
    return out


def test_reference_decoder_and_worker_decoder_agree_on_sample_logs():
    logs = sample_logs()
    ours = decode_logs(logs)
    ref20, ref1155, rejected = reference_rows(logs)
    assert ours.erc20 == ref20 and ours.erc1155 == ref1155
    assert len(ours.quarantined) + ours.skipped == rejected > 0


def test_digests_of_both_decoders_are_equal():
    logs = sample_logs(seed=9)
    ts = {int(e["blockNumber"], 16): 1_704_067_200 + int(e["blockNumber"], 16) * 12 for e in logs}
    ours = decode_logs(logs)
    ref = with_timestamps(*reference_rows(logs)[:2], ts)
    hot = with_timestamps(ours.erc20, ours.erc1155, ts)
    assert digest_rows(ref[0], "erc20") == digest_rows(hot[0], "erc20") != (0, 0)
    assert digest_rows(ref[1], "erc1155") == digest_rows(hot[1], "erc1155") != (0, 0)


def test_reference_decoder_rejects_logs_missing_fields_instead_of_raising():
    entry = _log(
        [ERC20_TRANSFER.topic0, _topic("0x" + "ab" * 20), _topic("0x" + "cd" * 20)], encode(["uint256"], [1]), 1, 1
    )
    del entry["data"]
    assert reference_rows([entry, {"topics": []}]) == ([], [], 2)
