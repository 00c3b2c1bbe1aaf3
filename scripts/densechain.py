"""A mainnet-shaped chain for the benchmarks: many transfer logs per block, days of a few hundred thousand logs.

The standard devnet (60 days x 2,000 blocks) carries ~1.5 transfer logs per block, so a copy of it is mostly
start-up and per-window cost. Mainnet carries a few hundred transfers per block and ~1M a day; this chain
puts `logs_per_block` logs in every block (80 % ERC-20 Transfer from Token20.spray, 20 % ERC-1155
TransferSingle/TransferBatch from Token1155.spray), `blocks_per_day` blocks spread over each day.

    state, meta = ensure_dense(days=8, blocks_per_day=1000, logs_per_block=250)   # cached under data/bench/
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from backfill.devnet.generate import _FEES, DevRpc, encode_call, load_artifact
from backfill.devnet.node import Anvil, dump_state

REPO = Path(__file__).resolve().parents[1]
START = dt.date(2024, 1, 1)
MIDNIGHT = int(dt.datetime(START.year, START.month, START.day, tzinfo=dt.timezone.utc).timestamp())
VERSION = 2  # bump when the layout changes


def build(
    rpc: DevRpc,
    days: int,
    blocks_per_day: int,
    logs_per_block: int,
    erc1155_share: float = 0.2,
    total_logs: int | None = None,
) -> dict[str, Any]:
    """Fill a fresh node (genesis before MIDNIGHT): `logs_per_block` transfer logs in every block, a share of them
    ERC-1155; with `total_logs`, the chain stops after that many logs (the last block carries the rest)."""
    from eth_abi import encode

    sender = rpc.call("eth_accounts")[0]
    rpc.call("evm_setAutomine", False)
    nonce = int(rpc.call("eth_getTransactionCount", sender, "pending"), 16)
    deploys = [
        load_artifact("Token20")["bytecode"] + encode(["string", "string"], ["Dense", "DNS"]).hex(),
        load_artifact("Token1155")["bytecode"],
    ]
    hashes = rpc.batch(
        [
            (
                "eth_sendTransaction",
                [{"from": sender, "data": d, "gas": hex(5_000_000), "nonce": hex(nonce + i), **_FEES}],
            )
            for i, d in enumerate(deploys)
        ]
    )
    nonce += len(deploys)
    rpc.call("evm_mine", MIDNIGHT - 1800)
    token20, token1155 = (rpc.call("eth_getTransactionReceipt", h)["contractAddress"] for h in hashes)
    step = 86_400 // blocks_per_day
    left = days * blocks_per_day * logs_per_block if total_logs is None else total_logs
    logs = 0
    for day in range(days):
        for b in range(blocks_per_day):
            n = min(logs_per_block, left - logs)
            if n <= 0:
                break
            seed = day * blocks_per_day + b
            n1155 = int(n * erc1155_share)
            calls = []
            for token, count in ((token20, n - n1155), (token1155, n1155)):
                if count:
                    calls.append(
                        (
                            "eth_sendTransaction",
                            [
                                {
                                    "from": sender,
                                    "to": token,
                                    "gas": hex(25_000_000),
                                    "nonce": hex(nonce + len(calls)),
                                    **_FEES,
                                    "data": encode_call("spray(address,uint256,uint256)", sender, count, seed),
                                }
                            ],
                        )
                    )
            rpc.batch(calls)
            nonce += len(calls)
            logs += n
            rpc.call("evm_mine", MIDNIGHT + day * 86_400 + 30 + b * step)
    rpc.call("evm_mine", MIDNIGHT + days * 86_400 + 10)  # the first block of the next day closes the last day
    head = int(rpc.call("eth_blockNumber"), 16)
    return {
        "days": days,
        "first_block": 2,
        "last_block": head - 1,
        "head_block": head,
        "logs": logs,
        "first_day": START.isoformat(),
        "last_day": (START + dt.timedelta(days=days - 1)).isoformat(),
    }


def ensure_dense(days: int, blocks_per_day: int, logs_per_block: int) -> tuple[Path, dict[str, Any]]:
    """The saved state of the dense chain with these parameters, built (a few minutes) when missing."""
    name = f"dense-{days}x{blocks_per_day}x{logs_per_block}-v{VERSION}"
    state = REPO / "data" / "bench" / f"{name}.json"
    meta_path = state.with_name(f"{name}.meta.json")
    if state.is_file() and meta_path.is_file():
        return state, json.loads(meta_path.read_text())
    t0 = time.monotonic()
    with Anvil(genesis_timestamp=MIDNIGHT - 3600, extra_args=("--gas-limit", "60000000")) as node:
        rpc = DevRpc(node.url)
        try:
            meta = build(rpc, days, blocks_per_day, logs_per_block)
        finally:
            rpc.close()
        dump_state(node.url, state)
    meta["built_s"] = round(time.monotonic() - t0, 1)
    meta_path.write_text(json.dumps(meta, indent=1))
    return state, meta
