// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Token1155 — an ERC-1155-shaped event source for the devnet.
/// @notice Keeps no balances: calls only emit the standard TransferSingle / TransferBatch logs.
contract Token1155 {
    event TransferSingle(
        address indexed operator, address indexed from, address indexed to, uint256 id, uint256 value
    );
    event TransferBatch(
        address indexed operator, address indexed from, address indexed to, uint256[] ids, uint256[] values
    );

    /// @notice One TransferSingle with exact values (mint: from = 0, burn: to = 0).
    function emitSingle(address operator, address from, address to, uint256 id, uint256 value) external {
        emit TransferSingle(operator, from, to, id, value);
    }

    /// @notice One TransferBatch with any number of ids (0, 1, many); lengths must match.
    function emitBatch(
        address operator,
        address from,
        address to,
        uint256[] calldata ids,
        uint256[] calldata values
    ) external {
        require(ids.length == values.length, "length");
        emit TransferBatch(operator, from, to, ids, values);
    }

    /// @notice `n` pseudo-random logs from `from` in one transaction (operator = msg.sender):
    ///         even i -> TransferSingle, odd i -> TransferBatch with 0..7 ids.
    ///         Every 32nd log is a mint (from = 0), every 32nd + 16 a burn (to = 0).
    function spray(address from, uint256 n, uint256 seed) external {
        for (uint256 i = 0; i < n; ++i) {
            uint256 h = uint256(keccak256(abi.encode(seed, i)));
            address src = (i & 31) == 0 ? address(0) : from;
            address to = (i & 31) == 16 ? address(0) : address(uint160(h));
            if (i & 1 == 0) {
                emit TransferSingle(msg.sender, src, to, (h >> 160) & 0xffff, (h >> 176) & 0xffffffff);
            } else {
                uint256 k = (h >> 160) & 7;
                uint256[] memory ids = new uint256[](k);
                uint256[] memory values = new uint256[](k);
                for (uint256 j = 0; j < k; ++j) {
                    uint256 hj = uint256(keccak256(abi.encode(h, j)));
                    ids[j] = hj & 0xffff;
                    values[j] = hj >> 192;
                }
                emit TransferBatch(msg.sender, src, to, ids, values);
            }
        }
    }
}
