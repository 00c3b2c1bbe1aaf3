// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Token20 — an ERC-20-shaped event source for the devnet.
/// @notice Keeps no balances: every call only emits standard
///         `Transfer(address indexed from, address indexed to, uint256 value)` logs
///         (3 topics + 32 bytes of data), so the generator can make many logs cheaply.
contract Token20 {
    event Transfer(address indexed from, address indexed to, uint256 value);

    string public name;
    string public symbol;
    uint8 public constant decimals = 18;

    constructor(string memory name_, string memory symbol_) {
        name = name_;
        symbol = symbol_;
    }

    /// @notice One Transfer with exact values (mint: from = 0, burn: to = 0, 0, 2^256-1 ...).
    function emitTransfer(address from, address to, uint256 value) external {
        emit Transfer(from, to, value);
    }

    /// @notice Several exact Transfers in one transaction (same length arrays).
    function emitTransfers(address[] calldata froms, address[] calldata tos, uint256[] calldata values)
        external
    {
        require(froms.length == tos.length && tos.length == values.length, "length");
        for (uint256 i = 0; i < froms.length; ++i) {
            emit Transfer(froms[i], tos[i], values[i]);
        }
    }

    /// @notice `n` Transfers from `from` in one transaction; recipients and values are
    ///         pseudo-random, derived from keccak256(seed, i). Values span all magnitudes
    ///         (0 .. ~2^256), about one recipient in 64 is the zero address (burn).
    function spray(address from, uint256 n, uint256 seed) external {
        for (uint256 i = 0; i < n; ++i) {
            uint256 h = uint256(keccak256(abi.encode(seed, i)));
            address to = (h & 63) == 0 ? address(0) : address(uint160(h));
            uint256 value = uint256(keccak256(abi.encode(h))) >> (h >> 248);
            emit Transfer(from, to, value);
        }
    }
}
