"""The product's decoders held to the tests' own (tests/support/oracle.py, web3.py's event processing, no product code).

Four readings of one log must agree: the oracle, the audit's decoder (backfill/decode/reference.py), the workers'
decoder (backfill/decode/decoder.py, decode_logs) and the compiled scanner (backfill/decode/scanner.py: scan, then decoded(),
or orjson + decode_logs where the scanner hands the answer back). Agreeing means the same rows, or no row from
any of them: refused (quarantined, skipped as ERC-721, rejected), removed, or a TransferBatch of 0 ids. A
reader that raises agrees with nobody.
"""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from eth_abi import encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backfill.decode import scanner as native
from backfill.decode.decoder import decode_logs
from backfill.decode.events import EVENTS
from backfill.decode.reference import reference_rows
from tests.support.native_rows import all_rows
from tests.support.oracle import TOPIC0, Erc20Transfer, Erc1155Transfer, decode_one, oracle_rows
from tests.unit.test_decode import FAST_PATH_MUTATIONS, fast_path_base
from tests.unit.test_native import _mutations, random_logs

MAX = 2**256 - 1
T20, T_SINGLE, T_BATCH = TOPIC0["Transfer"], TOPIC0["TransferSingle"], TOPIC0["TransferBatch"]
ORACLE = Path(__file__).resolve().parents[1] / "support" / "oracle.py"


# -- the four readings -------------------------------------------------------------------------------------------
def _tagged(erc20: list, erc1155: list) -> list[tuple]:
    return sorted([("erc20", *r) for r in erc20] + [("erc1155", *r) for r in erc1155])


def _by_oracle(log: Any) -> list[tuple]:
    rows = decode_one(log) or []
    return _tagged(
        [r for r in rows if isinstance(r, Erc20Transfer)], [r for r in rows if isinstance(r, Erc1155Transfer)]
    )


def _by_decode_ref(log: Any) -> list[tuple]:
    erc20, erc1155, _ = reference_rows([log])
    return _tagged(erc20, erc1155)


def _by_decode_logs(log: Any) -> list[tuple]:
    batch = decode_logs([log])
    return _tagged(batch.erc20, batch.erc1155)


def _by_scanner(log: Any) -> list[tuple]:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": [log]})
    scanned = native.scan(body)
    batch = scanned.decoded() if scanned is not None else decode_logs(orjson.loads(body)["result"])
    return _tagged(*all_rows(batch))


READERS = {"oracle": _by_oracle, "decode_ref": _by_decode_ref, "decode_logs": _by_decode_logs, "scanner": _by_scanner}


def readings(log: Any) -> dict[str, list[tuple] | str]:
    out: dict[str, list[tuple] | str] = {}
    for name, read in READERS.items():
        try:
            out[name] = read(log)
        except Exception as exc:  # noqa: BLE001 - a reader that raises is an outcome to report, not a crash
            out[name] = f"raised {type(exc).__name__}: {exc}"
    return out


def disagreement(log: Any) -> str | None:
    """None when all four readings agree, else what each gave."""
    seen = readings(log)
    if all(v == seen["oracle"] for v in seen.values()):
        return None
    shown = {k: (v if isinstance(v, str) else f"{len(v)} rows" if v else "no row") for k, v in seen.items()}
    return f"{shown} for {log!r:.1500}"


# -- the oracle stands apart ---------------------------------------------------------------------------------------
def test_the_oracle_imports_nothing_from_the_product():
    tree = ast.parse(ORACLE.read_text())
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert modules and not [m for m in modules if m.split(".")[0] in ("backfill", "monitor", "workers")], modules
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tests.support.oracle; print(sorted(m for m in sys.modules if m.split('.')[0] == 'backfill'))",
        ],
        capture_output=True,
        text=True,
        cwd=ORACLE.parents[2],
        check=True,
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


def test_the_oracle_topics_are_the_products_event_table():
    assert set(TOPIC0.values()) == set(EVENTS)
    assert T20 == "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


# -- well-formed logs of every kind --------------------------------------------------------------------------------
def word(addr: str) -> str:
    return "0x" + "0" * 24 + addr[2:]


A, B, C, TOKEN = ("0x" + c * 40 for c in "abcd")
ZERO = "0x" + "00" * 20
TX = "0x" + "12" * 32


def log_of(topics: list[str], data: bytes | str, *, bn: int = 1000, li: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "address": TOKEN,
        "topics": topics,
        "data": data if isinstance(data, str) else "0x" + data.hex(),
        "blockHash": "0x" + bn.to_bytes(32, "big").hex(),
        "blockNumber": hex(bn),
        "blockTimestamp": hex(1_700_000_000),
        "transactionHash": TX,
        "transactionIndex": "0x0",
        "logIndex": hex(li),
        "removed": False,
        **extra,
    }


def batch_data(ids: list[int], values: list[int]) -> bytes:
    return encode(["uint256[]", "uint256[]"], [ids, values])


WELL_FORMED: list[tuple[str, dict[str, Any], list[tuple]]] = [
    ("erc20", log_of([T20, word(A), word(B)], encode(["uint256"], [5])), [("erc20", 1000, TX, 3, TOKEN, A, B, 5)]),
    (
        "erc20-max-value",
        log_of([T20, word(A), word(B)], encode(["uint256"], [MAX])),
        [("erc20", 1000, TX, 3, TOKEN, A, B, MAX)],
    ),
    (
        "erc20-mint-zero-value",
        log_of([T20, word(ZERO), word(B)], encode(["uint256"], [0])),
        [("erc20", 1000, TX, 3, TOKEN, ZERO, B, 0)],
    ),
    (
        "erc20-burn",
        log_of([T20, word(A), word(ZERO)], encode(["uint256"], [1])),
        [("erc20", 1000, TX, 3, TOKEN, A, ZERO, 1)],
    ),
    (
        "erc20-mixed-case-hex",
        log_of(
            [T20.upper().replace("0X", "0x"), word(A).upper().replace("0X", "0x"), word(B)],
            "0x" + encode(["uint256"], [0xABCDEF]).hex().upper(),
            address=TOKEN.upper().replace("0X", "0x"),
        ),
        [("erc20", 1000, TX, 3, TOKEN, A, B, 0xABCDEF)],
    ),
    (
        "erc20-block-0-index-0",
        log_of([T20, word(A), word(B)], encode(["uint256"], [7]), bn=0, li=0),
        [("erc20", 0, TX, 0, TOKEN, A, B, 7)],
    ),
    (
        "erc20-no-block-timestamp",
        {k: v for k, v in log_of([T20, word(A), word(B)], encode(["uint256"], [9])).items() if k != "blockTimestamp"},
        [("erc20", 1000, TX, 3, TOKEN, A, B, 9)],
    ),
    ("erc721", log_of([T20, word(A), word(B), "0x" + (42).to_bytes(32, "big").hex()], "0x"), []),
    (
        "erc721-with-data",
        log_of([T20, word(A), word(B), "0x" + (42).to_bytes(32, "big").hex()], encode(["uint256"], [1])),
        [],
    ),
    (
        "single",
        log_of([T_SINGLE, word(C), word(A), word(B)], encode(["uint256", "uint256"], [MAX, 9])),
        [("erc1155", 1000, TX, 3, 0, TOKEN, C, A, B, MAX, 9)],
    ),
    ("batch-0-ids", log_of([T_BATCH, word(C), word(A), word(B)], batch_data([], [])), []),
    (
        "batch-1-id",
        log_of([T_BATCH, word(C), word(A), word(B)], batch_data([MAX], [MAX])),
        [("erc1155", 1000, TX, 3, 0, TOKEN, C, A, B, MAX, MAX)],
    ),
    (
        "batch-5-ids",
        log_of([T_BATCH, word(C), word(ZERO), word(B)], batch_data([1, 2, 3, 4, MAX], [10, 0, 30, 40, 50])),
        [
            ("erc1155", 1000, TX, 3, i, TOKEN, C, ZERO, B, t, v)
            for i, (t, v) in enumerate(zip([1, 2, 3, 4, MAX], [10, 0, 30, 40, 50]))
        ],
    ),
    ("batch-unequal-arrays", log_of([T_BATCH, word(C), word(A), word(B)], batch_data([1, 2, 3], [1, 2])), []),
    ("removed", log_of([T20, word(A), word(B)], encode(["uint256"], [5]), removed=True), []),
]


@pytest.mark.parametrize("name, log, rows", WELL_FORMED, ids=[w[0] for w in WELL_FORMED])
def test_well_formed_logs_of_every_kind_read_the_same_four_ways(name, log, rows):
    assert _by_oracle(log) == sorted(rows)
    assert disagreement(log) is None, disagreement(log)


def test_counts_of_logs_that_are_not_transfers_agree():
    logs = [log for _, log, _ in WELL_FORMED]
    erc20, erc1155, refused = oracle_rows(logs)
    batch = decode_logs(logs)
    assert refused == 3  # the two ERC-721 transfers and the unequal batch; removed and 0 ids are not refusals
    assert len(batch.quarantined) + batch.skipped == refused == reference_rows(logs)[2]
    assert _tagged(erc20, erc1155) == _tagged(batch.erc20, batch.erc1155)


def test_random_well_formed_answers_read_the_same_four_ways():
    logs = random_logs(random.Random(41), 300)
    whole = oracle_rows(logs)
    batch = decode_logs(logs)
    assert _tagged(*whole[:2]) == _tagged(batch.erc20, batch.erc1155) == _tagged(*reference_rows(logs)[:2])
    scanned = native.scan(orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": logs}))
    assert scanned is not None and _tagged(*all_rows(scanned.decoded())) == _tagged(*whole[:2])
    assert whole[2] == batch.skipped + len(batch.quarantined) > 0


# -- the mutation corpus of test_native and test_decode --------------------------------------------------------------
BASE = random_logs(random.Random(17), 60, per_block=4)  # as test_native's near misses use them


def _mutation_id(i: int, original: dict, mutated: dict) -> str:
    gone = [k for k in original if k not in mutated]
    if gone:
        return f"{i:02d}-no-{gone[0]}"
    key = next(
        (
            k
            for k in mutated
            if k not in original or mutated[k] != original[k] or type(mutated[k]) is not type(original[k])
        ),
        "same",
    )
    value = mutated.get(key)
    shown = repr(value) if len(repr(value)) <= 12 else ""
    return f"{i:02d}-{key}" + (f"={shown}" if shown else "")


_SAMPLE = BASE[0]
NATIVE_KINDS = list(range(len(_mutations(_SAMPLE))))


@pytest.mark.parametrize(
    "kind", NATIVE_KINDS, ids=[_mutation_id(i, _SAMPLE, m) for i, m in enumerate(_mutations(_SAMPLE))]
)
def test_every_near_miss_of_the_scanner_corpus_reads_the_same_four_ways(kind):
    """Each of test_native's mutation kinds, applied to 60 logs of every kind: same rows, or no row from any."""
    bad = [d for log in BASE if (d := disagreement(_mutations(log)[kind]))]
    assert not bad, f"{len(bad)} of {len(BASE)} logs disagree; first: {bad[0]}"


_FAST_BASE, _FAST_A = fast_path_base()


@pytest.mark.parametrize(
    "mutate",
    FAST_PATH_MUTATIONS,
    ids=[_mutation_id(i, _FAST_BASE, m(dict(_FAST_BASE), _FAST_A)) for i, m in enumerate(FAST_PATH_MUTATIONS)],
)
def test_every_near_miss_of_the_fast_path_corpus_reads_the_same_four_ways(mutate):
    log = mutate(dict(_FAST_BASE), _FAST_A)
    assert disagreement(log) is None, disagreement(log)


# -- generated logs, well-formed and damaged in any field -------------------------------------------------------------
ADDRESSES = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
HASHES = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
UINTS = st.one_of(st.integers(0, MAX), st.sampled_from([0, 1, 2**128, MAX]))
FIELDS = [
    "address",
    "topics",
    "data",
    "blockNumber",
    "logIndex",
    "transactionHash",
    "blockHash",
    "blockTimestamp",
    "removed",
]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 2**40),
    st.lists(st.integers(0, 3), max_size=2),
    st.just({}),
    st.sampled_from(["", "0x", "0X", "0x0", "nope"]),
)


@st.composite
def well_formed_logs(draw) -> dict[str, Any]:
    kind = draw(st.sampled_from(["erc20", "erc721", "single", "batch"]))
    op, frm, to = draw(ADDRESSES), draw(ADDRESSES), draw(ADDRESSES)
    if kind == "erc20":
        topics, data = [T20, word(frm), word(to)], encode(["uint256"], [draw(UINTS)])
    elif kind == "erc721":
        topics, data = [T20, word(frm), word(to), draw(HASHES)], b""
    elif kind == "single":
        topics = [T_SINGLE, word(op), word(frm), word(to)]
        data = encode(["uint256", "uint256"], [draw(UINTS), draw(UINTS)])
    else:
        ids = draw(st.lists(UINTS, max_size=4))
        values = draw(st.lists(UINTS, min_size=len(ids), max_size=len(ids)) | st.lists(UINTS, max_size=4))
        topics, data = [T_BATCH, word(op), word(frm), word(to)], batch_data(ids, values)
    bn = draw(st.integers(0, 2**40))
    log = {
        "address": draw(ADDRESSES),
        "topics": topics,
        "data": "0x" + data.hex(),
        "blockHash": draw(HASHES),
        "blockNumber": hex(bn),
        "blockTimestamp": hex(draw(st.integers(1, 2**32 - 1))),
        "transactionHash": draw(HASHES),
        "transactionIndex": hex(draw(st.integers(0, 500))),
        "logIndex": hex(draw(st.integers(0, 2**32 - 1))),
        "removed": draw(st.sampled_from([False, False, True])),
    }
    if draw(st.booleans()):
        del log["blockTimestamp"]  # nodes that do not give it
    return log


def _damage_text(draw, text: str) -> Any:
    op = draw(
        st.sampled_from(
            [
                "non_hex",
                "drop_digit",
                "drop_byte",
                "add_digit",
                "add_byte",
                "no_prefix",
                "upper_prefix",
                "leading_zero",
                "upper",
                "junk",
            ]
        )
    )
    body = text[2:] if text.startswith("0x") else text
    if op == "non_hex":
        if not body:
            return text + draw(st.sampled_from("gz "))
        i = draw(st.integers(0, len(body) - 1))
        return "0x" + body[:i] + draw(st.sampled_from("gGxz -")) + body[i + 1 :]
    if op == "drop_digit":
        return text[:-1]
    if op == "drop_byte":
        return text[:-2]
    if op == "add_digit":
        return text + draw(st.sampled_from("0f"))
    if op == "add_byte":
        return text + "00"
    if op == "no_prefix":
        return body
    if op == "upper_prefix":
        return "0X" + body
    if op == "leading_zero":
        return "0x0" + body
    if op == "upper":
        return "0x" + body.upper()
    return draw(JUNK)


@st.composite
def damaged_logs(draw) -> dict[str, Any]:
    log = draw(well_formed_logs())
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from(FIELDS))
        action = draw(st.sampled_from(["text", "text", "delete", "junk"]))
        if field == "topics" and isinstance(log.get("topics"), list) and log["topics"]:
            topics = list(log["topics"])
            what = draw(st.sampled_from(["extra", "missing", "one", "one", "junk"]))
            if what == "extra":
                topics.append(draw(HASHES))
            elif what == "missing":
                del topics[draw(st.integers(0, len(topics) - 1))]
            elif what == "one":
                i = draw(st.integers(0, len(topics) - 1))
                topics[i] = _damage_text(draw, topics[i]) if isinstance(topics[i], str) else draw(JUNK)
            else:
                topics = draw(JUNK)
            log["topics"] = topics
        elif action == "delete":
            log.pop(field, None)
        elif action == "junk" or not isinstance(log.get(field), str):
            log[field] = draw(JUNK)
        else:
            log[field] = _damage_text(draw, log[field])
    return log


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(damaged_logs())
def test_generated_logs_read_the_same_four_ways(log):
    assert disagreement(log) is None, disagreement(log)
