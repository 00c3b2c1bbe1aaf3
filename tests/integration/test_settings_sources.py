"""Where settings come from (a TOML file named by BACKFILL_CONFIG; flag > environment > file > default), logs
that rotate without losing a line, and a ClickHouse password that no file, status, config or error line shows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Chain, backfill, clean_env, wait_for
from tests.integration.test_commands import Pipe

KEY = "k3yS3cretAbCdEf0123456789"


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`backfill ARGS` in `cwd` with no setting in the environment but `env` (the harness would set a data dir)."""
    return subprocess.run(
        [sys.executable, "-m", "backfill.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=clean_env(**env),
    )


def config_json(cwd: Path, *flags: str, **env: str) -> dict:
    result = run_cli(["config", "--json", *flags], cwd, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- BACKFILL_CONFIG and precedence ------------------------------------------------------------------------
def test_backfill_config_names_the_file_read_instead_of_the_working_directorys(tmp_path):
    (tmp_path / "backfill.toml").write_text("shards = 7\n")
    named = tmp_path / "etc" / "prod.toml"
    named.parent.mkdir()
    named.write_text("shards = 4\nwindow_blocks = 600\n")
    here = config_json(tmp_path)
    assert here["shards"] == {"value": 7, "source": "backfill.toml: shards", "origin": "file"}
    doc = config_json(tmp_path, BACKFILL_CONFIG=str(named))
    assert doc["config_file"] == {"value": str(named), "source": "environment BACKFILL_CONFIG", "origin": "environment"}
    assert doc["shards"] == {"value": 4, "source": f"{named}: shards", "origin": "file"}
    assert doc["window_blocks"]["value"] == 600 and doc["window_blocks"]["origin"] == "file"
    missing = run_cli(["config"], tmp_path, BACKFILL_CONFIG=str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.splitlines() == [
        f"error: BACKFILL_CONFIG (environment): names {tmp_path / 'nope.toml'}, which does not exist"
    ]


def test_flag_beats_environment_beats_file_beats_default_for_rpc_urls_and_data_dir(tmp_path):
    conf = tmp_path / "conf.toml"
    conf.write_text(f'rpc_urls = ["https://file.example/v2/{KEY}"]\ndata_dir = "file-data"\n')
    layers = [
        ({}, [], ("http://127.0.0.1:8545", "default"), ("data", "default")),
        (
            {"BACKFILL_CONFIG": str(conf)},
            [],
            ("https://file.example/v2/***", f"{conf}: rpc_urls"),
            ("file-data", f"{conf}: data_dir"),
        ),
        (
            {
                "BACKFILL_CONFIG": str(conf),
                "ETHEREUM_RPC_URLS": "http://env.example:2",
                "BACKFILL_DATA_DIR": "env-data",
            },
            [],
            ("http://env.example:2", "environment ETHEREUM_RPC_URLS"),
            ("env-data", "environment BACKFILL_DATA_DIR"),
        ),
        (
            {
                "BACKFILL_CONFIG": str(conf),
                "ETHEREUM_RPC_URLS": "http://env.example:2",
                "BACKFILL_DATA_DIR": "env-data",
            },
            ["--rpc-url", "http://flag.example:3", "--data-dir", "flag-data"],
            ("http://flag.example:3", "flag --rpc-url"),
            ("flag-data", "flag --data-dir"),
        ),
    ]
    for env, flags, (rpc, rpc_source), (data_dir, data_source) in layers:
        doc = config_json(tmp_path, *flags, **env)
        assert (doc["rpc_urls"]["value"], doc["rpc_urls"]["source"]) == ([rpc], rpc_source), (env, flags)
        assert (doc["data_dir"]["value"], doc["data_dir"]["source"]) == (data_dir, data_source), (env, flags)
        assert KEY not in json.dumps(doc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf.toml"], "config creates no data directory"


def test_a_start_uses_the_endpoints_data_dir_and_shards_of_the_named_file(tmp_path, chain: Chain):
    data = tmp_path / "from-file"
    conf = tmp_path / "run.toml"
    conf.write_text(f'rpc_urls = ["{chain.url}"]\ndata_dir = "{data}"\nshards = 3\nconfirmations = 0\n')
    result = run_cli(
        ["start", "--dry-run", "--from", chain.day(chain.days - 2), "--to", chain.last_day],
        tmp_path,
        BACKFILL_CONFIG=str(conf),
    )
    assert result.returncode == 0, result.stderr
    assert f"endpoints: {chain.url} (chain 31337)" in result.stdout
    assert f"data dir: {data} (does not exist; a start creates it)" in result.stdout and "shards: 3" in result.stdout
    assert "(0 confirmations)" in result.stdout
    assert not data.exists()


# -- log rotation ---------------------------------------------------------------------------------------------
LOG_MAX_BYTES = 50 * 1024 * 1024  # backfill/files/oplog.py: a log file rotates at 50 MiB
WINDOW = re.compile(r"day=(\d+) blocks=(\d+)-(\d+) event=(?:window|complete) ")
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR|DEBUG) ")


@pytest.mark.slow
def test_a_worker_log_rotates_at_its_size_and_no_line_is_lost_across_the_files(tmp_path, chain: Chain):
    from backfill.store.embedded import stop_server
    from tests.integration.harness import open_store

    data = tmp_path / "data"
    log = data / "backfill" / "worker-0.log"
    log.parent.mkdir(parents=True)
    with open(log, "wb") as f:  # an old log just under the size (sparse: no 50 MB written)
        f.truncate(LOG_MAX_BYTES - 1500)
    try:
        result = backfill(
            [
                "start",
                "--foreground",
                "--from",
                chain.day(chain.days - 2),
                "--to",
                chain.last_day,
                "--confirmations",
                "0",
                "--window-blocks",
                "300",
            ],
            data,
            chain,
            shards=1,
            extra_env={"BACKFILL_ON_COMPLETE": "0"},
        )
        assert result.returncode == 0, result.stderr
        store = open_store(data)
        plans = {p.day_idx: (p.start_block, p.end_block) for p in store.read_plan()}
        store.close()
    finally:
        stop_server(data)
    rotated = log.with_name("worker-0.log.1")
    assert rotated.is_file() and rotated.stat().st_size <= LOG_MAX_BYTES and log.stat().st_size < LOG_MAX_BYTES
    old = rotated.read_bytes()
    assert old[: LOG_MAX_BYTES - 1500].strip(b"\0") == b"", "the old content is not at the head of the rotated file"
    before, after = old[LOG_MAX_BYTES - 1500 :].decode().splitlines(), log.read_text().splitlines()
    assert before and after, "the run's lines are not on both sides of the rotation"
    lines = before + after
    bad = [x for x in lines if not LINE.match(x)]
    assert not bad, bad  # no line cut in two or run into another
    assert sum("event=start " in x for x in lines) == 1 and sum("event=done " in x for x in lines) == 1
    stamps = [x[:24] for x in lines]
    assert stamps == sorted(stamps), "the lines are not in the order they were written"
    for day_idx, (start, end) in plans.items():  # every window of both days, once: no line lost
        ranges = sorted((int(m[2]), int(m[3])) for x in lines if (m := WINDOW.search(x)) and int(m[1]) == day_idx)
        assert ranges[0][0] == start and ranges[-1][1] == end, (day_idx, ranges)
        assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:])), (day_idx, ranges)


# -- the ClickHouse password, end to end ----------------------------------------------------------------------
PASSWORD = "Ch-s3cret+p@ss/w0rd%Q"  # URL-special characters: the URL carries it percent-encoded


@pytest.fixture
def served_store(tmp_path) -> Iterator[tuple[str, Path]]:
    """`backfill db serve` of a store whose credential has PASSWORD; (CLICKHOUSE_URL, the store's dir)."""
    store_dir = tmp_path / "served"
    (store_dir / "clickhouse").mkdir(parents=True, mode=0o700)
    credential = store_dir / "clickhouse" / "credentials.json"
    credential.write_text(json.dumps({"user": "backfill", "password": PASSWORD}))
    credential.chmod(0o600)
    serve = subprocess.Popen(
        [sys.executable, "-m", "backfill.cli.app", "db", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(BACKFILL_DATA_DIR=str(store_dir)),
        cwd=tmp_path,
    )
    said = Pipe(serve.stderr.fileno())  # type: ignore[union-attr]
    try:
        url = wait_for(
            lambda: (m := re.search(r"embedded store started: http://(127\.0\.0\.1:\d+) ", said.read())) and m[1],
            60,
            "the served store's URL",
        )
        yield f"http://backfill:{urllib.parse.quote(PASSWORD, safe='')}@{url}/backfill", store_dir
    finally:
        serve.terminate()
        serve.wait(30)
        assert not secrets_in(said.read()), "the served store's own lines show the password"


def secrets_in(text: str) -> list[str]:
    return [s for s in (PASSWORD, urllib.parse.quote(PASSWORD, safe=""), "s3cret+p@ss") if s in text]


@pytest.mark.slow
def test_the_clickhouse_password_appears_in_no_log_file_status_config_or_error_line(
    served_store, tmp_path, chain: Chain
):
    url, store_dir = served_store
    data = tmp_path / "data"
    env = {"CLICKHOUSE_URL": url}
    run = backfill(
        ["start", "--foreground", "--from", chain.day(chain.days - 2), "--to", chain.last_day, "--confirmations", "0"],
        data,
        chain,
        shards=2,
        extra_env={**env, "BACKFILL_ON_COMPLETE": "0"},
    )
    assert run.returncode == 0, run.stderr
    assert not (data / "clickhouse").exists(), "the run used an embedded store, not the served one"
    outputs = {"start": run.stdout + run.stderr}
    for args in (["status"], ["status", "--json"], ["config"], ["config", "--json"], ["sql", "SELEC 1"]):
        result = backfill(args, data, chain, extra_env=env, timeout=120)
        outputs[" ".join(args)] = result.stdout + result.stderr
    assert "days: 2/2 complete" in outputs["status"], outputs["status"]
    assert "backfill:***@127.0.0.1:" in outputs["config"]
    assert outputs["sql SELEC 1"].startswith("error: Code: 62. DB::Exception: Syntax error")
    # the store gone: the error lines name it, without the password
    stopped = backfill(["db", "stop"], store_dir, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    for args in (["sql", "SELECT 1"], ["status"]):
        result = backfill(args, data, chain, extra_env=env, timeout=120)
        outputs[f"{' '.join(args)} (store gone)"] = result.stdout + result.stderr
    gone = outputs["sql SELECT 1 (store gone)"]
    assert gone.startswith("error: cannot use ClickHouse at http://***:***@127.0.0.1:") and "refused" in gone, gone
    leaks = {name: secrets_in(text) for name, text in outputs.items() if secrets_in(text)}
    assert not leaks, leaks
    files = {
        str(p.relative_to(data)): secrets_in(p.read_text(errors="replace")) for p in data.rglob("*") if p.is_file()
    }
    assert any(name.endswith(".log") for name in files) and not {k: v for k, v in files.items() if v}
