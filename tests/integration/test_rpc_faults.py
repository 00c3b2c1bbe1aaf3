"""The RPC layer against the providers' real failures: a fault-injecting proxy in front of a real anvil node.

Each fault kind alone drives the worker's own fetch path (range sizing, splitting, retries, decoding) in this
process and must give exactly the chain's transfers; the mixed, lagging and dead-endpoint scenarios run the
whole CLI and compare the store with the ground truth.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from backfill.chain.client import RpcClient
from backfill.decode.decoder import DecodedBatch
from backfill.settings import load_settings
from backfill.store.embedded import stop_server
from tests.integration.harness import Chain, assert_exact, backfill, complete_days, open_store
from tests.support.native_rows import all_rows
from tests.support.proxy import ALL_FAULTS_MIX, KINDS, Fault, RpcProxy
from tests.support.proxy_faults import CATALOGUE_KINDS
from tests.support.truth import ground_truth
from workers.windows import day_segments, pack_windows
from workers.worker import Worker, unit_blocks

pytestmark = pytest.mark.slow
KEY = "pRoViDeRkEy0123456789abcdef"
DAYS = [0, 1, 5]  # two ordinary days and the heavy day (>10,000 logs in a few blocks)


@pytest.fixture(scope="module")
def slice_truth(chain: Chain):
    from backfill.chain.planner import DayPlan

    days = {d["day_idx"]: d for d in chain.summary["days"]}
    plans = [DayPlan(i, chain.start, days[i]["first_block"], days[i]["last_block"]) for i in DAYS]
    truth = ground_truth(chain.url, [days[i] for i in DAYS])
    return plans, truth


def fetch_with_worker(urls: list[str], plans, **settings_overrides) -> tuple[DecodedBatch, RpcClient]:
    """The worker's fetch path over the given days, no store: what it would write."""
    settings = load_settings(
        {
            "rpc_urls": ",".join(urls),
            "window_blocks": 4000,
            "getlogs_blocks": 2000,
            "rpc_timeout_s": 1.0,
            **settings_overrides,
        },
        env={},
    )
    worker = Worker(settings, 0, 1, store=None)  # type: ignore[arg-type]
    segments = [s for p in plans for s in day_segments(p, p.start_block, unit_blocks(settings.window_blocks))]
    windows = pack_windows(segments, unit_blocks(settings.window_blocks))

    async def run() -> tuple[DecodedBatch, RpcClient]:
        out = DecodedBatch()
        async with RpcClient(
            settings.rpc_urls, timeout_s=settings.rpc_timeout_s, attempts=settings.rpc_attempts, context="test"
        ) as rpc:
            worker.rpc = rpc
            await rpc.refresh_heads()
            top = rpc.highest_head()
            worker.guard_from = max(0, top - settings.lag_guard_blocks) if top is not None else None
            for w in windows:
                for part in await worker.fetch_window(rpc, w):
                    out.extend(part)
        return out, rpc

    try:
        return asyncio.run(run())
    finally:
        worker.executor.shutdown()


def assert_same_as_truth(decoded: DecodedBatch, truth) -> None:
    ts = {bn: t for bn, (_, t) in decoded.blocks.items()}
    rows20, rows1155 = all_rows(decoded)
    erc20 = [(r.block_number, ts[r.block_number], *r[1:]) for r in rows20]
    erc1155 = [(r.block_number, ts[r.block_number], *r[1:]) for r in rows1155]
    assert len(erc20) == len(set(erc20)) and len(erc1155) == len(set(erc1155)), "duplicates"
    assert set(erc20) == truth.erc20, (len(truth.erc20 - set(erc20)), len(set(erc20) - truth.erc20))
    assert set(erc1155) == truth.erc1155


RECOVERABLE = sorted(
    k for k, v in KINDS.items() if v.category in ("rate_limit", "range_cap", "server") and k in CATALOGUE_KINDS
)  # the other providers' cap wordings: test_range_cap_wordings


@pytest.mark.parametrize("kind", RECOVERABLE)
def test_each_fault_kind_alone_gives_exact_data(chain: Chain, slice_truth, kind):
    plans, truth = slice_truth
    if KINDS[kind].category == "range_cap":  # a cap smaller than the worker's ranges, so it always bites
        fault = Fault(kind, rate=1.0, max_blocks=700)
    else:
        fault = Fault(kind, rate=0.3, retry_after_s=0.2, delay_s=1.5)
    with RpcProxy(chain.url, fault, seed=3) as proxy:
        decoded, rpc = fetch_with_worker([proxy.url], plans)
        assert proxy.fault_counts()[kind] > 0, f"{kind} was never injected"
    assert_same_as_truth(decoded, truth)


@pytest.mark.parametrize("kind", ["I6", "A5", "P1"])
def test_a_quota_exhausted_endpoint_is_parked_and_the_other_serves(chain: Chain, slice_truth, kind):
    plans, truth = slice_truth
    with RpcProxy(chain.url, Fault(kind, rate=1.0)) as parked, RpcProxy(chain.url) as healthy:
        decoded, rpc = fetch_with_worker([parked.url, healthy.url], plans)
        parked_requests = len(parked.calls("eth_getLogs"))
    assert_same_as_truth(decoded, truth)
    usage = {u["endpoint"]: u for u in rpc.usage()}
    assert usage["127.0.0.1#0"]["parked"] and "quota" in usage["127.0.0.1#0"]["errors"]
    assert parked_requests <= 2, "a parked endpoint is not hammered"


def test_a_suggested_range_is_used_on_the_next_call(chain: Chain, slice_truth):
    plans, truth = slice_truth
    with RpcProxy(chain.url, Fault("A2", rate=1.0, max_blocks=500)) as proxy:
        decoded, rpc = fetch_with_worker([proxy.url], plans)
        calls = proxy.calls("eth_getLogs")
    assert_same_as_truth(decoded, truth)
    refused = [c for c in calls if c.fault == "A2"]
    first_refused = refused[0].params
    answered = proxy_ranges = [c.params for c in calls if c.ok]
    assert (first_refused[0], first_refused[0] + 499) in answered, "the suggested range was not used"
    # once learned, the cap costs (almost) no more refusals: one per concurrent chunk in flight at most
    assert len(refused) <= 4, len(refused)
    assert max(b - a + 1 for a, b in proxy_ranges) <= 500


def test_rate_limit_with_retry_after_is_waited_out(chain: Chain):
    with RpcProxy(chain.url, Fault("RETRY_AFTER", rate=1.0, retry_after_s=1.5, methods={"eth_blockNumber"})) as proxy:

        async def call() -> tuple[int, float]:
            async with RpcClient([proxy.url], timeout_s=5) as rpc:
                t0 = time.monotonic()
                task = asyncio.create_task(rpc.block_number())
                while not proxy.calls("eth_blockNumber"):
                    await asyncio.sleep(0.01)
                proxy.set_faults([])
                return await task, time.monotonic() - t0

        head, elapsed = asyncio.run(call())
        assert head > 0 and elapsed >= 1.4, elapsed
        assert len(proxy.calls("eth_blockNumber")) == 2, "retried once, after the wait"


def test_a_dead_endpoint_is_routed_around(chain: Chain, slice_truth):
    plans, truth = slice_truth
    with RpcProxy(chain.url) as healthy:
        decoded, rpc = fetch_with_worker(["http://127.0.0.1:9", healthy.url], plans)
    assert_same_as_truth(decoded, truth)
    usage = {u["endpoint"]: u for u in rpc.usage()}
    assert usage["127.0.0.1#0"]["requests"] <= 6, "a dead endpoint cools down longer after each failure"


@pytest.mark.parametrize(
    "mode", [dict(lag_blocks=30), dict(lag_blocks=30, lag_getlogs="empty"), dict(lag_blocks=30, getlogs_lag_only=True)]
)
@pytest.mark.parametrize("fast_decode", [True, False], ids=["compiled", "python"])
def test_a_lagging_endpoint_never_yields_a_short_answer(chain: Chain, mode, fast_decode):
    """Both readers of the guard's batch answer (the scanner and orjson) must refuse the same short answers."""
    from backfill.chain.planner import DayPlan

    last = chain.summary["days"][-1]
    plans = [DayPlan(last["day_idx"], chain.start, last["first_block"], last["last_block"])]
    truth = ground_truth(chain.url, [last])
    head = chain.summary["head_block"]
    with RpcProxy(chain.url, **mode) as lagging, RpcProxy(chain.url) as healthy:
        decoded, rpc = fetch_with_worker([lagging.url, healthy.url], plans, fast_decode=fast_decode)
        lag_answers = [c for c in lagging.calls("eth_getLogs") if c.fault == "LAG"]
        asked = [c.params for c in lagging.calls("eth_getLogs") if c.params]
    assert_same_as_truth(decoded, truth)
    if mode.get("getlogs_lag_only"):
        # its eth_blockNumber is truthful, so only the answer check can tell: short answers came and were refused
        assert lag_answers, "the lagging endpoint was never asked for the blocks it lacks"
        assert rpc.errors_by_class["NodeBehind"] >= 1
    else:
        # it says its head is behind: it is routed around for the blocks above that head
        assert all(b <= head - 30 for _, b in asked), "asked a node for blocks above its own head"


def test_only_a_lagging_endpoint_leaves_the_day_unfinished_rather_than_short(chain: Chain, tmp_path):
    last = chain.days - 1
    with RpcProxy(chain.url, lag_blocks=30, getlogs_lag_only=True) as lagging:
        run = backfill(
            ["start", "--foreground", "--from", chain.day(last), "--to", chain.day(last), "--confirmations", "0"],
            tmp_path / "data",
            rpc_urls=lagging.url,
            shards=1,
            extra_env={"BACKFILL_MAX_DAY_ATTEMPTS": "1", "BACKFILL_RPC_ATTEMPTS": "3"},
            timeout=300,
        )
    try:
        assert run.returncode != 0
        store = open_store(tmp_path / "data")
        assert complete_days(store) == set(), "a day must not be COMPLETE from a lagging node's short answer"
    finally:
        stop_server(tmp_path / "data")


def test_mixed_faults_at_20_percent_on_two_endpoints_give_exact_data_and_no_key_leaks(chain: Chain, tmp_path):
    data_dir = tmp_path / "data"
    with (
        RpcProxy(chain.url, ALL_FAULTS_MIX(0.2, max_blocks=100, delay_s=1.5, retry_after_s=0.3), seed=1) as a,
        RpcProxy(chain.url, ALL_FAULTS_MIX(0.2, max_blocks=100, delay_s=1.5, retry_after_s=0.3), seed=2) as b,
    ):
        urls = f"{a.url_with_key(KEY)},{b.url_with_key(KEY + 'b')}"
        run = backfill(
            ["start", "--foreground", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
            data_dir,
            rpc_urls=urls,
            shards=2,
            extra_env={
                "BACKFILL_RPC_TIMEOUT_S": "1",
                "BACKFILL_WINDOW_BLOCKS": "1000",
                "BACKFILL_GETLOGS_BLOCKS": "250",
            },
            timeout=600,
        )
        injected = sum(a.fault_counts().values()) + sum(b.fault_counts().values())
        getlogs = len(a.calls("eth_getLogs")) + len(b.calls("eth_getLogs"))
        status = backfill(["status", "--json"], data_dir, rpc_urls=urls)
    try:
        assert run.returncode == 0, run.stderr
        assert getlogs >= 50 and 0.1 <= injected / getlogs <= 0.35, (injected, getlogs)
        store = open_store(data_dir)
        assert_exact(store, chain)
        # keys never appear in any file under data/ or any command output
        grep = subprocess.run(["grep", "-rl", KEY, str(data_dir)], capture_output=True, text=True)
        assert grep.stdout == "", f"key found in {grep.stdout}"
        for text in (run.stdout, run.stderr, status.stdout, status.stderr):
            assert KEY not in text
        assert '"errors"' in status.stdout
    finally:
        stop_server(data_dir)


def _cap_fault(text) -> tuple[Fault, int | None, int | None]:
    """The fault for a provider's cap wording, with caps that bite the worker's ranges (2,000 blocks at first;
    the heavy day's 12,000 logs in three blocks): 700 blocks, 10,000 logs where the wording takes the number,
    else the provider's own. (max_blocks, max_logs) are what the answer then states, if anything."""
    from tests.support.provider_texts import CapText  # noqa: F401  (the fixtures' type)

    wording = f"{text.message} {text.data if not callable(text.data) else ''}"
    blocks = 700 if text.max_blocks is not None and ("{max_blocks" in wording or not text.stated) else text.max_blocks
    logs = (
        10_000
        if text.max_logs is not None and ("{max_logs" in wording or not text.stated or callable(text.data))
        else text.max_logs
    )
    fault = Fault(text.id, rate=1.0, max_blocks=blocks, max_logs=logs)
    return fault, (blocks if text.stated else None), (logs if text.stated else None)


def _cap_ids() -> list[str]:
    from tests.support.provider_texts import CAP_TEXTS

    return [t.id for t in CAP_TEXTS]


@pytest.mark.parametrize("cap_id", _cap_ids())
def test_range_cap_wordings_split_once_and_use_the_stated_range(chain: Chain, slice_truth, cap_id):
    """Every provider's cap answer in the fixtures: the first refusal splits, the range the answer states (or
    suggests) is what the next calls ask for, few refusals in all, and the data is exact."""
    from tests.support.provider_texts import CAP_TEXTS

    text = next(t for t in CAP_TEXTS if t.id == cap_id)
    plans, truth = slice_truth
    fault, stated_blocks, stated_logs = _cap_fault(text)
    with RpcProxy(chain.url, fault) as proxy:
        decoded, _ = fetch_with_worker([proxy.url], plans)
        calls = proxy.calls("eth_getLogs")
    assert_same_as_truth(decoded, truth)
    refused = [i for i, c in enumerate(calls) if c.fault == cap_id]
    max_blocks, max_logs = fault.caps()
    if max_blocks is not None and max_blocks < 2000 or max_logs is not None and max_logs <= 10_000:
        assert refused, f"{cap_id}: the cap never bit"
    if not refused:
        return
    if stated_blocks is not None or text.suggests:
        assert len(refused) <= 2, (cap_id, len(refused))
    elif stated_logs is not None:
        # a result cap with no range in the answer: where the logs are is unknown, so the range is halved; the
        # heavy day's three dense blocks take one halving per power of two of the 2,000-block first range
        assert len(refused) <= 12, (cap_id, len(refused))
    else:  # "too wide", no number: halved once or twice, then never grown back to a refused size
        assert len(refused) <= 4, (cap_id, len(refused))
    if stated_blocks is not None:  # every call after the first refusal fits the stated block range
        later = [c.params for c in calls[refused[0] + 1 :] if isinstance(c.params, tuple)]
        assert later and all(b - a + 1 <= stated_blocks for a, b in later), (cap_id, later[:5])
