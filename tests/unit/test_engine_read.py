"""The audit's engine reading of eth_getLogs answers (monitor/audit/engine_read.py) held to the reference.

The reference is eth-abi (backfill/decode/reference.py) over orjson, behind the RPC client's damage check
(backfill/chain/answer_check.py): what the audit did for every answer before the engine. For every answer the
engine takes, its rows' digests, per standard and block, and the blocks it reports must be the reference's; an
answer the client would refuse as damaged must be handed back (or refused by the client's block checks); and
the plain answers real nodes give must be taken, so that this test fails if the engine silently hands
everything back. The answers are the compiled scanner's test answers (tests/unit/test_native.py): near misses
of every field, batch layouts off the canonical one, mangled bytes.
"""

from __future__ import annotations

import random

import orjson
import pytest

from backfill.chain.answer_check import blocks_damage, logs_damage
from backfill.decode.events import ERC1155_BATCH
from backfill.decode.reference import reference_rows, with_timestamps
from backfill.store import digest
from monitor.audit.engine_read import EngineAnswer, EngineReader, hash_values, split_batch, split_envelope
from tests.unit.test_native import _mutations, body_of, guarded_body, mangle, mangled_bodies, random_logs


def stamp(bn: int) -> int:
    return 1_700_000_000 + 12 * bn


@pytest.fixture(scope="module")
def reader():
    r = EngineReader(threads=1)
    yield r
    r.close()


def _reference(logs: list) -> dict[tuple[str, int], tuple[int, int, set[int]]]:
    erc20, erc1155, _ = reference_rows(logs)
    rows20, rows1155 = with_timestamps(erc20, erc1155, {r.block_number: stamp(r.block_number) for r in erc20 + erc1155})
    out: dict[tuple[str, int], tuple[int, int, set[int]]] = {}
    for std, rows in (("erc20", rows20), ("erc1155", rows1155)):
        for row in rows:
            h = digest.digest_rows((row,), std)[1]
            n, total, hashes = out.get((std, row[0]), (0, 0, set()))
            out[(std, row[0])] = (n + 1, total + h, hashes | {h})
    return out


def _logs_of(body: bytes) -> list | None:
    """The logs of a plain or guarded answer as orjson reads them, None when it has none."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("result"), list):
        return doc["result"]
    if isinstance(doc, list):
        found = [item["result"] for item in doc if isinstance(item, dict) and isinstance(item.get("result"), list)]
        return found[0] if len(found) == 1 else None
    return None


def agree(reader: EngineReader, body: bytes, *, must_take: bool = False) -> EngineAnswer | None:
    """Read `body` with the engine; where it takes it, its digests and blocks are the reference's."""
    answer = reader.read(body)
    if must_take:
        assert answer is not None, "the engine must take a plain answer in the form nodes write"
    if answer is None:
        return None
    logs = _logs_of(body)
    assert logs is not None, "the engine took an answer orjson finds no logs in"
    first, last = 0, 2**64 - 1
    damage = logs_damage(logs, first, last)
    if damage is not None:
        assert blocks_damage(answer.block_hashes().items(), first, last) is not None, (
            f"the engine took an answer the client refuses as damaged ({damage})"
        )
        reader.discard(answer)
        return answer
    assert len(answer) == len(logs)
    named = {int(e["blockNumber"], 16): (e.get("blockHash") or "").lower() for e in logs}
    assert answer.block_hashes() == named
    want = _reference(logs)
    assert answer.row_blocks == sorted({bn for _, bn in want})
    got = reader.finish(answer, {bn: stamp(bn) for bn in answer.row_blocks})
    assert {(std, bn): (n, total, set(hash_values(blob))) for std, bn, n, total, blob in got} == want
    return answer


def test_canonical_answers_are_taken_and_equal_the_reference(reader):
    rng = random.Random(3)
    for n in (0, 1, 5, 400):
        agree(reader, body_of(random_logs(rng, n)), must_take=True)


def test_guarded_batch_answers_are_taken_with_their_ids(reader):
    logs = random_logs(random.Random(5), 30)
    for logs_first in (False, True):
        answer = agree(reader, guarded_body(logs, logs_first=logs_first), must_take=True)
        assert answer is not None
        assert sorted(answer.batch or []) == [("8", "0xfa0"), ("9", None)]


def test_envelopes_in_other_member_orders_are_found():
    logs = orjson.dumps(random_logs(random.Random(7), 3))
    for body in (
        b'{"jsonrpc":"2.0","id":1,"result":' + logs + b"}",
        b'{"jsonrpc":"2.0","result":' + logs + b',"id":1}\n',
        b'{"id":1,"jsonrpc":"2.0","result":' + logs + b"}",
    ):
        start, end, _ = split_envelope(body) or (0, 0, None)
        assert body[start:end] == logs
    for body in (
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"limit"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"a":1}}',
        b'{"jsonrpc":"2.0","id":1,"result":"0x1"}',
        b'[{"jsonrpc":"2.0","id":1,"result":[]}]',
    ):
        assert split_envelope(body) is None
    assert split_batch(b'[{"jsonrpc":"2.0","id":1,"error":{"code":1}},{"jsonrpc":"2.0","id":2,"result":[]}]') is None


def test_near_misses_of_every_field_agree_with_the_reference(reader):
    rng = random.Random(17)
    base = random_logs(rng, 24, per_block=4)
    by_kind: dict[int, list[dict]] = {}
    for log in base:
        for i, mutated in enumerate(_mutations(log)):
            by_kind.setdefault(i, []).append(mutated)
    taken = 0
    for mutated in by_kind.values():
        taken += agree(reader, body_of(mutated)) is not None  # every log of the answer mutated the same way
        taken += agree(reader, body_of([*base[:3], mutated[0], *base[3:6]])) is not None  # among canonical ones
    # chain facts (a 2-topic or a 4-topic Transfer, removed logs, a log without blockHash, extra fields) are taken
    # and decoded by the engine, not all left to the reference
    assert taken >= 12


def test_batch_layouts_off_the_canonical_one_agree(reader):
    rng = random.Random(19)
    log = next(x for x in random_logs(rng, 50) if x["topics"][0] == ERC1155_BATCH.topic0)
    words = [log["data"][2 + i : 2 + i + 64] for i in range(0, len(log["data"]) - 2, 64)]
    variants = []
    for _ in range(300):
        w = list(words)
        for _ in range(rng.randrange(1, 3)):
            i = rng.randrange(len(w))
            w[i] = rng.choice(["0" * 64, "0" * 62 + "40", "0" * 62 + "60", "0" * 63 + "1", "f" * 64, "1" + "0" * 63])
        if rng.random() < 0.2:
            w = w[: rng.randrange(len(w) + 1)]
        if rng.random() < 0.1:
            w.append("0" * 64)
        variants.append({**log, "data": "0x" + "".join(w)})
    for v in variants[:60]:
        agree(reader, body_of([v]))
    for n in range(60, 300, 40):
        agree(reader, body_of(variants[n : n + 40]))


def test_mangled_bodies_never_disagree(reader):
    rng = random.Random(29)
    logs = random_logs(rng, 12)
    good = body_of(logs)
    fixed = [
        *mangled_bodies(good),
        b'{"jsonrpc":"2.0","id":1,"result":[]} x',
        b'{"jsonrpc":"2.0","id":1,"result":[],}',
        good.replace(b'"removed":false', b'"removed":0', 1),
        good.replace(b'"removed":false', b'"removed":"false"', 1),
    ]
    for body in fixed:
        agree(reader, body)
    guarded = guarded_body(logs[:6])
    for _ in range(250):
        agree(reader, mangle(rng, rng.choice((good, good, guarded))))
