"""`--confirmations 12` on a chain that goes on past the plan, on a node of the test's own (it mines blocks).

A plan ending before the head's day is not clipped; a plan reaching the head's day stops at head - 12, records
the day as clipped and leaves it OPEN (the run is "caught up", not complete); when the chain has grown, a new
`backfill start` over the same range copies the rest of that day, nothing twice, and the day is COMPLETE.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill.devnet.generate import DevRpc, encode_call
from backfill.devnet.node import start_devnet
from backfill.store.embedded import stop_server
from tests.integration.conftest import CHAIN_PARAMS
from tests.integration.harness import Chain, assert_exact, backfill, open_store, store_rows

pytestmark = pytest.mark.slow
CONFIRMATIONS = 12
ENV = {"BACKFILL_ON_COMPLETE": "0"}
_FEES = {"maxFeePerGas": hex(100 * 10**9), "maxPriorityFeePerGas": hex(10**9)}


@pytest.fixture
def own_chain(chain_state: Path) -> Iterator[Chain]:
    """The session's chain on a node of this test alone, loaded from the saved state: it may be mined on."""
    node, summary, _ = start_devnet(CHAIN_PARAMS, chain_state)
    try:
        yield Chain(url=node.url, start=CHAIN_PARAMS.start_date, days=CHAIN_PARAMS.days, summary=summary)
    finally:
        node.stop()


def start(chain: Chain, data_dir: Path, first: int, last: int):
    return backfill(
        [
            "start",
            "--foreground",
            "--from",
            chain.day(first),
            "--to",
            chain.day(last),
            "--confirmations",
            str(CONFIRMATIONS),
        ],
        data_dir,
        chain,
        shards=2,
        extra_env=ENV,
        timeout=300,
    )


def plan_rows(chain: Chain, data_dir: Path) -> dict[int, tuple[int, int, bool]]:
    """The recorded plan (backfill_days): the chain's day number -> (start_block, end_block, clipped)."""
    store = open_store(data_dir)
    try:
        return {(p.day - chain.start).days: (p.start_block, p.end_block, p.clipped) for p in store.read_plan()}
    finally:
        store.close()


def assert_copy_is(store, chain: Chain, ranges: dict[int, tuple[int, int]]) -> None:
    """The tables after FINAL hold exactly the chain's transfers of these blocks (day -> first, last), the truth
    decoded by the oracle; the ranges come from the devnet's record and the head, not from the tool's plan."""
    from tests.support.truth import ground_truth

    days = [{"day_idx": i, "date": chain.day(i), "first_block": a, "last_block": b} for i, (a, b) in ranges.items()]
    truth = ground_truth(chain.url, days)
    erc20, erc1155 = store_rows(store)
    assert len(erc20) == len(set(erc20)) and len(erc1155) == len(set(erc1155)), "duplicates after FINAL"
    assert set(erc20) == truth.erc20, (len(truth.erc20 - set(erc20)), len(set(erc20) - truth.erc20))
    assert set(erc1155) == truth.erc1155, (len(truth.erc1155 - set(erc1155)), len(set(erc1155) - truth.erc1155))


def head_of(url: str) -> tuple[int, int]:
    rpc = DevRpc(url)
    try:
        block = rpc.call("eth_getBlockByNumber", "latest", False)
        return int(block["number"], 16), int(block["timestamp"], 16)
    finally:
        rpc.close()


def test_a_plan_ending_before_the_head_day_is_not_clipped(own_chain: Chain, tmp_path: Path) -> None:
    chain, data_dir = own_chain, tmp_path / "data"
    days = {d["day_idx"]: d for d in chain.summary["days"]}
    run = start(chain, data_dir, 7, 8)
    try:
        assert run.returncode == 0, run.stderr
        assert plan_rows(chain, data_dir) == {
            i: (days[i]["first_block"], days[i]["last_block"], False) for i in (7, 8)
        }  # whole, not clipped
        store = open_store(data_dir)
        assert_exact(store, chain)
        assert {cp["status"] for cp in store.checkpoints().values()} == {"COMPLETE"}
        store.close()
    finally:
        stop_server(data_dir)


def mine(url: str, summary: dict[str, Any], timestamps: list[int], transfers_at: set[int]) -> list[int]:
    """Mine one block per timestamp (automine off meanwhile), an ERC-20 transfer in the blocks of the given
    indices; the new blocks' numbers."""
    rpc = DevRpc(url)
    try:
        sender = rpc.call("eth_accounts")[0]
        token = summary["contracts"]["token20_a"]
        rpc.call("evm_setAutomine", False)
        # a node loaded from a saved state keeps time from the wall clock: wind it back to the chain's time
        rpc.call("evm_setTime", timestamps[0] - 1)
        numbers = []
        for i, ts in enumerate(timestamps):
            if i in transfers_at:
                data = encode_call(
                    "emitTransfer(address,address,uint256)", "0x" + "a1" * 20, "0x" + "b2" * 20, 1000 + i
                )
                rpc.call(
                    "eth_sendTransaction", {"from": sender, "to": token, "data": data, "gas": hex(80_000), **_FEES}
                )
            rpc.call("evm_mine", ts)
            numbers.append(int(rpc.call("eth_blockNumber"), 16))
        rpc.call("evm_setAutomine", True)
        return numbers
    finally:
        rpc.close()


def test_the_head_day_is_clipped_at_the_safe_head_left_open_and_completed_once_the_chain_grew(
    own_chain: Chain, tmp_path: Path
) -> None:
    chain, data_dir = own_chain, tmp_path / "data"
    days = {d["day_idx"]: d for d in chain.summary["days"]}
    last = chain.days - 1
    head, head_ts = head_of(chain.url)
    midnight = int(dt.datetime.combine(chain.start + dt.timedelta(days=chain.days), dt.time(), dt.UTC).timestamp())
    assert (head, head_ts) == (days[last]["last_block"] + 1, midnight), "the chain's closing block ends the last day"
    run = start(chain, data_dir, last - 1, last)
    try:
        assert run.returncode == 0, run.stderr
        assert "OPEN" in run.stdout and "caught up" in run.stdout, run.stdout
        assert plan_rows(chain, data_dir) == {
            last - 1: (days[last - 1]["first_block"], days[last - 1]["last_block"], False),
            last: (days[last]["first_block"], head - CONFIRMATIONS, True),
        }  # clipped at head - 12
        store = open_store(data_dir)
        whole = (days[last - 1]["first_block"], days[last - 1]["last_block"])
        assert_copy_is(store, chain, {last - 1: whole, last: (days[last]["first_block"], head - CONFIRMATIONS)})
        for table in ("erc20_transfers_staging", "erc1155_transfers_staging", "block_timestamps"):
            held_back = store.scalar(
                f"SELECT count() FROM {table} WHERE block_number > %(b)s", {"b": head - CONFIRMATIONS}
            )
            assert int(held_back) == 0, (table, held_back)
        statuses = {i: store.checkpoints()[p.day_idx]["status"] for i, p in enumerate(store.read_plan())}
        assert statuses == {0: "COMPLETE", 1: "OPEN"}, statuses  # the day at the head is not over: OPEN
        store.close()

        # the chain grows past the confirmations: the closing block is deep enough, the last day is over
        mine(chain.url, chain.summary, [midnight + 10 * i for i in range(1, CONFIRMATIONS + 3)], {1})

        again = start(chain, data_dir, last - 1, last)
        assert again.returncode == 0, again.stderr
        assert "backfill complete" in again.stdout, again.stdout
        plan = plan_rows(chain, data_dir)
        assert plan[last] == (days[last]["first_block"], days[last]["last_block"], False), plan
        store = open_store(data_dir)
        # the rest of the day, nothing twice, nothing of the next day
        assert_copy_is(store, chain, {last - 1: whole, last: (days[last]["first_block"], days[last]["last_block"])})
        assert {cp["status"] for cp in store.checkpoints().values()} == {"COMPLETE"}
        store.close()
    finally:
        stop_server(data_dir)
