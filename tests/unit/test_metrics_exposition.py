"""The metrics exposition, the alert rules and the dashboard, without a run: the collector over a snapshot of
the shape the supervisor gathers, parsed with prometheus_client's parser; every metric the alert rules and
the dashboard's queries name must be one it serves; the address setting; JSON log lines."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backfill.errors import ConfigError
from backfill.files.oplog import JsonLines
from monitor.metrics.collector import SnapshotCollector
from monitor.metrics.server import MetricsServer, parse_addr

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def snapshot() -> dict:
    return {
        "at": time.time(),
        "phase": "following",
        "days": {"PENDING": 0, "RUNNING": 1, "OPEN": 1, "COMPLETE": 58, "FAILED": 0},
        "rows": {"erc20": 1000, "erc1155": 500, "quarantined": 3},
        "copied_to": 1234,
        "progress": {"remaining_blocks": 600, "eta_s": 120, "rows_per_s": 250.5, "blocks_per_s": 5.0},
        "workers": {
            0: {"running": True, "restarts": 2, "heartbeat_age_s": 1.5, "day_idx": 58, "day_ts": 1704067200.0},
            1: {"running": False, "restarts": 0, "heartbeat_age_s": None, "day_idx": None, "day_ts": None},
        },
        "endpoints": [
            {
                "endpoint": "eth.example/v2/***",
                "requests": 10,
                "errors": 1,
                "compute_units": 75,
                "parked": 0,
                "limited": 2,
                "waits": 7,
                "waited_s": 3.5,
                "error_kinds": {"Transient": 3, "range": 2, "SomethingNew": 1},
            }
        ],
        "head": 1300,
        "safe_head": 1288,
        "final_head": 1236,
        "store_up": True,
        "gates": {"coverage": "pass", "integrity": "fail"},
        "audit": {"at": 1704070000.0, "days": {"ok": 9, "mismatch": 1}},
        "rebuild": {"status": "failed", "at": 1704070100.0, "durations_s": {"dedup": 0.5, "audit": 2.25}},
        "reorgs": 1,
        "reorg_rows_removed": 9,
        "last_reorg": {"at": 1704069000.0, "depth": 4, "first": 1231, "tip": 1234, "ancestor": 1230},
    }


def exposition(snap: dict) -> str:
    collector = SnapshotCollector()
    collector.snapshot = snap
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def served_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_snapshot_is_served_as_prometheus_metrics() -> None:
    text = exposition(snapshot())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("backfill_days", (("status", "complete"),))] == 58
    assert samples[("backfill_days", (("status", "open"),))] == 1
    assert samples[("backfill_lag_blocks", ())] == 1288 - 1234
    assert samples[("backfill_worker_restarts_total", (("worker", "0"),))] == 2
    assert samples[("backfill_rpc_limit_answers_total", (("endpoint", "eth.example/v2/***"),))] == 2
    assert samples[("backfill_gate_passing", (("gate", "integrity"),))] == 0
    assert samples[("backfill_phase", (("phase", "following"),))] == 1
    assert samples[("backfill_phase", (("phase", "running"),))] == 0
    assert ("backfill_worker_heartbeat_age_seconds", (("worker", "1"),)) not in samples  # not running: no age
    assert samples[("backfill_build_info", (("version", "0.1.0"),))] == 1
    assert samples[("backfill_eta_seconds", ())] == 120
    assert samples[("backfill_rows_per_second", ())] == 250.5
    assert samples[("backfill_worker_day_index", (("worker", "0"),))] == 58
    assert samples[("backfill_worker_day_timestamp_seconds", (("worker", "0"),))] == 1704067200.0
    assert ("backfill_worker_day_index", (("worker", "1"),)) not in samples
    endpoint = ("endpoint", "eth.example/v2/***")
    assert samples[("backfill_rpc_limit_waits_total", (endpoint,))] == 7
    assert samples[("backfill_rpc_limit_wait_seconds_total", (endpoint,))] == 3.5
    assert samples[("backfill_audit_days", (("verdict", "mismatch"),))] == 1
    assert samples[("backfill_audit_passing", ())] == 0
    assert samples[("backfill_rebuild_step_duration_seconds", (("step", "audit"),))] == 2.25
    assert samples[("backfill_rebuild_last_success", ())] == 0
    assert samples[("backfill_reorg_last_depth_blocks", ())] == 4


def test_rpc_errors_are_counted_by_a_bounded_class() -> None:
    text = exposition(snapshot())
    errors = {
        s.labels["class"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "backfill_rpc_errors_total"
    }
    # 3 Transient + 2 range answers; the kind no class is known for and the 1 error without a kind are `other`
    assert errors == {"transient": 3, "range_too_large": 2, "other": 1}


def test_without_a_pace_there_is_no_eta_series() -> None:
    snap = snapshot()
    snap["progress"] = {"remaining_blocks": 600, "eta_s": None, "rows_per_s": 0.0, "blocks_per_s": 0.0}
    assert "backfill_eta_seconds" not in served_names(exposition(snap))


def server_with(snap: dict, limit: int = 100) -> MetricsServer:
    server = MetricsServer("9464", ready_lag_blocks=limit)
    server.publish(snap)
    return server


def test_a_following_run_is_ready_only_within_the_lag_limit() -> None:
    snap = snapshot()  # following, safe head 1288, copied to 1234: 54 behind
    assert server_with(snap, limit=100).readiness() == (True, "ready")
    ready, why = server_with(snap, limit=50).readiness()
    assert not ready and why == "following 54 blocks behind the safe head (limit 50)"
    assert samples_of(server_with(snap, limit=50))[("backfill_ready", ())] == 0
    assert not server_with({**snap, "phase": "running"}).readiness()[0]
    assert server_with({**snap, "phase": "caught_up"}, limit=10).readiness()[0]  # not following: no lag judged


def samples_of(server: MetricsServer) -> dict:
    text = generate_latest(server.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_before_the_first_gather_only_the_build_info_is_served() -> None:
    assert served_names(exposition({})) == {"backfill_build_info"}


def named(text: str) -> set[str]:
    return set(re.findall(r"\bbackfill_[a-z_]+", text)) - {"backfill"}


def test_the_alert_rules_and_the_dashboard_name_only_served_metrics() -> None:
    served = served_names(exposition(snapshot()))
    alerts = named((DEPLOY / "prometheus" / "alerts.yml").read_text())
    dashboard = json.loads((DEPLOY / "grafana" / "backfill.json").read_text())
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert alerts and alerts <= served, alerts - served
    assert named(queries) and named(queries) <= served, named(queries) - served


@pytest.mark.parametrize(
    "text,addr", [("9464", ("127.0.0.1", 9464)), (":9464", ("127.0.0.1", 9464)), ("0.0.0.0:1", ("0.0.0.0", 1))]
)
def test_a_bare_port_is_loopback_only(text: str, addr: tuple[str, int]) -> None:
    assert parse_addr(text) == addr


@pytest.mark.parametrize("text", ["", "x", "host:", "1:99999", "host:port"])
def test_a_bad_address_is_one_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"BACKFILL_METRICS_ADDR must be \[host:\]port"):
        parse_addr(text)


def test_a_json_log_line_has_the_messages_fields() -> None:
    record = logging.LogRecord(
        "monitor", logging.WARNING, __file__, 1, "worker=%d day=%d event=retry reason=%r", (3, 7, "a b"), None
    )
    doc = orjson.loads(JsonLines().format(record))
    assert doc["level"] == "WARNING" and doc["logger"] == "monitor" and doc["ts"].endswith("Z")
    assert (doc["worker"], doc["day"], doc["event"], doc["reason"]) == ("3", "7", "retry", "a b")
    assert doc["msg"] == "worker=3 day=7 event=retry reason='a b'"
