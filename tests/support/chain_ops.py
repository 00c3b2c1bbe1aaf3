"""Change a running devnet chain the way a real chain changes: new days of blocks (`grow`) and a replaced tip
(`reorg`). Test support for the sync / follow / reorg tests; it drives the node with plain JSON-RPC and shares no
code with the product's copy path.

How the node does it (anvil), as far as the tests depend on it:
- A node loaded from a saved state keeps time from the wall clock: `grow` winds it back (`evm_setTime`) and mines
  every block with an explicit timestamp (`evm_mine <ts>`), automine off while it sends transactions.
- `anvil_reorg [depth, [[tx, offset], ...]]` rolls the chain back to head - depth and mines `depth` new blocks;
  block `offset` (0 = the first new block, at most depth - 1) gets the transactions paired with it. A tx is a
  request object (signed by the node, nonces counted from the common block) or a raw signed tx. Transactions the
  node finds invalid are dropped silently, so `reorg` checks the logs that arrived.
- Timestamps: the rollback resets the node's clock to the common block's timestamp and clears a pending
  `evm_setNextBlockTimestamp`, so the new blocks get about that timestamp, several of them the very same second.
  A block timestamp interval survives the rollback: with `anvil_setBlockTimestampInterval I` the new blocks are at
  common + I, common + 2I, ... `reorg` picks I so that every new block lies in the UTC day of the block it
  replaces (and reports the timestamps).
- The rollback needs the node's state at the common block: a node started with pruned state history refuses
  (``Required data unavailable``), and blocks that came from a loaded state cannot be the common block either.
  Reorg only blocks mined on this node, on a node that keeps state history.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from backfill.devnet.generate import DevRpc, encode_call

DAY_S = 86_400
FEES = {"maxFeePerGas": hex(100 * 10**9), "maxPriorityFeePerGas": hex(10**9)}
ERC20 = "emitTransfer(address,address,uint256)"
SINGLE = "emitSingle(address,address,address,uint256,uint256)"
BATCH = "emitBatch(address,address,address,uint256[],uint256[])"


def midnight(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())


def utc_day(ts: int) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date()


def _block(rpc: DevRpc, number: int | str) -> dict[str, Any]:
    block: dict[str, Any] = rpc.call("eth_getBlockByNumber", number if isinstance(number, str) else hex(number), False)
    return block


def _transfer(rng: random.Random, contracts: dict[str, str], kind: str) -> dict[str, str]:
    """One call that emits exactly one log of `kind` (erc20 / single / batch), random parties and amounts."""

    def who() -> str:
        return f"0x{rng.getrandbits(160):040x}"

    def amount() -> int:
        return rng.getrandbits(rng.choice((8, 64, 128, 256)))

    if kind == "erc20":
        token = contracts[rng.choice(("token20_a", "token20_b"))]
        return {"to": token, "data": encode_call(ERC20, who(), who(), amount()), "gas": hex(80_000)}
    if kind == "single":
        data = encode_call(SINGLE, who(), who(), who(), rng.randrange(1000), amount())
        return {"to": contracts["token1155"], "data": data, "gas": hex(80_000)}
    k = rng.randint(1, 5)
    data = encode_call(BATCH, who(), who(), who(), [rng.randrange(1000) for _ in range(k)], [amount()] * k)
    return {"to": contracts["token1155"], "data": data, "gas": hex(100_000 + 5_000 * k)}


def _plan_day(rng: random.Random, contracts: dict[str, str], blocks: int) -> dict[int, list[dict[str, str]]]:
    """Block index -> calls: one of each kind in the day's first block, then 1..3 random ones in about a third."""
    plan = {0: [_transfer(rng, contracts, kind) for kind in ("erc20", "single", "batch")]}
    for i in sorted(rng.sample(range(1, blocks), (blocks - 1) // 3)) if blocks > 1 else []:
        plan[i] = [
            _transfer(rng, contracts, rng.choice(("erc20", "single", "batch"))) for _ in range(rng.randint(1, 3))
        ]
    return plan


def grow(
    url: str,
    summary: dict[str, Any],
    first_day: dt.date,
    days: int,
    blocks_per_day: int = 40,
    seed: int = 0,
    close: bool = True,
) -> list[dict[str, Any]]:
    """Mine `days` UTC days from `first_day` on: `blocks_per_day` blocks each, strictly increasing timestamps inside
    the day, ERC-20 Transfer, ERC-1155 TransferSingle and TransferBatch logs in some of them (from `seed`). With
    `close`, one empty block at the next day's 00:00:00 ends the last day. One row per day:
    {"date" (ISO), "first_block", "last_block", "logs"}.

    `first_day` must come after the head block's day, or be the head's day when the head leaves room for the
    blocks after it (as after a closing block at 00:00:00)."""
    if days < 1 or not 1 <= blocks_per_day <= DAY_S - 1:
        raise ValueError(f"need days >= 1 and 1 <= blocks_per_day < {DAY_S}, got {days}, {blocks_per_day}")
    rng = random.Random(seed)
    rpc = DevRpc(url)
    try:
        head = _block(rpc, "latest")
        head_ts = int(head["timestamp"], 16)
        lo = 0  # the first offset in first_day a new block may take
        if first_day < utc_day(head_ts):
            raise ValueError(f"first_day {first_day} is before the head block's day {utc_day(head_ts)}")
        if first_day == utc_day(head_ts):
            lo = head_ts - midnight(first_day) + 1
            if DAY_S - lo < blocks_per_day:
                raise ValueError(
                    f"no room for {blocks_per_day} blocks in {first_day} after the head block "
                    f"{int(head['number'], 16)} at {dt.datetime.fromtimestamp(head_ts, dt.UTC):%H:%M:%S}"
                )
        sender = rpc.call("eth_accounts")[0]
        nonce = int(rpc.call("eth_getTransactionCount", sender, "latest"), 16)
        number = int(head["number"], 16)
        rows, sent = [], []
        rpc.call("evm_setAutomine", False)
        try:
            rpc.call("evm_setTime", head_ts)  # a loaded node's clock runs from the wall clock
            for d in range(days):
                day = first_day + dt.timedelta(days=d)
                start = lo if d == 0 else 0
                offsets = sorted(rng.sample(range(start, DAY_S), blocks_per_day))
                plan = _plan_day(rng, summary["contracts"], blocks_per_day)
                logs = 0
                for i, offset in enumerate(offsets):
                    for call in plan.get(i, []):
                        tx = {"from": sender, "nonce": hex(nonce), **call, **FEES}
                        sent.append(rpc.call("eth_sendTransaction", tx))
                        nonce += 1
                        logs += 1  # each call emits one log
                    rpc.call("evm_mine", midnight(day) + offset)
                rows.append(
                    {
                        "date": day.isoformat(),
                        "first_block": number + 1,
                        "last_block": number + blocks_per_day,
                        "logs": logs,
                    }
                )
                number += blocks_per_day
            if close:
                rpc.call("evm_mine", midnight(first_day + dt.timedelta(days=days)))
                number += 1
        finally:
            rpc.call("evm_setAutomine", True)
        receipts = rpc.batch([("eth_getTransactionReceipt", [h]) for h in sent])
        failed = [h for h, r in zip(sent, receipts, strict=True) if r is None or r["status"] != "0x1"]
        if failed or int(rpc.call("eth_blockNumber"), 16) != number:
            raise RuntimeError(
                f"grow: {len(failed)} transactions not mined or failed, head {rpc.call('eth_blockNumber')}"
            )
        return rows
    finally:
        rpc.close()


def mine_block(url: str, summary: dict[str, Any], step_s: int = 10, seed: int = 0) -> dict[str, Any]:
    """Mine one block `step_s` seconds after the head, carrying one log of each kind (erc20, single, batch), the
    way a live chain adds a block. Returns {"date", "first_block", "last_block", "logs"} like a `grow` row."""
    rng = random.Random(seed)
    rpc = DevRpc(url)
    try:
        head = _block(rpc, "latest")
        ts = int(head["timestamp"], 16) + step_s
        sender = rpc.call("eth_accounts")[0]
        nonce = int(rpc.call("eth_getTransactionCount", sender, "latest"), 16)
        calls = [_transfer(rng, summary["contracts"], kind) for kind in ("erc20", "single", "batch")]
        rpc.call("evm_setAutomine", False)
        try:
            rpc.call("evm_setTime", ts - 1)
            sent = [
                rpc.call("eth_sendTransaction", {"from": sender, "nonce": hex(nonce + i), **call, **FEES})
                for i, call in enumerate(calls)
            ]
            rpc.call("evm_mine", ts)
        finally:
            rpc.call("evm_setAutomine", True)
        receipts = rpc.batch([("eth_getTransactionReceipt", [h]) for h in sent])
        if any(r is None or r["status"] != "0x1" for r in receipts):
            raise RuntimeError(f"mine_block: a transaction failed or was not mined: {receipts}")
        number = int(head["number"], 16) + 1
        return {"date": utc_day(ts).isoformat(), "first_block": number, "last_block": number, "logs": len(calls)}
    finally:
        rpc.close()


def _interval(common_ts: int, old_ts: list[int]) -> int | None:
    """A step I >= 1 that puts common_ts + i * I (i = 1..depth) in the UTC day of old_ts[i - 1], the one closest to
    the old blocks' mean spacing; None if there is none."""
    lo, hi = 1, 10**12
    for i, ts in enumerate(old_ts, start=1):
        day_start = midnight(utc_day(ts))
        lo = max(lo, -(-(day_start - common_ts) // i))
        hi = min(hi, (day_start + DAY_S - 1 - common_ts) // i)
    if lo > hi:
        return None
    return min(hi, max(lo, round((old_ts[-1] - common_ts) / len(old_ts))))


def _logs(rpc: DevRpc, first: int, last: int) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = rpc.call("eth_getLogs", {"fromBlock": hex(first), "toBlock": hex(last)})
    return logs


def reorg(url: str, summary: dict[str, Any], depth: int, seed: int = 1, transfers: bool = True) -> dict[str, Any]:
    """Replace the last `depth` blocks with new ones (anvil_reorg), each in the UTC day of the block it replaces.
    With `transfers`, the new blocks carry other ERC-20 / ERC-1155 transfers (other parties and amounts, at least
    one in the first new block); without, only a plain value transfer in the first new block (no logs), so the
    hashes still change. Returns {"blocks": [first, last], "old_hashes", "new_hashes" (number -> hash),
    "old_logs", "new_logs" (counts), "old_timestamps", "new_timestamps" (number -> ts), "interval"}.

    The node must keep state history and the block before the replaced ones must have been mined on it."""
    rng = random.Random(seed)
    rpc = DevRpc(url)
    try:
        head = int(rpc.call("eth_blockNumber"), 16)
        if not 1 <= depth <= head:
            raise ValueError(f"depth must be in 1..{head}, got {depth}")
        first = head - depth + 1
        old = {n: _block(rpc, n) for n in range(first - 1, head + 1)}
        old_ts = [int(old[n]["timestamp"], 16) for n in range(first, head + 1)]
        common_ts = int(old[first - 1]["timestamp"], 16)
        step = _interval(common_ts, old_ts)
        if step is None:
            raise ValueError(f"no timestamp step keeps blocks {first}..{head} in their days after {common_ts}")
        old_logs = _logs(rpc, first, head)
        seen = {(tuple(log["topics"]), log["data"]) for log in old_logs}
        pairs: list[list[Any]] = []
        sender = rpc.call("eth_accounts")[0]
        if transfers:
            offsets = [0] + [i for i in range(1, depth) if rng.random() < 0.5]
            for i, offset in enumerate(offsets):
                for kind in ("erc20", "single", "batch") if i == 0 else [rng.choice(("erc20", "single", "batch"))]:
                    pairs.append([{"from": sender, **_transfer(rng, summary["contracts"], kind)}, offset])
        else:
            pairs.append([{"from": sender, "to": f"0x{rng.getrandbits(160):040x}", "value": hex(1)}, 0])
        rpc.call("anvil_setBlockTimestampInterval", step)
        try:
            rpc.call("anvil_reorg", depth, pairs)
        except RuntimeError as e:
            if "unavailable" in str(e) or "OutOfRange" in str(e):  # no state / no nonce at the common block
                raise RuntimeError(
                    f"{e}: the node keeps no state for block {first - 1} (pruned state history, or a block from a "
                    "loaded state); reorg only blocks mined on a node that keeps state history"
                ) from e
            raise
        finally:
            rpc.call("anvil_removeBlockTimestampInterval")
        new = {n: _block(rpc, n) for n in range(first, head + 1)}
        new_logs = _logs(rpc, first, head)
        planned = len(pairs) if transfers else 0
        if int(rpc.call("eth_blockNumber"), 16) != head or len(new_logs) != planned:
            raise RuntimeError(f"reorg: head {rpc.call('eth_blockNumber')}, {len(new_logs)} logs of {planned}")
        if any(new[n]["hash"] == old[n]["hash"] for n in new):
            raise RuntimeError("reorg: a new block has its old hash (its transactions were dropped)")
        if any((tuple(log["topics"]), log["data"]) in seen for log in new_logs):
            raise RuntimeError("reorg: a new log equals an orphaned one (change the seed)")
        return {
            "blocks": [first, head],
            "old_hashes": {n: old[n]["hash"] for n in range(first, head + 1)},
            "new_hashes": {n: b["hash"] for n, b in new.items()},
            "old_logs": len(old_logs),
            "new_logs": len(new_logs),
            "old_timestamps": {n: int(old[n]["timestamp"], 16) for n in range(first, head + 1)},
            "new_timestamps": {n: int(b["timestamp"], 16) for n, b in new.items()},
            "interval": step,
        }
    finally:
        rpc.close()
