"""Settings: flags > environment > TOML > defaults, one clear error per bad value, secrets redacted."""

import datetime as dt

import pytest

from backfill.errors import ConfigError
from backfill.redact import redact_url, scrub
from backfill.settings import load_settings


def test_precedence_flags_over_env_over_toml(tmp_path):
    toml = tmp_path / "backfill.toml"
    toml.write_text('shards = 3\nconfirmations = 5\nrpc_urls = ["http://a:1"]\n')
    s = load_settings({}, {}, toml)
    assert (s.shards, s.confirmations, s.rpc_urls) == (3, 5, ("http://a:1",))
    s = load_settings({}, {"SHARDS": "7"}, toml)
    assert s.shards == 7 and s.confirmations == 5
    s = load_settings({"shards": 9}, {"SHARDS": "7"}, toml)
    assert s.shards == 9


def test_env_names_people_use(tmp_path):
    s = load_settings({}, {"ETHEREUM_RPC_URLS": "http://a:1, https://b/x", "CLICKHOUSE_URL": "https://u:p@ch:8443/eth"},
                      tmp_path / "none.toml")
    assert s.rpc_urls == ("http://a:1", "https://b/x")
    assert (s.store.host, s.store.port, s.store.database, s.store.secure, s.store.password) == ("ch", 8443, "eth", True, "p")


@pytest.mark.parametrize("flags,env,needle", [
    ({"shards": 0}, {}, "SHARDS must be at least 1"),
    ({}, {"SHARDS": "0"}, "SHARDS must be at least 1"),
    ({}, {"SHARDS": "many"}, "SHARDS must be a number"),
    ({"from_date": "2024-02-01", "to_date": "2024-01-01"}, {}, "is after --to"),
    ({"from_date": "2024-13-01"}, {}, "--from must be a date"),
    ({}, {"CLICKHOUSE_URL": "clickhouse:/nohost"}, "CLICKHOUSE_URL is malformed"),
    ({}, {"CLICKHOUSE_URL": "http://h:notaport/db"}, "CLICKHOUSE_URL is malformed"),
    ({}, {"ETHEREUM_RPC_URLS": "ftp://x"}, "malformed"),
    ({}, {"BACKFILL_GETLOGS_ANSWER_LOGS": "-5"}, "getlogs_answer_logs must be >= 0"),
    ({}, {"BACKFILL_GETLOGS_ANSWER_LOGS": "lots"}, "BACKFILL_GETLOGS_ANSWER_LOGS must be a number"),
])
def test_bad_values_give_one_clear_error(tmp_path, flags, env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings(flags, env, tmp_path / "none.toml")


def test_dates_parse(tmp_path):
    s = load_settings({"from_date": "2024-01-01", "to_date": "2024-01-10"}, {}, tmp_path / "x.toml")
    assert s.from_date == dt.date(2024, 1, 1) and s.to_date == dt.date(2024, 1, 10)


def test_keys_in_urls_never_survive_redaction():
    url = "https://eth-mainnet.g.alchemy.com/v2/AbCdEf0123456789XyZ_secret?apikey=s3cr3t"
    out = redact_url(url)
    assert "AbCdEf0123456789XyZ_secret" not in out and "s3cr3t" not in out and "alchemy.com" in out
    assert "hunter22" not in redact_url("http://user:hunter22@ch:8123/db")
    text = f"failed to reach {url} and user:hunter22@ch"
    cleaned = scrub(text, [url, "http://user:hunter22@ch:8123/db"])
    assert "AbCdEf0123456789XyZ_secret" not in cleaned and "hunter22" not in cleaned and "s3cr3t" not in cleaned


def test_redaction_survives_malformed_urls():
    assert "pw" not in redact_url("http://user:pw@host:port/db")
