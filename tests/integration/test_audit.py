"""`backfill verify` recounts days from the chain and names the days the store got wrong."""

from __future__ import annotations

import dataclasses
import json
import socket
from urllib.parse import urlsplit

import pytest

from backfill.settings import load_settings
from backfill.store.embedded import stop_server
from backfill.store.fingerprints import record_fingerprints
from monitor.audit.recount import run_audit
from tests.integration.damage import delete_rows, zero_timestamps
from tests.integration.harness import Chain, backfill, open_store
from tests.support.proxy import Fault, RpcProxy
from tests.support.truth import ground_truth

pytestmark = pytest.mark.slow

KEY = "0123456789abcdef0123456789abcdef"


# every call an audit makes, single or batched: an endpoint whose quota is gone answers them all with 402
EVERY_CALL = frozenset({"eth_chainId", "eth_blockNumber", "eth_getLogs", "eth_getBlockByNumber", "batch"})
QUOTA_GONE = [Fault("I6", rate=1.0, methods=EVERY_CALL)]
SAME = "same endpoint: less independent"


def _settings(data_dir, urls: list[str], **more):
    return load_settings(
        {"data_dir": data_dir, "rpc_urls": ",".join(urls), **more}, env={}, toml_path=data_dir / "none.toml"
    )


def _truth(chain: Chain, dates: list[str] | None = None) -> dict[int, tuple[int, int]]:
    """Rows per day straight from the chain (one eth_getLogs per block) over the days the devnet mined (all, or
    those dates), not from the audit's code nor the tool's plan. The copies under test start at the chain's first
    day, so their day_idx is the devnet's."""
    return ground_truth(chain.url, chain.day_blocks(dates)).per_day


def _recounted(report) -> dict[int, tuple[int, int]]:
    return {r.day_idx: (r.chain["erc20"][0], r.chain["erc1155"][0]) for r in report.results if r.chain is not None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_clean_run_verifies_every_day_against_the_chain(chain: Chain, run_copy):
    result = backfill(["verify", "--all", "--json"], run_copy, chain)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["passed"] and [r["verdict"] for r in doc["results"]] == ["ok"] * chain.days

    store = open_store(run_copy)
    truth = ground_truth(chain.url, chain.day_blocks())
    for side in ("chain", "store", "recorded"):
        counts = {r["day_idx"]: (r[side]["erc20"]["rows"], r[side]["erc1155"]["rows"]) for r in doc["results"]}
        assert counts == truth.per_day, side
    assert all(r["hash_equal"] == {"erc20": True, "erc1155": True} for r in doc["results"])
    assert {r["endpoint"] for r in doc["results"] if r["chain"]["erc20"]["rows"]} == {
        f"{urlsplit(chain.url).hostname}#0"
    }

    rows = store.query_rows(
        "SELECT day_idx, verdict, chain_erc20, store_erc20, chain_hash = store_hash FROM audit_results "
        "WHERE run_id = %(r)s ORDER BY day_idx",
        {"r": doc["run_id"]},
    )
    assert [(d, v, c, s, eq) for d, v, c, s, eq in rows] == [
        (d, "ok", truth.per_day[d][0], truth.per_day[d][0], 1) for d in range(chain.days)
    ]
    log_text = (run_copy / "backfill" / "audit.log").read_text()
    assert f"event=audit_done run_id={doc['run_id']} source=cli passed=True days=10" in log_text
    assert "day=5 date=2024-01-06 blocks=" in log_text


def test_a_sparse_day_is_one_answer_over_its_whole_range(chain: Chain, run_copy):
    # a day's first range is sized by the rows its checkpoint gives it: every day of this chain holds fewer
    # than one engine answer's worth, so each is one eth_getLogs over its whole block range (a day the store
    # holds nothing of is not sized by that zero: tests/unit/test_audit.py), and every block is asked for
    store = open_store(run_copy)
    rows = {d: int(cp["erc20_count"]) + int(cp["erc1155_count"]) for d, cp in store.checkpoints().items()}
    plans = {p.day_idx: p for p in store.read_plan()}
    with RpcProxy(chain.url, []) as proxy:
        result = backfill(["verify", "--all", "--json"], run_copy, rpc_urls=proxy.url)
        asked = proxy.getlogs_ranges()
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["passed"]
    for d, n in rows.items():
        p = plans[d]
        inside = sorted((a, b) for a, b in asked if p.start_block <= a <= p.end_block)
        assert inside[0][0] == p.start_block and inside[-1][1] == p.end_block, (d, inside)
        assert all(b + 1 == a for (_, b), (a, _) in zip(inside, inside[1:])), (d, inside)
        if n:
            assert inside == [(p.start_block, p.end_block)], (d, n, inside)


def test_a_sampled_big_day_is_recounted_over_a_span_that_still_catches_a_loss_inside_it(chain: Chain, run_copy):
    store = open_store(run_copy)
    rows = {d: int(cp["erc20_count"]) + int(cp["erc1155_count"]) for d, cp in store.checkpoints().items()}
    budget = max(10, min(n for n in rows.values() if n) // 4)  # every day with transfers is bigger than it
    args = ["verify", "--sample", str(chain.days), "--seed", "11", "--day-logs", str(budget), "--json"]
    result = backfill(args, run_copy, chain)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    spans = {r["day_idx"]: r for r in doc["results"] if r["span"]}
    assert set(spans) == {d for d, n in rows.items() if n > budget} and spans
    days = {d["day_idx"]: d for d in chain.day_blocks()}
    for d, r in spans.items():
        span = r["span"]
        assert days[d]["first_block"] <= span["from_block"] <= span["to_block"] <= days[d]["last_block"]
        assert span["to_block"] - span["from_block"] < days[d]["last_block"] - days[d]["first_block"]
        part = {"day_idx": d, "date": r["day"], "first_block": span["from_block"], "last_block": span["to_block"]}
        truth = ground_truth(chain.url, [part]).per_day[d]
        assert (r["chain"]["erc20"]["rows"], r["chain"]["erc1155"]["rows"]) == truth
        assert (r["store"]["erc20"]["rows"], r["store"]["erc1155"]["rows"]) == truth
        assert r["recorded"] is None and "sampled span: blocks" in r["detail"]

    # the same seed draws the same spans: a loss inside one is a mismatch of its day
    d, r = next((d, r) for d, r in spans.items() if r["chain"]["erc20"]["rows"])
    plan = next(p for p in store.read_plan() if p.day_idx == d)
    span = dataclasses.replace(plan, start_block=r["span"]["from_block"], end_block=r["span"]["to_block"])
    lost = delete_rows(store, span, keep_every=1)
    again = backfill(args, run_copy, chain)
    assert again.returncode == 1, again.stdout + again.stderr
    (bad,) = [x for x in json.loads(again.stdout)["results"] if x["verdict"] != "ok"]
    n = r["chain"]["erc20"]["rows"]
    assert bad["day_idx"] == d and bad["span"] == r["span"]
    assert f"erc20: chain {n} rows / store {n - lost} rows" in bad["detail"]


def test_overwritten_day_shows_both_versions_the_latest_off_the_chain(chain: Chain, run_copy):
    store = open_store(run_copy)
    record_fingerprints(store)
    plan = store.read_plan()[6]
    zero_timestamps(store, plan)
    settings = load_settings({"data_dir": run_copy, "rpc_urls": chain.url}, env={}, toml_path=run_copy / "none.toml")

    report = run_audit(store, settings, days=[6], sample=0, source="test")
    assert not report.passed and report.mismatched_days == [6]
    (day,) = report.results
    assert "erc20 hash differs, same count" in day.detail and "store differs from its fingerprint" in day.detail
    old, new = day.versions
    n = sum(old.rows.values())
    assert n > 0 and old.equals_chain and old.zero_timestamps == 0 and not old.latest
    assert new.latest and new.equals_chain is False and new.zero_timestamps == n and new.not_on_chain == n
    lines = report.lines()
    assert len(lines) == 3 and lines[0].startswith(f"{chain.day(6)} day=6 ") and "MISMATCH" in lines[0]
    assert f"version {old.version}:" in lines[1] and "equals the chain" in lines[1]
    assert f"version {new.version} (latest)" in lines[2] and f"{n} rows not on chain" in lines[2]
    stored = json.loads(store.scalar("SELECT versions FROM audit_results WHERE run_id = %(r)s", {"r": report.run_id}))
    assert [v["zero_timestamps"] for v in stored] == [0, n]


def test_another_endpoint_recounts_and_its_key_is_never_written(chain: Chain, run_copy):
    port = urlsplit(chain.url).port
    second = f"http://localhost:{port}/?key={KEY}"  # the same node under another name, with a key
    store = open_store(run_copy)
    assert {cp["endpoints"] for cp in store.checkpoints().values() if cp["erc20_count"]} == {"127.0.0.1#0"}

    result = backfill(
        ["verify", "--days", f"{chain.day(0)},{chain.day(5)}", "--json"], run_copy, rpc_urls=f"{chain.url},{second}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert [(r["day_idx"], r["endpoint"], r["verdict"]) for r in doc["results"]] == [
        (0, "localhost#1", "ok"),
        (5, "localhost#1", "ok"),
    ]
    assert KEY not in result.stdout + result.stderr
    rows = store.query_rows("SELECT * FROM audit_results")
    assert rows and KEY not in repr(rows)
    leaked = [p for p in run_copy.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaked == []


def test_unreachable_endpoint_is_an_error_verdict_without_its_key(chain: Chain, run_copy):
    dead = f"http://127.0.0.1:{_free_port()}/?key={KEY}"
    result = backfill(
        ["verify", "--days", chain.day(1), "--rpc-url", dead], run_copy, extra_env={"BACKFILL_RPC_ATTEMPTS": "2"}
    )
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(chain.day(1))]
    assert "ERROR" in line and "could not be recounted from RPC: 127.0.0.1#0: Transient: connection failed" in line
    assert KEY not in result.stdout + result.stderr
    assert "1 error" in result.stdout


def test_endpoint_of_another_chain_is_an_error_verdict(chain: Chain, run_copy):
    store = open_store(run_copy)
    store.meta_set("chain_id", "999")
    settings = load_settings({"data_dir": run_copy, "rpc_urls": chain.url}, env={}, toml_path=run_copy / "none.toml")
    report = run_audit(store, settings, days=[0, 1], source="test")
    assert not report.passed and report.error_days == [0, 1] and report.mismatched_days == []
    assert all("this database holds chain 999" in r.detail for r in report.results)


def test_bad_days_is_one_error_line_before_anything_is_opened(tmp_path):
    data_dir = tmp_path / "data"
    result = backfill(["verify", "--days", "2024-01-05..2024-01-03"], data_dir, rpc_urls="http://127.0.0.1:9")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --days: the range '2024-01-05..2024-01-03' ends before it starts"
    ]
    assert not data_dir.exists()


# -- falling back, and as careful as the copy ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def copied_through_a(chain: Chain, tmp_path_factory):
    """Days 0-3 (an empty one among them) copied through proxy A alone; B is a second proxy over the same node
    that took no part in the copy, so the audit prefers it. Faults are cleared before each test."""
    data_dir = tmp_path_factory.mktemp("through_a") / "data"
    with RpcProxy(chain.url) as a, RpcProxy(chain.url) as b:
        run = backfill(
            ["start", "--foreground", "--from", chain.day(0), "--to", chain.day(3), "--confirmations", "0"],
            data_dir,
            rpc_urls=a.url,
            shards=1,
            extra_env={"BACKFILL_ON_COMPLETE": "0"},
        )
        assert run.returncode == 0, run.stderr
        try:
            yield data_dir, a, b
        finally:
            stop_server(data_dir)


@pytest.fixture
def through_a(copied_through_a):
    _, a, b = copied_through_a
    a.set_faults([])
    b.set_faults([])
    return copied_through_a


def test_quota_gone_on_the_preferred_endpoint_recounts_on_the_filling_one_and_says_so(chain: Chain, through_a):
    data_dir, a, b = through_a
    store = open_store(data_dir)
    assert {cp["endpoints"] for cp in store.checkpoints().values() if cp["erc20_count"]} == {"127.0.0.1#0"}
    truth = _truth(chain, [chain.day(i) for i in range(4)])  # the days copied_through_a copied
    b.set_faults(QUOTA_GONE)

    report = run_audit(store, _settings(data_dir, [a.url, b.url]), all_days=True, source="test")
    assert report.passed, report.lines()
    assert _recounted(report) == truth and len(truth) == 4
    for day in report.results:
        assert day.endpoint == "127.0.0.1#0", day.line()
        assert f"recounted on 127.0.0.1#0, which filled the day ({SAME})" in day.detail, day.detail
        assert "127.0.0.1#1: " in day.detail and "Payment Required" in day.detail, day.detail
    assert b.fault_counts()["I6"] >= 1 and not any(c.ok for c in b.calls()), "B answered nothing but 402"
    assert len(b.calls("eth_getLogs")) <= 2, "a parked endpoint is not asked again for every day"

    rebuilt = backfill(["rebuild", "--json"], data_dir, rpc_urls=f"{a.url},{b.url}")
    assert rebuilt.returncode == 0, rebuilt.stderr
    audit = json.loads(rebuilt.stdout)["audit"]
    assert audit["passed"] and audit["error_days"] == [] and audit["mismatched_days"] == []
    assert all(SAME in r["detail"] for r in audit["results"]) and len(audit["results"]) == 4


def test_quota_gone_everywhere_is_an_error_per_day_and_the_rebuild_names_the_days(chain: Chain, through_a):
    data_dir, a, b = through_a
    store = open_store(data_dir)
    a.set_faults(QUOTA_GONE)
    b.set_faults(QUOTA_GONE)

    report = run_audit(store, _settings(data_dir, [a.url, b.url]), all_days=True, source="test")
    assert [r.verdict for r in report.results] == ["error"] * 4 and report.mismatched_days == []
    assert report.error_days == report.unrecounted_days == [0, 1, 2, 3]
    for day in report.results:
        assert day.chain is None and day.detail.startswith("could not be recounted from RPC: 127.0.0.1#1: "), day.detail
        assert "127.0.0.1#0: " in day.detail and "Payment Required" in day.detail

    rebuilt = backfill(["rebuild"], data_dir, rpc_urls=f"{a.url},{b.url}")
    assert rebuilt.returncode == 1, rebuilt.stdout + rebuilt.stderr
    (line,) = rebuilt.stderr.strip().splitlines()
    assert line.startswith("error: rebuild stopped at step audit: day(s) "), line
    days = f"{chain.day(0)}..{chain.day(3)}"  # consecutive days folded
    assert f"day(s) {days} could not be recounted from RPC (127.0.0.1#1: " in line, line
    assert "differs from the store" not in line and "Payment Required" in line


@pytest.mark.parametrize("healthy_beside", [False, True], ids=["lagging-alone", "lagging-beside-a-healthy-one"])
def test_a_node_lagging_on_getlogs_only_gives_no_false_mismatch_and_hides_no_loss(
    chain: Chain, run_copy, healthy_beside
):
    """The copy filled every day on 127.0.0.1#0; the audit prefers the others, among them a node whose
    eth_getLogs is 40 blocks behind a truthful eth_blockNumber (go-ethereum#24078)."""
    store = open_store(run_copy)
    record_fingerprints(store)
    plans = store.read_plan()
    last = plans[-1].day_idx
    truth = _truth(chain)
    with (
        RpcProxy(chain.url) as healthy,
        RpcProxy(chain.url, lag_blocks=40, getlogs_lag_only=True) as lagging,
        RpcProxy(chain.url) as other,
    ):
        urls = [healthy.url, lagging.url] + ([other.url] if healthy_beside else [])
        settings = _settings(run_copy, urls, rpc_attempts=3)

        clean = run_audit(store, settings, all_days=True, source="test")
        assert clean.passed, clean.lines()
        assert _recounted(clean) == truth
        if not healthy_beside:  # all it was asked first: its short answers near the head came, and were refused
            assert [c for c in lagging.calls("eth_getLogs") if c.fault == "LAG"], "the lag never showed"
            assert SAME in clean.results[-1].detail and "NodeBehind" in clean.results[-1].detail

        lost = delete_rows(store, plans[-1])
        damaged = run_audit(store, settings, all_days=True, source="test")
    assert damaged.mismatched_days == [last] and damaged.error_days == [], damaged.lines()
    bad = damaged.results[-1]
    assert (bad.chain["erc20"][0], bad.chain["erc1155"][0]) == truth[last]
    assert f"erc20: chain {truth[last][0]} rows / store {truth[last][0] - lost} rows" in bad.detail
    if healthy_beside:
        assert "confirmed by a second recount on 127.0.0.1#" in bad.detail, bad.detail
    else:  # the only other endpoint cannot serve the day's last blocks: said, and still a mismatch
        assert "not re-checked: 127.0.0.1#1: NodeBehind" in bad.detail, bad.detail
