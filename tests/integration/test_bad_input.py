"""Bad input gets one clear error line per problem and a non-zero exit, writes nothing, and leaks no secret;
`backfill config` and `start --dry-run` show what a start would use and do, writing nothing."""

from __future__ import annotations

import json

import pytest

from backfill.devnet import Anvil
from tests.integration.harness import Chain, backfill, open_store

KEY = "k3yS3cretAbCdEf0123456789"


def assert_one_clear_line(result, needle: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("args,env,needle", [
    (["start", "--foreground", "--from", "2024-01-01", "--to", "2024-01-02"], {"SHARDS": "0"}, "SHARDS (environment): must be at least 1"),
    (["start", "--foreground", "--from", "2024-01-05", "--to", "2024-01-02"], {}, "--from 2024-01-05 is after --to 2024-01-02"),
    (["start", "--foreground", "--from", "2024-01-01", "--to", "2024-01-02"], {"CLICKHOUSE_URL": "http://user:pw@host:port/db"},
     "CLICKHOUSE_URL (environment): must be a URL like"),
    (["start", "--foreground", "--from", "yesterday"], {}, "--from (flag): must be a date"),
    (["start", "--foreground", "--from", "2024-01-01", "--to", "2024-01-02"],
     {"ETHEREUM_RPC_URLS": f"http://127.0.0.1:9/v2/{KEY}"}, "no RPC endpoint answers"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, chain: Chain, args, env, needle):
    result = backfill(args, tmp_path / "data", chain, extra_env=env)
    assert_one_clear_line(result, needle)
    assert KEY not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists(), "nothing may be written (not even an empty log)"


@pytest.mark.parametrize("quota_kind", ["I6", "A5", "P1"])
def test_a_spent_quota_at_start_is_one_line_naming_the_endpoint_not_its_key(tmp_path, chain: Chain, quota_kind):
    from tests.proxy import RpcProxy

    with RpcProxy(chain.url, quota_calls=0, quota_kind=quota_kind) as spent:
        result = backfill(["start", "--foreground", "--from", "2024-01-01", "--to", "2024-01-02"], tmp_path / "data",
                          rpc_urls=spent.url_with_key(KEY))
    assert_one_clear_line(result, "quota used up or key refused")
    assert "127.0.0.1#0" in result.stderr and "ETHEREUM_RPC_URLS" in result.stderr
    assert KEY not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists()


def test_another_chain_is_refused_and_changes_nothing(chain: Chain, data_dir, finished_run):
    _, store = finished_run
    tables = ("erc20_transfers_staging", "backfill_checkpoint", "backfill_days", "backfill_meta")
    before = {t: store.scalar(f"SELECT count() FROM {t}") for t in tables}
    with Anvil(chain_id=4242) as other:
        result = backfill(["start", "--foreground", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
                          data_dir, rpc_urls=other.url, shards=2)
    assert_one_clear_line(result, "serves chain 4242 but this database holds chain 31337")
    assert {t: store.scalar(f"SELECT count() FROM {t}") for t in tables} == before


def test_to_beyond_the_chain_is_refused(chain: Chain, tmp_path):
    result = backfill(["start", "--foreground", "--from", chain.first_day, "--to", "2030-01-01", "--confirmations", "0"],
                      tmp_path / "data", chain)
    try:
        assert_one_clear_line(result, "is beyond the chain")
        store = open_store(tmp_path / "data")
        assert store.scalar("SELECT count() FROM backfill_days") == 0
    finally:
        from backfill.embedded import stop_server
        stop_server(tmp_path / "data")


def test_every_problem_of_a_config_is_reported_at_once_and_writes_nothing(tmp_path, chain: Chain):
    (tmp_path / "backfill.toml").write_text("shard = 3\nwindw_blocks = 100\nconfirmations = -1\n")
    result = backfill(["start", "--foreground", "--from", chain.first_day, "--to", chain.last_day], tmp_path / "data",
                      chain, extra_env={"SHARDS": "abc"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: backfill.toml: unknown key 'shard' (did you mean 'shards'?)",
        "error: backfill.toml: unknown key 'windw_blocks' (did you mean 'window_blocks'?)",
        "error: backfill.toml: confirmations must be at least 0, got -1",
        "error: SHARDS (environment): must be an integer, got 'abc'",
    ]
    assert not (tmp_path / "data").exists()


def test_config_shows_each_setting_and_its_source_with_keys_redacted(tmp_path):
    (tmp_path / "backfill.toml").write_text("confirmations = 5\nshards = 4\n[gates.strict]\nquarantine_share = 0.02\n")
    env = {"CLICKHOUSE_URL": "http://bob:hunter22@127.0.0.1:9/eth"}
    rpc = f"https://eth.example/v2/{KEY}"
    text = backfill(["config", "--window-blocks", "500"], tmp_path / "data", rpc_urls=rpc, shards=3, extra_env=env)
    assert text.returncode == 0, text.stderr
    lines = {line.split()[0]: line for line in text.stdout.splitlines()}
    assert lines["window_blocks"].split()[1:] == ["500", "flag", "--window-blocks"]
    assert lines["shards"].split()[1:] == ["3", "environment", "SHARDS"]
    assert lines["confirmations"].split()[1:] == ["5", "backfill.toml:", "confirmations"]
    assert lines["stall_s"].split()[1:] == ["300.0", "default"]
    assert "https://eth.example/v2/***" in lines["rpc_urls"] and "bob:***@127.0.0.1:9/eth" in lines["clickhouse_url"]

    doc = json.loads(backfill(["config", "--json", "--window-blocks", "500"], tmp_path / "data", rpc_urls=rpc, shards=3,
                              extra_env=env).stdout)
    assert doc["shards"] == {"value": 3, "source": "environment SHARDS", "origin": "environment"}
    assert doc["confirmations"] == {"value": 5, "source": "backfill.toml: confirmations", "origin": "file"}
    assert doc["window_blocks"]["origin"] == "flag" and doc["audit_sample"]["origin"] == "default"
    assert doc["gates.strict.quarantine_share"]["value"] == 0.02
    assert doc["rpc_urls"]["value"] == ["https://eth.example/v2/***"]
    assert KEY not in text.stdout + json.dumps(doc) and "hunter22" not in text.stdout + json.dumps(doc)
    assert not (tmp_path / "data").exists()


def test_dry_run_prints_the_days_and_writes_nothing(tmp_path, chain: Chain):
    result = backfill(["start", "--dry-run", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
                      tmp_path / "data", chain, shards=3)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "dry run: nothing was written" in out and "shards: 3" in out and "(chain 31337)" in out
    assert f"plan: {chain.days} days, {chain.first_day} to {chain.last_day}" in out
    days = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [d[1] for d in days] == [chain.day(i) for i in range(chain.days)]
    starts_ends = [tuple(map(int, d[2].split("-"))) for d in days]
    assert all(nxt[0] == end + 1 for (_, end), nxt in zip(starts_ends, starts_ends[1:]))  # contiguous ranges
    assert f"plan {chain.days} days (backfill_days)" in out and "start a supervisor with 3 workers" in out
    assert not (tmp_path / "data").exists(), "a dry run writes nothing: no data dir, no store, no log"
    assert list(tmp_path.iterdir()) == []


def test_dry_run_over_a_finished_store_shows_what_would_change_and_changes_nothing(run_copy, chain: Chain):
    store = open_store(run_copy)
    before = {t: store.scalar(f"SELECT count() FROM {t}") for t in ("backfill_days", "backfill_checkpoint", "backfill_meta")}
    result = backfill(["start", "--dry-run", "--from", chain.day(2), "--to", chain.day(3), "--redo", "--confirmations", "0"],
                      run_copy, chain)
    assert result.returncode == 0, result.stderr
    assert "COMPLETE, fetched again" in result.stdout and "put 2 days back to RUNNING" in result.stdout
    assert {t: store.scalar(f"SELECT count() FROM {t}") for t in before} == before
    store.close()
