"""The devnet generator on a real anvil: UTC day layout, the heavy day, and faithful state reload."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill.devnet.generate import DAY_S, DevRpc
from backfill.devnet.node import Anvil, DevnetParams, build_state

PARAMS = DevnetParams(
    start_date=dt.date(2024, 2, 28), days=4, blocks_per_day=2000, seed=3, heavy_day=2, empty_days=frozenset({1})
)
MIDNIGHT = int(dt.datetime(2024, 2, 28, tzinfo=dt.UTC).timestamp())


def _answers(url: str, summary: dict[str, Any]) -> dict[str, Any]:
    """What a backfill would read: all logs, plus sampled blocks with their hashes and timestamps."""
    rpc = DevRpc(url)
    try:
        rng = random.Random(0)
        sample = sorted({0, 1, summary["head_block"], *rng.sample(range(summary["head_block"]), 40)})
        return {
            "head": rpc.call("eth_blockNumber"),
            "logs": rpc.call("eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(summary["head_block"])}),
            "blocks": rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in sample]),
        }
    finally:
        rpc.close()


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Generate once, save the state, and keep what the original node answered."""
    state = tmp_path_factory.mktemp("devnet") / "state.json"
    with Anvil(genesis_timestamp=PARAMS.genesis_timestamp) as node:
        summary = build_state(PARAMS, node, state)
        return {"state": state, "summary": summary, "answers": _answers(node.url, summary)}


@pytest.fixture(scope="session")
def reloaded(generated: dict[str, Any]) -> Iterator[DevRpc]:
    with Anvil(load_state=Path(generated["state"])) as node:
        rpc = DevRpc(node.url)
        yield rpc
        rpc.close()


def _timestamps(rpc: DevRpc, numbers: list[int]) -> list[int]:
    blocks = rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
    return [int(b["timestamp"], 16) for b in blocks]


def test_blocks_fall_inside_their_utc_day(generated: dict[str, Any], reloaded: DevRpc) -> None:
    rng = random.Random(1)
    for day in generated["summary"]["days"]:
        lo, first, last = MIDNIGHT + day["day_idx"] * DAY_S, day["first_block"], day["last_block"]
        assert last - first + 1 == PARAMS.blocks_per_day
        inner = sorted(rng.sample(range(first + 1, last), 30))
        ts = _timestamps(reloaded, [first - 1, first, *inner, last])
        assert ts[0] < lo <= ts[1], "the day's first block is the first one at or after midnight"
        assert all(lo <= t < lo + DAY_S for t in ts[1:])
        assert ts[1:] == sorted(set(ts[1:])), "timestamps strictly increase"
        run = _timestamps(reloaded, list(range(first, first + 300)))
        assert len({b - a for a, b in zip(run, run[1:], strict=False)}) > 2, "blocks are spaced unevenly"
    day0, day1, day2 = generated["summary"]["days"][:3]
    assert _timestamps(reloaded, [day0["first_block"], day1["last_block"], day2["first_block"]]) == [
        MIDNIGHT,
        MIDNIGHT + 2 * DAY_S - 1,
        MIDNIGHT + 2 * DAY_S,
    ]


def test_heavy_day_has_over_10k_logs_in_at_most_2000_blocks(generated: dict[str, Any], reloaded: DevRpc) -> None:
    days = generated["summary"]["days"]
    heavy, empty = days[PARAMS.heavy_day], days[1]
    logs = reloaded.call("eth_getLogs", {"fromBlock": hex(heavy["first_block"]), "toBlock": hex(heavy["last_block"])})
    assert len(logs) > 10_000
    assert heavy["last_block"] - heavy["first_block"] + 1 <= 2000
    assert (
        reloaded.call("eth_getLogs", {"fromBlock": hex(empty["first_block"]), "toBlock": hex(empty["last_block"])})
        == []
    )


def test_reloaded_state_answers_like_the_original_chain(generated: dict[str, Any], reloaded: DevRpc) -> None:
    before = generated["answers"]
    after = _answers(reloaded.url, generated["summary"])
    assert len(before["logs"]) == generated["summary"]["logs"]["total"] > 15_000
    assert after["head"] == before["head"]
    assert after["blocks"] == before["blocks"], "same hashes, timestamps and headers for old blocks"
    assert after["logs"] == before["logs"]
    kinds = {
        (log["topics"][0][:10] if log["topics"] else None, len(log["topics"]), len(log["data"]))
        for log in after["logs"]
    }
    assert len(kinds) >= 10, "standard and non-standard log shapes are all there"


def test_block_blooms_of_the_chain_agree_with_its_logs(tmp_path):
    """The lag guard trusts logsBloom: every block with a transfer log admits a transfer topic, and a sample of
    blocks without one mostly does not (blooms may give false positives, never false negatives)."""
    import datetime as dt

    from backfill.chain.bloom import may_contain_any
    from backfill.decode.events import LOG_FILTER_TOPICS
    from backfill.devnet.node import DevnetParams, start_devnet
    from tests.support.truth import rpc, rpc_batch

    node, _, _ = start_devnet(DevnetParams.with_defaults(dt.date(2024, 1, 1), 3, 300, 7), tmp_path / "s.json")
    try:
        head = int(rpc(node.url, "eth_blockNumber"), 16)
        logs = rpc(node.url, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": hex(head), "topics": LOG_FILTER_TOPICS}])
        with_logs = {int(entry["blockNumber"], 16) for entry in logs}
        headers = rpc_batch(node.url, [("eth_getBlockByNumber", [hex(b), False]) for b in range(head + 1)])
        admitted = {b for b, h in enumerate(headers) if may_contain_any(h["logsBloom"], LOG_FILTER_TOPICS[0])}
        assert with_logs and with_logs <= admitted
        assert len(admitted - with_logs) <= 0.05 * (head + 1 - len(with_logs))
    finally:
        node.stop()
