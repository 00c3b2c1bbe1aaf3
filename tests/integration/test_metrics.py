"""/metrics, /healthz and /readyz of a following run, read the way a scraper reads them: the exposition parsed
with prometheus_client's own parser, the numbers against the store's FINAL counts and checkpoints."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backfill.store.embedded import stop_server
from tests.integration.harness import Chain, backfill, open_store, supervisor_state, wait_for
from tests.support.proxy import RpcProxy
from tests.support.proxy_faults import Fault

KEY = "m3tr1csK3yabcdef0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:  # nothing listening (yet)
        return 0, ""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Prometheus is not installed (scripts/setup installs Debian's package where it can)",
)


@needs_prometheus
def test_the_alert_rules_pass_promtool() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


@needs_prometheus
def test_the_alerts_fire_on_the_series_that_should_fire_them(tmp_path: Path) -> None:
    """`promtool test rules` over series of a stalled worker, a failed gate, a failed rebuild, a store away and
    an endpoint failing a third of its calls (and quiet ones beside them)."""
    cases = tmp_path / "alerts_test.yml"
    cases.write_text(f"rule_files: ['{ALERTS}']\n" + (Path(__file__).parent / "data" / "alerts_test.yml").read_text())
    result = subprocess.run(["promtool", "test", "rules", str(cases)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A real Prometheus server scraping a port of the test's choosing every second: (its URL, that port)."""
    target, web = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        f"scrape_configs: [{{job_name: backfill, static_configs: [{{targets: ['127.0.0.1:{target}']}}]}}]\n"
    )
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{web}"
    try:
        wait_for(lambda: get(f"{url}/-/ready")[0] == 200, 60, "Prometheus to be ready")
        yield url, target
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def instant(prom: str, query: str) -> list[float]:
    status, body = get(f"{prom}/api/v1/query?query={urllib.parse.quote(query)}")
    assert status == 200, body
    return [float(r["value"][1]) for r in json.loads(body)["data"]["result"]]


@pytest.mark.slow
@needs_prometheus
def test_a_following_run_is_scraped_by_prometheus_and_serves_health_and_readiness(
    chain: Chain, tmp_path: Path, prometheus: tuple[str, int]
) -> None:
    prom, port = prometheus
    scraped_by_prometheus(chain, tmp_path, prom, port)


def scraped_by_prometheus(chain: Chain, tmp_path: Path, prom: str, port: int) -> None:
    data_dir = tmp_path / "data"
    base = f"http://127.0.0.1:{port}"
    env = {"BACKFILL_METRICS_ADDR": str(port), "BACKFILL_FOLLOW_POLL_S": "0.5"}
    # a provider that limits every second and fails some calls: the limits and errors must be visible
    faults = [Fault("HTTP503", rate=0.15, methods={"eth_getLogs"})]
    with RpcProxy(chain.url, faults, seed=5, rate_limit_rps=25) as proxy:
        url = proxy.url_with_key(KEY)
        try:
            started = backfill(
                ["follow", "--from", chain.day(7), "--to", chain.day(9), "--confirmations", "0"],
                data_dir,
                rpc_urls=url,
                shards=2,
                extra_env=env,
            )
            assert started.returncode == 0, started.stderr
            wait_for(lambda: supervisor_state(data_dir).get("phase") == "following", 180, "the run to follow")
            wait_for(lambda: rebuilt(base), 120, "the rebuild of the final days to be in the metrics")
            assert wait_for(lambda: get(f"{base}/readyz")[0] == 200, 30, "/readyz to turn 200")
            assert get(f"{base}/healthz")[0] == 200
            assert get(f"{base}/nope")[0] == 404
            store = open_store(data_dir)
            try:
                complete = sum(1 for cp in store.checkpoints().values() if cp["status"] == "COMPLETE")
                final20 = int(store.scalar("SELECT count() FROM erc20_transfers_staging FINAL"))
                final1155 = int(store.scalar("SELECT count() FROM erc1155_transfers_staging FINAL"))
            finally:
                store.close()

            def scraped() -> dict | None:
                found = samples(get(f"{base}/metrics")[1])
                days = found.get(("backfill_days", (("status", "complete"),)))
                polled = ("backfill_lag_blocks", ()) in found  # the follower's first poll: after the rebuild
                return found if days == complete and polled else None

            found = wait_for(scraped, 30, "the metrics to show the finished days")
            text = get(f"{base}/metrics")[1]
            assert found[("backfill_rows", (("table", "erc20"),))] == final20
            assert found[("backfill_rows", (("table", "erc1155"),))] == final1155
            assert found[("backfill_phase", (("phase", "following"),))] == 1
            assert found[("backfill_store_up", ())] == 1
            assert found[("backfill_lag_blocks", ())] >= 0
            assert any(name == "backfill_rpc_requests_total" and value > 0 for (name, _), value in found.items())
            assert_rpc_conditions_shown(found, proxy)
            assert found[("backfill_audit_passing", ())] == 1 and found[("backfill_rebuild_last_success", ())] == 1
            steps = {
                dict(labels)["step"] for (name, labels), _ in found.items() if name.startswith("backfill_rebuild_step")
            }
            assert {"dedup", "audit", "gates", "derived"} <= steps, steps
            assert KEY not in text, "an RPC key in the metrics"
            assert len(found) < 200, len(found)  # bounded: no day or block labels
            # every metric the alert rules name is one that is served
            served = {name for name, _ in found} | {f.name for f in text_string_to_metric_families(text)}
            named = set(re.findall(r"\bbackfill_[a-z_]+", ALERTS.read_text())) - {"backfill"}
            assert named <= served, named - served
            # Prometheus itself scraped it: its query API answers the same numbers
            wait_for(lambda: instant(prom, 'backfill_days{status="complete"}') == [complete], 60, "Prometheus's view")
            assert instant(prom, 'backfill_rows{table="erc20"}') == [final20]
            assert instant(prom, 'up{job="backfill"}') == [1.0]
        finally:
            backfill(["stop"], data_dir, rpc_urls=url)
            stop_server(data_dir)


def rebuilt(base: str) -> bool:
    return samples(get(f"{base}/metrics")[1]).get(("backfill_rebuild_last_success", ())) == 1


def assert_rpc_conditions_shown(found: dict, proxy: RpcProxy) -> None:
    """The proxy's 503s are transient errors and its rate-limit answers limit answers, per endpoint label."""

    def total(metric: str, **labels: str) -> float:
        return sum(v for (name, ls), v in found.items() if name == metric and labels.items() <= dict(ls).items())

    assert proxy.fault_counts()["HTTP503"] > 0 and proxy.limit_answers() > 0, "the proxy did not limit or fail"
    assert total("backfill_rpc_errors_total", **{"class": "transient"}) > 0
    assert total("backfill_rpc_limit_answers_total") > 0
    endpoints = {dict(ls).get("endpoint") for (name, ls), _ in found.items() if name.startswith("backfill_rpc_")}
    assert endpoints and all(e and KEY not in e for e in endpoints), endpoints


@pytest.mark.slow
def test_json_logs_are_one_object_a_line_with_the_same_fields_and_no_key(chain: Chain, tmp_path: Path) -> None:
    import orjson

    data_dir = tmp_path / "data"
    with RpcProxy(chain.url) as proxy:
        url = proxy.url_with_key(KEY)
        try:
            run = backfill(
                ["start", "--foreground", "--from", chain.day(8), "--to", chain.day(9), "--confirmations", "0"],
                data_dir,
                rpc_urls=url,
                shards=2,
                extra_env={"BACKFILL_LOG_FORMAT": "json", "BACKFILL_ON_COMPLETE": "0"},
            )
            assert run.returncode == 0, run.stderr
        finally:
            stop_server(data_dir)
    logs = [p for p in (data_dir / "backfill").glob("*.log") if p.name != "store.log"]  # the store server's own
    assert {"monitor.log", "worker-0.log", "worker-1.log"} <= {p.name for p in logs}
    events = set()
    for path in logs:
        text = path.read_text()
        assert KEY not in text, path.name
        for line in text.splitlines():
            doc = orjson.loads(line)  # every line is one JSON object
            assert {"ts", "level", "logger", "msg"} <= set(doc), line
            events.add(doc.get("event"))
            if "worker" in doc and "day" in doc:  # key=value fields are fields of their own
                assert f"worker={doc['worker']}" in doc["msg"]
    assert {"supervisor_start", "spawn", "done"} <= events, events
    bad = backfill(["start", "--from", chain.day(8)], data_dir, chain, extra_env={"BACKFILL_LOG_FORMAT": "xml"})
    assert bad.returncode == 2 and "BACKFILL_LOG_FORMAT (environment): must be text or json" in bad.stderr


@pytest.mark.slow
def test_a_stopped_worker_shows_a_growing_heartbeat_age_and_the_run_is_not_ready(chain: Chain, tmp_path: Path) -> None:
    """SIGSTOP on the only worker of a slow run: /metrics shows its heartbeat age growing (before the stall limit
    replaces it), /readyz stays 503 while days remain, /healthz 200 (the store answers)."""
    import os
    import signal
    import time

    from tests.integration.harness import live_workers

    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "BACKFILL_METRICS_ADDR": str(port),
        "BACKFILL_ON_COMPLETE": "0",
        "BACKFILL_RPC_MAX_RPS": "4",  # a slow provider: the run lasts
        "BACKFILL_STALL_S": "60",
        "BACKFILL_WINDOW_BLOCKS": "200",
    }
    started = backfill(
        ["start", "--from", chain.first_day, "--to", chain.last_day, "--confirmations", "0"],
        data_dir,
        chain,
        shards=1,
        extra_env=env,
    )
    assert started.returncode == 0, started.stderr
    pid = wait_for(lambda: live_workers(data_dir).get(0), 60, "the worker to run")

    def age() -> float | None:
        found = samples(get(f"{base}/metrics")[1])
        return found.get(("backfill_worker_heartbeat_age_seconds", (("worker", "0"),)))

    try:
        wait_for(lambda: age() is not None, 60, "a heartbeat in the metrics")
        os.kill(pid, signal.SIGSTOP)
        first = wait_for(lambda: (a := age()) is not None and a > 5 and a, 60, "the age to pass 5 s")
        time.sleep(3)
        later = age()
        assert later is not None and later > first + 1.5, (first, later)  # growing, not reset
        assert get(f"{base}/readyz")[0] == 503  # days remain
        assert get(f"{base}/healthz")[0] == 200
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        backfill(["stop"], data_dir, chain)
        stop_server(data_dir)


@pytest.mark.slow
def test_healthz_is_503_while_the_store_is_away_and_200_once_it_is_back(chain: Chain, tmp_path: Path) -> None:
    from backfill.store.embedded import ensure_server
    from tests.integration.harness import store_url
    from tests.support.store_proxy import StoreProxy

    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    upstream = ensure_server(tmp_path / "server")
    try:
        with StoreProxy(upstream) as proxy:
            env = {
                "CLICKHOUSE_URL": store_url(tmp_path / "server", f"127.0.0.1:{proxy.port}"),
                "BACKFILL_METRICS_ADDR": str(port),
                "BACKFILL_ON_COMPLETE": "0",
                "BACKFILL_FOLLOW_POLL_S": "0.5",
            }
            started = backfill(
                ["follow", "--from", chain.day(8), "--to", chain.day(9), "--confirmations", "0"],
                data_dir,
                chain,
                shards=1,
                extra_env=env,
            )
            assert started.returncode == 0, started.stderr
            wait_for(lambda: get(f"{base}/healthz")[0] == 200, 120, "/healthz 200")
            proxy.down()
            wait_for(lambda: get(f"{base}/healthz")[0] == 503, 60, "/healthz 503 while the store is away")
            proxy.up()
            wait_for(lambda: get(f"{base}/healthz")[0] == 200, 60, "/healthz 200 once the store is back")
            backfill(["stop"], data_dir, chain, extra_env=env)
    finally:
        stop_server(tmp_path / "server")


@pytest.mark.slow
def test_a_run_started_from_inside_its_data_directory_is_not_shadowed_by_its_backfill_folder(
    chain: Chain, tmp_path: Path
) -> None:
    """`cd data && backfill start --data-dir .`: the data directory's `backfill/` (logs) folder is first on the
    path of a `python -m` process; the supervisor and workers must still import the real package."""
    data_dir = tmp_path / "data"
    (data_dir / "backfill").mkdir(parents=True)
    run = backfill(
        ["start", "--foreground", "--from", chain.day(9), "--to", chain.day(9), "--confirmations", "0"],
        data_dir,
        chain,
        shards=1,
        extra_env={"BACKFILL_ON_COMPLETE": "0", "BACKFILL_METRICS_ADDR": str(free_port())},
        cwd=data_dir,
    )
    try:
        assert run.returncode == 0, run.stderr
        assert "backfill complete" in run.stdout
    finally:
        stop_server(data_dir)
