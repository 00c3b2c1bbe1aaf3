"""The days a test chain was mined with (the devnet's record, then `grow`), and the check that the staging
tables equal that chain: the truth of the sync and follow tests, independent of the tool's plan."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from tests.integration.conftest import CHAIN_PARAMS
from tests.integration.harness import Chain, open_store, store_rows

NEXT_DAY = CHAIN_PARAMS.start_date + dt.timedelta(days=CHAIN_PARAMS.days)  # the generator's closing block's day


class MinedDays:
    """The blocks of each UTC date as the devnet and `grow` mined them: the truth's days."""

    def __init__(self, chain: Chain):
        days = chain.summary["days"]
        self.ranges: dict[str, list[int]] = {}
        self.add((chain.start - dt.timedelta(days=1)).isoformat(), 0, days[0]["first_block"] - 1)  # set-up
        for d in days:
            self.add(d["date"], d["first_block"], d["last_block"])
        closing = days[-1]["last_block"] + 1
        self.add(NEXT_DAY.isoformat(), closing, closing)

    def add(self, date: str, first: int, last: int) -> None:
        span = self.ranges.setdefault(date, [first, last])
        span[0], span[1] = min(span[0], first), max(span[1], last)

    def grown(self, rows: list[dict[str, Any]], closed: bool = True) -> None:
        for r in rows:
            self.add(r["date"], r["first_block"], r["last_block"])
        if not closed:
            return
        closing = rows[-1]["last_block"] + 1
        self.add((dt.date.fromisoformat(rows[-1]["date"]) + dt.timedelta(days=1)).isoformat(), closing, closing)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"day_idx": i, "date": date, "first_block": a, "last_block": b}
            for i, (date, (a, b)) in enumerate(sorted(self.ranges.items()))
        ]


def assert_equals_chain(data_dir: Path, chain: Chain, mined: MinedDays) -> None:
    """Every transfer of the chain as it is now is in the staging tables exactly once after FINAL, nothing else,
    and each day's checkpoint counts are the chain's."""
    from tests.support.truth import ground_truth

    store = open_store(data_dir)
    try:
        truth = ground_truth(chain.url, mined.rows())
        erc20, erc1155 = store_rows(store)
        assert len(erc20) == len(set(erc20)) and len(erc1155) == len(set(erc1155)), "duplicates after FINAL"
        assert set(erc20) == truth.erc20, (len(truth.erc20 - set(erc20)), len(set(erc20) - truth.erc20))
        assert set(erc1155) == truth.erc1155, (len(truth.erc1155 - set(erc1155)), len(set(erc1155) - truth.erc1155))
        dates = {p.day_idx: p.day.isoformat() for p in store.read_plan()}
        counts = {dates[d]: (cp["erc20_count"], cp["erc1155_count"]) for d, cp in store.checkpoints().items()}
        assert counts == {d: c for d, c in truth.per_date.items() if d in counts}
        assert set(counts) == set(truth.per_date) - {(chain.start - dt.timedelta(days=1)).isoformat()}
        for view, table in (("erc20_transfers_staging_final", erc20), ("erc1155_transfers_staging_final", erc1155)):
            assert int(store.scalar(f"SELECT count() FROM {view}")) == len(table), view  # the runbook's views
    finally:
        store.close()


def assert_equals_chain_from(data_dir: Path, chain: Chain, mined: MinedDays, first_date: str) -> None:
    subset = MinedDays.__new__(MinedDays)
    subset.ranges = {d: r for d, r in mined.ranges.items() if d >= first_date}
    assert_equals_chain(data_dir, chain, subset)
