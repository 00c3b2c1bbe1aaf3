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
from monitor.metrics import SnapshotCollector, parse_addr

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def snapshot() -> dict:
    return {
        "at": time.time(),
        "phase": "following",
        "days": {"PENDING": 0, "RUNNING": 1, "OPEN": 1, "COMPLETE": 58, "FAILED": 0},
        "rows": {"erc20": 1000, "erc1155": 500, "quarantined": 3},
        "copied_to": 1234,
        "workers": {
            0: {"running": True, "restarts": 2, "heartbeat_age_s": 1.5},
            1: {"running": False, "restarts": 0, "heartbeat_age_s": None},
        },
        "endpoints": [
            {
                "endpoint": "eth.example/v2/***",
                "requests": 10,
                "errors": 1,
                "compute_units": 75,
                "parked": 0,
                "limited": 2,
            }
        ],
        "head": 1300,
        "safe_head": 1288,
        "final_head": 1236,
        "store_up": True,
        "gates": {"coverage": "pass", "integrity": "fail"},
        "reorgs": 1,
        "reorg_rows_removed": 9,
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
