"""backfill: copy ERC-20 / ERC-1155 transfer history of an EVM chain into ClickHouse, exactly."""

__version__ = "0.1.0"
