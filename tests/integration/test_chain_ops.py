"""The test chain's own changes (tests/support/chain_ops.py), checked with plain eth_getBlockByNumber / eth_getLogs:
`grow` mines whole UTC days of transfers and closes the last one at midnight; `reorg` replaces the tip with other
blocks and other transfers, each block in the day of the one it replaces."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from backfill.devnet.generate import DevRpc
from tests.integration.conftest import CHAIN_PARAMS
from tests.integration.harness import Chain
from tests.support.chain_ops import grow, midnight, reorg, utc_day

TOPICS = {
    "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef": "Transfer",
    "0xc3d58168c5ae7397731d063d5bbf3d657854427343f4c083240f7aacaa2d0f62": "TransferSingle",
    "0x4a39dc06d4c0dbc64b70af90fd698a233a518aa5d07e595d983b8c0526c8f7fb": "TransferBatch",
}
# The day after the generated days: the head block is the last of the day before, or a closing block at its
# 00:00:00; grow takes either.
NEXT_DAY = CHAIN_PARAMS.start_date + dt.timedelta(days=CHAIN_PARAMS.days)


def blocks(rpc: DevRpc, first: int, last: int) -> dict[int, dict[str, Any]]:
    answers = rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in range(first, last + 1)])
    return {int(b["number"], 16): b for b in answers}


def logs(rpc: DevRpc, first: int, last: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = rpc.call("eth_getLogs", {"fromBlock": hex(first), "toBlock": hex(last)})
    return found


def ts(block: dict[str, Any]) -> int:
    return int(block["timestamp"], 16)


def test_grow_mines_whole_days_of_transfers_and_closes_the_last(tip_chain: Chain) -> None:
    chain, rpc = tip_chain, DevRpc(tip_chain.url)
    try:
        head = int(rpc.call("eth_blockNumber"), 16)
        with pytest.raises(ValueError, match="before the head block's day"):
            grow(chain.url, chain.summary, NEXT_DAY - dt.timedelta(days=2), days=1)

        rows = grow(chain.url, chain.summary, NEXT_DAY, days=2, blocks_per_day=40, seed=3)
        assert [r["date"] for r in rows] == [NEXT_DAY.isoformat(), (NEXT_DAY + dt.timedelta(days=1)).isoformat()]
        assert rows[0]["first_block"] == head + 1 and rows[1]["first_block"] == rows[0]["last_block"] + 1
        grown = blocks(rpc, head, rows[1]["last_block"] + 1)
        for row in rows:
            assert row["last_block"] - row["first_block"] + 1 == 40
            day = dt.date.fromisoformat(row["date"])
            stamps = [ts(grown[n]) for n in range(row["first_block"], row["last_block"] + 1)]
            assert midnight(day) <= stamps[0] and stamps[-1] < midnight(day) + 86_400, row
            day_logs = logs(rpc, row["first_block"], row["last_block"])
            assert len(day_logs) == row["logs"] > 0, row
            assert {TOPICS.get(log["topics"][0]) for log in day_logs} == set(TOPICS.values()), row
        stamps = [ts(grown[n]) for n in sorted(grown)]
        assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False)), "timestamps strictly increase"

        closing = grown[rows[1]["last_block"] + 1]
        assert int(rpc.call("eth_blockNumber"), 16) == rows[1]["last_block"] + 1
        assert ts(closing) == midnight(NEXT_DAY + dt.timedelta(days=2)) and closing["transactions"] == []

        # a closed day's next day starts at the closing block: grow from the same day, after it
        more = grow(chain.url, chain.summary, NEXT_DAY + dt.timedelta(days=2), days=1, blocks_per_day=8, close=False)
        assert more[0]["first_block"] == rows[1]["last_block"] + 2
        assert int(rpc.call("eth_blockNumber"), 16) == more[0]["last_block"]
        assert len(logs(rpc, more[0]["first_block"], more[0]["last_block"])) == more[0]["logs"]
    finally:
        rpc.close()


def test_reorg_replaces_the_tip_with_other_blocks_and_transfers_in_the_same_days(tip_chain: Chain) -> None:
    chain, rpc = tip_chain, DevRpc(tip_chain.url)
    try:
        rows = grow(chain.url, chain.summary, NEXT_DAY, days=2, blocks_per_day=40, seed=5)
        head = rows[-1]["last_block"] + 1  # the closing block: the reorg crosses midnight
        first = head - 3
        before = blocks(rpc, first - 1, head)
        old_logs = logs(rpc, first, head)

        result = reorg(chain.url, chain.summary, depth=4, seed=2)
        assert result["blocks"] == [first, head]
        assert int(rpc.call("eth_blockNumber"), 16) == head
        after = blocks(rpc, first - 1, head)
        assert after[first - 1]["hash"] == before[first - 1]["hash"], "the common block stays"
        for n in range(first, head + 1):
            assert result["old_hashes"][n] == before[n]["hash"] != after[n]["hash"] == result["new_hashes"][n], n
            assert after[n]["parentHash"] == after[n - 1]["hash"], n
            assert utc_day(ts(after[n])) == utc_day(ts(before[n])), (n, ts(before[n]), ts(after[n]))
            assert ts(after[n]) > ts(after[n - 1]), n
        assert ts(after[head]) >= midnight(NEXT_DAY + dt.timedelta(days=2)), "the last day stays closed"

        new_logs = logs(rpc, first, head)
        assert result["old_logs"] == len(old_logs) and result["new_logs"] == len(new_logs) > 0
        key = lambda log: (log["transactionHash"], tuple(log["topics"]), log["data"])  # noqa: E731
        assert not {key(log) for log in old_logs} & {key(log) for log in new_logs}, "orphaned logs are gone"
        assert {log["blockHash"] for log in new_logs} <= set(result["new_hashes"].values())
        assert not any(log.get("removed") for log in new_logs)
        assert {TOPICS.get(log["topics"][0]) for log in new_logs} == set(TOPICS.values())

        # without transfers: other blocks all the same, and the logs of the replaced blocks are gone
        again = reorg(chain.url, chain.summary, depth=2, seed=9, transfers=False)
        assert again["blocks"] == [head - 1, head] and again["new_logs"] == 0
        last = blocks(rpc, head - 2, head)
        for n in (head - 1, head):
            assert last[n]["hash"] == again["new_hashes"][n] != after[n]["hash"]
            assert last[n]["parentHash"] == last[n - 1]["hash"]
            assert utc_day(ts(last[n])) == utc_day(ts(after[n]))
        assert logs(rpc, head - 1, head) == []
    finally:
        rpc.close()
