"""The one table of event signatures: it feeds both the eth_getLogs filter and the decoder."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventKind:
    name: str  # "erc20_transfer" | "erc1155_single" | "erc1155_batch"
    signature: str
    topic0: str


# topic0 = keccak256(signature); written out so workers need no keccak (tests check each against it).
ERC20_TRANSFER = EventKind(
    "erc20_transfer",
    "Transfer(address,address,uint256)",
    "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
)
ERC1155_SINGLE = EventKind(
    "erc1155_single",
    "TransferSingle(address,address,address,uint256,uint256)",
    "0xc3d58168c5ae7397731d063d5bbf3d657854427343f4c083240f7aacaa2d0f62",
)
ERC1155_BATCH = EventKind(
    "erc1155_batch",
    "TransferBatch(address,address,address,uint256[],uint256[])",
    "0x4a39dc06d4c0dbc64b70af90fd698a233a518aa5d07e595d983b8c0526c8f7fb",
)

EVENTS: dict[str, EventKind] = {e.topic0: e for e in (ERC20_TRANSFER, ERC1155_SINGLE, ERC1155_BATCH)}

# eth_getLogs filter: any contract, topic0 in our table.
LOG_FILTER_TOPICS: list[list[str]] = [list(EVENTS)]
