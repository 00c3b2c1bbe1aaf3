"""Reference decoding with eth-abi, for the tests: the product's own reference decoder (backfill/decode_ref.py)."""

from backfill.decode_ref import reference_rows, with_timestamps

__all__ = ["reference_rows", "with_timestamps"]
