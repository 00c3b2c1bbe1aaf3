"""Range sizing and bloom membership."""

from backfill.chain.bloom import may_contain, may_contain_any
from backfill.chain.ranges import RangeSizer
from backfill.decode.events import ERC20_TRANSFER, LOG_FILTER_TOPICS


def test_suggested_range_is_used_and_remembered():
    s = RangeSizer(2000, 10_000)
    assert s.split(100, 2099, (100, 599)) == 599 and s.size == 500
    assert s.split(600, 1099, None) == 849 and s.size == 250  # no suggestion: halve


def test_a_suggestion_that_does_not_fit_is_ignored():
    s = RangeSizer(2000, 10_000)
    assert s.split(100, 2099, (0, 5000)) == 1099


def test_grows_back_when_answers_are_cheap_and_stops_at_the_maximum():
    s = RangeSizer(1000, 4000, cheap_logs=100, grow_after=2, big_logs=10_000)
    for _ in range(10):
        s.answered(s.size, 5)
    assert s.size == 4000
    s.answered(4000, 5000)
    assert s.size == 4000


def test_expensive_answers_do_not_grow():
    s = RangeSizer(1000, 8000, cheap_logs=100, grow_after=1, big_logs=1_000)
    s.answered(1000, 500)
    assert s.size == 1000


def _bloom_with(items: list[str]) -> str:
    from backfill.chain.bloom import bloom_bits

    value = 0
    for item in items:
        for bit in bloom_bits(item):
            value |= 1 << bit
    return "0x" + value.to_bytes(256, "big").hex()


def test_bloom_membership():
    empty = "0x" + "00" * 256
    assert not may_contain_any(empty, LOG_FILTER_TOPICS[0])
    bloom = _bloom_with([ERC20_TRANSFER.topic0, "0x" + "ab" * 20])
    assert may_contain(bloom, ERC20_TRANSFER.topic0)
    assert may_contain_any(bloom, LOG_FILTER_TOPICS[0])


def test_shrinks_after_a_very_large_answer():
    s = RangeSizer(2000, 5000, cheap_logs=2_000, big_logs=20_000)
    s.answered(2000, 200_000)
    assert s.size == 20  # back to ~cheap_logs per answer, not just under big_logs
    s.answered(20, 15_000)  # large but under big_logs: kept
    assert s.size == 20


def test_dense_chain_settles_near_the_target_answer_size():
    s = RangeSizer(50, 5000, cheap_logs=2_500)  # big_logs defaults to twice the target
    for _ in range(6):
        s.answered(s.size, s.size * 250)  # 250 logs per block
    assert 2_500 * 0.5 <= s.size * 250 <= 2_500 * 2


def test_grows_toward_the_target_answer_size_in_few_steps():
    s = RangeSizer(50, 5000, cheap_logs=2500)
    steps = 0
    while s.size < 5000 and steps < 10:
        s.answered(s.size, s.size // 20)  # a sparse chain: 1 log per 20 blocks
        steps += 1
    assert s.size == 5000 and steps <= 4


def test_never_grows_past_a_cap_the_provider_stated():
    s = RangeSizer(2000, 10_000)
    s.split(100, 2099, (100, 599))  # "up to a 500 block range"
    for _ in range(10):
        s.answered(s.size, 1)
    assert s.size == 500


def test_answer_size_is_small_for_own_nodes_and_large_for_providers():
    from backfill.chain.ranges import OWN_NODE_ANSWER_LOGS, PROVIDER_ANSWER_LOGS, answer_target

    own = [
        "http://127.0.0.1:8545",
        "http://localhost:8545",
        "http://10.0.3.7:8545",
        "http://[::1]:8545",
        "http://192.168.1.20:8545/?key=s3cret",
    ]
    for url in own:
        assert answer_target([url]) == OWN_NODE_ANSWER_LOGS, url
    assert answer_target(own) == OWN_NODE_ANSWER_LOGS
    remote = "https://eth-mainnet.g.alchemy.com/v2/s3cret"
    assert answer_target([remote]) == PROVIDER_ANSWER_LOGS
    assert answer_target([own[0], remote]) == PROVIDER_ANSWER_LOGS  # any provider: few requests
    assert answer_target(["http://8.8.8.8:8545"]) == PROVIDER_ANSWER_LOGS
    assert answer_target([own[0]], configured=7_000) == 7_000  # an explicit setting wins
    assert answer_target([remote], configured=2_500) == 2_500


def test_a_result_caps_suggestion_fits_one_dense_stretch_and_does_not_cap_the_rest():
    s = RangeSizer(2000, 5000, cheap_logs=10_000)
    mid = s.split(1000, 2999, (1000, 1040), max_results=10_000)  # dense blocks from 1041 on
    assert mid == 1040 and s.size == 41
    assert s.cap is None  # the next sparse day may again be asked for in one range
    assert s.cheap_logs == 8_000  # answers aim under the stated cap
    for _ in range(6):
        s.answered(s.size, 50)
    assert s.size == 5000


def test_a_stated_block_limit_caps_every_range():
    s = RangeSizer(2000, 5000, cheap_logs=10_000)
    assert s.split(1000, 2999, None, max_blocks=800) == 1799
    for _ in range(6):
        s.answered(s.size, 10)
    assert s.size == 800


def test_a_tiny_first_answer_grows_the_range_fast():
    s = RangeSizer(50, 5000, cheap_logs=10_000)
    s.answered(50, 75)
    assert s.size == 800  # 16x: 75 logs is far below the target
    s.answered(800, 1200)
    assert s.size == 3200  # 4x: near enough that density may change
