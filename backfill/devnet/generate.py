"""Deterministic devnet content: fills a fresh anvil chain with N simulated UTC days of transfers.

Day d covers [start_date + d days 00:00 UTC, +1 day). Each day gets `blocks_per_day` blocks with
jittered, strictly increasing timestamps; empty days have blocks but no transfer logs, a heavy day
packs > 10,000 logs into a few blocks, and one "edge" day carries mints, burns, uint256 extremes,
TransferBatch with 0 / 1 / many ids and every non-standard log of Weird.sol.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import random
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.abi import function_signature_to_4byte_selector

DAY_S = 86_400
MIN_BLOCKS_PER_DAY = 8  # room for the special blocks (edge cases, heavy) of one day
MAX_UINT256 = 2**256 - 1
ZERO = "0x" + "00" * 20
ARTIFACTS = Path(__file__).resolve().parent / "contracts"
LOG_KINDS = ("erc20_transfer", "erc1155_single", "erc1155_batch", "weird")  # as in backfill.decode.events
# Fee caps high enough that no tx ever waits for a later block (determinism), cheap on anvil.
_FEES = {"maxFeePerGas": hex(100 * 10**9), "maxPriorityFeePerGas": hex(10**9)}


class DevnetError(RuntimeError):
    """The local chain did not behave as the generator needs (not fresh, tx failed, bad answer)."""


class DevRpc:
    """Minimal synchronous JSON-RPC client over one keep-alive HTTP connection (devnet only)."""

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self.url, self._host, self._port = url, parts.hostname or "127.0.0.1", parts.port or 80
        self._path, self._timeout_s = parts.path or "/", timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self._id = 0

    def _post(self, payload: Any) -> Any:
        body = json.dumps(payload).encode()
        for attempt in (1, 2):  # one reconnect: the server may close an idle keep-alive connection
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
            try:
                self._conn.request("POST", self._path, body, {"Content-Type": "application/json"})
                resp = self._conn.getresponse()
                data = resp.read()
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            if resp.status != 200:
                raise DevnetError(f"{self.url}: HTTP {resp.status}: {data[:200]!r}")
            return json.loads(data)
        raise AssertionError("unreachable")

    def call(self, method: str, *params: Any) -> Any:
        self._id += 1
        answer = self._post({"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)})
        if "error" in answer:
            raise DevnetError(f"{method} failed: {answer['error']}")
        return answer["result"]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Several calls in one request. Anvil runs a batch concurrently: no ordering between them."""
        if not calls:
            return []
        first = self._id + 1
        self._id += len(calls)
        payload = [{"jsonrpc": "2.0", "id": first + i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        answers = sorted(self._post(payload), key=lambda a: a["id"])
        for (method, _), answer in zip(calls, answers, strict=True):
            if "error" in answer:
                raise DevnetError(f"{method} failed: {answer['error']}")
        return [a["result"] for a in answers]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def load_artifact(name: str) -> dict[str, Any]:
    """The compiled {"abi", "bytecode"} of contracts/src/<name>.sol (see scripts/compile-contracts)."""
    artifact: dict[str, Any] = json.loads((ARTIFACTS / f"{name}.json").read_text())
    return artifact


def encode_call(signature: str, *args: Any) -> str:
    """Calldata for a simple signature such as "spray(address,uint256,uint256)" (no tuples)."""
    types = signature[signature.index("(") + 1 : -1]
    type_list = types.split(",") if types else []
    selector = function_signature_to_4byte_selector(signature)
    return "0x" + (selector + abi_encode(type_list, list(args))).hex()


def day_offsets(rng: random.Random, blocks: int, *, at_midnight: bool = False, at_end: bool = False) -> list[int]:
    """Strictly increasing second offsets in [0, 86400) for one day's blocks.

    Intervals are piecewise constant (runs of 1..64 blocks share a random step) so that empty
    stretches can be mined with few RPC calls; `at_midnight` pins the first block to 00:00:00,
    `at_end` pins the last one to 23:59:59.
    """
    if not 0 < blocks <= DAY_S:
        raise ValueError(f"blocks per day must be in 1..{DAY_S}, got {blocks}")
    offsets: list[int] = []
    for _ in range(100):
        first = 0 if at_midnight else rng.randrange(0, min(600, DAY_S - blocks + 1))
        hi = max(1, int(1.8 * (DAY_S - first) / blocks) - 1)  # mean step ~0.9 of the room per block
        offsets, t = [], first
        while len(offsets) < blocks:
            run, step = rng.randint(1, 64), rng.randint(1, hi)
            for _ in range(min(run, blocks - len(offsets))):
                offsets.append(t)
                t += step
        if offsets[-1] < DAY_S:
            break
    else:  # pathological draw: fall back to even spacing
        step = (DAY_S - first) // blocks
        offsets = [first + i * step for i in range(blocks)]
    if at_end:
        offsets = [o + DAY_S - 1 - offsets[-1] for o in offsets]
    return offsets


@dataclass
class Tx:
    """One planned transaction: target, calldata, gas and the logs it must emit, by kind."""

    to: str
    data: str
    gas: int
    logs: Counter[str] = field(default_factory=Counter)


class _Planner:
    """Builds the transactions of each block from one seeded RNG (pure: no RPC)."""

    def __init__(self, rng: random.Random, c: dict[str, str]) -> None:
        self.rng, self.c = rng, c
        self.holders = [f"0x{rng.getrandbits(160):040x}" for _ in range(40)]

    def _who(self) -> str:
        return self.rng.choice(self.holders)

    def _value(self) -> int:
        return self.rng.getrandbits(self.rng.choice((8, 32, 64, 96, 128, 255)))

    def erc20(self, token: str, frm: str, to: str, value: int) -> Tx:
        data = encode_call("emitTransfer(address,address,uint256)", frm, to, value)
        return Tx(self.c[token], data, 80_000, Counter(erc20_transfer=1))

    def spray20(self, token: str, n: int) -> Tx:
        data = encode_call("spray(address,uint256,uint256)", self._who(), n, self.rng.getrandbits(64))
        return Tx(self.c[token], data, 60_000 + 3_500 * n, Counter(erc20_transfer=n))

    def spray1155(self, n: int) -> Tx:
        data = encode_call("spray(address,uint256,uint256)", self._who(), n, self.rng.getrandbits(64))
        return Tx(
            self.c["token1155"], data, 60_000 + 12_000 * n, Counter(erc1155_single=(n + 1) // 2, erc1155_batch=n // 2)
        )

    def single(self, op: str, frm: str, to: str, token_id: int, value: int) -> Tx:
        sig = "emitSingle(address,address,address,uint256,uint256)"
        return Tx(
            self.c["token1155"], encode_call(sig, op, frm, to, token_id, value), 80_000, Counter(erc1155_single=1)
        )

    def batch(self, op: str, frm: str, to: str, ids: list[int], values: list[int]) -> Tx:
        sig = "emitBatch(address,address,address,uint256[],uint256[])"
        return Tx(
            self.c["token1155"],
            encode_call(sig, op, frm, to, ids, values),
            100_000 + 5_000 * len(ids),
            Counter(erc1155_batch=1),
        )

    def weird(self, signature: str, *args: Any) -> Tx:
        return Tx(self.c["weird"], encode_call(signature, *args), 200_000, Counter(weird=1))

    def random_tx(self) -> Tx:
        r = self.rng
        kind = r.choices(("spray20", "spray1155", "erc20", "single", "batch"), (3, 2, 2, 1, 1))[0]
        if kind == "spray20":
            return self.spray20(r.choice(("token20_a", "token20_b")), r.randint(5, 150))
        if kind == "spray1155":
            return self.spray1155(r.randint(2, 60))
        if kind == "erc20":
            return self.erc20(r.choice(("token20_a", "token20_b")), self._who(), self._who(), self._value())
        if kind == "single":
            return self.single(self._who(), self._who(), self._who(), r.randrange(1000), self._value())
        k = r.randint(0, 20)
        return self.batch(
            self._who(),
            self._who(),
            self._who(),
            [r.randrange(1000) for _ in range(k)],
            [self._value() for _ in range(k)],
        )

    def mixed_block(self) -> list[Tx]:
        """Several transfer txs in one block, ERC-20 and ERC-1155 together."""
        return [self.spray20("token20_a", 20), self.spray1155(6), self.erc20("token20_b", self._who(), self._who(), 1)]

    def edge_blocks(self) -> list[list[Tx]]:
        """Mints, burns, 0 and 2^256-1 values / ids, TransferBatch with 0, 1 and 100 ids."""
        h = self.holders
        many_ids = [0, MAX_UINT256] + [self.rng.getrandbits(256) for _ in range(98)]
        many_values = [MAX_UINT256, 0] + [self._value() for _ in range(98)]
        return [
            [
                self.erc20("token20_a", ZERO, h[1], 10**21),
                self.erc20("token20_a", h[1], ZERO, 1),
                self.erc20("token20_a", h[2], h[3], 0),
                self.erc20("token20_b", h[3], h[2], MAX_UINT256),
            ],
            [
                self.single(h[0], ZERO, h[1], 0, 0),
                self.single(h[0], h[1], ZERO, MAX_UINT256, MAX_UINT256),
                self.batch(h[0], h[1], h[2], [], []),
                self.batch(h[0], ZERO, h[2], [MAX_UINT256], [1]),
                self.batch(h[0], h[2], ZERO, many_ids, many_values),
                self.erc20("token20_a", h[4], h[5], 12345),
            ],
        ]

    def weird_block(self) -> list[Tx]:
        """Every non-standard case of Weird.sol once, next to one standard transfer."""
        h, w = self.holders, self.weird
        raw = "transferRawData(address,address,bytes)"
        return [
            w("transfer721(address,address,uint256)", h[1], h[2], 42),
            w(raw, h[1], h[2], bytes(range(1, 32))),
            w(raw, h[1], h[2], b""),
            w(raw, h[1], h[2], b"\x01" * 64),
            w("transferTwoTopics(address,uint256)", h[1], 5),
            w("transferNoIndexed(address,address,uint256)", h[1], h[2], 7),
            w("batchMismatch(address,address,address,uint256[],uint256[])", h[0], h[1], h[2], [1, 2, 3], [10, 20]),
            # offset word says 0x40, then the data stops: truncated ABI
            w("batchRawData(address,address,address,bytes)", h[0], h[1], h[2], b"\x00" * 31 + b"\x40" + b"\x00" * 8),
            w("singleRawData(address,address,address,bytes)", h[0], h[1], h[2], (7).to_bytes(32, "big")),
            w("singleRawData(address,address,address,bytes)", h[0], h[1], h[2], b"\x02" * 96),
            self.erc20("token20_a", h[6], h[7], 99),
        ]

    def heavy_blocks(self) -> list[list[Tx]]:
        """> 10,000 logs in three consecutive blocks, plus a TransferBatch of 500 ids."""
        ids = [self.rng.randrange(10**6) for _ in range(500)]
        big_batch = self.batch(self._who(), self._who(), self._who(), ids, [self._value() for _ in ids])
        return [
            [self.spray20("token20_a", 2000), self.spray20("token20_b", 2000), self.spray1155(500)],
            [self.spray20("token20_a", 2000), self.spray20("token20_a", 2000), big_batch],
            [self.spray20("token20_b", 2000), self.spray20("token20_b", 2000)],
        ]

    def day_plan(self, blocks: int, kind: str, edge: bool) -> dict[int, list[Tx]]:
        """Block index within the day -> its transactions (empty days: none)."""
        if kind == "empty":
            return {}
        r = self.rng
        chosen = sorted(r.sample(range(blocks), min(blocks, r.randint(25, 45))))
        plan = {i: [self.random_tx() for _ in range(r.randint(1, 4))] for i in chosen}
        plan[0] = self.mixed_block()  # the day's first block (at 00:00:00 on day 0) carries logs
        last_tx = self.erc20("token20_b", self._who(), self._who(), self._value())
        plan.setdefault(blocks - 1, []).append(last_tx)  # and its last (at 23:59:59 on day 1)
        special: list[list[Tx]] = []
        if edge:
            special += self.edge_blocks() + [self.weird_block()]
        if kind == "heavy":
            special += self.heavy_blocks()
        if special:
            start = max(0, min(blocks // 2, blocks - len(special)))
            for j, txs in enumerate(special):
                plan.setdefault(min(start + j, blocks - 1), []).extend(txs)
        return plan


def generate(
    rpc_url: str,
    *,
    start_date: dt.date,
    days: int,
    blocks_per_day: int,
    seed: int,
    heavy_day: int | None,
    empty_days: set[int],
) -> dict[str, Any]:
    """Fill a fresh anvil chain (genesis before start_date 00:00 UTC) and return its summary."""
    rng = random.Random(seed)
    rpc = DevRpc(rpc_url)
    try:
        return _Generator(rpc, rng, start_date, blocks_per_day).run(days, heavy_day, set(empty_days))
    finally:
        rpc.close()


class _Generator:
    def __init__(self, rpc: DevRpc, rng: random.Random, start_date: dt.date, blocks_per_day: int) -> None:
        self.rpc, self.rng, self.blocks_per_day = rpc, rng, blocks_per_day
        self.start_ts = int(dt.datetime(start_date.year, start_date.month, start_date.day, tzinfo=dt.UTC).timestamp())
        self.start_date = start_date
        self.sender = rpc.call("eth_accounts")[0]
        self.nonce = int(rpc.call("eth_getTransactionCount", self.sender, "latest"), 16)
        self.interval: int | None = None

    def _send(self, txs: list[Tx]) -> list[str]:
        calls = []
        for tx in txs:
            calls.append(
                (
                    "eth_sendTransaction",
                    [
                        {
                            "from": self.sender,
                            "to": tx.to,
                            "data": tx.data,
                            "gas": hex(tx.gas),
                            "nonce": hex(self.nonce),
                            **_FEES,
                        }
                    ],
                )
            )
            self.nonce += 1
        return self.rpc.batch(calls)

    def _mine_run(self, first_ts: int, count: int, step: int) -> None:
        if count > 1 and step != self.interval:
            self.rpc.call("anvil_setBlockTimestampInterval", step)
            self.interval = step
        self.rpc.call("evm_setNextBlockTimestamp", first_ts)
        self.rpc.call("anvil_mine", hex(count))

    def _deploy(self) -> dict[str, str]:
        deploys = {
            "token20_a": ("Token20", ["string", "string"], ["Alpha", "ALPHA"]),
            "token20_b": ("Token20", ["string", "string"], ["Beta", "BETA"]),
            "token1155": ("Token1155", [], []),
            "weird": ("Weird", [], []),
        }
        txs = [Tx("", load_artifact(n)["bytecode"] + abi_encode(t, a).hex(), 3_000_000) for n, t, a in deploys.values()]
        calls = []
        for tx in txs:
            calls.append(
                (
                    "eth_sendTransaction",
                    [{"from": self.sender, "data": tx.data, "gas": hex(tx.gas), "nonce": hex(self.nonce), **_FEES}],
                )
            )
            self.nonce += 1
        hashes = self.rpc.batch(calls)
        self.rpc.call("evm_mine", self.start_ts - 1800)
        receipts = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        if any(r is None or r["status"] != "0x1" for r in receipts):
            raise DevnetError(f"contract deployment failed: {receipts}")
        return {key: r["contractAddress"] for key, r in zip(deploys, receipts, strict=True)}

    def run(self, days: int, heavy_day: int | None, empty_days: set[int]) -> dict[str, Any]:
        rpc = self.rpc
        if days < 1 or not MIN_BLOCKS_PER_DAY <= self.blocks_per_day <= DAY_S:
            raise ValueError(f"need days >= 1 and {MIN_BLOCKS_PER_DAY} <= blocks_per_day <= {DAY_S}")
        genesis = rpc.call("eth_getBlockByNumber", "latest", False)
        if int(genesis["number"], 16) != 0 or int(genesis["timestamp"], 16) >= self.start_ts - 1800:
            raise DevnetError("generate needs a fresh chain, genesis >= 30 min before start_date 00:00 UTC")
        rpc.call("evm_setAutomine", False)
        contracts = self._deploy()
        planner = _Planner(self.rng, contracts)
        non_empty = [d for d in range(days) if d not in empty_days]
        edge_day = next((d for d in non_empty if d != heavy_day), non_empty[0] if non_empty else None)
        weird_again = non_empty[-1] if len(non_empty) > 1 else None
        expected: Counter[str] = Counter()
        day_rows = []
        block = int(rpc.call("eth_blockNumber"), 16)
        for d in range(days):
            kind = "empty" if d in empty_days else "heavy" if d == heavy_day else "normal"
            offsets = day_offsets(self.rng, self.blocks_per_day, at_midnight=d in (0, 2), at_end=d == 1)
            plan = planner.day_plan(self.blocks_per_day, kind, edge=d == edge_day)
            if d == weird_again and d != edge_day:
                plan.setdefault(len(offsets) // 3, []).extend(planner.weird_block())
            day_ts = self.start_ts + d * DAY_S
            day_logs = self._mine_day(day_ts, offsets, plan)
            day_rows.append(
                {
                    "day_idx": d,
                    "date": (self.start_date + dt.timedelta(days=d)).isoformat(),
                    "kind": kind,
                    "first_block": block + 1,
                    "last_block": block + len(offsets),
                    "tx_blocks": len(plan),
                    "logs": sum(day_logs.values()),
                }
            )
            block += len(offsets)
            expected.update(day_logs)
        if rpc.call("eth_getBlockByNumber", "pending", False)["transactions"]:
            raise DevnetError("transactions left pending after generation")
        # one empty block at the next midnight: the last day is over on chain, as every day of real history is
        # (without it the last day could still grow, and an honest copy leaves it OPEN)
        rpc.call("evm_mine", self.start_ts + days * DAY_S)
        block += 1
        rpc.call("anvil_removeBlockTimestampInterval")
        rpc.call("evm_setAutomine", True)
        head = rpc.call("eth_getBlockByNumber", hex(block), False)
        summary = {
            "chain_id": int(rpc.call("eth_chainId"), 16),
            "head_block": block,
            "head_hash": head["hash"],
            "start_date": self.start_date.isoformat(),
            "days": day_rows,
            "contracts": contracts,
            "logs": {k: expected[k] for k in LOG_KINDS} | {"total": sum(expected.values())},
        }
        self._verify(summary)
        return summary

    def _mine_day(self, day_ts: int, offsets: list[int], plan: dict[int, list[Any]]) -> Counter[str]:
        """Mine one day's blocks at their offsets: a planned block with its transactions, a run of empty blocks
        at a steady step in one call. Returns the logs the day's transactions emit, by kind."""
        day_logs: Counter[str] = Counter()
        i = 0
        while i < len(offsets):
            if i in plan:
                self._send(plan[i])
                self.rpc.call("evm_mine", day_ts + offsets[i])
                for tx in plan[i]:
                    day_logs.update(tx.logs)
                i += 1
                continue
            j, step = i + 1, (offsets[i + 1] - offsets[i]) if i + 1 < len(offsets) else 1
            while j < len(offsets) and j not in plan and offsets[j] - offsets[j - 1] == step:
                j += 1
            self._mine_run(day_ts + offsets[i], j - i, step)
            i = j
        return day_logs

    def _verify(self, summary: dict[str, Any]) -> None:
        """Re-read the chain: day boundaries and per-day log counts must match the plan."""
        addresses = list(summary["contracts"].values())
        for row in summary["days"]:
            first, last = self.rpc.batch(
                [
                    ("eth_getBlockByNumber", [hex(row["first_block"]), False]),
                    ("eth_getBlockByNumber", [hex(row["last_block"]), False]),
                ]
            )
            lo = self.start_ts + row["day_idx"] * DAY_S
            if not lo <= int(first["timestamp"], 16) <= int(last["timestamp"], 16) < lo + DAY_S:
                raise DevnetError(f"day {row['day_idx']}: blocks outside [{lo}, {lo + DAY_S})")
            logs = self.rpc.call(
                "eth_getLogs",
                {"fromBlock": hex(row["first_block"]), "toBlock": hex(row["last_block"]), "address": addresses},
            )
            if len(logs) != row["logs"]:
                raise DevnetError(f"day {row['day_idx']}: {len(logs)} logs on chain, {row['logs']} planned")
