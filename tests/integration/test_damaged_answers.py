"""An endpoint that damages logs on the way (non-hex digits, short hashes, a fifth topic, a 21-byte address, a
non-string block hash, an empty timestamp): its answers are refused whole and asked again elsewhere; nothing of
them reaches a table, and status counts them against that endpoint."""

from __future__ import annotations

import json

import pytest

from tests.integration.harness import Chain, assert_exact, backfill, open_store
from tests.integration.test_rpc_faults import assert_same_as_truth, fetch_with_worker, slice_truth  # noqa: F401  (fixtures)
from tests.support.proxy import DAMAGE_MODES, Fault, RpcProxy

pytestmark = pytest.mark.slow

# what the product writes, checked by the store itself: lowercase 0x hex of the right length
HASH, ADDRESS = "'^0x[0-9a-f]{64}$'", "'^0x[0-9a-f]{40}$'"
MALFORMED = {
    "erc20_transfers_staging": f"NOT match(tx_hash, {HASH}) OR NOT match(token_address, {ADDRESS}) "
    f"OR NOT match(from_address, {ADDRESS}) OR NOT match(to_address, {ADDRESS})",
    "erc1155_transfers_staging": f"NOT match(tx_hash, {HASH}) OR NOT match(token_address, {ADDRESS}) "
    f"OR NOT match(operator, {ADDRESS}) OR NOT match(from_address, {ADDRESS}) "
    f"OR NOT match(to_address, {ADDRESS})",
    "transfer_quarantine": f"NOT match(tx_hash, {HASH}) OR NOT match(address, {ADDRESS}) "
    f"OR length(topics) NOT BETWEEN 1 AND 4 OR NOT arrayAll(t -> match(t, {HASH}), topics) "
    "OR NOT match(data, '^0x([0-9a-f]{2})*$')",
    "block_timestamps": f"NOT match(block_hash, {HASH}) OR toUnixTimestamp(timestamp) = 0",
}


@pytest.mark.parametrize("fast_decode", [True, False], ids=["compiled", "python"])
def test_damaged_answers_are_fetched_again_from_the_other_endpoint(chain: Chain, slice_truth, fast_decode):
    plans, truth = slice_truth
    damaging = Fault("DAMAGE", rate=1.0, damage_logs=3)  # every answer of it that has logs
    with RpcProxy(chain.url, damaging, seed=5) as bad, RpcProxy(chain.url) as good:
        decoded, rpc = fetch_with_worker(
            [bad.url, good.url],
            plans,
            fast_decode=fast_decode,
            window_blocks=500,
            getlogs_blocks=50,
            getlogs_answer_logs=200,
        )
        # ^ many small answers, so that several are damaged
        served = bad.damaged_answers()
        modes = bad.damage_counts()
    # at least one damaged answer of several kinds: after the first refusal the bad endpoint cools down, and
    # whether the worker asks it again before the copy ends depends on the machine's pace
    assert served >= 1 and len(modes) >= 2, f"too little damage injected: {modes}"
    assert_same_as_truth(decoded, truth)
    assert decoded.n_quarantined == 0 or all(
        "hex" not in reason and "malformed" not in reason for _, reason in decoded.quarantined
    )
    usage = {u["endpoint"]: u for u in rpc.usage()}
    assert usage["127.0.0.1#0"]["damaged"] == served, "every damaged answer is refused, and only those"
    assert usage["127.0.0.1#1"]["damaged"] == 0
    assert rpc.errors_by_class["DamagedAnswer"] == served


def test_a_run_with_one_damaging_endpoint_is_exact_and_status_blames_it(chain: Chain, run_dir):
    """The issue's case: one endpoint damages a share of its logs (the three kinds seen in the field and the
    rest), a second is healthy; the whole CLI, two workers, the rebuild off."""
    damaging = Fault("DAMAGE", rate=0.5, damage_logs=5, damage=DAMAGE_MODES)
    with RpcProxy(chain.url, damaging, seed=11) as bad, RpcProxy(chain.url) as good:
        urls = f"{bad.url},{good.url}"
        run = backfill(
            ["start", "--foreground", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
            run_dir,
            rpc_urls=urls,
            shards=2,
            extra_env={
                "BACKFILL_ON_COMPLETE": "0",
                "BACKFILL_WINDOW_BLOCKS": "1000",
                "BACKFILL_GETLOGS_ANSWER_LOGS": "500",
            },
            timeout=600,
        )  # many answers
        served = bad.damaged_answers()
        status = backfill(["status", "--json"], run_dir, rpc_urls=urls)
        text = backfill(["status"], run_dir, rpc_urls=urls)
    assert run.returncode == 0, run.stderr[-2000:]
    assert served >= 2, f"too little damage injected: {bad.damage_counts()}"
    store = open_store(run_dir)
    try:
        assert_exact(store, chain)
        for table, malformed in MALFORMED.items():
            assert store.scalar(f"SELECT count() FROM {table} WHERE {malformed}") == 0, f"malformed rows in {table}"
    finally:
        store.close()
    endpoints = {e["endpoint"]: e for e in json.loads(status.stdout)["rpc"]["endpoints"]}
    assert endpoints["127.0.0.1#0"]["damaged"] == served
    assert endpoints["127.0.0.1#1"]["damaged"] == 0
    assert f"{served} damaged answers" in text.stdout
    worker_logs = "".join(p.read_text() for p in (run_dir / "backfill").glob("worker-*.log"))
    assert "event=damaged_answer" in worker_logs and "Traceback" not in worker_logs
