"""/metrics, /healthz and /readyz of a following run, read the way a scraper reads them: the exposition parsed
with prometheus_client's own parser, the numbers against the store's FINAL counts and checkpoints."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backfill.store.embedded import stop_server
from tests.integration.harness import Chain, backfill, open_store, supervisor_state, wait_for
from tests.support.proxy import RpcProxy

pytestmark = pytest.mark.slow
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


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_following_run_serves_metrics_health_and_readiness(chain: Chain, tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"BACKFILL_METRICS_ADDR": str(port), "BACKFILL_ON_COMPLETE": "0", "BACKFILL_FOLLOW_POLL_S": "0.5"}
    with RpcProxy(chain.url) as proxy:
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
                return found if days == complete else None

            found = wait_for(scraped, 30, "the metrics to show the finished days")
            text = get(f"{base}/metrics")[1]
            assert found[("backfill_rows", (("table", "erc20"),))] == final20
            assert found[("backfill_rows", (("table", "erc1155"),))] == final1155
            assert found[("backfill_phase", (("phase", "following"),))] == 1
            assert found[("backfill_store_up", ())] == 1
            assert found[("backfill_lag_blocks", ())] >= 0
            assert any(name == "backfill_rpc_requests_total" and value > 0 for (name, _), value in found.items())
            assert KEY not in text, "an RPC key in the metrics"
            assert len(found) < 200, len(found)  # bounded: no day or block labels
        finally:
            backfill(["stop"], data_dir, rpc_urls=url)
            stop_server(data_dir)
