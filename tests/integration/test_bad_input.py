"""Bad input gets one clear error line per problem and a non-zero exit, writes nothing, and leaks no secret;
`backfill config` and `start --dry-run` show what a start would use and do, writing nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from backfill.devnet.node import Anvil
from tests.integration.harness import Chain, assert_exact, backfill, clean_env, open_store, store_url

KEY = "k3yS3cretAbCdEf0123456789"


def assert_one_clear_line(result, needle: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "args,env,needle",
    [
        (
            ["start", "--foreground", "--from", "2024-01-01", "--to", "2024-01-02"],
            {"SHARDS": "0"},
            "SHARDS (environment): must be at least 1",
        ),
        (
            ["start", "--foreground", "--from", "2024-01-05", "--to", "2024-01-02"],
            {},
            "--from 2024-01-05 is after --to 2024-01-02",
        ),
        (
            ["start", "--foreground", "--from", "2024-01-01", "--to", "2024-01-02"],
            {"CLICKHOUSE_URL": "http://user:pw@host:port/db"},
            "CLICKHOUSE_URL (environment): must be a URL like",
        ),
        (["start", "--foreground", "--from", "yesterday"], {}, "--from (flag): must be a date"),
        (
            ["start", "--foreground", "--from", "2024-01-01", "--to", "2024-01-02"],
            {"ETHEREUM_RPC_URLS": f"http://127.0.0.1:9/v2/{KEY}"},
            "no RPC endpoint answers",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, chain: Chain, args, env, needle):
    result = backfill(args, tmp_path / "data", chain, extra_env=env)
    assert_one_clear_line(result, needle)
    assert KEY not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists(), "nothing may be written (not even an empty log)"


@pytest.mark.parametrize("quota_kind", ["I6", "A5", "P1"])
def test_a_spent_quota_at_start_is_one_line_naming_the_endpoint_not_its_key(tmp_path, chain: Chain, quota_kind):
    from tests.support.proxy import RpcProxy

    with RpcProxy(chain.url, quota_calls=0, quota_kind=quota_kind) as spent:
        result = backfill(
            ["start", "--foreground", "--from", "2024-01-01", "--to", "2024-01-02"],
            tmp_path / "data",
            rpc_urls=spent.url_with_key(KEY),
        )
    assert_one_clear_line(result, "quota used up or key refused")
    assert "127.0.0.1#0" in result.stderr and "ETHEREUM_RPC_URLS" in result.stderr
    assert KEY not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists()


def test_another_chain_is_refused_and_changes_nothing(chain: Chain, data_dir, finished_run):
    _, store = finished_run
    tables = ("erc20_transfers_staging", "backfill_checkpoint", "backfill_days", "backfill_meta")
    before = {t: store.scalar(f"SELECT count() FROM {t}") for t in tables}
    with Anvil(chain_id=4242) as other:
        result = backfill(
            ["start", "--foreground", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
            data_dir,
            rpc_urls=other.url,
            shards=2,
        )
    assert_one_clear_line(result, "serves chain 4242 but this database holds chain 31337")
    assert {t: store.scalar(f"SELECT count() FROM {t}") for t in tables} == before


GENESIS = "genesis 2023-12-31 23:00:00 UTC"  # the test chain's genesis: an hour before its first day


@pytest.mark.parametrize(
    "dates,needle",
    [
        (
            ["--from", "2019-01-01", "--to", "2024-01-02"],
            f"--from 2019-01-01 is before the chain's first block ({GENESIS})",
        ),
        (["--from", "2023-12-30"], f"--from 2023-12-30 is before the chain's first block ({GENESIS})"),
        (
            ["--from", "2024-01-01", "--to", "2030-01-01"],
            "--to 2030-01-01 is after the chain's head (block {head}, 2024-01-11 00:00:00 UTC)",
        ),
        # the chain's last block closes its last day at the next midnight: that day has a block, the next none
        (["--from", "2024-01-01", "--to", "2024-01-12"], "--to 2024-01-12 is after the chain's head (block {head}, "),
        (["--from", "2030-01-01"], "--from 2030-01-01 is after the chain's head (block {head}, "),
        (["--from", "2030-01-01", "--to", "2030-01-02"], "--from 2030-01-01 is after the chain's head (block {head}, "),
    ],
)
def test_dates_off_the_chain_are_one_line_and_write_nothing(chain: Chain, tmp_path, dates, needle):
    result = backfill(["start", "--foreground", *dates, "--confirmations", "0"], tmp_path / "data", chain)
    assert_one_clear_line(result, needle.format(head=chain.summary["head_block"]))
    assert result.returncode == 2
    assert not (tmp_path / "data").exists(), "checked before the store is opened: no data directory"


def test_the_safe_head_bounds_the_dates(chain: Chain, tmp_path):
    result = backfill(
        ["start", "--from", "2024-01-01", "--to", "2024-01-11", "--confirmations", "12"], tmp_path / "data", chain
    )
    head = chain.summary["head_block"]
    assert_one_clear_line(result, f"is after the chain's safe head (block {head - 12} = head {head} - 12 confirmations")
    assert not (tmp_path / "data").exists()


@pytest.mark.slow  # a run of four days
def test_the_genesis_day_and_empty_days_are_planned_as_the_chain_has_them(chain: Chain, tmp_path):
    """From the genesis day (the chain's set-up blocks) to its first empty day (blocks, no transfer): exact."""
    data = tmp_path / "data"
    result = backfill(
        ["start", "--foreground", "--from", "2023-12-31", "--to", chain.day(2), "--confirmations", "0"],
        data,
        chain,
        shards=2,
        extra_env={"BACKFILL_ON_COMPLETE": "0"},
    )
    try:
        assert result.returncode == 0, result.stderr
        store = open_store(data)
        plans = {p.day.isoformat(): p for p in store.read_plan()}
        assert list(plans) == ["2023-12-31", chain.day(0), chain.day(1), chain.day(2)]
        assert plans["2023-12-31"].start_block == 0 and plans["2023-12-31"].n_blocks > 0
        assert plans[chain.day(2)].n_blocks > 0
        counts = {d: (cp["status"], cp["erc20_count"], cp["erc1155_count"]) for d, cp in store.checkpoints().items()}
        assert counts[plans[chain.day(2)].day_idx] == ("COMPLETE", 0, 0)
        assert_exact(store, chain)
        store.close()
    finally:
        from backfill.store.embedded import stop_server

        stop_server(data)


def test_every_problem_of_a_config_is_reported_at_once_and_writes_nothing(tmp_path, chain: Chain):
    (tmp_path / "backfill.toml").write_text("shard = 3\nwindw_blocks = 100\nconfirmations = -1\n")
    result = backfill(
        ["start", "--foreground", "--from", chain.first_day, "--to", chain.last_day],
        tmp_path / "data",
        chain,
        extra_env={"SHARDS": "abc"},
    )
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

    doc = json.loads(
        backfill(
            ["config", "--json", "--window-blocks", "500"], tmp_path / "data", rpc_urls=rpc, shards=3, extra_env=env
        ).stdout
    )
    assert doc["shards"] == {"value": 3, "source": "environment SHARDS", "origin": "environment"}
    assert doc["confirmations"] == {"value": 5, "source": "backfill.toml: confirmations", "origin": "file"}
    assert doc["window_blocks"]["origin"] == "flag" and doc["audit_sample"]["origin"] == "default"
    assert doc["gates.strict.quarantine_share"]["value"] == 0.02
    assert doc["rpc_urls"]["value"] == ["https://eth.example/v2/***"]
    assert KEY not in text.stdout + json.dumps(doc) and "hunter22" not in text.stdout + json.dumps(doc)
    assert not (tmp_path / "data").exists()


def test_dry_run_prints_the_days_and_writes_nothing(tmp_path, chain: Chain):
    result = backfill(
        ["start", "--dry-run", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
        tmp_path / "data",
        chain,
        shards=3,
    )
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
    before = {
        t: store.scalar(f"SELECT count() FROM {t}") for t in ("backfill_days", "backfill_checkpoint", "backfill_meta")
    }
    result = backfill(
        ["start", "--dry-run", "--from", chain.day(2), "--to", chain.day(3), "--redo", "--confirmations", "0"],
        run_copy,
        chain,
    )
    assert result.returncode == 0, result.stderr
    assert "COMPLETE, fetched again" in result.stdout and "put 2 days back to RUNNING" in result.stdout
    assert {t: store.scalar(f"SELECT count() FROM {t}") for t in before} == before
    store.close()


NO_DATA = "no backfill data in {data} (no {what} there yet); start one with: backfill start"
READ_ONLY = [
    (["status"], "store"),
    (["status", "--json"], "store"),
    (["status", "--watch"], "store"),
    (["gates"], "store"),
    (["gates", "--strict", "--json"], "store"),
    (["logs", "monitor"], "logs"),
    (["logs", "3", "-f"], "logs"),
    (["db", "stop"], "store"),
]
# one of each command for the other kinds of unusable path (the check they share is the same function)
READ_ONLY_EACH = [READ_ONLY[0], READ_ONLY[4], READ_ONLY[5], READ_ONLY[7]]


@pytest.mark.parametrize(
    "args,what,made",
    [(*c, False) for c in READ_ONLY] + [(*c, True) for c in READ_ONLY_EACH],
    ids=[f"{' '.join(c[0])}-absent" for c in READ_ONLY] + [f"{' '.join(c[0])}-empty" for c in READ_ONLY_EACH],
)
def test_read_only_commands_on_a_directory_without_a_run_create_nothing(tmp_path, args, what, made):
    data = tmp_path / "data"
    if made:
        data.mkdir()
    result = backfill(args, data, timeout=60)
    assert_one_clear_line(result, NO_DATA.format(data=data, what=what))
    assert [p.name for p in tmp_path.iterdir()] == (["data"] if made else [])
    assert not made or not any(data.iterdir()), "no store, no server, no log file"


@pytest.mark.parametrize("args,what", READ_ONLY_EACH)
def test_read_only_commands_on_a_file_are_one_line(tmp_path, args, what):
    data = tmp_path / "data"
    data.write_text("not a directory\n")
    result = backfill(args, data, timeout=60)
    assert_one_clear_line(result, f"{data} is not a directory; give --data-dir")
    assert data.read_text() == "not a directory\n"
    result = backfill(args, data / "sub", timeout=60, cwd=tmp_path)
    assert_one_clear_line(result, f"{data / 'sub'} cannot be a directory: {data} is a file")


def test_start_on_a_file_is_one_line(chain: Chain, tmp_path):
    data = tmp_path / "data"
    data.write_text("not a directory\n")
    result = backfill(["start", "--foreground", "--from", chain.first_day, "--to", chain.day(1)], data, chain)
    assert_one_clear_line(result, f"{data} is not a directory; give --data-dir")
    assert data.read_text() == "not a directory\n"


def as_a_user(args: list[str], data_dir) -> subprocess.CompletedProcess:
    """`backfill ARGS` subject to file permissions: as root, without the capabilities that bypass them."""
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "backfill.cli.app", *args],
        capture_output=True,
        text=True,
        env=clean_env(BACKFILL_DATA_DIR=str(data_dir)),
        cwd=data_dir.parent.parent,
        timeout=60,
    )


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="root reads every directory")
@pytest.mark.parametrize("args,what", READ_ONLY_EACH)
def test_read_only_commands_on_a_directory_without_permission_are_one_line(tmp_path, args, what):
    (tmp_path / "run").mkdir()
    data = tmp_path / "run" / "data"
    data.mkdir(mode=0)
    try:
        assert_one_clear_line(as_a_user(args, data), f"cannot read the data directory {data}: permission denied")
        assert_one_clear_line(as_a_user(args, data / "x"), f"cannot read the data directory {data / 'x'}")
        (tmp_path / "run").chmod(0o555)
        data.chmod(0o755)
        assert_one_clear_line(
            as_a_user(["start", "--from", "2024-01-01"], tmp_path / "run" / "new"),
            f"cannot use the data directory {tmp_path / 'run' / 'new'}: permission denied to create",
        )
        assert not any(data.iterdir()) and sorted(p.name for p in (tmp_path / "run").iterdir()) == ["data"]
    finally:
        (tmp_path / "run").chmod(0o755)
        data.chmod(0o755)


def test_status_with_a_configured_server_needs_no_data_directory(chain: Chain, data_dir, finished_run, tmp_path):
    from backfill.store.embedded import server_url

    url = server_url(data_dir)
    assert url
    fresh = tmp_path / "data"
    env = {"CLICKHOUSE_URL": store_url(data_dir, url)}
    result = backfill(["status"], fresh, extra_env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"days: {chain.days}/{chain.days} complete" in result.stdout, result.stdout
    assert not fresh.exists()


# -- backfill sql, an unreachable store, 80 columns -------------------------------------------------------------
@pytest.mark.parametrize("query", ["", "   \n\t"])
def test_no_sql_is_one_line_exit_2_and_touches_no_store(tmp_path, query):
    result = backfill(["sql", query], tmp_path / "data", timeout=60)
    assert_one_clear_line(result, "no SQL given")
    assert result.returncode == 2
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "query,needle",
    [
        ("SELEC 1", "Code: 62. DB::Exception: Syntax error: failed at position 7"),
        ("SELECT * FROM no_such_table", "Code: 60. DB::Exception: Unknown table expression identifier 'no_such_table'"),
        ("SELECT count() FROM erc20_transfers", "— production tables are made by `backfill promote`"),
    ],
)
def test_sql_clickhouse_refuses_is_its_own_words_on_one_line_exit_6(run_copy, query, needle):
    result = backfill(["sql", query], run_copy, timeout=120)
    assert_one_clear_line(result, needle)
    assert result.returncode == 6
    line = result.stderr.strip()
    assert re.search(r"\((SYNTAX_ERROR|UNKNOWN_TABLE)\)", line), line
    for wrapping in ("FORMAT Native", "for url", "(version ", "Received ClickHouse exception", "server response"):
        assert wrapping not in line, line


def test_an_unreachable_store_is_one_line_naming_it_exit_5(tmp_path):
    for args in (["sql", "SELECT 1"], ["gates"], ["promote"], ["verify", "--all"], ["retry-failed"]):
        result = backfill(
            args, tmp_path / "data", extra_env={"CLICKHOUSE_URL": "http://default:@127.0.0.1:9/db"}, timeout=60
        )
        assert_one_clear_line(result, "127.0.0.1:9")
        assert result.returncode == 5, (args, result.stderr)
        assert "connection refused" in result.stderr and "Unexpected Http Driver Exception" not in result.stderr
        assert result.stdout == "", (args, result.stdout)


def assert_fits(text: str, words: list[str], width: int = 80) -> None:
    """No line wider than `width`; every word of `words` whole on some line (none cut across two)."""
    lines = text.splitlines()
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, "\n".join(too_long)
    for word in words:
        assert any(word in line for line in lines), f"{word!r} is cut or missing:\n{text}"
    assert "…" not in text, text


def test_status_and_gates_fit_80_columns_without_cutting_a_word(run_copy, chain: Chain):
    env = {"COLUMNS": "80"}
    status = backfill(["status"], run_copy, extra_env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    assert_fits(
        status.stdout,
        ["erc20_transfers_staging", "erc1155_transfers_staging", "transfer_quarantine", "after FINAL", "127.0.0.1#0"],
    )
    assert [line.split()[1] for line in status.stdout.splitlines() if line.startswith("dedup: ")] == [
        "erc20_transfers_staging",
        "erc1155_transfers_staging",
        "transfer_quarantine",
    ]
    gates = backfill(["gates", "--strict"], run_copy, extra_env=env, timeout=120)
    assert gates.returncode == 1, gates.stdout + gates.stderr  # the test chain's empty days, not audited yet
    empty = [chain.day(2), chain.day(8)]
    assert_fits(gates.stdout, ["missing_timestamps", "empty_days", "quarantined", "neighbours'", *empty])
    assert "value=" not in gates.stdout and "threshold=" not in gates.stdout
    (fail,) = [line for line in gates.stdout.splitlines() if line.startswith("FAIL ")]
    assert fail.startswith("FAIL empty_days: 2 empty days next to busy ones, not audited; limit: none"), fail
    # after a gates run the status names its days as dates too
    status = backfill(["status"], run_copy, extra_env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    assert_fits(status.stdout, ["gates (strict", "empty_days", *empty])


def test_a_refused_start_does_not_leave_the_stopped_store_server_it_started(tmp_path):
    """A start over an existing embedded store whose server is down starts the server beside its survey of
    the chain; when the survey refuses the start (no endpoint answers), the server it started is stopped."""
    from backfill.store.embedded import ensure_server, server_alive, stop_server

    data = tmp_path / "data"
    ensure_server(data)
    stop_server(data)
    assert not server_alive(data)
    result = backfill(
        ["start", "--foreground", "--from", "2024-01-01", "--to", "2024-01-02"],
        data,
        extra_env={"ETHEREUM_RPC_URLS": f"http://127.0.0.1:9/v2/{KEY}"},
        timeout=120,
    )
    assert_one_clear_line(result, "no RPC endpoint answers")
    assert KEY not in result.stderr + result.stdout
    assert not server_alive(data), "the server this start opened is stopped again"
