"""The supervisor's reap/restart decisions (monitor.decisions): each exit code's meaning, stall vs the startup
allowance, the crash loop and the restart budget, and the backoff's growth. Pure: a clock goes in as a number."""

from __future__ import annotations

import pytest

from monitor.backoff import restart_delay
from monitor.decisions import (
    KILLED_HOLD_S,
    MAX_QUICK_CRASHES,
    QUICK_S,
    STARTUP_ALLOWANCE_S,
    ExitKind,
    RestartKind,
    Stall,
    day_failure,
    judge_exit,
    judge_heartbeat,
    judge_restart,
    stall_check_due,
    stop_overdue,
)
from workers import exitcodes

T0 = 1_000_000.0


# -- exit codes ---------------------------------------------------------------------------------------------
def test_exit_ok_means_the_shard_is_done() -> None:
    v = judge_exit(exitcodes.OK, None, False)
    assert v.kind is ExitKind.DONE
    assert v.blame is None


@pytest.mark.parametrize("code", [exitcodes.CONFIG, exitcodes.WRONG_CHAIN])
def test_config_and_wrong_chain_halt_the_fleet(code: int) -> None:
    assert judge_exit(code, None, False).kind is ExitKind.HALT_FLEET


def test_the_halting_codes_are_config_and_wrong_chain() -> None:
    assert exitcodes.HALT_FLEET == {exitcodes.CONFIG, exitcodes.WRONG_CHAIN}
    assert (exitcodes.OK, exitcodes.CRASH, exitcodes.CONFIG, exitcodes.UNREACHABLE) == (0, 1, 2, 3)
    assert (exitcodes.WRONG_CHAIN, exitcodes.STORE) == (4, 5)


@pytest.mark.parametrize("code", [exitcodes.CRASH, exitcodes.UNREACHABLE, exitcodes.STORE, 8, 101])
def test_other_codes_restart_as_crashes_without_blaming_the_day(code: int) -> None:
    v = judge_exit(code, None, False)
    assert v.kind is ExitKind.RESTART
    assert v.why == f"exit {code}"
    assert v.crashed is True
    assert v.blame is None


def test_a_shard_held_elsewhere_restarts_later_and_is_no_crash() -> None:
    v = judge_exit(exitcodes.LEASE, None, False)
    assert (v.kind, v.crashed, v.blame) == (ExitKind.HELD, False, None)
    assert v.why == "shard lease held elsewhere or lapsed"


@pytest.mark.parametrize("code", [-9, -15, -11])
def test_killed_by_a_signal_we_did_not_send_blames_the_day_and_is_no_crash(code: int) -> None:
    v = judge_exit(code, None, False)
    assert v.kind is ExitKind.RESTART
    assert v.blame == f"worker killed by signal {-code}"
    assert v.why == f"exit {code}"
    assert v.crashed is False


@pytest.mark.parametrize("code", [0, 1, 2, 4, -9, -15])
def test_a_stalled_worker_is_blamed_and_restarted_whatever_its_code(code: int) -> None:
    v = judge_exit(code, "no heartbeat for 301s (limit 300s)", True)
    assert v.kind is ExitKind.STALLED
    assert v.blame == "no heartbeat for 301s (limit 300s)"
    assert v.why == "stalled (no heartbeat for 301s (limit 300s))"
    assert v.crashed is False


@pytest.mark.parametrize("code", [0, 1, 2, 4, -15])
def test_a_worker_we_asked_to_stop_is_only_noted(code: int) -> None:
    v = judge_exit(code, None, True)
    assert v.kind is ExitKind.ASKED_TO_STOP
    assert v.blame is None


# -- restarts: backoff, crash loop, budget --------------------------------------------------------------
def test_backoff_grows_by_doubling_from_half_a_second_to_a_minute() -> None:
    delays = [restart_delay(n) for n in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert restart_delay(0) == 0.5
    assert restart_delay(10_000) == 60.0


def test_a_restart_counts_and_backs_off() -> None:
    v = judge_restart(0, 0, crashed=True, started_at=T0, now=T0 + QUICK_S + 1, budget=50)
    assert (v.kind, v.restarts, v.quick_crashes, v.delay_s) == (RestartKind.BACKOFF, 1, 0, 0.5)
    v = judge_restart(3, 0, crashed=False, started_at=T0, now=T0 + 1, budget=50)
    assert (v.kind, v.restarts, v.quick_crashes, v.delay_s) == (RestartKind.BACKOFF, 4, 0, 4.0)


def test_backoff_follows_the_restart_count() -> None:
    for n in range(0, 20):
        v = judge_restart(n, 0, crashed=False, started_at=T0, now=T0 + 100, budget=50)
        assert v.delay_s == restart_delay(n + 1)


def test_a_quick_crash_counts_towards_a_crash_loop_and_a_slow_one_resets_it() -> None:
    quick = judge_restart(0, 2, crashed=True, started_at=T0, now=T0 + QUICK_S - 0.1, budget=50)
    assert quick.quick_crashes == 3
    slow = judge_restart(0, 2, crashed=True, started_at=T0, now=T0 + QUICK_S, budget=50)
    assert slow.quick_crashes == 0
    not_a_crash = judge_restart(0, 2, crashed=False, started_at=T0, now=T0 + 1, budget=50)
    assert not_a_crash.quick_crashes == 0


def test_the_fifth_quick_crash_in_a_row_is_a_crash_loop() -> None:
    assert MAX_QUICK_CRASHES == 5 and QUICK_S == 30.0
    v = judge_restart(10, MAX_QUICK_CRASHES - 2, crashed=True, started_at=T0, now=T0 + 1, budget=50)
    assert v.kind is RestartKind.BACKOFF
    v = judge_restart(10, MAX_QUICK_CRASHES - 1, crashed=True, started_at=T0, now=T0 + 1, budget=50)
    assert (v.kind, v.restarts, v.quick_crashes) == (RestartKind.CRASH_LOOP, 11, MAX_QUICK_CRASHES)
    assert v.kind.value == "crash loop"


def test_the_crash_loop_is_judged_before_the_budget() -> None:
    v = judge_restart(5, MAX_QUICK_CRASHES - 1, crashed=True, started_at=T0, now=T0 + 1, budget=5)
    assert v.kind is RestartKind.CRASH_LOOP


def test_the_restart_budget_allows_budget_restarts_and_halts_on_the_next() -> None:
    last_allowed = judge_restart(2, 0, crashed=False, started_at=T0, now=T0 + 100, budget=3)
    assert (last_allowed.kind, last_allowed.restarts) == (RestartKind.BACKOFF, 3)
    over = judge_restart(3, 0, crashed=False, started_at=T0, now=T0 + 100, budget=3)
    assert (over.kind, over.restarts) == (RestartKind.BUDGET_EXHAUSTED, 4)
    assert over.kind.value == "restart budget exhausted"
    assert judge_restart(0, 0, crashed=False, started_at=T0, now=T0, budget=0).kind is RestartKind.BUDGET_EXHAUSTED


# -- heartbeats: stall vs the startup allowance -----------------------------------------------------------
def test_a_beating_worker_stalls_past_the_stall_limit() -> None:
    assert judge_heartbeat(T0 + 400, T0, 0.0, beat_at=T0 + 100, stall_s=300) is None
    assert judge_heartbeat(T0 + 400.5, T0, 0.0, beat_at=T0 + 100, stall_s=300) == Stall(300.5, 300)


def test_the_limit_is_inclusive() -> None:
    assert judge_heartbeat(T0 + 10, T0, 0.0, beat_at=T0 + 5, stall_s=5) is None
    assert judge_heartbeat(T0 + 10.01, T0, 0.0, beat_at=T0 + 5, stall_s=5) is not None


def test_before_its_first_beat_a_worker_has_the_startup_allowance() -> None:
    assert STARTUP_ALLOWANCE_S == 60.0
    assert judge_heartbeat(T0 + 59, T0, 0.0, beat_at=None, stall_s=5) is None
    stall = judge_heartbeat(T0 + 61, T0, 0.0, beat_at=None, stall_s=5)
    assert stall == Stall(61, STARTUP_ALLOWANCE_S)
    # once it beats, the small limit applies
    assert judge_heartbeat(T0 + 61, T0, 0.0, beat_at=T0 + 50, stall_s=5) == Stall(11, 5)


def test_a_stall_limit_above_the_allowance_applies_before_the_first_beat_too() -> None:
    assert judge_heartbeat(T0 + 299, T0, 0.0, beat_at=None, stall_s=300) is None
    assert judge_heartbeat(T0 + 301, T0, 0.0, beat_at=None, stall_s=300) == Stall(301, 300)


def test_time_away_of_the_store_does_not_count() -> None:
    # the store came back at T0+500: no beat could land before, so the age counts from then
    assert judge_heartbeat(T0 + 700, T0, T0 + 500, beat_at=T0 + 100, stall_s=300) is None
    assert judge_heartbeat(T0 + 801, T0, T0 + 500, beat_at=T0 + 100, stall_s=300) == Stall(301, 300)


def test_a_beat_older_than_the_start_does_not_age_the_worker() -> None:
    assert judge_heartbeat(T0 + 200, T0, 0.0, beat_at=T0 - 1000, stall_s=300) is None


def test_heartbeats_are_looked_at_every_second_or_quarter_stall_limit() -> None:
    assert not stall_check_due(T0 + 0.99, T0, 300)
    assert stall_check_due(T0 + 1.0, T0, 300)
    assert not stall_check_due(T0 + 0.49, T0, 2)
    assert stall_check_due(T0 + 0.5, T0, 2)


def test_a_worker_that_ignores_term_is_killed_after_the_grace() -> None:
    assert not stop_overdue(T0 + 30, T0, 30)
    assert stop_overdue(T0 + 30.1, T0, 30)
    assert not stop_overdue(T0 + 1000, T0 + KILLED_HOLD_S, 30)  # killed once: not again


# -- a day's failures ---------------------------------------------------------------------------------------
def test_a_day_fails_at_the_attempts_limit() -> None:
    assert day_failure(0, "RUNNING", 3) == (1, "RUNNING")
    assert day_failure(1, "RUNNING", 3) == (2, "RUNNING")
    assert day_failure(2, "RUNNING", 3) == (3, "FAILED")
    assert day_failure(0, "PENDING", 1) == (1, "FAILED")
