"""What real providers and nodes answer when an eth_getLogs request is over their range or result cap, and
when they refuse a JSON-RPC batch: one place for these fixtures.

Each CapText is a verbatim answer (a template where the provider puts its own numbers in), with the limit it
states, so tests can check that the limit is read back exactly. Templates use the fields of the fault proxy
(tests/support/proxy_faults.py `_fields`): {max_blocks} {max_logs} {span} (blocks requested) and the suggested range
as {s_from} {s_to} (decimal), {s_from_hex} {s_to_hex} (0x-lowercase), {s_from_HEX} {s_to_HEX}
(0x-UPPERCASE); and three more for texts that repeat the request's own bounds: {r_from} {r_to} (the
request's first and last block) and {r_diff} (to - from). A `data` is None, a str template, a dict whose str
values are templates, or a callable getting the fields.

Sources: ponder-sh/ponder packages/utils/src (getLogsRetryHelper.ts and its live tests under _test/, and the
older parseGetLogsError/ of March 2024); the catalogue of real provider behaviour (ids A1..S1 keep its ids);
node and provider source code and issue threads named per entry. Where a source quotes only the message, the
code and HTTP status given are the ones its client class implies (viem: InvalidInputRpcError -32000,
LimitExceededRpcError -32005, InvalidParamsRpcError -32602, InternalRpcError -32603, HttpRequestError a
non-2xx status) or are marked "not recorded".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Template = str | dict[str, Any] | Callable[[dict[str, Any]], Any] | None


def _request_fields(f: dict[str, Any]) -> dict[str, Any]:
    """The fields plus the request's bounds. The proxy's suggestion always starts at the request's first block
    (suggest_range), so s_from is the request's from and s_from + span - 1 its to."""
    r_to = f["s_from"] + f["span"] - 1
    return {**f, "r_from": f["s_from"], "r_to": r_to, "r_diff": max(0, f["span"] - 1)}


def _fill(template: Template, fields: dict[str, Any]) -> Any:
    if template is None:
        return None
    if isinstance(template, str):
        return template.format(**_request_fields(fields))
    if callable(template):
        return template(_request_fields(fields))
    if isinstance(template, dict):
        return {k: _fill(v, fields) if isinstance(v, (str, dict)) or callable(v) else v for k, v in template.items()}
    return template


@dataclass(frozen=True)
class CapText:
    """One provider's answer to an eth_getLogs request over its cap.

    max_blocks / max_logs: the provider's cap. stated=True: the answer says it (in its message or its data),
    so a reader must get it back exactly; stated=False: the answer says nothing and the number is the
    provider's known default (what a fault proxy enforces). suggests: the answer proposes a range to retry."""

    id: str
    provider: str
    status: int
    code: int
    message: str
    data: Template = None
    max_blocks: int | None = None
    max_logs: int | None = None
    stated: bool = True
    suggests: bool = False
    source: str = ""

    def error(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The JSON-RPC error object for the template fields."""
        out: dict[str, Any] = {"code": self.code, "message": _fill(self.message, fields)}
        if self.data is not None:
            out["data"] = _fill(self.data, fields)
        return out

    def error_template(self) -> dict[str, Any]:
        """The error as a fault proxy template (callables get the fields)."""
        out: dict[str, Any] = {"code": self.code, "message": lambda f: _fill(self.message, f)}
        if self.data is not None:
            out["data"] = lambda f: _fill(self.data, f)
        return out

    @property
    def limits(self) -> tuple[int | None, int | None]:
        """(max_blocks, max_logs) the answer states; (None, None) when it states none."""
        return (self.max_blocks, self.max_logs) if self.stated else (None, None)


_PONDER = "ponder-sh/ponder packages/utils/src/_test/"

CAP_TEXTS: list[CapText] = [
    # -- the catalogue (same ids and texts as tests/support/proxy_faults.py KINDS) ---------------------------------
    CapText(
        "A1",
        "Alchemy",
        200,
        -32602,
        "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and "
        "no limit on the response size, or you can request any block range with a cap of 10K logs in the "
        "response. Based on your parameters and the response size limit, this block range should work: "
        "[{s_from_hex}, {s_to_hex}]",
        max_blocks=2_000,
        max_logs=10_000,
        suggests=True,
        source="ethers-io/ethers.js#4703",
    ),
    CapText(
        "A2",
        "Alchemy",
        400,
        -32600,
        "You can make eth_getLogs requests with up to a {max_blocks} block range. Based on your "
        "parameters, this block range should work: [{s_from_hex}, {s_to_hex}]",
        max_blocks=500,
        suggests=True,
        source="boundless-xyz/boundless#838",
    ),
    CapText(
        "A3",
        "Alchemy",
        400,
        -32600,
        "Under the Free tier plan, you can make eth_getLogs requests with up to a {max_blocks} block "
        "range. Based on your parameters, this block range should work: [{s_from_hex}, {s_to_hex}]. "
        "Upgrade to PAYG for expanded block range.",
        max_blocks=10,
        suggests=True,
        source="third-party fixtures",
    ),
    CapText(
        "I1",
        "Infura",
        200,
        -32005,
        "query returned more than {max_logs} results. Try with this block range [{s_from_HEX}, {s_to_HEX}].",
        data=lambda f: {"from": f["s_from_HEX"], "limit": f["max_logs"], "to": f["s_to_HEX"]},
        max_logs=10_000,
        suggests=True,
        source="ethers-io/ethers.js#4703",
    ),
    CapText(
        "I3",
        "Infura",
        200,
        -32602,
        "range {span} exceeds limit of {max_blocks}",
        max_blocks=10_000,
        source="INFURA/infura#237 (the 2026 block cap)",
    ),
    CapText(
        "Q1",
        "QuickNode",
        413,
        -32614,
        "eth_getLogs is limited to a {max_blocks:,} range",
        max_blocks=10_000,
        source="OffchainLabs/arbitrum-sdk#609; " + _PONDER + "quicknode.test.ts",
    ),
    CapText(
        "K1",
        "Ankr",
        200,
        -32600,
        "block range is too wide",
        max_blocks=3_000,
        stated=False,
        source="ponder-sh/ponder packages/utils/src/getLogsRetryHelper.ts (3000 is ponder's assumption)",
    ),
    CapText(
        "K2",
        "Ankr",
        200,
        -32000,
        "maximum [from, to] blocks distance: {max_blocks}",
        max_blocks=10_000,
        source="ponder-sh/ponder#1940; " + _PONDER + "ankr-tac.test.ts",
    ),
    CapText(
        "F1",
        "Cloudflare",
        200,
        -32047,
        "Invalid eth_getLogs request. 'fromBlock'-'toBlock' range too large. Max range: {max_blocks}",
        max_blocks=800,
        source=_PONDER + "cloudflare.test.ts; parseGetLogsError (code)",
    ),
    CapText(
        "R1",
        "reth",
        200,
        -32602,
        "query exceeds max results {max_logs}, retry with the range {s_from}-{s_to}",
        max_logs=20_000,
        suggests=True,
        source="paradigmxyz/reth crates/rpc/rpc/src/eth/filter.rs; foundry-rs/foundry#12687",
    ),
    CapText(
        "E1",
        "erigon",
        200,
        -32602,
        "query block range exceeds server limit, narrow your filter: {max_blocks}",
        max_blocks=1_000,
        source="erigontech/erigon#20784",
    ),
    CapText(
        "N1",
        "Nethermind",
        200,
        -32005,
        "Too many logs requested. Max logs per response is {max_logs}.",
        max_logs=20_000,
        source="NethermindEth/nethermind JsonRpcConfig",
    ),
    CapText(
        "G1",
        "geth",
        200,
        -32602,
        "exceed maximum block range {max_blocks}",
        max_blocks=5_000,
        source="ethereum/go-ethereum eth/filters/filter.go (--rpc.rangelimit)",
    ),
    CapText(
        "S1",
        "Besu",
        200,
        -32005,
        "Requested range exceeds maximum RPC range limit",
        max_blocks=5_000,
        stated=False,
        source="besu RpcErrorType.EXCEEDS_RPC_MAX_BLOCK_RANGE",
    ),
    # -- more node clients -------------------------------------------------------------------------------
    CapText(
        "CAP_RETH_RANGE",
        "reth (also Berachain APIs, Hyperliquid)",
        200,
        -32602,
        "query exceeds max block range {max_blocks}",
        max_blocks=100_000,
        source="catalogue R1; " + _PONDER + "hyperliquid.test.ts",
    ),
    CapText(
        "CAP_RETH_RESPONSE",
        "reth",
        200,
        -32008,
        "Response is too big",
        source="catalogue section 2 (160 MB response); jsonrpsee OVERSIZED_RESPONSE_MSG",
    ),
    CapText(
        "CAP_ERIGON_LOGS",
        "erigon",
        200,
        -32602,
        "query returns too many logs, narrow your filter: {max_logs}",
        max_logs=20_000,
        source="erigontech/erigon#20784",
    ),
    CapText(
        "CAP_HARMONY",
        "Harmony",
        200,
        -32000,
        "GetLogs query must be smaller than size {max_blocks}",
        max_blocks=1_024,
        source="harmony-one/harmony rpc filters (fmt.Errorf); " + _PONDER + "harmony.test.ts",
    ),
    CapText(
        "CAP_MOONBEAM",
        "Moonbeam / Moonriver (Frontier)",
        200,
        -32603,
        "block range is too wide (maximum {max_blocks})",
        max_blocks=1_024,
        source="polkadot-evm/frontier client/rpc; " + _PONDER + "moonriver.test.ts (InternalRpcError)",
    ),
    CapText(
        "CAP_TRON",
        "Tron (java-tron, TronGrid)",
        200,
        -32602,
        "exceed max block range: {max_blocks}",
        max_blocks=5_000,
        source="tronprotocol/java-tron LogFilterWrapper; " + _PONDER + "tron.test.ts",
    ),
    CapText(
        "CAP_ZKSYNC",
        "zkSync Era",
        200,
        -32602,
        "Query returned more than {max_logs} results. Try with this block range [{s_from_hex}, {s_to_hex}].",
        max_logs=10_000,
        suggests=True,
        source="matter-labs/zksync-era Web3Error::LogsLimitExceeded (InvalidParams); " + _PONDER + "zksync.test.ts",
    ),
    CapText(
        "CAP_ZKEVM",
        "Polygon zkEVM",
        200,
        -32000,
        "query returned more than {max_logs} results",
        max_logs=10_000,
        source=_PONDER + "zkevm.test.ts (code not recorded)",
    ),
    # -- hosted providers and public endpoints -----------------------------------------------------------
    CapText(
        "CAP_AVALANCHE",
        "Avalanche (api.avax.network)",
        200,
        -32000,
        "requested too many blocks from {r_from} to {r_to}, maximum is set to {max_blocks}",
        max_blocks=2_048,
        source=_PONDER + "avalanche.test.ts; brave/brave-core wallet test fixture",
    ),
    CapText(
        "CAP_THIRDWEB",
        "thirdweb",
        200,
        -32005,
        "Maximum allowed number of requested blocks is {max_blocks}",
        max_blocks=1_000,
        source=_PONDER + "thirdweb.test.ts (LimitExceededRpcError)",
    ),
    CapText(
        "CAP_THIRDWEB_OP",
        "thirdweb (optimism.rpc.thirdweb.com)",
        200,
        -32005,
        "Log response size exceeded. Maximum allowed number of requested blocks is {max_blocks}",
        max_blocks=1_000,
        source="third-party capture of optimism.rpc.thirdweb.com",
    ),
    CapText(
        "CAP_THIRDWEB_RANGE",
        "thirdweb (2024)",
        200,
        -32602,
        "invalid params",
        data="range {span} is bigger than range limit {max_blocks}",
        max_blocks=2_000,
        source="ponder-sh/ponder packages/utils/src/parseGetLogsError/parseGetLogsError.ts",
    ),
    CapText(
        "CAP_THIRDWEB_RESULTS",
        "thirdweb (2024)",
        200,
        -32602,
        "invalid params",
        data="Query returned more than {max_logs} results. Try with this block range [{s_from_hex}, {s_to_hex}].",
        max_logs=10_000,
        suggests=True,
        source="ponder-sh/ponder packages/utils/src/parseGetLogsError/parseGetLogsError.ts",
    ),
    CapText(
        "CAP_BASE",
        "Base (mainnet.base.org)",
        200,
        -32614,
        "eth_getLogs is limited to a {max_blocks:,} range",
        max_blocks=2_000,
        source="third-party capture (HTTP status not recorded)",
    ),
    CapText(
        "CAP_BASE_SIZE",
        "Base / Optimism (proxyd)",
        500,
        -32020,
        "backend response too large",
        source="ethereum-optimism/optimism proxyd/backend.go; capture of mainnet.base.org (HTTP 500)",
    ),
    CapText(
        "CAP_BASE_RANGE",
        "Base, Monad",
        200,
        -32000,
        "block range too large",
        max_blocks=2_000,
        stated=False,
        source="ponder-sh/ponder packages/utils/src/getLogsRetryHelper.ts (code not recorded; 2000: "
        "a third party's guess)",
    ),
    CapText(
        "CAP_OPTIMISM",
        "Optimism (mainnet.optimism.io), Ankr",
        200,
        -32062,
        "Block range is too large",
        stated=False,
        source=_PONDER + "optimism.test.ts; third-party captures (-32062)",
    ),
    CapText(
        "CAP_BLAST",
        "Blast",
        413,
        -32614,
        "eth_getLogs is limited to a {max_blocks:,} range",
        max_blocks=10_000,
        source=_PONDER + "blast.test.ts (an HTTP error; status and code as QuickNode's, same wording)",
    ),
    CapText(
        "CAP_BLAST_PAID",
        "Blast (paid) through eRPC",
        400,
        -32602,
        "Invalid params",
        data={
            "range": "the range {r_from} - {r_to} exceeds the range allowed for your plan ({r_diff} > {max_blocks})."
        },
        max_blocks=2_000,
        source="erpc/erpc http server tests; ponder-sh/ponder getLogsRetryHelper test",
    ),
    CapText(
        "CAP_1RPC",
        "1RPC",
        200,
        -32000,
        "eth_getLogs is limited to a {max_blocks} blocks range",
        max_blocks=1_000,
        source=_PONDER + "1rpc.test.ts",
    ),
    CapText(
        "CAP_1RPC_SIZE",
        "1RPC",
        200,
        -32000,
        "response size should not greater than 2097152 bytes",
        source="1RPC docs (a byte cap: no block or log limit to read)",
    ),
    CapText(
        "CAP_BLOCKPI",
        "BlockPI",
        200,
        -32602,
        "eth_getLogs is limited to {max_blocks} block range",
        max_blocks=1_024,
        source=_PONDER + "blockpi.test.ts",
    ),
    CapText(
        "CAP_CHAINSTACK",
        "Chainstack",
        200,
        -32602,
        "Block range limit exceeded. See more details at https://docs.chainstack.com/docs/limits#evm-range-limits",
        max_blocks=10_000,
        stated=False,
        source="catalogue; third-party captures; " + _PONDER + "chainstack.test.ts (10000: ponder's paid plan)",
    ),
    CapText(
        "CAP_COINBASE",
        "Coinbase (Base node)",
        200,
        -32005,
        "please limit the query to at most {max_blocks} blocks",
        max_blocks=1_000,
        source=_PONDER + "coinbase.test.ts (LimitExceededRpcError)",
    ),
    CapText(
        "CAP_PUBLICNODE",
        "PublicNode",
        200,
        -32701,
        "exceed maximum block range: {max_blocks}",
        max_blocks=50_000,
        source=_PONDER + "publicnode.test.ts; third-party capture (-32701)",
    ),
    CapText(
        "CAP_PROXYD_RANGE",
        "Swell, Ink, Cyber (alt.technology proxyd)",
        200,
        -32602,
        "block range greater than {max_blocks} max",
        max_blocks=1_000,
        source=_PONDER + "swell.test.ts; third-party capture (-32602)",
    ),
    CapText(
        "CAP_SOMNIA",
        "Somnia",
        200,
        -1,
        "block range exceeds {max_blocks}",
        max_blocks=1_000,
        source=_PONDER + "somnia.test.ts; third-party captures (code -1)",
    ),
    CapText(
        "CAP_MERKLE_10K",
        "Merkle",
        200,
        -32000,
        "eth_getLogs range is too large, max is 10k blocks",
        max_blocks=10_000,
        source=_PONDER + "merkle.test.ts (code not recorded)",
    ),
    CapText(
        "CAP_MERKLE_1K",
        "Merkle",
        200,
        -32000,
        "eth_getLogs range is too large, max is 1k blocks",
        max_blocks=1_000,
        source=_PONDER + "merkle.test.ts (code not recorded)",
    ),
    CapText(
        "CAP_AURORA",
        "Aurora",
        200,
        -32005,
        "up to a {max_blocks} block range",
        max_blocks=2_000,
        source=_PONDER + "aurora.test.ts (only this fragment is quoted; LimitExceededRpcError)",
    ),
    CapText(
        "CAP_ARBITRUM",
        "Arbitrum (arb1.arbitrum.io)",
        200,
        -32000,
        "logs matched by query exceeds limit of {max_logs}",
        max_logs=10_000,
        source=_PONDER + "arbitrum.test.ts (InvalidInputRpcError)",
    ),
    CapText(
        "CAP_ARBITRUM_SPAN",
        "Arbitrum public node",
        200,
        -32602,
        "query spans {span} blocks ({r_from} to {r_to}), but only {max_blocks} are allowed for this "
        "request; narrow the block range, or add an address filter",
        max_blocks=30_000,
        source="third-party capture",
    ),
    CapText(
        "CAP_SEI",
        "Sei (evm-rpc.sei-apis.com)",
        200,
        -32000,
        "block range too large ({span}), maximum allowed is {max_blocks} blocks",
        max_blocks=1_000,
        source="enviodev/hyperindex source comment (code not recorded)",
    ),
    CapText(
        "CAP_DRPC",
        "dRPC",
        200,
        35,
        "ranges over {max_blocks} blocks are not supported on free plan",
        max_blocks=10_000,
        source="third-party captures of eth.drpc.org (code 35)",
    ),
    CapText(
        "CAP_DRPC_FREETIER",
        "dRPC",
        200,
        35,
        "ranges over {max_blocks} blocks are not supported on freetier",
        max_blocks=10_000,
        source="ponder-sh/ponder packages/utils/src/getLogsRetryHelper.ts; capture of berachain.drpc.org",
    ),
    CapText(
        "CAP_LLAMARPC",
        "LlamaRPC, dRPC",
        200,
        -32602,
        "query exceeds max results {max_logs}, retry with the range {s_from}-{s_to}",
        max_logs=20_000,
        suggests=True,
        source=_PONDER + "llamarpc.test.ts (InvalidParamsRpcError); third-party captures",
    ),
    CapText(
        "CAP_ERPC",
        "eRPC",
        200,
        -32012,
        "getLogs request exceeded max allowed range",
        data=lambda f: {
            "code": "ErrGetLogsExceededMaxAllowedRange",
            "message": "getLogs request exceeded max allowed range",
            "details": {"requestRange": f["span"], "maxAllowedRange": f["max_blocks"]},
        },
        max_blocks=30_000,
        source="erpc/erpc common/errors.go (JsonRpcErrorEvmLargeRange -32012); "
        "third-party capture of a Sepolia endpoint",
    ),
    CapText(
        "CAP_ERPC_WRAPPED",
        "eRPC (Astar upstream)",
        200,
        -32012,
        "getLogs request exceeded max allowed range: block range is too wide (maximum {max_blocks})",
        data={"code": "ErrUpstreamsExhausted", "details": {"durationMs": 96, "method": "eth_getLogs"}},
        max_blocks=1_024,
        source="third-party fixture of an eRPC answer",
    ),
    CapText(
        "CAP_ERPC_RESULTS",
        "eRPC (reth upstream)",
        200,
        -32602,
        "request exceeded max allowed range: query exceeds max results {max_logs}, retry with the range "
        "{s_from}-{s_to}",
        max_logs=2_000,
        suggests=True,
        source="third-party capture",
    ),
    CapText(
        "CAP_ERPC_THRESHOLD",
        "Altitude (eRPC)",
        400,
        -32012,
        "allowed block range threshold exceeded for eth_getLogs",
        max_blocks=30_000,
        stated=False,
        source="erpc/erpc common/errors.go; " + _PONDER + "altitude.test.ts (an HTTP error; status not recorded)",
    ),
]


@dataclass(frozen=True)
class BatchText:
    """A refusal of a JSON-RPC batch: an error object (code, message, data) or a non-JSON `body`.

    max_items: how many calls one batch may hold by the answer: the stated number, 1 when batches are refused
    outright (send single calls), None when it does not say."""

    id: str
    source: str
    status: int
    code: int | None
    message: str
    data: Any = None
    body: bytes | None = None
    max_items: int | None = None

    def error(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.code is not None:
            out["code"] = self.code
        if self.data is not None:
            out["data"] = self.data
        return out


BATCH_TEXTS: list[BatchText] = [
    # go-ethereum rpc/errors.go errMsgBatchTooLarge, rpc/handler.go respondWithBatchTooLarge
    BatchText("BATCH_GETH", "geth", 200, -32600, "batch too large"),
    # besu RpcErrorType.EXCEEDS_RPC_MAX_BATCH_SIZE (--rpc-max-batch-size); Lodestar issue logs quote it
    BatchText("BATCH_BESU", "besu", 200, -32005, "Number of requests exceeds max batch size"),
    # erigontech/erigon#7072, #7090 (--rpc.batch.limit, before erigon#18260 reworded it)
    BatchText("BATCH_ERIGON", "erigon", 200, -32000, "batch limit 100 exceeded: 142 requests given", max_items=100),
    # NethermindEth/nethermind JsonRpcProcessor (JsonRpc.MaxBatchSize, LimitExceeded); status not recorded
    BatchText("BATCH_NETHERMIND", "nethermind", 200, -32005, "Batch size limit exceeded"),
    # paritytech/jsonrpsee types/src/error.rs (reth's server): reject_too_big_batch_request(limit)
    BatchText(
        "BATCH_JSONRPSEE",
        "reth (jsonrpsee)",
        200,
        -32010,
        "The batch request was too large",
        data="Exceeded max limit of 100",
        max_items=100,
    ),
    BatchText("BATCH_JSONRPSEE_RESPONSE", "reth (jsonrpsee)", 200, -32011, "The batch response was too large"),
    BatchText(
        "BATCH_JSONRPSEE_OFF",
        "reth (jsonrpsee), batches off",
        200,
        -32005,
        "Batched requests are not supported by this server",
        max_items=1,
    ),
    # nodereal-keeper/documenntation resources/support/meganode-handling-errors.md
    BatchText("BATCH_NODEREAL", "NodeReal MegaNode", 200, -32005, "batch size exceed limit 500", max_items=500),
    # ethers-io/ethers.js#4128 (rpc.ankr.com/polygon), AlphaWallet/alpha-wallet-ios#5021 (Gnosis on Ankr)
    BatchText("BATCH_ANKR_GETLOGS", "Ankr", 200, -32600, 'Too many ["eth_getLogs"] methods in the batch'),
    # fystack/multichain-indexer#19 (provider not named)
    BatchText("BATCH_32007", "an unnamed provider", 200, -32007, "batch limit exceeded"),
    # agnosticeng/clickhouse-evm#4 (Alchemy; the issue quotes the message only)
    BatchText(
        "BATCH_ALCHEMY_METHODS",
        "Alchemy",
        200,
        None,
        "Unsupported methods [trace_block] in batch call. See available methods at "
        "https://docs.alchemy.com/alchemy/documentation/apis",
        max_items=1,
    ),
    # hiero-ledger/hiero-json-rpc-relay (Hedera) src/lib/errors/JsonRpcError.ts
    BatchText("BATCH_HEDERA_OFF", "Hedera JSON-RPC relay", 200, -32202, "Batch requests are disabled", max_items=1),
    BatchText(
        "BATCH_HEDERA_MAX",
        "Hedera JSON-RPC relay",
        200,
        -32203,
        "Batch request amount 150 exceeds max 100",
        max_items=100,
    ),
    # 0xPolygonHermez/zkevm-node jsonrpc/server.go: Go's http.Error, plain text (as in tests/support/proxy_faults.py)
    BatchText(
        "BATCH_ZKEVM",
        "Polygon zkEVM node",
        413,
        None,
        "batch requests limit exceeded",
        body=b"batch requests limit exceeded\n",
    ),
    BatchText(
        "BATCH_ZKEVM_OFF",
        "Polygon zkEVM node, batches off",
        400,
        None,
        "batch requests are disabled",
        body=b"batch requests are disabled\n",
        max_items=1,
    ),
    # a JSON-RPC server without batch support, in the envelope (several answer so; as tests/support/proxy_faults.py)
    BatchText(
        "BATCH_OFF_JSON", "a server without batches", 200, -32600, "batch requests are not supported", max_items=1
    ),
]

CAP_IDS = frozenset(t.id for t in CAP_TEXTS)
assert len(CAP_IDS) == len(CAP_TEXTS), "duplicate CapText ids"
