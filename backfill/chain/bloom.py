"""Ethereum logsBloom membership: could this block hold a log with one of our topics? Pure.

Used near the head to catch a node that answers eth_getLogs short or empty with no error: a block whose
bloom admits a transfer topic but that came back without logs is asked again by its hash.
"""

from __future__ import annotations

from functools import lru_cache

from Crypto.Hash import keccak


@lru_cache(maxsize=64)
def bloom_bits(item_hex: str) -> tuple[int, int, int]:
    digest = keccak.new(digest_bits=256, data=bytes.fromhex(item_hex.removeprefix("0x"))).digest()
    return tuple(((digest[i] << 8) | digest[i + 1]) & 2047 for i in (0, 2, 4))  # type: ignore[return-value]


def may_contain(bloom_hex: str, item_hex: str) -> bool:
    """True when every one of the item's three bits is set in the 2048-bit bloom (false positives possible)."""
    bloom = int(bloom_hex, 16)
    return all(bloom >> bit & 1 for bit in bloom_bits(item_hex))


def may_contain_any(bloom_hex: str, items: list[str]) -> bool:
    return bool(bloom_hex) and any(may_contain(bloom_hex, item) for item in items)
