"""Status never lies: after a stop, a restart with fewer shards, a killed supervisor and a completion, `status`
and `status --json` show the processes that exist (no running day, worker, rate or ETA without one), and two
`start`s at once both take effect, the later shard count last.

The run is slowed by a provider budget (a proxy at 30 calls/s) so that it is still running when it is
stopped and killed; the budget is lifted to let it finish.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import psutil
import pytest

from tests.integration.harness import (
    Chain,
    assert_exact,
    backfill,
    clean_env,
    open_store,
    supervisor_state,
    wait_for,
    wait_run_finished,
)
from tests.support.proxy import RpcProxy

pytestmark = pytest.mark.slow

PACED = {
    "BACKFILL_WINDOW_BLOCKS": "400",
    "BACKFILL_GETLOGS_BLOCKS": "50",
    "BACKFILL_RPC_MAX_RPS": "25",
    "BACKFILL_STALL_GRACE_S": "2",
    "BACKFILL_AUDIT_SAMPLE": "1",
    # the lag guard's header checks of the blocks near the head are not what these runs are about: at 25
    # calls/s its default 256 blocks took ~30 s of each run (tests/integration/test_audit.py and
    # test_header_faults.py hold the guard to its work)
    "BACKFILL_LAG_GUARD_BLOCKS": "16",
}


def status(run_dir) -> tuple[dict, str]:
    """One `status --json` and one human `status`, as an operator runs them."""
    js = backfill(["status", "--json"], run_dir)
    human = backfill(["status"], run_dir, extra_env={"COLUMNS": "400"})  # one line per line
    assert js.returncode == 0 and human.returncode == 0, (js.stderr, human.stderr)
    return orjson.loads(js.stdout), human.stdout


def live_worker_pids() -> set[int]:
    """Live worker processes of the machine (other tests' workers come and go meanwhile)."""
    found = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "workers.worker" in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                found.add(p.pid)
        except psutil.Error:
            continue
    return found


def assert_nothing_runs(summary: dict, human: str) -> None:
    assert summary["days_running"] == 0, summary
    assert summary["eta_s"] is None and summary["rows_per_s"] is None, summary
    assert summary["workers"] == [], summary["workers"]
    assert "ETA -" in human and "workers: none running" in human, human


def test_stopped_restarted_smaller_and_killed_runs_are_shown_as_they_are(chain: Chain, run_dir):
    with RpcProxy(chain.url, rate_limit_rps=30) as rpc:
        start = ["start", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"]
        out = backfill(start, run_dir, rpc_urls=rpc.url, shards=3, extra_env=PACED)
        assert out.returncode == 0, out.stderr
        wait_for(
            lambda: len([w for w in supervisor_state(run_dir).get("workers", []) if w.get("pid")]) == 3,
            60,
            "3 running workers",
        )
        wait_for(lambda: len(open_heartbeats(run_dir)) == 3, 60, "3 workers' heartbeats")

        stopped = backfill(["stop"], run_dir)
        assert stopped.returncode == 0, stopped.stderr
        summary, human = status(run_dir)
        assert summary["run"]["state"] == "stopped" and summary["run"]["resume"] == "backfill start", summary["run"]
        assert_nothing_runs(summary, human)
        assert "run: stopped at" in human and "resume: backfill start" in human, human
        assert summary["days_complete"] < summary["days_total"]

        again = backfill(["start"], run_dir, rpc_urls=rpc.url, shards=2, extra_env=PACED)
        assert again.returncode == 0, again.stderr
        wait_for(
            lambda: len([w for w in supervisor_state(run_dir).get("workers", []) if w.get("pid")]) == 2,
            60,
            "2 running workers",
        )
        generation = lambda: {w["pid"] for w in supervisor_state(run_dir)["workers"] if w.get("pid")}  # noqa: E731
        before = generation()
        summary, human = status(run_dir)
        sup_pids = before | generation()  # a worker may finish its days while status runs
        shown = {w["worker_id"]: w["pid"] for w in summary["workers"]}
        assert set(shown) <= {0, 1} and set(shown.values()) <= sup_pids, (shown, sup_pids)  # no ghost worker 2
        assert summary["run"]["state"] == "running"

        os.kill(int(supervisor_state(run_dir)["pid"]), signal.SIGKILL)
        wait_for(lambda: not live_worker_pids() & sup_pids, 30, "the orphaned workers to exit by themselves")
        summary, human = status(run_dir)
        assert summary["run"]["state"] == "dead", summary["run"]
        assert summary["run"]["resume"] == "backfill start"
        assert_nothing_runs(summary, human)
        assert "NOT RUNNING since" in human and "resume: backfill start" in human, human

        rpc.configure(rate_limit_rps=None)
        done = backfill(
            ["start", "--foreground"],
            run_dir,
            rpc_urls=rpc.url,
            shards=2,
            extra_env={**PACED, "BACKFILL_RPC_MAX_RPS": "0"},
        )
        assert done.returncode == 0, done.stderr
        assert "not promoted yet: `backfill promote`" in done.stdout, done.stdout
    summary, human = status(run_dir)
    assert summary["run"]["state"] == "complete" and summary["run"]["promoted"] is False, summary["run"]
    assert summary["days_complete"] == summary["days_total"] == chain.days
    assert_nothing_runs(summary, human)
    assert "not promoted: backfill promote" in human, human


def open_heartbeats(run_dir) -> list:
    store = open_store(run_dir)
    try:
        return store.query_rows("SELECT worker_id FROM worker_heartbeats FINAL WHERE updated_at > now() - 5")
    finally:
        store.close()


def start_lock_held(run_dir) -> bool:
    """Whether a process holds the data directory's start lock (Linux lists every flock in /proc/locks)."""
    try:
        st = (run_dir / "backfill" / "start.lock").stat()
    except FileNotFoundError:
        return False
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    return any("FLOCK" in line and "->" not in line and key in line for line in open("/proc/locks").read().splitlines())


def test_two_starts_at_once_both_take_effect_and_the_later_shard_count_wins(chain: Chain, run_dir):
    with RpcProxy(chain.url, rate_limit_rps=30) as rpc:
        cmd = [
            sys.executable,
            "-m",
            "backfill.cli.app",
            "start",
            "--from",
            chain.first_day,
            "--to",
            chain.last_day,
            "--confirmations",
            "0",
        ]
        env = clean_env(BACKFILL_DATA_DIR=str(run_dir), ETHEREUM_RPC_URLS=rpc.url, **PACED)
        first = subprocess.Popen(
            cmd,
            env={**env, "SHARDS": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=run_dir.parent,
        )
        wait_for(lambda: start_lock_held(run_dir) or first.poll() is not None, 60, "the first start to hold its lock")
        second = subprocess.Popen(
            cmd,
            env={**env, "SHARDS": "3"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=run_dir.parent,
        )
        out1, err1 = first.communicate(timeout=120)
        out2, err2 = second.communicate(timeout=120)
        assert first.returncode == 0 and second.returncode == 0, (err1, err2)
        assert "started: supervisor pid" in out1, out1
        assert "scaling to 3 workers" in out2, out2
        wait_for(
            lambda: (
                supervisor_state(run_dir).get("wanted_shards") == 3
                and len([w for w in supervisor_state(run_dir).get("workers", []) if w.get("pid") and w["shards"] == 3])
                == 3
            ),
            60,
            "the run at 3 workers",
        )
        rpc.configure(rate_limit_rps=None)
        state = wait_run_finished(run_dir, 300)
    assert state["phase"] == "complete", state
    store = open_store(run_dir)
    try:
        assert_exact(store, chain)
    finally:
        store.close()


def test_stop_during_the_rebuild_stops_it_between_steps_and_the_next_start_runs_it_again(chain: Chain, run_dir):
    """The rebuild runs beside the supervisor's loop: `stop` is heard during a long step (an operator's SQL that
    takes a minute), the step is cut short, production is untouched, and the next start rebuilds."""
    slow = run_dir / "rebuild.d"
    slow.mkdir(parents=True)
    (slow / "10-slow.sql").write_text("SELECT sleep(3);\n" * 20)  # a minute
    start = ["start", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"]
    out = backfill(start, run_dir, chain, shards=2, extra_env={"BACKFILL_AUDIT_SAMPLE": "1"})
    assert out.returncode == 0, out.stderr
    wait_for(lambda: supervisor_state(run_dir).get("rebuild_step") == "derived", 120, "the rebuild's derived step")
    summary, human = status(run_dir)
    assert "phase rebuilding, step derived" in human, human
    t0 = time.monotonic()
    stopped = backfill(["stop"], run_dir)
    assert stopped.returncode == 0, stopped.stderr
    assert time.monotonic() - t0 < 30, "the stop waited for the whole step"
    summary, human = status(run_dir)
    assert summary["run"]["state"] == "stopped" and "rebuild stopped before its end" in human, human
    (slow / "10-slow.sql").unlink()
    again = backfill(["start", "--foreground"], run_dir, chain, shards=2, extra_env={"BACKFILL_AUDIT_SAMPLE": "1"})
    assert again.returncode == 0, again.stderr
    assert (run_dir / "backfill" / "on-complete.log").read_text().count("event=on_complete_done") == 1


def test_ctrl_c_stops_a_foreground_run_in_one_line_and_a_stop_from_elsewhere_exits_0(chain: Chain, run_dir):
    """Ctrl-C in the terminal of `start --foreground` (SIGINT to its process group, as a terminal sends it):
    a graceful stop, one line, exit 130. `backfill stop` from another terminal: stopped as asked, exit 0. Both
    resume to the chain's rows exactly."""
    import threading

    cmd = [
        sys.executable,
        "-m",
        "backfill.cli.app",
        "start",
        "--foreground",
        "--from",
        chain.first_day,
        "--to",
        chain.last_day,
        "--confirmations",
        "0",
    ]

    def foreground(env: dict) -> tuple[subprocess.Popen, dict]:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=run_dir.parent,
            start_new_session=True,
        )
        ended: dict = {}
        # read (and reap) it meanwhile: a stop waits for the process to be gone, not a zombie
        threading.Thread(
            target=lambda: ended.update(zip(("out", "err"), proc.communicate(timeout=180))), daemon=True
        ).start()
        wait_for(
            lambda: (
                supervisor_state(run_dir).get("pid") == proc.pid
                and len([w for w in supervisor_state(run_dir).get("workers", []) if w.get("pid")]) == 2
            ),
            90,
            "2 running workers",
        )
        return proc, ended

    with RpcProxy(chain.url, rate_limit_rps=30) as rpc:
        env = clean_env(BACKFILL_DATA_DIR=str(run_dir), ETHEREUM_RPC_URLS=rpc.url, SHARDS="2", **PACED)
        proc, ended = foreground(env)
        os.killpg(proc.pid, signal.SIGINT)
        wait_for(lambda: "err" in ended, 120, "the foreground run to end")
        assert proc.returncode == 130, ended
        assert ended["err"] == "stopped by Ctrl-C; progress is checkpointed, `backfill start` resumes\n", ended
        assert supervisor_state(run_dir)["phase"] == "stopped"

        proc, ended = foreground(env)
        stopped = backfill(["stop"], run_dir)
        assert stopped.returncode == 0, stopped.stderr
        wait_for(lambda: "err" in ended, 120, "the foreground run to end")
        assert proc.returncode == 0 and ended["err"] == "", ended
        assert "stopped as asked (`backfill stop`); progress is checkpointed" in ended["out"], ended

        rpc.configure(rate_limit_rps=None)
        done = backfill(
            ["start", "--foreground"],
            run_dir,
            rpc_urls=rpc.url,
            shards=2,
            extra_env={**PACED, "BACKFILL_RPC_MAX_RPS": "0", "BACKFILL_ON_COMPLETE": "0"},
        )
        assert done.returncode == 0, done.stderr
    store = open_store(run_dir)
    try:
        assert_exact(store, chain)
    finally:
        store.close()
