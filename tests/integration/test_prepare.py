"""The start's check-and-plan step against a real node and the real engine: the plan's anchor day (and the
chain's identity) are stored before the days they number, so a start cut off between its two writes leaves
nothing that numbers days wrongly; the next start, with another --from, still numbers them from the first
one's anchor and plans every day once."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from backfill.errors import StoreUnavailable
from backfill.settings import Settings, load_settings
from backfill.store.client import Store
from backfill.store.embedded import stop_server
from monitor.commands.start import _prepare, _survey
from tests.integration.harness import Chain, open_store


def settings_for(chain: Chain, data_dir: Path, first: str, last: str) -> Settings:
    flags: dict[str, Any] = {
        "data_dir": data_dir,
        "rpc_urls": chain.url,
        "from_date": first,
        "to_date": last,
        "confirmations": 0,
    }
    return load_settings(flags, env={}, toml_path=data_dir / "none.toml")


def prepare(settings: Settings, store: Store) -> int:
    chain_view = asyncio.run(_survey(settings))
    _, n_days = asyncio.run(_prepare(settings, chain_view, lambda: store))
    return n_days


class DaysRefused(Store):
    """The real store, whose insert of planned days fails as if the store went away at that moment."""

    def write_plan(self, plans: Any) -> None:
        raise StoreUnavailable("cannot use ClickHouse: connection refused (the test cut it off here)")


def test_a_start_cut_off_before_its_days_leaves_the_anchor_and_the_next_numbers_from_it(
    chain: Chain, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    try:
        store = open_store(data_dir)
        store.__class__ = DaysRefused
        with pytest.raises(StoreUnavailable):
            prepare(settings_for(chain, data_dir, chain.day(2), chain.day(3)), store)
        store.__class__ = Store
        meta = store.meta_values(["plan_anchor", "chain_id", "genesis_hash"])
        assert meta["plan_anchor"] == chain.day(2)
        assert int(meta["chain_id"]) == 31337 and meta["genesis_hash"].startswith("0x")
        assert store.read_plan() == []  # the days never landed

        # the next start asks for later days: they are numbered from the first start's anchor
        assert prepare(settings_for(chain, data_dir, chain.day(3), chain.day(4)), store) == 2
        plans = store.read_plan()
        anchor = dt.date.fromisoformat(chain.day(2))
        assert [(p.day_idx, p.day) for p in plans] == [((p.day - anchor).days, p.day) for p in plans]
        assert [p.day.isoformat() for p in plans] == [chain.day(3), chain.day(4)]
        truth = {d["date"]: (d["first_block"], d["last_block"]) for d in chain.day_blocks([chain.day(3), chain.day(4)])}
        assert {p.day.isoformat(): (p.start_block, p.end_block) for p in plans} == truth
        store.close()
    finally:
        stop_server(data_dir)
