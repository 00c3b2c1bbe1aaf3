"""Bad input gets one clear error line and a non-zero exit, writes nothing, and leaks no secret."""

from __future__ import annotations

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
    (["start", "--foreground", "--from", "2024-01-01", "--to", "2024-01-02"], {"SHARDS": "0"}, "SHARDS must be at least 1"),
    (["start", "--foreground", "--from", "2024-01-05", "--to", "2024-01-02"], {}, "--from 2024-01-05 is after --to 2024-01-02"),
    (["start", "--foreground", "--from", "2024-01-01", "--to", "2024-01-02"], {"CLICKHOUSE_URL": "http://user:pw@host:port/db"},
     "CLICKHOUSE_URL is malformed"),
    (["start", "--foreground", "--from", "yesterday"], {}, "--from must be a date"),
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
