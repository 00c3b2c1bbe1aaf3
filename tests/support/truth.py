"""Ground truth straight from the chain: one eth_getLogs per block (JSON-RPC batches over plain urllib), the tests'
own web3.py decoder (tests/support/oracle.py), timestamps from block headers, and the days as the devnet mined them (its
generator's record, not the tool's plan). Shares no code with the tool's fetching, splitting, planning or decoding."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from tests.support.oracle import FILTER_TOPICS, oracle_rows


def rpc_batch(url: str, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        answers = {a["id"]: a for a in json.loads(resp.read())}
    out = []
    for i in range(len(calls)):
        if "error" in answers[i]:
            raise RuntimeError(answers[i]["error"])
        out.append(answers[i]["result"])
    return out


def rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    return rpc_batch(url, [(method, params or [])])[0]


@dataclass
class Truth:
    erc20: set[tuple]  # (block_number, timestamp, tx_hash, log_index, token, from, to, value)
    erc1155: set[
        tuple
    ]  # (block_number, timestamp, tx_hash, log_index, batch_index, token, operator, from, to, id, value)
    rejected: int  # logs under our topics that are not valid ERC-20 / ERC-1155 transfers
    logs: list[dict[str, Any]]
    per_day: dict[int, tuple[int, int]]  # day_idx -> (erc20 rows, erc1155 rows)
    per_date: dict[str, tuple[int, int]]  # the same by ISO date


def ground_truth(url: str, days: Iterable[Mapping[str, Any]], batch: int = 250) -> Truth:
    """days: the devnet's record of the days it mined (`chain.summary["days"]` entries: day_idx, date,
    first_block, last_block inclusive)."""
    days = list(days)
    logs: list[dict[str, Any]] = []
    block_day: dict[int, Mapping[str, Any]] = {}
    for day in days:
        blocks = list(range(day["first_block"], day["last_block"] + 1))
        for b in blocks:
            block_day[b] = day
        for i in range(0, len(blocks), batch):
            calls = [
                ("eth_getLogs", [{"fromBlock": hex(b), "toBlock": hex(b), "topics": FILTER_TOPICS}])
                for b in blocks[i : i + batch]
            ]
            for answer in rpc_batch(url, calls):
                logs.extend(answer)
    with_logs = sorted({int(entry["blockNumber"], 16) for entry in logs})
    ts: dict[int, int] = {}
    for i in range(0, len(with_logs), batch):
        chunk = with_logs[i : i + batch]
        for b, blk in zip(chunk, rpc_batch(url, [("eth_getBlockByNumber", [hex(b), False]) for b in chunk])):
            ts[b] = int(blk["timestamp"], 16)
    erc20, erc1155, rejected = oracle_rows(logs)
    counts: dict[int, list[int]] = {d["day_idx"]: [0, 0] for d in days}
    for r in erc20:
        counts[block_day[r.block_number]["day_idx"]][0] += 1
    for r in erc1155:
        counts[block_day[r.block_number]["day_idx"]][1] += 1
    dates = {d["day_idx"]: d["date"] for d in days}
    return Truth(
        erc20={(r.block_number, ts[r.block_number], *r[1:]) for r in erc20},
        erc1155={(r.block_number, ts[r.block_number], *r[1:]) for r in erc1155},
        rejected=rejected,
        logs=logs,
        per_day={d: (a, b) for d, (a, b) in counts.items()},
        per_date={dates[d]: (a, b) for d, (a, b) in counts.items()},
    )
