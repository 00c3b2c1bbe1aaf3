"""How deep a chain can still reorganise: the finality depth per chain, and what it makes of a head. Pure.

Two numbers govern the chain's tip:

    confirmations    blocks behind the head the copy stops at (the safe head): what is copied
    finality depth   blocks behind the head that may still change (the final head): what is trusted

A block at or below the final head is final: nothing is expected to change there, and a day whose last block
is final is COMPLETE. A block above it may be replaced by a fork: its hash is recorded when it is copied and
compared with the chain before every later copy (backfill.chain.reorg); a day that ends above it is OPEN.
With the default confirmations below the finality depth, the copy is fresh and repaired when the tip forks.
"""

from __future__ import annotations

# chain id -> blocks behind the head after which a block is final (or as good as: the depth beyond which no
# fork has been seen in practice). The operator's `finality_depth` setting overrides it.
DEFAULT_DEPTHS: dict[int, int] = {
    1: 64,  # Ethereum: two epochs, when the `finalized` tag moves
    11155111: 64,  # Sepolia
    17000: 64,  # Holesky
    137: 200,  # Polygon PoS: deep reorgs were seen before milestones
    56: 20,  # BNB Smart Chain: fast finality after two justified blocks
    100: 20,  # Gnosis
    43114: 1,  # Avalanche C-Chain: final on acceptance
    10: 400,  # OP Mainnet: final once its batch is final on Ethereum (~13 min of 2 s blocks)
    8453: 400,  # Base (OP stack)
    42161: 3200,  # Arbitrum One: ~13 min of 0.25 s blocks
    31337: 0,  # anvil / hardhat: a single node, nothing forks unless asked to (`anvil_reorg`)
    1337: 0,  # geth --dev / ganache
}
UNKNOWN_CHAIN_DEPTH = 64


def finality_depth(chain_id: int, setting: int | None) -> int:
    """The depth in force: the operator's setting when given, else the chain's default."""
    if setting is not None:
        return setting
    return DEFAULT_DEPTHS.get(chain_id, UNKNOWN_CHAIN_DEPTH)


def final_head(head: int, safe_head: int, depth: int, finalized: int | None = None) -> int:
    """The highest block that is final and copied: a day ending at or below it is COMPLETE. -1: none yet.
    `finalized`: the node's `finalized` block where it has one and the depth is the chain's default: when the
    chain stops finalising (as Ethereum did for an hour in May 2023), the depth alone would overstate it."""
    top = min(safe_head, head - depth)
    if finalized is not None:
        top = min(top, finalized)
    return max(-1, top)


def use_finalized_tag(setting: int | None, depth: int) -> bool:
    """Ask the node for its `finalized` block: only under the chain's own default depth (an operator's depth is
    taken as given, and a chain with depth 0 reorganises only when asked)."""
    return setting is None and depth > 0
