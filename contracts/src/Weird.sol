// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Weird — non-standard logs under the standard transfer topics.
/// @notice Real chains carry such logs (ERC-721 Transfers, unindexed or truncated events);
///         a decoder must quarantine them, never crash or mis-decode. Each case is one call.
contract Weird {
    bytes32 internal constant TRANSFER =
        0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef;
    bytes32 internal constant TRANSFER_SINGLE =
        0xc3d58168c5ae7397731d063d5bbf3d657854427343f4c083240f7aacaa2d0f62;
    bytes32 internal constant TRANSFER_BATCH =
        0x4a39dc06d4c0dbc64b70af90fd698a233a518aa5d07e595d983b8c0526c8f7fb;

    /// @notice ERC-721 style: 4 topics (tokenId indexed), empty data.
    function transfer721(address from, address to, uint256 tokenId) external {
        assembly {
            log4(0, 0, TRANSFER, from, to, tokenId)
        }
    }

    /// @notice Transfer with 3 topics and arbitrary raw data (e.g. 0 or 31 bytes, or 64).
    function transferRawData(address from, address to, bytes calldata data) external {
        bytes memory d = data;
        assembly {
            log3(add(d, 32), mload(d), TRANSFER, from, to)
        }
    }

    /// @notice Transfer with only 2 topics (`to` missing), value in the data.
    function transferTwoTopics(address from, uint256 value) external {
        assembly {
            mstore(0, value)
            log2(0, 32, TRANSFER, from)
        }
    }

    /// @notice Transfer with nothing indexed: 1 topic, data = abi.encode(from, to, value).
    function transferNoIndexed(address from, address to, uint256 value) external {
        bytes memory d = abi.encode(from, to, value);
        assembly {
            log1(add(d, 32), mload(d), TRANSFER)
        }
    }

    /// @notice TransferBatch whose ids and values arrays differ in length (ABI-valid data).
    function batchMismatch(
        address operator,
        address from,
        address to,
        uint256[] calldata ids,
        uint256[] calldata values
    ) external {
        bytes memory d = abi.encode(ids, values);
        assembly {
            log4(add(d, 32), mload(d), TRANSFER_BATCH, operator, from, to)
        }
    }

    /// @notice TransferBatch (4 topics) with arbitrary raw data (truncated, bad offsets ...).
    function batchRawData(address operator, address from, address to, bytes calldata data) external {
        bytes memory d = data;
        assembly {
            log4(add(d, 32), mload(d), TRANSFER_BATCH, operator, from, to)
        }
    }

    /// @notice TransferSingle (4 topics) with data of any length (standard is 64 bytes).
    function singleRawData(address operator, address from, address to, bytes calldata data) external {
        bytes memory d = data;
        assembly {
            log4(add(d, 32), mload(d), TRANSFER_SINGLE, operator, from, to)
        }
    }

    /// @notice Any log: 0..4 topics from `topics`, raw data.
    function raw(bytes32[] calldata topics, bytes calldata data) external {
        bytes memory d = data;
        uint256 n = topics.length;
        require(n <= 4, "topics");
        bytes32 t0 = n > 0 ? topics[0] : bytes32(0);
        bytes32 t1 = n > 1 ? topics[1] : bytes32(0);
        bytes32 t2 = n > 2 ? topics[2] : bytes32(0);
        bytes32 t3 = n > 3 ? topics[3] : bytes32(0);
        assembly {
            let p := add(d, 32)
            let s := mload(d)
            switch n
            case 0 { log0(p, s) }
            case 1 { log1(p, s, t0) }
            case 2 { log2(p, s, t0, t1) }
            case 3 { log3(p, s, t0, t1, t2) }
            default { log4(p, s, t0, t1, t2, t3) }
        }
    }
}
