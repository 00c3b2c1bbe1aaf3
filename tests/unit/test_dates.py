"""Days as people read them: dates, consecutive ones folded into ranges, unknown days named by index."""

from __future__ import annotations

import datetime as dt

from backfill.dates import date_of, day_list, fold

START = dt.date(2024, 1, 1)
DATES = {d: START + dt.timedelta(days=d) for d in range(40)}


def test_three_or_more_consecutive_days_fold_into_a_range():
    assert day_list([4, 5, 6], DATES) == "2024-01-05..2024-01-07"
    assert day_list([2, 4, 5, 6, 9, 10], DATES) == "2024-01-03, 2024-01-05..2024-01-07, 2024-01-10, 2024-01-11"


def test_order_and_repeats_do_not_matter():
    assert day_list([6, 4, 5, 4], DATES) == "2024-01-05..2024-01-07"


def test_a_range_may_cross_a_month():
    assert fold([dt.date(2024, 1, 30), dt.date(2024, 1, 31), dt.date(2024, 2, 1)]) == ["2024-01-30..2024-02-01"]


def test_dates_as_text_are_read_as_dates():
    assert day_list([0, 1, 2], {0: "2024-01-01", 1: "2024-01-02", 2: "2024-01-03"}) == "2024-01-01..2024-01-03"


def test_a_day_without_a_date_keeps_its_index():
    assert day_list([3, 99], DATES) == "2024-01-04, day 99"


def test_a_long_list_is_cut_after_the_limit_counting_the_days_left():
    days = list(range(0, 40, 2))  # 20 days, none consecutive
    assert day_list(days, DATES, limit=3) == "2024-01-01, 2024-01-03, 2024-01-05 (+17 more days)"
    assert day_list([0, 1, 2, 10, 20, 30], DATES, limit=2) == "2024-01-01..2024-01-03, 2024-01-11 (+2 more days)"


def test_no_day_is_empty_text():
    assert day_list([], DATES) == ""


def test_the_folded_text_is_what_verify_days_reads():
    from monitor.audit.report import parse_days

    text = day_list([2, 4, 5, 6], DATES)
    assert parse_days(text) == [DATES[d] for d in (2, 4, 5, 6)]


def test_date_of_a_worker_between_days_is_none():
    assert date_of(DATES, 3) == "2024-01-04"
    assert date_of(DATES, -1) is None and date_of(DATES, None) is None
