"""The compiled answer scanner (backfill/decode/_fastlogs.c via backfill/decode/scanner.py) against decode.py, the reference.

For any answer body the two must agree exactly: the same rows (every column, timestamps included), the same
quarantined logs with the same reasons, the same skipped count and the same blocks, or the scanner must hand
the answer back (None) for orjson + decode_logs. Canonical answers must take the compiled path in full, or a
build that quietly fell back to Python would pass.
"""

from __future__ import annotations

import random
import struct

import orjson
from eth_abi import encode

from backfill.decode import scanner as native
from backfill.decode.decoder import DecodedBatch, Erc20Row, Erc1155Row, decode_logs
from backfill.decode.events import ERC20_TRANSFER, ERC1155_BATCH, ERC1155_SINGLE, EVENTS
from backfill.store import native_format
from tests.support.native_rows import native_rows, timestamps


def test_the_extension_is_built():
    """scripts/setup builds it; where it is missing every worker would run the slow path without a word."""
    assert native.AVAILABLE, "backfill.decode._fastlogs did not build (a C compiler and the Python headers are needed)"
    assert native._fastlogs.TOPICS == (ERC20_TRANSFER.topic0, ERC1155_SINGLE.topic0, ERC1155_BATCH.topic0)
    assert set(native._fastlogs.TOPICS) == set(EVENTS)


def rows_of(batch: DecodedBatch) -> tuple[list[tuple], list[tuple]]:
    """Every row of a batch with its block timestamp: a Python-decoded row's from the blocks, a scanned row's
    from the block_timestamp column it would be inserted with."""
    stamp = {bn: ts for bn, (_, ts) in batch.blocks.items()}
    out20 = [(*r, stamp[r.block_number]) for r in batch.erc20]
    out1155 = [(*r, stamp[r.block_number]) for r in batch.erc1155]
    table = {bn: t or 0 for bn, t in stamp.items()}
    for scanned, kind, out in ((batch.native_erc20, Erc20Row, out20), (batch.native_erc1155, Erc1155Row, out1155)):
        for nr in scanned:
            out += [
                (*r, t or None) for r, t in zip(native_rows(nr, kind), timestamps(nr.timestamps(table)), strict=True)
            ]
    return sorted(out20), sorted(out1155)


def agree(body: bytes, *, must_scan: bool = False) -> native.Scanned | None:
    """The scanner and the reference give the same outcome for a body (see the module docstring)."""
    scanned = native.scan(body)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        assert scanned is None, "the scanner accepted a body orjson rejects"
        return None
    if scanned is None:
        assert not must_scan, "a canonical answer was left to the Python path"
        return None
    if isinstance(doc, list):  # a batch: one logs result, the others strings, each with its id
        assert all(isinstance(item, dict) and "error" not in item for item in doc)
        assert [(orjson.loads(i) if i else None, r) for i, r in scanned.batch] == [
            (item.get("id"), None if isinstance(item["result"], list) else item["result"]) for item in doc
        ]
        [logs] = [item["result"] for item in doc if isinstance(item["result"], list)]
        assert all(isinstance(item["result"], (list, str)) for item in doc)
    else:
        assert isinstance(doc, dict) and "error" not in doc and isinstance(doc.get("result"), list)
        assert scanned.batch is None
        logs = doc["result"]
    ref = decode_logs(logs)
    ours = scanned.decoded()
    assert len(scanned) == len(logs)
    assert scanned.block_hashes() == {bn: block_hash for bn, (block_hash, _) in ref.blocks.items()}
    assert rows_of(ours) == rows_of(ref)
    assert ours.quarantined == ref.quarantined
    assert ours.skipped == ref.skipped
    assert ours.blocks == ref.blocks
    assert (ours.n_erc20, ours.n_erc1155) == (ref.n_erc20, ref.n_erc1155)
    return scanned


# -- answers -------------------------------------------------------------------------------------
def topic(addr: str) -> str:
    return "0x" + "0" * 24 + addr[2:]


def random_logs(rng: random.Random, n: int, per_block: int = 3) -> list[dict]:
    logs = []
    for i in range(n):
        bn = 1000 + i // per_block
        a, b, c = ("0x" + rng.randbytes(20).hex() for _ in range(3))
        kind = rng.randrange(5)
        if kind <= 1:
            topics, data = [ERC20_TRANSFER.topic0, topic(a), topic(b)], encode(["uint256"], [rng.getrandbits(256)])
        elif kind == 2:
            topics, data = [ERC20_TRANSFER.topic0, topic(a), topic(b), "0x" + rng.randbytes(32).hex()], b""
        elif kind == 3:
            topics = [ERC1155_SINGLE.topic0, topic(c), topic(a), topic(b)]
            data = encode(["uint256", "uint256"], [rng.getrandbits(256), rng.getrandbits(256)])
        else:
            m = rng.randrange(4)
            topics = [ERC1155_BATCH.topic0, topic(c), topic(a), topic(b)]
            data = encode(["uint256[]", "uint256[]"], [[rng.getrandbits(256) for _ in range(m)]] * 2)
        logs.append(
            {
                "address": "0x" + rng.randbytes(20).hex(),
                "topics": topics,
                "data": "0x" + data.hex(),
                "blockHash": "0x" + bn.to_bytes(32, "big").hex(),
                "blockNumber": hex(bn),
                "blockTimestamp": hex(1_700_000_000 + 12 * bn),
                "transactionHash": "0x" + rng.randbytes(32).hex(),
                "transactionIndex": hex(i),
                "logIndex": hex(i % 97),
                "removed": False,
            }
        )
    return logs


def body_of(logs: list, **extra) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": 7, "result": logs, **extra})


def test_canonical_answers_are_scanned_in_full_and_equal_the_reference():
    rng = random.Random(3)
    for n in (0, 1, 5, 400):
        logs = random_logs(rng, n)
        scanned = agree(body_of(logs), must_scan=True)
        assert scanned.fallback == [], "no log of a canonical answer is left to Python"
    # the same with whitespace and another key order, as some servers write it
    logs = random_logs(rng, 20)
    pretty = orjson.dumps({"result": logs, "id": 1, "jsonrpc": "2.0"}, option=orjson.OPT_INDENT_2)
    agree(pretty, must_scan=True)


def guarded_body(logs: list, *, logs_first: bool = False) -> bytes:
    """The lag guard's answer: eth_blockNumber and eth_getLogs in one batch."""
    items = [{"jsonrpc": "2.0", "id": 8, "result": "0xfa0"}, {"jsonrpc": "2.0", "id": 9, "result": logs}]
    return orjson.dumps(items[::-1] if logs_first else items)


def test_guarded_batch_answers_are_scanned_with_their_ids():
    logs = random_logs(random.Random(31), 40)
    for logs_first in (False, True):
        scanned = agree(guarded_body(logs, logs_first=logs_first), must_scan=True)
        assert sorted(scanned.batch, key=str) == [("8", "0xfa0"), ("9", None)]
        assert scanned.fallback == []
    assert agree(guarded_body([]), must_scan=True).batch == [("8", "0xfa0"), ("9", None)]
    # what the guard cannot judge from the scan goes to orjson: errors, two log lists, no logs, other results
    for body in (
        b'[{"id":8,"result":"0x1"},{"id":9,"error":{"code":-32000,"message":"header not found"}}]',
        b'[{"id":8,"result":[]},{"id":9,"result":[]}]',
        b'[{"id":8,"result":"0x1"}]',
        b"[]",
        b'[{"id":8,"result":7},{"id":9,"result":[]}]',
        b'[{"id":8,"result":null},{"id":9,"result":[]}]',
        b'[{"id":8,"result":"0x1"},{"id":9,"result":[]},]',
        b'[{"id":8,"result":"0x1"} {"id":9,"result":[]}]',
        b'{"id":8,"result":"0x1"}',
        b'[{"id":8,"id":9,"result":[]}]',
    ):
        assert agree(body) is None, body
    # ids stay as written, for the caller to match against what it sent
    assert agree(b'[{"id":"8","result":"0x1"},{"result":[]}]', must_scan=True).batch == [('"8"', "0x1"), ("", None)]


def test_native_block_layout_is_what_the_engine_reads():
    """Header, then per column name, type and data; _version repeated; block_timestamp gathered by block."""
    logs = random_logs(random.Random(5), 3, per_block=2)
    logs = [log for log in logs if len(log["topics"]) == 3 and log["topics"][0] == ERC20_TRANSFER.topic0] or logs[:0]
    scanned = native.scan(body_of(logs))
    batch = scanned.decoded()
    stamp = {bn: ts for bn, (_, ts) in batch.blocks.items()}
    cols = ["block_number", "block_timestamp", "_version"]
    block = native_format.table_block(batch.native_erc20, cols, ["UInt64", "DateTime('UTC')", "UInt64"], stamp, 9)
    n = len(logs)
    expected = (
        bytes([3, n])
        + b"\x0cblock_number\x06UInt64"
        + b"".join(struct.pack("<Q", int(x["blockNumber"], 16)) for x in logs)
    )
    expected += b"\x0fblock_timestamp\x0fDateTime('UTC')" + b"".join(
        struct.pack("<I", int(x["blockTimestamp"], 16)) for x in logs
    )
    expected += b"\x08_version\x06UInt64" + struct.pack("<Q", 9) * n
    assert block == expected


# -- near misses: every field off its canonical form, one at a time -------------------------------
def _mutations(log: dict) -> list[dict]:
    t = log["topics"]

    def up(s: str) -> str:
        return "0x" + s[2:].upper()

    out = [
        {**log, "topics": [up(t[0]), *t[1:]]},
        {**log, "topics": [t[0], up(t[1]), *t[2:]]},
        {**log, "topics": t[:2]},
        {**log, "topics": [*t, t[-1]]},
        {**log, "topics": [*t, t[-1], t[-1]]},
        {**log, "topics": []},
        {**log, "topics": None},
        {**log, "topics": [t[0], None, *t[2:]]},
        {**log, "topics": [t[0], "0x" + "11" * 32, *t[2:]]},
        {**log, "topics": [t[0], t[1][:-2], *t[2:]]},
        {**log, "topics": [t[0], t[1][:-1] + "g", *t[2:]]},
        {**log, "topics": [t[0], "ab" + t[1][2:], *t[2:]]},
        {**log, "topics": ["0x" + "12" * 32, *t[1:]]},
        {**log, "data": up(log["data"])},
        {**log, "data": log["data"][:-2]},
        {**log, "data": log["data"] + "00" * 32},
        {**log, "data": log["data"][:-1] + "g"},
        {**log, "data": None},
        {**log, "data": "0x"},
        {**log, "data": 5},
        {**log, "data": log["data"][2:]},
        {**log, "transactionHash": up(log["transactionHash"])},
        {**log, "transactionHash": "0x1234"},
        {**log, "transactionHash": log["transactionHash"][:-1] + "z"},
        {**log, "address": up(log["address"])},
        {**log, "address": 5},
        {**log, "address": log["address"] + "00"},
        {**log, "logIndex": "0xzz"},
        {**log, "logIndex": "0x"},
        {**log, "logIndex": "0x" + "0" * 9 + "1"},
        {**log, "logIndex": "0x1ffffffff"},
        {**log, "logIndex": 3},
        {**log, "logIndex": "0X3"},
        {**log, "blockNumber": "nope"},
        {**log, "blockNumber": 1000},
        {**log, "blockNumber": "0x" + "f" * 17},
        {**log, "blockNumber": "0x00" + log["blockNumber"][2:]},
        {**log, "blockNumber": up(log["blockNumber"])},
        {**log, "blockHash": None},
        {**log, "blockHash": up(log["blockHash"])},
        {**log, "blockHash": 7},
        {**log, "blockTimestamp": None},
        {**log, "blockTimestamp": "0x0"},
        {**log, "blockTimestamp": "0x"},
        {**log, "blockTimestamp": "0x1ffffffff"},
        {**log, "blockTimestamp": 12},
        {**log, "removed": True},
        {**log, "removed": None},
        {**log, "removed": "yes"},
        {**log, "removed": 0},
        {**log, "extra": {"nested": [1, 2.5e3, -0.5, "x", None, True, {}]}},
    ]
    for key in (
        "data",
        "topics",
        "logIndex",
        "blockNumber",
        "blockHash",
        "blockTimestamp",
        "removed",
        "transactionHash",
        "address",
    ):
        out.append({k: v for k, v in log.items() if k != key})
    return out


def test_near_misses_agree_with_the_reference_log_by_log():
    rng = random.Random(17)
    base = random_logs(rng, 60, per_block=4)
    for log in base:
        for mutated in _mutations(log):
            # alone, and among canonical neighbours of the same block (the scanner's block bookkeeping)
            agree(body_of([mutated]))
            agree(body_of([*base[:2], mutated, *base[2:4]]))


def test_batch_layouts_off_the_canonical_one_agree():
    rng = random.Random(19)
    log = next(x for x in random_logs(rng, 50) if x["topics"][0] == ERC1155_BATCH.topic0)
    words = [log["data"][2 + i : 2 + i + 64] for i in range(0, len(log["data"]) - 2, 64)]
    for _ in range(1500):
        w = list(words)
        for _ in range(rng.randrange(1, 3)):
            i = rng.randrange(len(w))
            w[i] = rng.choice(
                [
                    "0" * 63 + "0",
                    "0" * 62 + "40",
                    "0" * 62 + "60",
                    "0" * 62 + "80",
                    "0" * 63 + "1",
                    "0" * 63 + "2",
                    "f" * 64,
                    "1" + "0" * 63,
                    w[i],
                ]
            )
        if rng.random() < 0.2:
            w = w[: rng.randrange(len(w) + 1)]
        if rng.random() < 0.1:
            w.append("0" * 64)
        agree(body_of([{**log, "data": "0x" + "".join(w)}]))


def test_block_fields_that_disagree_within_a_block_send_the_answer_to_python():
    logs = random_logs(random.Random(23), 4, per_block=4)
    assert agree(body_of(logs), must_scan=True)
    for field, value in (("blockHash", "0x" + "99" * 32), ("blockTimestamp", "0x1"), ("blockTimestamp", None)):
        assert agree(body_of([logs[0], {**logs[1], field: value}, *logs[2:]])) is None


def mangled_bodies(good: bytes) -> list[bytes]:
    """Byte-level damage of a good answer: truncation, escapes, non-ASCII, duplicate keys, errors, other shapes."""
    return [
        b"",
        b"{}",
        b"[]",
        b"null",
        b'{"result":null}',
        b'{"result":{}}',
        b'{"result":[1]}',
        b'{"result":[]}',
        b'{"result":[]} x',
        b'{"result":[],}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"x"}}',
        b'{"result":[],"error":null}',
        b'{"result":[],"result":[]}',
        good.replace(b'"0x', b'"\\u0030x', 1),
        good.replace(b'"address"', b'"addr\\u0065ss"', 1),
        good.replace(b'"data"', b'"data":"0x","data"', 1),
        good.replace(b'"removed":false', b'"removed":false,"removed":true', 1),
        good[:-1],
        good + b"\n",
        b" \t\r\n" + good,
        good.replace(b'"id":7', '"id":"\u00e9"'.encode(), 1),
        good.replace(b'"id":7', b'"id":7.5e+2', 1),
        good.replace(b'"id":7', b'"id":-0', 1),
        good.replace(b'"id":7', b'"id":07', 1),
        good.replace(b'"id":7', b'"id":1.', 1),
        good.replace(b'"id":7', b'"id":[[[[[]]]]]', 1),
        good.replace(b'"id":7', b'"id":' + b"[" * 200 + b"]" * 200, 1),
        good.replace(b'"id":7', b'"id":tru', 1),
        good.replace(b'"id":7', b'"id":"a\tb"', 1),
    ]


def mangle(rng: random.Random, body: bytes) -> bytes:
    """body with one to three random byte-level edits: a byte replaced, dropped or inserted, or a truncation."""
    out = bytearray(body)
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(len(out))
        op = rng.randrange(4)
        if op == 0:
            out[i] = rng.choice(b'{}[]",:0aA \\\x00\x7f\xc3')
        elif op == 1:
            del out[i]
        elif op == 2:
            out.insert(i, rng.choice(b' ,"0x'))
        else:
            out = out[:i]
    return bytes(out)


def test_mangled_bodies_never_disagree():
    """Byte-level damage: truncation, flipped bytes, escapes, non-ASCII, duplicate keys, errors, other shapes."""
    rng = random.Random(29)
    logs = random_logs(rng, 12)
    good = body_of(logs)
    for body in mangled_bodies(good):
        agree(body)
    guarded = guarded_body(logs[:6])
    for _ in range(4000):
        agree(mangle(rng, rng.choice((good, good, good, guarded))))
