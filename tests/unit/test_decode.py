"""Decoder: hand-written hex decoding equals the tests' own web3.py decoder (tests/support/oracle.py), malformed logs are
quarantined."""

import random

import pytest
from eth_abi import encode

from backfill.decode.decoder import Erc20Row, Erc1155Row, Quarantined, Skipped, decode_log, decode_logs
from backfill.decode.events import ERC20_TRANSFER, ERC1155_BATCH, ERC1155_SINGLE, LOG_FILTER_TOPICS
from tests.support.oracle import oracle_rows

MAX = 2**256 - 1
A = "0x" + "ab" * 20
B = "0x" + "cd" * 20
ZERO = "0x" + "00" * 20
TX = "0x" + "11" * 32


def topic(addr: str) -> str:
    return "0x" + "0" * 24 + addr[2:]


def mk(topics, data: bytes | str, bn=5, li=3, addr="0x" + "ee" * 20):
    return {
        "blockNumber": hex(bn),
        "logIndex": hex(li),
        "transactionHash": TX,
        "address": addr,
        "topics": topics,
        "data": data if isinstance(data, str) else "0x" + data.hex(),
        "blockHash": "0x" + "22" * 32,
    }


def test_erc20_transfer_decodes_full_uint256():
    out = decode_log(mk([ERC20_TRANSFER.topic0, topic(A), topic(B)], encode(["uint256"], [MAX])))
    assert out == [Erc20Row(5, TX, 3, "0x" + "ee" * 20, A, B, MAX)]


def test_mint_and_burn_keep_the_zero_address():
    mint = decode_log(mk([ERC20_TRANSFER.topic0, topic(ZERO), topic(B)], encode(["uint256"], [0])))
    burn = decode_log(mk([ERC20_TRANSFER.topic0, topic(A), topic(ZERO)], encode(["uint256"], [1])))
    assert mint[0].from_address == ZERO and burn[0].to_address == ZERO


def test_four_topic_transfer_is_erc721_and_skipped():
    assert decode_log(mk([ERC20_TRANSFER.topic0, topic(A), topic(B), "0x" + "00" * 31 + "07"], "0x")) == Skipped(
        "erc721"
    )


@pytest.mark.parametrize("data", ["0x", "0x" + "00" * 31, "0x" + "00" * 33, "0xzz"])
def test_transfer_with_wrong_data_length_is_quarantined(data):
    assert isinstance(decode_log(mk([ERC20_TRANSFER.topic0, topic(A), topic(B)], data)), Quarantined)


def test_transfer_with_two_topics_is_quarantined():
    out = decode_log(mk([ERC20_TRANSFER.topic0, topic(A)], encode(["uint256"], [1])))
    assert out == Quarantined("transfer with 2 topics")


def test_dirty_address_topic_is_quarantined():
    dirty = "0x" + "ff" * 12 + A[2:]
    assert isinstance(decode_log(mk([ERC20_TRANSFER.topic0, dirty, topic(B)], encode(["uint256"], [1]))), Quarantined)


def test_transfer_single():
    out = decode_log(
        mk([ERC1155_SINGLE.topic0, topic(A), topic(ZERO), topic(B)], encode(["uint256", "uint256"], [MAX, 9]))
    )
    assert out == [Erc1155Row(5, TX, 3, 0, "0x" + "ee" * 20, A, ZERO, B, MAX, 9)]


@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_transfer_batch_gives_one_row_per_id(n):
    ids, vals = list(range(n)), [MAX - i for i in range(n)]
    out = decode_log(
        mk([ERC1155_BATCH.topic0, topic(A), topic(A), topic(B)], encode(["uint256[]", "uint256[]"], [ids, vals]))
    )
    assert [(r.batch_index, r.token_id, r.value) for r in out] == list(zip(range(n), ids, vals))


def test_transfer_batch_with_unequal_arrays_is_quarantined():
    data = encode(["uint256[]", "uint256[]"], [[1, 2, 3], [1, 2]])
    out = decode_log(mk([ERC1155_BATCH.topic0, topic(A), topic(A), topic(B)], data))
    assert out == Quarantined("TransferBatch ids/values length mismatch 3/2")


@pytest.mark.parametrize("data", ["0x", "0x" + "00" * 64, "0x" + "ff" * 64, "0x" + "00" * 31 + "40" + "00" * 31 + "ff"])
def test_transfer_batch_with_broken_offsets_is_quarantined(data):
    assert isinstance(decode_log(mk([ERC1155_BATCH.topic0, topic(A), topic(A), topic(B)], data)), Quarantined)


def test_garbage_never_raises():
    rng = random.Random(1)
    for _ in range(2000):
        n_topics = rng.randint(0, 5)
        topics = [rng.choice(list(LOG_FILTER_TOPICS[0]))] + [
            "0x" + rng.randbytes(32).hex() for _ in range(n_topics - 1)
        ]
        log = mk(topics[:n_topics], rng.randbytes(rng.choice([0, 5, 32, 64, 96, 200])))
        if rng.random() < 0.1:
            log.pop(rng.choice(list(log)))
        out = decode_log(log)
        assert isinstance(out, (list, Quarantined, Skipped))


def test_hand_decoder_equals_the_oracle_on_random_logs():
    rng = random.Random(7)
    logs = []
    for i in range(500):
        kind = rng.randrange(3)
        a, b, c = ("0x" + rng.randbytes(20).hex() for _ in range(3))
        if kind == 0:
            logs.append(
                mk([ERC20_TRANSFER.topic0, topic(a), topic(b)], encode(["uint256"], [rng.getrandbits(256)]), li=i)
            )
        elif kind == 1:
            logs.append(
                mk(
                    [ERC1155_SINGLE.topic0, topic(c), topic(a), topic(b)],
                    encode(["uint256", "uint256"], [rng.getrandbits(256), rng.getrandbits(256)]),
                    li=i,
                )
            )
        else:
            n = rng.randrange(5)
            logs.append(
                mk(
                    [ERC1155_BATCH.topic0, topic(c), topic(a), topic(b)],
                    encode(["uint256[]", "uint256[]"], [[rng.getrandbits(256) for _ in range(n)]] * 2),
                    li=i,
                )
            )
    batch = decode_logs(logs)
    ref20, ref1155, refused = oracle_rows(logs)
    assert sorted(batch.erc20) == sorted(ref20) and len(ref20) > 100
    assert sorted(batch.erc1155) == sorted(ref1155)
    assert refused == 0 and not batch.quarantined


def test_removed_logs_are_ignored():
    log = mk([ERC20_TRANSFER.topic0, topic(A), topic(B)], encode(["uint256"], [1]))
    log["removed"] = True
    assert decode_logs([log]).erc20 == []


def test_block_timestamp_is_taken_from_the_log_when_present():
    log = mk([ERC20_TRANSFER.topic0, topic(A), topic(B)], encode(["uint256"], [1]))
    log["blockTimestamp"] = "0x65920080"
    assert decode_logs([log]).blocks[5] == ("0x" + "22" * 32, 0x65920080)


def test_hand_decoder_agrees_with_the_oracle_on_mangled_batches():
    """Random corruptions of TransferBatch data: both decoders accept or reject the same logs, with equal rows."""
    rng = random.Random(11)
    for _ in range(3000):
        n, m = rng.randrange(4), rng.randrange(4)
        data = bytearray(
            encode(
                ["uint256[]", "uint256[]"],
                [[rng.getrandbits(8) for _ in range(n)], [rng.getrandbits(8) for _ in range(m)]],
            )
        )
        for _ in range(rng.randrange(3)):
            pos = rng.randrange(len(data))
            data[pos] = rng.choice([0, 1, 0x20, 0x40, 0x60, 0xFF])
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data) + 1)]
        log = mk([ERC1155_BATCH.topic0, topic(A), topic(A), topic(B)], bytes(data))
        ours = decode_log(log)
        ref, ref1155, rejected = oracle_rows([log])
        if rejected:
            assert isinstance(ours, Quarantined), (bytes(data).hex(), ours)
        else:
            assert ours == ref1155


def test_topic0_of_every_event_is_the_keccak_of_its_signature():
    from eth_utils import keccak

    from backfill.decode.events import EVENTS

    for topic, kind in EVENTS.items():
        assert topic == "0x" + keccak(text=kind.signature).hex()


# Near misses of a well-formed ERC-20 Transfer (case, lengths, padding, missing or mistyped fields); `a` is the
# sender's address in the log the mutations apply to (see fast_path_base).
FAST_PATH_MUTATIONS = [
    lambda log, a: log,
    lambda log, a: {**log, "topics": [t.upper().replace("0X", "0x") for t in log["topics"]]},
    lambda log, a: {**log, "data": log["data"].upper().replace("0X", "0x")},
    lambda log, a: {**log, "data": log["data"][:-2]},
    lambda log, a: {**log, "data": log["data"][:-1] + "g"},
    lambda log, a: {**log, "data": None},
    lambda log, a: {**log, "topics": log["topics"][:2]},
    lambda log, a: {**log, "topics": (*log["topics"],)},
    lambda log, a: {**log, "topics": [log["topics"][0], "0x" + "11" * 32, log["topics"][2]]},
    lambda log, a: {**log, "topics": [log["topics"][0], log["topics"][1][:-2], log["topics"][2]]},
    lambda log, a: {**log, "transactionHash": log["transactionHash"].upper().replace("0X", "0x")},
    lambda log, a: {**log, "transactionHash": "0x1234"},
    lambda log, a: {**log, "address": a.upper().replace("0X", "0x")},
    lambda log, a: {**log, "address": 5},
    lambda log, a: {**log, "logIndex": "0xzz"},
    lambda log, a: {k: v for k, v in log.items() if k != "logIndex"},
    lambda log, a: {k: v for k, v in log.items() if k != "data"},
    lambda log, a: {**log, "blockNumber": "nope"},
]


def fast_path_base() -> tuple[dict, str]:
    """The log the fast-path mutations apply to, and its sender's address `a`."""
    rng = random.Random(11)
    a, b = ("0x" + rng.randbytes(20).hex() for _ in range(2))
    return mk([ERC20_TRANSFER.topic0, topic(a), topic(b)], encode(["uint256"], [12345])), a


def test_batch_fast_path_gives_what_the_general_path_gives_log_by_log():
    """decode_logs takes a shortcut for well-formed ERC-20 Transfers; on near misses (case, lengths, padding,
    missing or mistyped fields) it must answer exactly as decode_log does, one log at a time."""
    good, a = fast_path_base()
    for mutate in FAST_PATH_MUTATIONS:
        log = mutate(dict(good), a)
        one = decode_log(log)
        batch = decode_logs([log])
        rows = batch.erc20 + batch.erc1155
        if isinstance(one, list):
            assert rows == one and not batch.quarantined
        elif isinstance(one, Quarantined):
            assert rows == [] and batch.quarantined == [(log, one.reason)]
        else:
            assert rows == [] and batch.skipped == 1
