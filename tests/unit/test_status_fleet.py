"""The fleet line of status: hosts and the shards their live workers hold, and shards nobody runs."""

from __future__ import annotations

from backfill.cli.status import fleet_view
from backfill.cli.status_render import fleet_line


def test_hosts_and_their_shards_of_the_fleets_count() -> None:
    claims = [("shard/4/0", "a"), ("shard/4/2", "a"), ("shard/4/1", "b"), ("shard/6/5", "b")]
    view = fleet_view(claims, 4, unsettled_days=[0, 1, 2, 3, 7])
    assert view == {"shards": 4, "hosts": {"a": [0, 2], "b": [1]}, "no_worker": [3]}
    line, bad = fleet_line(view)
    assert line == "fleet: 4 shards; a: 0,2; b: 1; NO WORKER on any host for shard(s) 3 (their days wait)" and bad


def test_a_fleet_with_every_waiting_shard_held_is_not_alarming() -> None:
    view = fleet_view([("shard/2/0", "a"), ("shard/2/1", "b")], 2, unsettled_days=[4, 5])
    assert fleet_line(view) == ("fleet: 2 shards; a: 0; b: 1", False)
