"""Pure parts of promotion: backup names, ages, what to prune, when EXCHANGE is refused, how to roll back."""

from __future__ import annotations

import datetime as dt

import pytest

from backfill.errors import ConfigError, UserError
from monitor.guard import Guard
from monitor.promote import (
    Backup,
    Promoted,
    append_reason,
    backup_name,
    backup_stamp,
    choose_prune,
    clone_refused,
    exchange_refused,
    guard_text,
    parse_age,
    parse_backup_name,
    parse_detail,
    parse_guard,
    plan_rollback,
)

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 31, 23, 59, 58, 123456, tzinfo=UTC)


def test_backup_name_is_dated_to_the_microsecond_in_utc():
    assert backup_name("erc20_transfers", T0) == "erc20_transfers_backup_20260131T235958_123456Z"
    local = T0.astimezone(dt.timezone(dt.timedelta(hours=5)))
    assert backup_name("erc20_transfers", local) == "erc20_transfers_backup_20260131T235958_123456Z"


def test_backup_names_of_two_promotions_in_one_second_differ():
    later = T0.replace(microsecond=123457)
    assert backup_name("erc20_transfers", T0) != backup_name("erc20_transfers", later)


def test_backup_name_round_trips_and_other_names_are_not_backups():
    assert parse_backup_name(backup_name("erc1155_transfers", T0)) == ("erc1155_transfers", T0)
    for name in (
        "erc20_transfers",
        "erc20_transfers_old",
        "erc20_transfers_next",
        "erc20_transfers_backup_2026",
        "erc20_transfers_backup_20260131T235958Z",
        "x_backup_20260131T235958_123456Z_copy",
    ):
        assert parse_backup_name(name) is None, name


def test_backup_names_sort_by_time():
    times = [T0, T0 + dt.timedelta(microseconds=1), T0 + dt.timedelta(seconds=2), T0 + dt.timedelta(days=40)]
    names = [backup_name("t", t) for t in times]
    assert sorted(names) == names


def test_backup_stamp_moves_past_a_name_already_taken():
    taken = {backup_name("erc1155_transfers", T0)}
    at = backup_stamp(T0, ["erc20_transfers", "erc1155_transfers"], taken)
    assert at == T0 + dt.timedelta(microseconds=1)
    assert backup_stamp(T0, ["erc20_transfers"], taken) == T0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30d", dt.timedelta(days=30)),
        ("12h", dt.timedelta(hours=12)),
        ("90m", dt.timedelta(minutes=90)),
        ("45s", dt.timedelta(seconds=45)),
        ("2w", dt.timedelta(weeks=2)),
        ("0d", dt.timedelta(0)),
        (" 7D ", dt.timedelta(days=7)),
    ],
)
def test_parse_age(text, expected):
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["banana", "", "30", "d30", "-1d", "1.5d", "30 days", "30y", "1d2h"])
def test_parse_age_refuses_anything_else_as_a_user_error(text):
    with pytest.raises(ConfigError) as err:
        parse_age(text)
    assert isinstance(err.value, UserError) and "30d" in str(err.value)


def _backup(prod: str, created: dt.datetime) -> Backup:
    return Backup(backup_name(prod, created), prod, created, 10, "ab" * 16, True)


def test_choose_prune_takes_backups_at_least_that_old_oldest_first():
    now = T0
    b40 = _backup("erc20_transfers", now - dt.timedelta(days=40))
    b30 = _backup("erc1155_transfers", now - dt.timedelta(days=30))
    b29 = _backup("erc20_transfers", now - dt.timedelta(days=29, hours=23))
    assert choose_prune([b29, b30, b40], dt.timedelta(days=30), now) == [b40, b30]
    assert choose_prune([b29, b30, b40], dt.timedelta(days=41), now) == []


def test_choose_prune_zero_age_takes_every_backup():
    now = T0
    made_now = _backup("erc20_transfers", now)
    older = _backup("erc20_transfers", now - dt.timedelta(seconds=1))
    assert choose_prune([made_now, older], dt.timedelta(0), now) == [older, made_now]


def test_exchange_refused_only_for_engine_refusals():
    assert exchange_refused(
        "Code: 48. DB::Exception: Tables can be exchanged only in Atomic databases. "
        "(NOT_IMPLEMENTED) (version 26.9.2.1)"
    )
    assert exchange_refused("Code: 62. DB::Exception: Syntax error: failed at position 1 ('EXCHANGE')")
    assert not exchange_refused(
        "Code: 60. DB::Exception: Table backfill.erc20_transfers does not exist. (UNKNOWN_TABLE)"
    )
    assert not exchange_refused("Code: 241. DB::Exception: Memory limit exceeded (MEMORY_LIMIT_EXCEEDED)")


def test_clone_refused_only_for_a_database_that_does_not_clone():
    assert clone_refused(
        "Code: 344. DB::Exception: CREATE CLONE AS is not supported with Replicated databases. Consider using "
        "separate CREATE and INSERT queries.. (SUPPORT_IS_DISABLED)"
    )
    assert not clone_refused("Code: 60. DB::Exception: Table backfill.erc20_transfers does not exist. (UNKNOWN_TABLE)")
    assert not clone_refused("Code: 344. DB::Exception: Lightweight delete is disabled. (SUPPORT_IS_DISABLED)")


BK = "erc20_transfers_backup_20260131T235958_123456Z"
PREV = (100, "11" * 16)
NEW = (120, "22" * 16)


def test_rollback_swaps_with_old_when_old_holds_the_verified_previous_production():
    assert plan_rollback("promote", BK, PREV, PREV, True).kind == "exchange"
    assert plan_rollback("promote", BK, PREV, PREV, False).kind == "exchange"  # the backup was pruned


def test_rollback_restores_from_the_backup_when_old_is_missing_or_differs():
    assert plan_rollback("promote", BK, PREV, None, True).kind == "restore"
    assert plan_rollback("promote", BK, PREV, NEW, True).kind == "restore"


def test_rollback_refuses_when_neither_layer_holds_the_previous_production():
    plan = plan_rollback("promote", BK, PREV, NEW, False)
    assert plan.kind == "impossible" and BK in plan.reason
    assert plan_rollback("promote", BK, None, PREV, True).kind == "impossible"  # no verified record


def test_nothing_to_roll_back_after_a_first_promotion_a_rollback_or_never():
    assert plan_rollback("promote", "", None, None, False).kind == "nothing"
    second = plan_rollback("rollback", BK, PREV, NEW, True)
    assert second.kind == "nothing" and "already rolled back" in second.reason
    assert plan_rollback(None, "", None, None, False).kind == "nothing"


def _promoted(**kw) -> Promoted:
    base = dict(action="promote", status="ok", rows=5, checksum="c", through_block=100, guard=Guard(10, 7, 50))
    return Promoted(**{**base, **kw})


def test_append_only_when_the_last_promotion_and_production_and_the_rows_below_it_are_unchanged():
    guard, last, prod = Guard(10, 7, 50), _promoted(), (5, "c")
    assert append_reason(last, prod, 150, guard) == ""
    assert append_reason(last, prod, 100, None) == ""  # the guard not read yet
    assert append_reason(last, None, 150, guard) == "no production yet"
    assert append_reason(None, prod, 150, guard) == "no promotion recorded"
    assert append_reason(_promoted(action="rollback"), prod, 150, guard) == "last action on production was a rollback"
    assert append_reason(_promoted(status="started"), prod, 150, guard) == "the last promotion ended started"
    assert append_reason(_promoted(status="unverified"), prod, 150, guard) == "the last promotion ended unverified"
    assert append_reason(_promoted(guard=None), prod, 150, guard) == "the last promotion recorded no guard"
    assert append_reason(_promoted(through_block=None), prod, 150, guard) == "the last promotion recorded no guard"
    assert append_reason(last, (5, "d"), 150, guard) == "production changed since the last promotion"
    assert append_reason(last, (4, "c"), 150, guard) == "production changed since the last promotion"
    assert append_reason(last, prod, 99, guard) == "promoted through block 100, beyond through_block 99"
    for changed in (Guard(9, 7, 50), Guard(10, 8, 50), Guard(10, 7, 49)):
        assert append_reason(last, prod, 150, changed) == "staging rows at or below block 100 changed"


def test_a_promotion_record_round_trips_through_its_detail():
    guard = Guard(12, 1_700_000_000_000_000_000, 2**70)
    detail = (
        f'status=ok swap=exchange staging=s mode=full reason="rows at or below block 9 changed" '
        f"through_block=2999 guard={guard_text(guard)}"
    )
    assert parse_detail(detail)["reason"] == "rows at or below block 9 changed"
    assert Promoted.parse("promote", 3, "c", detail) == Promoted("promote", "ok", 3, "c", 2999, guard)
    # a stable guard was not seen, or a record from before appends: no guard, no append
    assert Promoted.parse("promote", 3, "c", "status=ok through_block=5 guard=-").guard is None
    old = Promoted.parse("promote", 3, "c", "status=ok swap=exchange staging=s")
    assert (old.through_block, old.guard) == (None, None)
    assert parse_guard("1:2") is None and parse_guard("a:b:c") is None
