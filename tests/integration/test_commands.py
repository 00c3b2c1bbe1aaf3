"""The commands around a run, as an operator types them: stop, logs (-f), sql, db serve / db stop,
status --watch, devnet up; and the run flags --shards, --window-blocks, --stall-s and --data-dir, each by
what it visibly changes."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.harness import (
    Chain,
    assert_exact,
    backfill,
    clean_env,
    live_workers,
    open_store,
    store_url,
    supervisor_state,
    wait_beating,
    wait_for,
    wait_run_finished,
)
from tests.support.proxy import RpcProxy
from tests.support.proxy_faults import Fault

KEY = "k3yS3cretAbCdEf0123456789"
WINDOW = re.compile(r"worker=(\d+) day=(\d+) blocks=(\d+)-(\d+) event=(?:window|complete) ")  # a day's last: complete
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def last_two_days(chain: Chain) -> list[str]:
    return ["--from", chain.day(chain.days - 2), "--to", chain.last_day, "--confirmations", "0"]


def cli(args: list[str], data_dir: Path, **env: str) -> subprocess.Popen:
    """`backfill ARGS` left running, its output piped (a long-lived command: logs -f, db serve)."""
    return subprocess.Popen(
        [sys.executable, "-m", "backfill.cli.app", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=data_dir.parent,
        env=clean_env(BACKFILL_DATA_DIR=str(data_dir), **env),
    )


def log_text(data_dir: Path, name: str) -> str:
    path = data_dir / "backfill" / name
    return path.read_text() if path.exists() else ""


def windows(data_dir: Path) -> list[tuple[int, int, int, int]]:
    """(worker, day_idx, first block, last block) of every window line in the worker logs."""
    return [
        tuple(map(int, m.groups()))
        for log in sorted((data_dir / "backfill").glob("worker-*.log"))
        for m in WINDOW.finditer(log.read_text())
    ]


@contextlib.contextmanager
def slow_run(chain: Chain, data_dir: Path, *flags: str, delay_s: float = 0.5, **env: str) -> Iterator[RpcProxy]:
    """A detached one-worker run over the last two days whose eth_getLogs answers each take delay_s (an endpoint
    with a key in its URL), yielded once its first window is checkpointed; `proxy.set_faults()` lets it finish."""
    with RpcProxy(chain.url, Fault("TIMEOUT", delay_s=delay_s)) as proxy:
        result = backfill(
            ["start", *last_two_days(chain), "--window-blocks", "300", *flags],
            data_dir,
            rpc_urls=proxy.url_with_key(KEY),
            shards=1,
            extra_env={"BACKFILL_ON_COMPLETE": "0", **env},
        )
        assert result.returncode == 0, result.stderr
        wait_for(lambda: windows(data_dir), 60, "a first window checkpointed")
        yield proxy


class Pipe:
    """What a long-lived command has written so far, read from its fd without blocking the test."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd, self.text = fd, ""

    def read(self) -> str:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self.fd, 65536):
                self.text += chunk.decode(errors="replace")
        return self.text


# -- the run flags ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flagged_run(chain: Chain, tmp_path_factory) -> Iterator[tuple[Path, Path]]:
    """A detached start whose flags say otherwise than its environment: `--shards 3` over SHARDS=1,
    `--data-dir RUN` over BACKFILL_DATA_DIR=ELSEWHERE, and `--window-blocks 300`; finished. (RUN, ELSEWHERE)."""
    from backfill.store.embedded import stop_server

    base = tmp_path_factory.mktemp("flags")
    run, elsewhere = base / "run", base / "elsewhere"
    result = backfill(
        ["start", *last_two_days(chain), "--shards", "3", "--window-blocks", "300", "--data-dir", str(run)],
        elsewhere,
        chain,
        shards=1,
        extra_env={"BACKFILL_ON_COMPLETE": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert "3 workers, 2 days planned" in result.stdout, result.stdout
    state = wait_run_finished(run, timeout=180)
    assert state["phase"] == "complete", state
    yield run, elsewhere
    stop_server(run)


@pytest.mark.slow
def test_shards_flag_over_the_environment_runs_that_many_workers(flagged_run):
    run, _ = flagged_run
    monitor = log_text(run, "monitor.log")
    assert "event=supervisor_start" in monitor and " shards=3 " in monitor
    spawned = re.findall(r"worker=(\d+) pid=\d+ event=spawn shards=(\d+)", monitor)
    assert sorted(spawned) == [("0", "3"), ("1", "3"), ("2", "3")], monitor
    for k in range(3):
        assert f"worker={k} shards=3 event=start" in log_text(run, f"worker-{k}.log")


@pytest.mark.slow
def test_window_blocks_flag_bounds_every_window_and_the_windows_tile_each_day(flagged_run):
    run, _ = flagged_run
    store = open_store(run)
    try:
        plans = {p.day_idx: (p.start_block, p.end_block) for p in store.read_plan()}
    finally:
        store.close()
    seen = windows(run)
    assert seen and all(last - first + 1 <= 300 for _, _, first, last in seen), seen
    for day_idx, (start, end) in plans.items():
        ranges = sorted((first, last) for _, d, first, last in seen if d == day_idx)
        assert len(ranges) >= (end - start + 1) // 300, ranges  # not the default's one window a day
        assert ranges[0][0] == start and ranges[-1][1] == end, (day_idx, ranges[0], ranges[-1], start, end)
        assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:])), f"day {day_idx}: a gap or an overlap"


@pytest.mark.slow
def test_data_dir_flag_over_the_environment_holds_the_whole_run(flagged_run, chain: Chain):
    run, elsewhere = flagged_run
    assert not elsewhere.exists(), "BACKFILL_DATA_DIR was used although --data-dir was given"
    assert (run / "backfill" / "monitor.log").is_file() and (run / "clickhouse").is_dir()
    status = backfill(["status", "--data-dir", str(run)], elsewhere, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "days: 2/2 complete" in status.stdout, status.stdout
    assert not elsewhere.exists()


@pytest.mark.slow
def test_stall_s_flag_is_the_limit_the_supervisor_restarts_a_stopped_worker_at(chain: Chain, run_dir):
    with slow_run(chain, run_dir, "--stall-s", "8", BACKFILL_STALL_GRACE_S="1"):
        assert "stall_s=8.0" in log_text(run_dir, "monitor.log")
        ((shard, pid),) = live_workers(run_dir).items()
        wait_beating(run_dir, shard, pid)  # started: judged by stall_s from now on
        os.kill(pid, signal.SIGSTOP)
        try:
            line = wait_for(
                lambda: next(
                    (
                        x
                        for x in log_text(run_dir, "monitor.log").splitlines()
                        if f"worker={shard} pid={pid} " in x and "action=restart" in x
                    ),
                    None,
                ),
                60,
                "the stalled worker's restart line",
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        assert re.search(r" stalled=\d+s limit=8s ", line), line
        wait_for(lambda: live_workers(run_dir).get(shard) not in (None, pid), 60, "a replacement worker")


# -- a run watched, followed and stopped: stop, logs -f, status --watch -----------------------------------------
@pytest.fixture(scope="module")
def stopped_run(chain: Chain, tmp_path_factory) -> Iterator[dict]:
    """A detached run, watched (`status --watch` in a terminal) and followed (`logs 0 -f`) from its first
    window, then `backfill stop`ped; the watch is Ctrl-C'd once it shows the stop. What each command gave."""
    from backfill.store.embedded import stop_server

    data = tmp_path_factory.mktemp("stopped") / "data"
    seen: dict = {"data": data}
    master, slave = pty.openpty()  # --watch in a terminal, as people watch (piped, rich draws the last frame only)
    watch = follow = None
    try:
        with slow_run(chain, data):
            seen["pids"] = [supervisor_state(data)["pid"], *live_workers(data).values()]
            follow = cli(["logs", "0", "-f"], data)
            followed = Pipe(follow.stdout.fileno())  # type: ignore[union-attr]
            watch = subprocess.Popen(
                [sys.executable, "-m", "backfill.cli.app", "status", "--watch", "--interval", "0.5"],
                stdin=slave,
                stdout=slave,
                stderr=subprocess.PIPE,
                text=True,
                cwd=data.parent,
                env=clean_env(BACKFILL_DATA_DIR=str(data), COLUMNS="100", LINES="200", TERM="xterm"),
            )
            screen = Pipe(master)
            frames = lambda: ANSI.sub("", screen.read())  # noqa: E731
            wait_for(lambda: "run: running (pid" in frames(), 60, "a frame of the running run")
            wait_for(lambda: "event=window" in followed.read(), 60, "the worker's log so far")
            seen["followed_before_stop"] = followed.read()
            seen["frames_before_stop"] = frames()
            seen["stop"] = backfill(["stop"], data, timeout=180)
            wait_for(lambda: "event=stopped" in followed.read(), 60, "the worker's stop line, followed")
            wait_for(lambda: "run: stopped at" in frames(), 60, "a frame of the stopped run")
            seen["watch_alive_after_stop"] = watch.poll() is None
            watch.send_signal(signal.SIGINT)
            seen["watch_code"] = watch.wait(30)
            seen["watch_stderr"] = watch.stderr.read()  # type: ignore[union-attr]
            seen["frames"], seen["followed"] = frames(), followed.read()
        seen["status"] = backfill(["status"], data, timeout=120)
        seen["stop_again"] = backfill(["stop"], data, timeout=60)
        yield seen
    finally:
        for proc in (watch, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(30)
        os.close(slave)
        os.close(master)
        stop_server(data)


@pytest.mark.slow
def test_stop_ends_a_detached_run_which_status_then_calls_stopped(stopped_run):
    stop, sup = stopped_run["stop"], stopped_run["pids"][0]
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.strip() == f"stopped (supervisor pid {sup}); progress is checkpointed, `backfill start` resumes"
    for pid in stopped_run["pids"]:  # the supervisor and its worker
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid
    status = stopped_run["status"]
    assert status.returncode == 0, status.stderr
    first = status.stdout.splitlines()[0]
    assert first.startswith("run: stopped at ") and first.endswith("resume: backfill start"), first
    assert "days: 2/2 complete" not in status.stdout and "workers: none running" in status.stdout, status.stdout
    assert KEY not in status.stdout
    again = stopped_run["stop_again"]
    assert (again.returncode, again.stdout.strip(), again.stderr) == (0, "no run is active", "")


def test_stop_with_nothing_running_says_so_exit_0_and_creates_nothing(tmp_path):
    result = backfill(["stop"], tmp_path / "data", timeout=60)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "no run is active", "")
    assert not (tmp_path / "data").exists()


# -- logs -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_logs_shows_the_last_lines_of_a_workers_and_the_monitors_log(flagged_run):
    run, elsewhere = flagged_run
    result = backfill(["logs", "1", "-n", "3", "--data-dir", str(run)], elsewhere, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == log_text(run, "worker-1.log").splitlines()[-3:]
    monitor = backfill(["logs", "monitor", "--data-dir", str(run)], elsewhere, timeout=60)
    assert monitor.returncode == 0 and "event=supervisor_start" in monitor.stdout, monitor.stderr
    missing = backfill(["logs", "7", "--data-dir", str(run)], elsewhere, timeout=60)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: no log {run / 'backfill' / 'worker-7.log'}"


@pytest.mark.slow
def test_logs_follow_prints_lines_written_after_it_began_and_never_the_key(stopped_run):
    before, followed = stopped_run["followed_before_stop"], stopped_run["followed"]
    assert "event=stopped" not in before and "event=stopped reason=signal" in followed
    assert followed.startswith(before)
    lines, shown = log_text(stopped_run["data"], "worker-0.log").splitlines(), followed.splitlines()
    at = lines.index(shown[0])
    assert shown == lines[at : at + len(shown)], "what was followed is not the log's lines, in order"
    logs = "".join(p.read_text(errors="replace") for p in stopped_run["data"].rglob("*.log"))
    assert KEY not in followed + logs


# -- sql, db serve / db stop ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_sql_answers_a_query_as_tsv_and_json(flagged_run):
    run, elsewhere = flagged_run
    query = "SELECT day_idx, status FROM backfill_checkpoint FINAL ORDER BY day_idx"
    tsv = backfill(["sql", query, "--format", "tsv", "--data-dir", str(run)], elsewhere, timeout=120)
    assert tsv.returncode == 0, tsv.stderr
    lines = tsv.stdout.splitlines()
    assert lines[0] == "day_idx\tstatus" and [x.split("\t")[1] for x in lines[1:]] == ["COMPLETE", "COMPLETE"]
    doc = json.loads(backfill(["sql", query, "--format", "json", "--data-dir", str(run)], elsewhere).stdout)
    assert [d["status"] for d in doc] == ["COMPLETE", "COMPLETE"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_db_serve_serves_the_store_to_other_commands_and_db_stop_ends_it(flagged_run, tmp_path):
    from backfill.store.embedded import read_credential, stop_server

    run, _ = flagged_run
    stop_server(run)  # the on-demand server of the earlier commands
    port = free_port()
    serve = cli(["db", "serve", "--port", str(port)], run)
    try:
        err = Pipe(serve.stderr.fileno())  # type: ignore[union-attr]
        wait_for(
            lambda: f"embedded store started: http://127.0.0.1:{port} serves " in err.read(),
            60,
            "the server's start line",
        )
        busy = backfill(["db", "serve"], run, timeout=60)
        assert busy.returncode == 2 and busy.stderr.strip() == (
            f"error: the embedded store of {run} is already served at http://127.0.0.1:{port}; "
            "`backfill db stop` stops that server"
        ), busy.stderr
        # a second command, elsewhere, with only the URL: the same days
        env = {"CLICKHOUSE_URL": store_url(run, f"http://127.0.0.1:{port}")}
        other = tmp_path / "other"
        answer = backfill(
            ["sql", "SELECT countIf(status = 'COMPLETE') FROM backfill_checkpoint FINAL", "--format", "tsv"],
            other,
            extra_env=env,
            timeout=60,
        )
        assert answer.returncode == 0 and answer.stdout.splitlines()[1:] == ["2"], answer.stderr
        refused = backfill(["sql", "SELECT * FROM nope"], other, extra_env=env, timeout=60)
        assert refused.returncode == 6 and refused.stderr.startswith("error: Code: 60. DB::Exception: "), refused.stderr
        assert "(UNKNOWN_TABLE)" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert not other.exists(), "a command with CLICKHOUSE_URL needs no data directory of its own"

        stopped = backfill(["db", "stop"], run, timeout=60)
        assert (stopped.returncode, stopped.stdout.strip()) == (0, f"stopped the embedded store of {run}")
        assert serve.wait(30) == 0, err.read()
        assert "closed cleanly" in err.read() and read_credential(run).password not in err.read()
        gone = backfill(["sql", "SELECT 1"], other, extra_env=env, timeout=60)
        assert gone.returncode == 5 and f"127.0.0.1:{port}" in gone.stderr, gone.stderr
        again = backfill(["db", "stop"], run, timeout=60)
        assert (again.returncode, again.stdout.strip()) == (0, f"the embedded store of {run} was not running")
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(30)


@pytest.mark.slow
def test_status_watch_redraws_as_the_run_goes_on_and_stops_at_ctrl_c(stopped_run):
    before, frames = stopped_run["frames_before_stop"], stopped_run["frames"]
    assert "run: running (pid" in before and "run: stopped at" not in before
    assert frames.count("run: ") > before.count("run: ") and "run: stopped at" in frames, "no frame after the stop"
    assert stopped_run["watch_alive_after_stop"], "--watch goes on after the run ends, until Ctrl-C"
    assert stopped_run["watch_code"] == 130
    assert stopped_run["watch_stderr"].strip() == (
        "stopped by Ctrl-C; only the watching stopped (a run goes on until `backfill stop`)"
    )
    assert "Traceback" not in frames and KEY not in frames


@pytest.mark.slow
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_status_watch_into_a_pipe_prints_frame_after_frame(flagged_run, as_json):
    """Piped (`status --watch | tee`), a redrawn screen would show nothing until the end: frames follow each other."""
    run, _ = flagged_run
    watch = cli(["status", "--watch", "--interval", "0.2", *(["--json"] if as_json else [])], run)
    try:
        if as_json:
            frames = [json.loads(watch.stdout.readline()) for _ in range(3)]  # one document a line, as they come
            assert all(f["run"]["state"] == "complete" and f["days_complete"] == 2 for f in frames), frames[0]
        else:
            lines = []
            while sum(line.startswith("run: ") for line in lines) < 3:
                lines.append(watch.stdout.readline())
            assert "days: 2/2 complete" in "".join(lines)
    finally:
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=30) == 130


# -- devnet up ------------------------------------------------------------------------------------------------
def devnet_up(state: Path, *args: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backfill.cli.app",
            "devnet",
            "up",
            "--json",
            "--days",
            "3",
            "--blocks-per-day",
            "200",
            "--heavy-day",
            "-1",
            "--start",
            "2024-03-01",
            "--state",
            str(state),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=state.parent,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line, proc.stderr.read()  # type: ignore[union-attr]
    return proc, json.loads(line)


def answers(url: str) -> bool:
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.loads(resp.read())["result"] == hex(31337)
    except OSError:
        return False


@pytest.mark.slow
def test_devnet_up_serves_a_chain_a_run_copies_exactly_and_ctrl_c_stops_it(tmp_path):
    state = tmp_path / "devnet" / "state.json"
    state.parent.mkdir()
    node, doc = devnet_up(state, "--port", "0")
    try:
        assert doc["loaded"] is False and state.is_file() and answers(doc["url"])
        assert [d["date"] for d in doc["summary"]["days"]] == ["2024-03-01", "2024-03-02", "2024-03-03"]
        data = tmp_path / "data"
        run = backfill(
            ["start", "--foreground", "--from", "2024-03-01", "--to", "2024-03-03", "--confirmations", "0"],
            data,
            rpc_urls=doc["url"],
            extra_env={"BACKFILL_ON_COMPLETE": "0"},
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        store = open_store(data)
        try:
            assert_exact(store, Chain(url=doc["url"], start=dt.date(2024, 3, 1), days=3, summary=doc["summary"]))
            assert store.scalar("SELECT count() FROM erc20_transfers_staging FINAL") > 0
        finally:
            store.close()
        node.send_signal(signal.SIGINT)
        assert node.wait(30) == 0, node.stderr.read()  # type: ignore[union-attr]
        assert not answers(doc["url"]), "the chain is still served after Ctrl-C"
    finally:
        if node.poll() is None:
            node.kill()
        from backfill.store.embedded import stop_server

        stop_server(tmp_path / "data")
    # the saved state is reloaded on a port of one's choosing, the same chain; SIGTERM stops it too
    port = free_port()
    node, again = devnet_up(state, "--port", str(port))
    try:
        assert again["loaded"] is True and again["url"] == f"http://127.0.0.1:{port}"
        assert again["summary"]["head_hash"] == doc["summary"]["head_hash"] and answers(again["url"])
        node.terminate()
        assert node.wait(30) == 0
        assert not answers(again["url"])
    finally:
        if node.poll() is None:
            node.kill()
