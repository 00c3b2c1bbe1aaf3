"""Settings: flags > environment > TOML > defaults, every problem of a config at once with its source, secrets
redacted, and where each effective value came from."""

import datetime as dt

import pytest

from backfill.errors import ConfigError
from backfill.redact import redact_url, scrub
from backfill.settings import effective_settings, load_settings


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
    s = load_settings(
        {},
        {"ETHEREUM_RPC_URLS": "http://a:1, https://b/x", "CLICKHOUSE_URL": "https://u:p@ch:8443/eth"},
        tmp_path / "none.toml",
    )
    assert s.rpc_urls == ("http://a:1", "https://b/x")
    assert (s.store.host, s.store.port, s.store.database, s.store.secure, s.store.password) == (
        "ch",
        8443,
        "eth",
        True,
        "p",
    )


@pytest.mark.parametrize(
    "flags,env,needle",
    [
        ({"shards": 0}, {}, "--shards (flag): must be at least 1, got 0"),
        ({}, {"SHARDS": "0"}, "SHARDS (environment): must be at least 1, got '0'"),
        ({}, {"SHARDS": "many"}, "SHARDS (environment): must be an integer, got 'many'"),
        ({}, {"SHARDS": "999"}, "SHARDS (environment): must be at most 256"),
        ({"from_date": "2024-02-01", "to_date": "2024-01-01"}, {}, "--from 2024-02-01 is after --to 2024-01-01"),
        ({"from_date": "2024-13-01"}, {}, "--from (flag): must be a date like 2024-01-31, got '2024-13-01'"),
        ({}, {"CLICKHOUSE_URL": "clickhouse:/nohost"}, "CLICKHOUSE_URL (environment): must be a URL like"),
        ({}, {"CLICKHOUSE_URL": "http://h:notaport/db"}, "CLICKHOUSE_URL (environment): must be a URL like"),
        ({}, {"ETHEREUM_RPC_URLS": "ftp://x"}, "ETHEREUM_RPC_URLS (environment): must be http(s)://host"),
        ({}, {"BACKFILL_GETLOGS_ANSWER_LOGS": "-5"}, "BACKFILL_GETLOGS_ANSWER_LOGS (environment): must be at least 0"),
        (
            {},
            {"BACKFILL_GETLOGS_ANSWER_LOGS": "lots"},
            "BACKFILL_GETLOGS_ANSWER_LOGS (environment): must be an integer",
        ),
        ({}, {"BACKFILL_STALL_S": "0"}, "BACKFILL_STALL_S (environment): must be more than 0"),
        ({}, {"BACKFILL_ON_COMPLETE": "maybe"}, "BACKFILL_ON_COMPLETE (environment): must be true or false"),
        ({"redo": True}, {}, "--redo needs --from and --to"),
        (
            {},
            {"BACKFILL_CLICKHOUSE_CLUSTER": "prod cluster", "CLICKHOUSE_URL": "http://ch:8123/eth"},
            "BACKFILL_CLICKHOUSE_CLUSTER (environment): must be a cluster name (letters, digits, _ and -, first a "
            "letter or _), got 'prod cluster'",
        ),
        (
            {},
            {"BACKFILL_CLICKHOUSE_CLUSTER": "main`; DROP TABLE x", "CLICKHOUSE_URL": "http://ch:8123/eth"},
            "BACKFILL_CLICKHOUSE_CLUSTER (environment): must be a cluster name",
        ),
        ({}, {"BACKFILL_CLICKHOUSE_CLUSTER": "1st", "CLICKHOUSE_URL": "http://ch/eth"}, "must be a cluster name"),
        (
            {},
            {"BACKFILL_CLICKHOUSE_CLUSTER": "main"},
            "BACKFILL_CLICKHOUSE_CLUSTER (environment): needs CLICKHOUSE_URL, a server of the cluster: the embedded "
            "store is a single node",
        ),
    ],
)
def test_bad_values_give_one_clear_error_naming_their_source(tmp_path, flags, env, needle):
    with pytest.raises(ConfigError) as caught:
        load_settings(flags, env, tmp_path / "none.toml")
    assert str(caught.value).splitlines() == [str(caught.value)] and needle in str(caught.value), str(caught.value)


def test_two_typos_in_the_file_are_both_reported_with_did_you_mean(tmp_path):
    toml = tmp_path / "backfill.toml"
    toml.write_text("shard = 3\nwindw_blocks = 100\nconfirmations = 5\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {}, toml)
    assert str(caught.value).splitlines() == [
        f"{toml}: unknown key 'shard' (did you mean 'shards'?)",
        f"{toml}: unknown key 'windw_blocks' (did you mean 'window_blocks'?)",
    ]


def test_gate_keys_are_checked_with_did_you_mean_too(tmp_path):
    toml = tmp_path / "backfill.toml"
    toml.write_text(
        "[gates.strict]\nquarantine_shar = 0.02\nfailed_days = -1\n[gates.strikt]\nfailed_days = 1\n"
        "[gates.relaxed]\nunfinished_days = inf\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {}, toml)
    assert str(caught.value).splitlines() == [
        f"{toml}: unknown key 'quarantine_shar' in [gates.strict] (did you mean 'quarantine_share'?)",
        f"{toml}: gates.strict.failed_days must be at least 0, got -1",
        f"{toml}: unknown key 'gates.strikt' (did you mean 'gates.strict'?)",
    ]
    toml.write_text("[gates.strict]\nquarantine_share = 0.02\n[gates.relaxed]\nunfinished_days = inf\n")
    assert set(load_settings({}, {}, toml).gates) == {
        ("strict", "quarantine_share", 0.02),
        ("relaxed", "unfinished_days", float("inf")),
    }


def test_every_problem_of_file_env_and_flags_at_once_each_with_its_source(tmp_path):
    toml = tmp_path / "backfill.toml"
    toml.write_text('shards = 0\nSHARDS = 2\nrpc_urls = "https://eth.example/v2/k3yS3cretAbCdEf0123456789"\n')
    env = {"SHARDS": "abc", "BACKFILL_WINDOW_BLOKS": "5", "BACKFILL_CONFIRMATIONS": "-1"}
    with pytest.raises(ConfigError) as caught:
        load_settings({"window_blocks": 0}, env, toml)
    assert str(caught.value).splitlines() == [
        f"{toml}: unknown key 'SHARDS' (did you mean 'shards'?)",
        f"{toml}: shards must be at least 1, got 0",
        "BACKFILL_WINDOW_BLOKS (environment): unknown variable (did you mean 'BACKFILL_WINDOW_BLOCKS'?)",
        "BACKFILL_CONFIRMATIONS (environment): must be at least 0, got '-1'",
        "SHARDS (environment): must be an integer, got 'abc'",
        "--window-blocks (flag): must be at least 1, got 0",
    ]


def test_a_bad_url_is_named_by_position_never_quoted(tmp_path):
    secret = "k3yS3cretAbCdEf0123456789"
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {},
            {
                "ETHEREUM_RPC_URLS": f"https://a.example/{secret},wss://b.example/{secret}",
                "CLICKHOUSE_URL": f"ftp://u:{secret}@ch/db",
            },
            tmp_path / "none.toml",
        )
    assert secret not in str(caught.value) and "URL 2 of 2" in str(caught.value)


def test_a_missing_backfill_config_file_is_an_error_the_default_file_absent_is_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./backfill.toml here
    assert load_settings({}, {}).shards == 2
    missing = tmp_path / "etc" / "backfill.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {"BACKFILL_CONFIG": str(missing)})
    assert str(caught.value) == f"BACKFILL_CONFIG (environment): names {missing}, which does not exist"
    missing.parent.mkdir()
    missing.write_text("shards = 5\n")
    assert load_settings({}, {"BACKFILL_CONFIG": str(missing)}).shards == 5


@pytest.mark.parametrize(
    "text,where,what",
    [
        ("shards = 3\nwindow_blocks 100\n", "2:15", "Expected '=' after a key in a key/value pair"),
        ("shards = 3\n[gates.strict\n", "2:14", "Expected ']' at the end of a table declaration"),
        ("shards = [1,\n", "2:1", "invalid TOML"),
    ],
)
def test_malformed_toml_is_one_line_with_file_line_and_column(tmp_path, text, where, what):
    toml = tmp_path / "backfill.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {"SHARDS": "x"}, toml)
    first, second = str(caught.value).splitlines()
    assert first.startswith(f"{toml}:{where}: invalid TOML: ") and what in first, first
    assert second == "SHARDS (environment): must be an integer, got 'x'"  # the other sources are still checked


def test_effective_settings_say_where_each_value_came_from_and_redact_secrets(tmp_path):
    toml = tmp_path / "backfill.toml"
    toml.write_text("confirmations = 5\nshards = 4\n[gates.strict]\nquarantine_share = 0.02\n")
    env = {
        "SHARDS": "3",
        "ETHEREUM_RPC_URLS": "https://eth.example/v2/k3yS3cretAbCdEf0123456789?apikey=s3cr3t",
        "CLICKHOUSE_URL": "https://bob:hunter22@ch.example:8443/eth",
        "BACKFILL_CONFIG": str(toml),
    }
    rows = {r.name: (r.value, str(r.source)) for r in effective_settings({"window_blocks": 500}, env)}
    assert rows["config_file"] == (str(toml), "environment BACKFILL_CONFIG")
    assert rows["window_blocks"] == (500, "flag --window-blocks")
    assert rows["shards"] == (3, "environment SHARDS")
    assert rows["confirmations"] == (5, f"{toml}: confirmations")
    assert rows["stall_s"] == (300.0, "default")
    assert rows["gates.strict.quarantine_share"] == (0.02, f"{toml}: gates.strict.quarantine_share")
    assert rows["rpc_urls"] == (["https://eth.example/v2/***?apikey=***"], "environment ETHEREUM_RPC_URLS")
    assert rows["clickhouse_url"] == ("https://bob:***@ch.example:8443/eth", "environment CLICKHOUSE_URL")
    everything = repr(rows)
    assert "k3yS3cret" not in everything and "s3cr3t" not in everything and "hunter22" not in everything


def test_a_cluster_name_reaches_the_store_and_the_workers_and_empty_means_one_node(tmp_path):
    toml = tmp_path / "backfill.toml"
    toml.write_text('clickhouse_cluster = "ch-main_1"\nclickhouse_url = "http://ch:8123/eth"\n')
    s = load_settings({}, {}, toml)
    assert s.clickhouse_cluster == "ch-main_1"
    assert s.to_env()["BACKFILL_CLICKHOUSE_CLUSTER"] == "ch-main_1"  # a spawned worker reads the same cluster
    env = {"BACKFILL_CLICKHOUSE_CLUSTER": " replicas ", "CLICKHOUSE_URL": "http://ch:8123/eth"}
    assert load_settings({}, env, tmp_path / "none.toml").clickhouse_cluster == "replicas"
    single = load_settings({}, {"BACKFILL_CLICKHOUSE_CLUSTER": ""}, tmp_path / "none.toml")
    assert single.clickhouse_cluster == "" and "BACKFILL_CLICKHOUSE_CLUSTER" not in single.to_env()
    rows = {r.name: (r.value, str(r.source)) for r in effective_settings({}, {}, toml)}
    assert rows["clickhouse_cluster"] == ("ch-main_1", f"{toml}: clickhouse_cluster")


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
