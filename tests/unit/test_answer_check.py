"""What no node can answer is a damaged answer: refused before decoding, whatever the decoder would make of it."""

from __future__ import annotations

import pytest

from backfill.chain.answer_check import blocks_damage, log_damage, logs_damage

TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
WORD = "0x" + "00" * 12 + "ab" * 20


def good(**fields) -> dict:
    log = {
        "address": "0x" + "Cd" * 20,
        "topics": [TRANSFER, WORD, WORD],
        "data": "0x" + "00" * 31 + "07",
        "blockNumber": "0x10",
        "blockHash": "0x" + "11" * 32,
        "blockTimestamp": "0x65920080",
        "transactionHash": "0x" + "22" * 32,
        "transactionIndex": "0x0",
        "logIndex": "0x3",
        "removed": False,
    }
    log.update(fields)
    return {k: v for k, v in log.items() if v is not ...}


def test_what_nodes_send_passes():
    assert log_damage(good(), 0x10, 0x10) is None
    # chain facts under our topics are not damage: the decoder quarantines or skips them
    assert log_damage(good(topics=[TRANSFER, WORD]), 0, 99) is None  # 2-topic Transfer
    assert log_damage(good(topics=[TRANSFER, WORD, WORD, WORD]), 0, 99) is None  # ERC-721
    assert log_damage(good(data="0x"), 0, 99) is None
    assert log_damage(good(data="0x" + "ff" * 33), 0, 99) is None  # not 32 bytes, but whole bytes
    assert log_damage(good(topics=[TRANSFER, "0x" + "ff" * 32, WORD]), 0, 99) is None  # not an address
    # fields some nodes leave out
    assert log_damage(good(blockTimestamp=..., removed=..., blockHash=None), 0, 99) is None
    assert log_damage(good(blockNumber="0x0010"), 0, 99) is None  # leading zeros: odd, still a number


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"topics": [TRANSFER, WORD[:-1] + "g", WORD]}, "a topic is not 32 bytes of hex"),
        ({"topics": [TRANSFER, WORD, WORD, WORD, WORD]}, "topics is not a list of 1 to 4"),
        ({"topics": []}, "topics is not a list of 1 to 4"),
        ({"topics": [TRANSFER, WORD[:-2], WORD]}, "a topic is not 32 bytes of hex"),
        ({"topics": ["0x" + "ab" * 32, WORD, WORD]}, "topic0 is not one the filter asked for"),
        ({"transactionHash": "0x" + "22" * 4}, "transactionHash is not 32 bytes of hex"),
        ({"address": "0x" + "cd" * 21}, "address is not 20 bytes of hex"),
        ({"address": "0x" + "cd" * 19 + "zz"}, "address is not 20 bytes of hex"),
        ({"data": "0x123"}, "data is not whole bytes of hex"),
        ({"data": "0x" + "00" * 31 + "0g"}, "data is not whole bytes of hex"),
        ({"data": "0x" + "00" * 32 + "\n"}, "data is not whole bytes of hex"),
        ({"blockHash": 7}, "blockHash is not 32 bytes of hex"),
        ({"blockTimestamp": "0x"}, "blockTimestamp is not a hex quantity below 2**32"),
        ({"blockTimestamp": "0x100000000"}, "blockTimestamp is not a hex quantity below 2**32"),
        ({"blockNumber": "0x1_0"}, "blockNumber is not a hex quantity"),
        ({"blockNumber": 16}, "blockNumber is not a hex quantity"),
        ({"blockNumber": "0x11"}, "a log of block 17, outside the range asked for"),
        ({"logIndex": "3"}, "logIndex is not a hex quantity below 2**32"),
        ({"logIndex": "0x1ffffffff"}, "logIndex is not a hex quantity below 2**32"),
        ({"blockNumber": "0X10"}, "blockNumber is not a hex quantity"),
        ({"removed": "false"}, "removed is not a boolean"),
        ({"transactionHash": ...}, "transactionHash is not 32 bytes of hex"),
    ],
)
def test_what_no_node_sends_is_damage(fields, reason):
    assert log_damage(good(**fields), 0, 0x10) == reason


def test_an_answer_is_judged_whole():
    assert logs_damage([good(), good(logIndex="0x4")], 0, 99) is None
    assert logs_damage([good(), "not a log"], 0, 99) == "a log that is a JSON str"
    assert (
        logs_damage([good(), good(logIndex="0x4", blockHash="0x" + "12" * 32)], 0, 99)
        == "block 16 has two hashes in one answer"
    )
    assert logs_damage([good(), good(logIndex="0x4", blockHash="0x" + "11" * 32)], 0, 99) is None


def test_the_scanners_blocks():
    assert blocks_damage([(5, "0x" + "aa" * 32), (6, "")], 5, 6) is None
    assert blocks_damage([(7, "0x" + "aa" * 32)], 5, 6) == "a log of block 7, outside the range asked for"
    assert blocks_damage([(5, "0x" + "aa" * 31)], 5, 6) == "blockHash is not 32 bytes of hex"
