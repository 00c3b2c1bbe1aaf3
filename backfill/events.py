"""The one table of event signatures: it feeds both the eth_getLogs filter and the decoder."""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import keccak


def topic0(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


@dataclass(frozen=True)
class EventKind:
    name: str  # "erc20_transfer" | "erc1155_single" | "erc1155_batch"
    signature: str
    topic0: str


ERC20_TRANSFER = EventKind("erc20_transfer", "Transfer(address,address,uint256)",
                           topic0("Transfer(address,address,uint256)"))
ERC1155_SINGLE = EventKind("erc1155_single", "TransferSingle(address,address,address,uint256,uint256)",
                           topic0("TransferSingle(address,address,address,uint256,uint256)"))
ERC1155_BATCH = EventKind("erc1155_batch", "TransferBatch(address,address,address,uint256[],uint256[])",
                          topic0("TransferBatch(address,address,address,uint256[],uint256[])"))

EVENTS: dict[str, EventKind] = {e.topic0: e for e in (ERC20_TRANSFER, ERC1155_SINGLE, ERC1155_BATCH)}

# eth_getLogs filter: any contract, topic0 in our table.
LOG_FILTER_TOPICS: list[list[str]] = [list(EVENTS)]
