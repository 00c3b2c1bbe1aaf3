"""The fault table of the test RPC proxy: what each injected provider failure, and a lagging node,
looks like on the wire.

Kinds carry the IDs of section 3 of the provider catalogue (rpc-provider-behaviour.md) with its
verbatim texts and HTTP statuses; a few generic kinds (HTTP500, TIMEOUT, RESET, ...) have no row there.
Pure: a fault and the request it hits in, a status and body out. The I/O lives in tests/support/proxy.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

RATE, CAP, SERVER, QUOTA, LAG = "rate_limit", "range_cap", "server", "quota", "lag"
BATCH = "batch"  # batch refusals: the whole batch is refused before any call is served
ANSWER = "answer"  # the node's true answer, reshaped: a batch out of order, logs damaged


@dataclass(frozen=True)
class Kind:
    """One row of the table. `error` is the JSON-RPC error object (str values are format templates,
    callables get the template fields); `body` a fixed body instead; `action` a transport trick."""

    category: str
    status: int
    error: dict[str, Any] | None = None
    bare: bool = False  # send `error` as the whole body, with no jsonrpc/id envelope (Q3)
    body: bytes | None = None
    content_type: str = "application/json"
    action: str | None = None  # "truncate" | "delay" | "reset" | "reorder" | "damage"
    batch: str = "whole"  # default for batches: "whole" (one error object) or "items" (one per call)
    max_blocks: int | None = None  # range caps: the provider's own limit, used when a Fault sets none
    max_logs: int | None = None


def _err(code: int, message: str, **more: Any) -> dict[str, Any]:
    return {"code": code, "message": message, **more}


_NGINX_502 = (
    b'<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body bgcolor="white">\r\n'
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)

# Template fields: {max_blocks} {max_logs} {span} (blocks requested), the suggested range as {s_from} {s_to}
# (decimal), {s_from_hex} {s_to_hex} (0x-lowercase), {s_from_HEX} {s_to_HEX} (0x-UPPERCASE, as Infura writes
# it), and {backoff_s} (I5's backoff_seconds, 30 unless the Fault sets retry_after_s).
KINDS: dict[str, Kind] = {
    # -- rate limits -------------------------------------------------------------------------------
    "A4": Kind(
        RATE,
        429,
        _err(
            429,
            "Your app has exceeded its compute units per second capacity. If you have retries enabled, "
            "you can safely ignore this message. If not, check out "
            "https://docs.alchemy.com/reference/throughput",
        ),
    ),
    "I4": Kind(
        RATE, 429, _err(-32005, "project ID request rate exceeded", data={"see": "https://infura.io/dashboard"})
    ),
    "I5": Kind(
        RATE,
        429,
        _err(
            -32005,
            "daily request count exceeded, request rate limited",
            data=lambda f: {
                "rate": {"allowed_rps": 1, "backoff_seconds": f["backoff_s"], "current_rps": 1.266666666666667},
                "see": "https://infura.io/dashboard",
            },
        ),
    ),
    "Q2": Kind(
        RATE, 429, _err(429, "The requests per second (RPS) of your requests are higher than your plan allows.")
    ),
    # The catalogue has no status for Q3; 429 here (a Fault can set status=200 for the nastier case).
    "Q3": Kind(
        RATE,
        429,
        _err(
            -32007,
            "100/second request limit reached - reduce calls per second or upgrade your account at quicknode.com",
        ),
        bare=True,
    ),
    "Q4": Kind(RATE, 200, _err(-32012, "credits limited to 6000/sec"), batch="items"),
    "RETRY_AFTER": Kind(RATE, 429, _err(429, "Too Many Requests")),  # plus a `Retry-After: N` header
    # -- range and result caps (answer only when the request is over the cap) --------------------------
    "A1": Kind(
        CAP,
        200,
        _err(
            -32602,
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range "
            "and no limit on the response size, or you can request any block range with a cap of 10K "
            "logs in the response. Based on your parameters and the response size limit, this block "
            "range should work: [{s_from_hex}, {s_to_hex}]",
        ),
        max_logs=10_000,
    ),
    "A2": Kind(
        CAP,
        400,
        _err(
            -32600,
            "You can make eth_getLogs requests with up to a {max_blocks} block range. Based on your "
            "parameters, this block range should work: [{s_from_hex}, {s_to_hex}]",
        ),
        max_blocks=500,
    ),
    "A3": Kind(
        CAP,
        400,
        _err(
            -32600,
            "Under the Free tier plan, you can make eth_getLogs requests with up to a {max_blocks} block "
            "range. Based on your parameters, this block range should work: [{s_from_hex}, {s_to_hex}]. "
            "Upgrade to PAYG for expanded block range.",
        ),
        max_blocks=10,
    ),
    "I1": Kind(
        CAP,
        200,
        _err(
            -32005,
            "query returned more than {max_logs} results. Try with this block range [{s_from_HEX}, {s_to_HEX}].",
            data=lambda f: {"from": f["s_from_HEX"], "limit": f["max_logs"], "to": f["s_to_HEX"]},
        ),
        max_logs=10_000,
    ),
    "I3": Kind(CAP, 200, _err(-32602, "range {span} exceeds limit of {max_blocks}"), max_blocks=10_000),
    "Q1": Kind(CAP, 413, _err(-32614, "eth_getLogs is limited to a {max_blocks:,} range"), max_blocks=10_000),
    "K1": Kind(CAP, 200, _err(-32600, "block range is too wide"), max_blocks=3_000),
    "K2": Kind(CAP, 200, _err(-32000, "maximum [from, to] blocks distance: {max_blocks}"), max_blocks=10_000),
    "F1": Kind(
        CAP,
        200,
        _err(-32047, "Invalid eth_getLogs request. 'fromBlock'-'toBlock' range too large. Max range: {max_blocks}"),
        max_blocks=800,
    ),
    "R1": Kind(
        CAP,
        200,
        _err(-32602, "query exceeds max results {max_logs}, retry with the range {s_from}-{s_to}"),
        max_logs=20_000,
    ),
    "E1": Kind(
        CAP,
        200,
        _err(-32602, "query block range exceeds server limit, narrow your filter: {max_blocks}"),
        max_blocks=1_000,
    ),
    "N1": Kind(
        CAP, 200, _err(-32005, "Too many logs requested. Max logs per response is {max_logs}."), max_logs=20_000
    ),
    "G1": Kind(CAP, 200, _err(-32602, "exceed maximum block range {max_blocks}"), max_blocks=5_000),
    "S1": Kind(CAP, 200, _err(-32005, "Requested range exceeds maximum RPC range limit"), max_blocks=5_000),
    # -- server trouble ----------------------------------------------------------------------------
    "H1": Kind(SERVER, 502, body=_NGINX_502, content_type="text/html"),
    "CF502": Kind(SERVER, 502, body=b"502 Bad Gateway"),  # Cloudflare: not JSON, under a JSON content type
    "H2": Kind(SERVER, 200, body=b"Invalid host specified", content_type="text/plain"),
    "H3": Kind(SERVER, 200, action="truncate"),  # the upstream's answer, cut off mid-JSON
    "I2": Kind(SERVER, 200, _err(-32005, "query timeout exceeded")),
    "N1_TIMEOUT": Kind(SERVER, 200, _err(-32016, "eth_getLogs request was canceled due to enabled timeout.")),
    "HTTP500": Kind(SERVER, 500, body=b"500 Internal Server Error", content_type="text/plain"),
    "HTTP503": Kind(SERVER, 503, body=b"503 Service Unavailable", content_type="text/plain"),
    "TIMEOUT": Kind(SERVER, 200, action="delay"),  # held delay_s, then answered if the client is still there
    "RESET": Kind(SERVER, 0, action="reset"),  # connection closed with a TCP RST, no answer
    # -- quota gone --------------------------------------------------------------------------------
    "I6": Kind(
        QUOTA,
        402,
        _err(
            402,
            "Payment Required",
            event=-33000,
            details="You have reached your daily credit limit. To continue making requests, upgrade your plan or "
            "purchase additional credits",
        ),
    ),
    "A5": Kind(
        QUOTA,
        403,
        _err(
            -32600,
            "Monthly capacity limit exceeded. Visit https://dashboard.alchemyapi.io/settings/billing to "
            "upgrade your scaling policy for continued service.",
        ),
    ),
    "P1": Kind(
        QUOTA,
        401,
        body=b'{"error":"message: API key disabled, reason: tenant disabled, json-rpc code: -32051, rest code: 403"}',
    ),
    # -- lagging node ------------------------------------------------------------------------------
    "I7": Kind(LAG, 200, _err(-32000, "header not found")),
    # -- batch refusals ----------------------------------------------------------------------------
    # go-ethereum rpc/handler.go respondWithBatchTooLarge (over BatchRequestLimit, default 1000): a one-item
    # array carrying the id of the batch's first call (rpc/testdata/invalid-batch-toolarge.js).
    "BATCH_GETH": Kind(BATCH, 200, _err(-32600, "batch too large")),
    # besu RpcErrorType.EXCEEDS_RPC_MAX_BATCH_SIZE (--rpc-max-batch-size): one object with id null, HTTP 200.
    "BATCH_BESU": Kind(BATCH, 200, _err(-32005, "Number of requests exceeds max batch size")),
    # Polygon zkEVM node (0xPolygonHermez/zkevm-node jsonrpc/server.go, jsonrpc/types/errors.go), Go's
    # http.Error in plain text: over RPC.BatchRequestsLimit (default 20) a 413; with RPC.BatchRequestsEnabled
    # = false, its default, every batch gets a 400.
    "BATCH_ZKEVM": Kind(BATCH, 413, body=b"batch requests limit exceeded\n", content_type="text/plain"),
    "BATCH_OFF": Kind(BATCH, 400, body=b"batch requests are disabled\n", content_type="text/plain"),
    # A JSON-RPC server without batch support, in the envelope: -32600 with id null.
    "BATCH_OFF_JSON": Kind(BATCH, 200, _err(-32600, "batch requests are not supported")),
    # -- the true answer, reshaped -------------------------------------------------------------------
    # JSON-RPC 2.0 lets a server answer a batch in any order (load balancers fanning a batch out do); the
    # proxy sends the answers in reverse, so a batch of two or more is always out of order. Batches only.
    "BATCH_ORDER": Kind(ANSWER, 200, action="reorder"),
    # Logs of an eth_getLogs answer rewritten into shapes no node should send (Fault.damage, DAMAGE_MODES).
    "DAMAGE": Kind(ANSWER, 200, action="damage"),
}

# max_batch refusals by node flavour, and refuse_batches kinds; answered by batch_refusal_reply.
BATCH_CAPS = {"geth": "BATCH_GETH", "besu": "BATCH_BESU", "zkevm": "BATCH_ZKEVM"}
BATCH_OFF_KINDS = ("BATCH_OFF", "BATCH_OFF_JSON")


def batch_refusal_reply(kind: str, first_id: Any) -> Reply:
    """The answer refusing a whole batch; `first_id` is the id of its first call (geth puts it in)."""
    spec = KINDS[kind]
    if spec.body is not None:
        return Reply(spec.status, spec.body, spec.content_type)
    error = error_object(Fault(kind))
    doc: Any = [envelope(first_id, error=error)] if kind == "BATCH_GETH" else envelope(None, error=error)
    return Reply(spec.status, orjson.dumps(doc), spec.content_type)


# How a log of an eth_getLogs answer can be damaged (Fault("DAMAGE", damage=...)); the answer stays JSON.
DAMAGE_MODES = (
    "non_hex_topic",  # one topic's last hex digit turned into "g"
    "short_tx_hash",  # transactionHash cut to 4 bytes
    "five_topics",  # zero words appended up to 5 topics (one more when it had 5 already)
    "address_21_bytes",  # one byte appended to the address
    "block_hash_number",  # blockHash the number 7, not a string
    "empty_timestamp",  # blockTimestamp "0x" (set even when the node sent none)
)


@dataclass(frozen=True)
class Fault:
    """One fault of a mix: `Fault("A4", rate=0.2)`, `Fault("A2", max_blocks=100)`,
    `Fault("HTTP503", methods={"eth_getBlockByNumber"}, at={5})` (the 5th eth_getBlockByNumber it receives).

    rate: probability per eligible request (per call for range caps, batch items and DAMAGE).
    methods: the calls it hits; "batch" targets every JSON-RPC batch whatever it holds.
    at / after: only the calls with these ordinals (1-based, counted per method over every call the proxy
    received since it started or was reset, the refused ones and those inside batches included; "batch"
    counts batches) / only the calls after the after-th; both unset: every call. rate then draws among
    those (default 1: all of them). A fault that answers a whole request hits it when any of its calls is
    selected: at={5} on eth_getBlockByNumber fails the batch carrying the 5th (batch="items": that call only).
    max_blocks / max_logs: range caps fire only over these (either); both None = the provider's own cap.
    batch: "whole" (the batch gets one error object) or "items" (each call is drawn and errored alone).
    status: overrides the table's HTTP status. retry_after_s: RETRY_AFTER's header (default 1),
    I5's backoff_seconds (default 30). delay_s: how long TIMEOUT holds a request.
    damage (DAMAGE only): the modes of DAMAGE_MODES a damaged log is given, one drawn per damaged log;
    damage_logs: how many logs of a damaged answer are damaged (fewer when it has fewer; an answer without
    logs is left alone). BATCH_ORDER answers a batch in reverse order.
    """

    kind: str
    rate: float = 1.0
    methods: frozenset[str] = field(default_factory=lambda: frozenset({"eth_getLogs"}))
    max_blocks: int | None = None
    max_logs: int | None = None
    batch: str | None = None
    status: int | None = None
    retry_after_s: float | None = None
    delay_s: float = 2.0
    at: frozenset[int] = frozenset()
    after: int | None = None
    damage: tuple[str, ...] = DAMAGE_MODES
    damage_logs: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {self.rate}")
        if self.batch not in (None, "whole", "items"):
            raise ValueError(f"batch must be 'whole' or 'items', got {self.batch!r}")
        methods = {self.methods} if isinstance(self.methods, str) else set(self.methods)
        object.__setattr__(self, "methods", frozenset(methods))
        at = frozenset({self.at} if isinstance(self.at, int) else self.at)
        if not all(isinstance(n, int) and n >= 1 for n in at):
            raise ValueError(f"at must hold call ordinals >= 1, got {sorted(at)}")
        object.__setattr__(self, "at", at)
        if self.after is not None and self.after < 0:
            raise ValueError(f"after must be >= 0 or None, got {self.after}")
        damage = (self.damage,) if isinstance(self.damage, str) else tuple(self.damage)
        if not damage or not set(damage) <= set(DAMAGE_MODES):
            raise ValueError(f"damage must be some of {DAMAGE_MODES}, got {damage}")
        object.__setattr__(self, "damage", damage)
        if self.damage_logs < 1:
            raise ValueError(f"damage_logs must be >= 1, got {self.damage_logs}")

    def selects(self, nth: int) -> bool:
        """Whether the call with this ordinal is one `at` / `after` pick (every call when neither is set)."""
        if not self.at and self.after is None:
            return True
        return nth in self.at or (self.after is not None and nth > self.after)

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]

    @property
    def is_range_cap(self) -> bool:
        return self.spec.category == CAP

    @property
    def batch_mode(self) -> str:
        """How it hits a batch; "items" only for kinds with a JSON-RPC error object to put in an item."""
        spec = self.spec
        if spec.error is None or spec.bare or spec.action:
            return "whole"
        return self.batch or spec.batch

    def caps(self) -> tuple[int | None, int | None]:
        """(max_blocks, max_logs) this fault enforces."""
        if self.max_blocks is None and self.max_logs is None:
            return self.spec.max_blocks, self.spec.max_logs
        return self.max_blocks, self.max_logs

    def over_blocks(self, from_block: int, to_block: int) -> bool:
        max_blocks = self.caps()[0]
        return max_blocks is not None and to_block - from_block + 1 > max_blocks

    def over_logs(self, n_logs: int) -> bool:
        max_logs = self.caps()[1]
        return max_logs is not None and n_logs > max_logs


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def suggest_range(
    from_block: int, to_block: int, max_blocks: int | None, max_logs: int | None, log_blocks: Iterable[int] = ()
) -> tuple[int, int]:
    """The range a provider would suggest: the longest prefix of the request within both caps
    (the first half when neither cap says anything)."""
    end = to_block
    if max_blocks is not None:
        end = min(end, from_block + max_blocks - 1)
    blocks = sorted(log_blocks)
    if max_logs is not None and len(blocks) > max_logs:
        end = min(end, max(from_block, blocks[max_logs] - 1))  # blocks[max_logs]: first block that overflows
    if end >= to_block and to_block > from_block:
        end = from_block + (to_block - from_block) // 2
    return from_block, end


def _fields(
    fault: Fault, from_block: int | None, to_block: int | None, suggestion: tuple[int, int] | None
) -> dict[str, Any]:
    spec = fault.spec
    max_blocks, max_logs = fault.caps()
    s_from, s_to = suggestion or (from_block or 0, to_block or 0)
    return {
        "max_blocks": max_blocks if max_blocks is not None else spec.max_blocks,
        "max_logs": max_logs if max_logs is not None else spec.max_logs,
        "span": (to_block - from_block + 1) if from_block is not None and to_block is not None else 0,
        "s_from": s_from,
        "s_to": s_to,
        "s_from_hex": hex(s_from),
        "s_to_hex": hex(s_to),
        "s_from_HEX": f"0x{s_from:X}",
        "s_to_HEX": f"0x{s_to:X}",
        "backoff_s": fault.retry_after_s if fault.retry_after_s is not None else 30,
    }


def _render(value: Any, fields: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**fields)
    if callable(value):
        return value(fields)
    if isinstance(value, dict):
        return {k: _render(v, fields) for k, v in value.items()}
    return value


def error_object(
    fault: Fault, from_block: int | None = None, to_block: int | None = None, suggestion: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The JSON-RPC error object of `fault` for a request of [from_block, to_block]."""
    assert fault.spec.error is not None, f"{fault.kind} has no JSON-RPC error object"
    return _render(fault.spec.error, _fields(fault, from_block, to_block, suggestion))


def envelope(request_id: Any, *, result: Any = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    if error is not None:
        return {"jsonrpc": "2.0", "id": request_id, "error": error}
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def fault_reply(fault: Fault, request_id: Any) -> Reply:
    """The whole HTTP answer of a fault that needs no upstream (not H3/TIMEOUT/RESET, not a range cap).
    `request_id` is None for a batch: it fails as one error object, as geth and proxies answer."""
    spec = fault.spec
    status = fault.status if fault.status is not None else spec.status
    headers = {}
    if fault.kind == "RETRY_AFTER":
        seconds = fault.retry_after_s if fault.retry_after_s is not None else 1
        headers["Retry-After"] = f"{seconds:g}"
    if spec.body is not None:
        return Reply(status, spec.body, spec.content_type, headers)
    error = error_object(fault)
    doc = error if spec.bare else envelope(request_id, error=error)
    return Reply(status, orjson.dumps(doc), spec.content_type, headers)


def kinds_in(*categories: str) -> list[str]:
    return [name for name, spec in KINDS.items() if spec.category in categories]


def ALL_FAULTS_MIX(
    rate: float,
    *,
    methods: Iterable[str] = ("eth_getLogs",),
    max_blocks: int | None = None,
    max_logs: int | None = None,
    delay_s: float = 2.0,
    retry_after_s: float = 1.0,
) -> list[Fault]:
    """Every rate-limit, range-cap and server-trouble kind (no quota, no lag), `rate` spread evenly.

    Faults are drawn in list order, first hit wins; the i-th of n gets p / (1 - i*p) with p = rate/n, so
    each kind fires on rate/n of eligible requests and some fault on `rate` of them. Range caps only fire
    over their cap (max_blocks / max_logs, else each provider's own), so small requests see less.
    retry_after_s keeps RETRY_AFTER and I5 waits short (the catalogue's I5 says 30 s); delay_s should be
    longer than the client's timeout for TIMEOUT to be a timeout. With batches in `methods`, Q4 is drawn
    per call of a batch, so a batch of 200 carries at least one Q4 error far more often than rate/n.
    """
    names = [k for k in kinds_in(RATE, CAP, SERVER) if k in CATALOGUE_KINDS]  # the catalogue's own kinds
    p = rate / len(names)
    out = []
    for i, name in enumerate(names):
        cap = {"max_blocks": max_blocks, "max_logs": max_logs} if KINDS[name].category == CAP else {}
        out.append(
            Fault(
                name,
                rate=p / (1 - i * p),
                methods=frozenset(methods),
                delay_s=delay_s,
                retry_after_s=retry_after_s,
                **cap,
            )
        )
    return out


# -- damaged logs -------------------------------------------------------------------------------------
def damaged_log(log: dict[str, Any], mode: str, rng: random.Random) -> dict[str, Any]:
    """A copy of `log` with one damage of DAMAGE_MODES (non_hex_topic picks its topic with rng)."""
    out = dict(log)
    topics = list(out.get("topics") or [])
    if mode == "non_hex_topic" and topics:
        i = rng.randrange(len(topics))
        topics[i] = str(topics[i])[:-1] + "g"
        out["topics"] = topics
    elif mode == "short_tx_hash":
        out["transactionHash"] = str(out.get("transactionHash", "0x"))[:10]
    elif mode == "five_topics":
        out["topics"] = topics + ["0x" + "00" * 32] * max(1, 5 - len(topics))
    elif mode == "address_21_bytes":
        out["address"] = str(out.get("address", "0x" + "00" * 20)) + "00"
    elif mode == "block_hash_number":
        out["blockHash"] = 7
    elif mode == "empty_timestamp":
        out["blockTimestamp"] = "0x"
    elif mode not in DAMAGE_MODES:
        raise ValueError(f"unknown damage mode {mode!r}")
    return out


def damage_logs(logs: list[Any], fault: Fault, rng: random.Random) -> list[tuple[int, str]]:
    """Damage up to fault.damage_logs of the logs (in place, positions and modes drawn with rng): the
    (position, mode) of each damaged log, in position order."""
    positions = [i for i, log in enumerate(logs) if isinstance(log, dict)]
    chosen = sorted(rng.sample(positions, min(fault.damage_logs, len(positions))))
    done = []
    for i in chosen:
        mode = rng.choice(fault.damage)
        logs[i] = damaged_log(logs[i], mode, rng)
        done.append((i, mode))
    return done


# -- a lagging node -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LagAnswer:
    """How a lagging node answers one call: forwarded with other `params`, an `error` (kind, object),
    or else `result`. altered=False: the same answer as the real node, block tags only pinned."""

    result: Any = None
    error: tuple[str, dict[str, Any]] | None = None
    params: list[Any] | None = None
    altered: bool = True


def block_number(tag: Any) -> int | None:
    """A hex block number as int; "earliest" is 0; other tags (latest, ...) need the head: None."""
    if isinstance(tag, str) and tag.startswith("0x"):
        return int(tag, 16)
    if isinstance(tag, int):
        return tag
    return 0 if tag == "earliest" else None


def lagged_answer(
    method: str,
    params: Any,
    log_range: tuple[int, int] | None,
    lagged: int,
    *,
    getlogs_only: bool = False,
    getlogs: str = "partial",
    block_lookup: str = "null",
) -> LagAnswer | None:
    """How a node whose head is `lagged` answers a call, or None when it answers like the real node.

    eth_blockNumber says `lagged`; eth_getBlockByNumber above it is null (or I7 "header not found");
    eth_getLogs reaching above it gets the logs up to it ("partial", as geth <= 1.15 and reth < 1.10 clamp),
    [] ("empty", as erigon past the head), or -32602 ("error", reth >= 1.10). With getlogs_only only
    eth_getLogs lags while the head is truthful (go-ethereum#24078). log_range has tags resolved already.
    """
    params = params if isinstance(params, list) else []
    if method == "eth_blockNumber" and not getlogs_only:
        return LagAnswer(result=hex(lagged))
    if method == "eth_getBlockByNumber" and not getlogs_only and params:
        tag = params[0]
        number = lagged if tag in ("latest", "pending") else block_number(tag)
        if number is None:
            return None
        if number > lagged:
            return LagAnswer(error=("I7", error_object(Fault("I7")))) if block_lookup == "I7" else LagAnswer()
        return LagAnswer(params=[hex(lagged), *params[1:]]) if tag in ("latest", "pending") else None
    if method != "eth_getLogs" or log_range is None or not params or not isinstance(params[0], dict):
        return None
    filt, (from_block, to_block) = params[0], log_range
    if to_block <= lagged:
        if all(block_number(filt.get(k, "latest")) is not None for k in ("fromBlock", "toBlock")):
            return None
        # "latest" means `lagged` here, not the real node's head
        pinned = {**filt, "fromBlock": hex(from_block), "toBlock": hex(to_block)}
        return LagAnswer(params=[pinned, *params[1:]], altered=False)
    if getlogs == "error":
        return LagAnswer(
            error=(
                "LAG",
                _err(-32602, f"block range extends beyond current head block: requested {to_block}, head {lagged}"),
            )
        )
    if getlogs == "empty" or from_block > lagged:
        return LagAnswer(result=[])
    return LagAnswer(params=[{**filt, "fromBlock": hex(from_block), "toBlock": hex(lagged)}, *params[1:]])


# -- each provider's cap answer of tests/support/provider_texts.py as a range-cap kind: Fault("CAP_AVALANCHE") --
CATALOGUE_KINDS = frozenset(KINDS)  # the kinds above (the catalogue's and the generic ones), before these


def _add_cap_texts() -> None:
    from tests.support.provider_texts import CAP_TEXTS

    for text in CAP_TEXTS:
        if text.id not in KINDS:
            KINDS[text.id] = Kind(
                CAP, text.status, text.error_template(), max_blocks=text.max_blocks, max_logs=text.max_logs
            )


_add_cap_texts()
