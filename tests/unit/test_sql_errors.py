"""`backfill sql` shows what ClickHouse said about the statement, not the driver's wrapping around it."""

from __future__ import annotations

import pytest

from backfill.store.sql_errors import server_error

URL = " (for url http://127.0.0.1:33353)"
VERSION = " (version 26.9.2.1)"
WRAP = "Received ClickHouse exception, code: {code}, server response: "

# the driver's texts as clickhouse-connect raised them against the embedded store
CASES = [
    (
        WRAP.format(code=60) + "Code: 60. DB::Exception: Unknown table expression identifier 'nope'. Maybe you meant "
        "system.one? In scope SELECT * FROM nope. (UNKNOWN_TABLE)" + VERSION + URL,
        "Code: 60. DB::Exception: Unknown table expression identifier 'nope'. Maybe you meant system.one? In scope "
        "SELECT * FROM nope. (UNKNOWN_TABLE)",
    ),
    (
        WRAP.format(code=62) + "Code: 62. DB::Exception: Syntax error: failed at position 7 (1) (line 1, col 7): 1\n"
        " FORMAT Native. Expected one of: token sequence, Dot, token, OR, AND, IS NOT DISTINCT FROM, IS DISTINCT "
        "FROM, IS NOT UNKNOWN, end of query. (SYNTAX_ERROR)" + VERSION + URL,
        "Code: 62. DB::Exception: Syntax error: failed at position 7 (1) (line 1, col 7): 1. Expected one of: "
        "token sequence, Dot, token, OR, AND, IS NOT DISTINCT FROM, … (3 more). (SYNTAX_ERROR)",
    ),
    (
        WRAP.format(code=62) + "Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed): failed at "
        "position 9 (end of query) (line 1, col 9): ; SELECT 2\n FORMAT Native. . (SYNTAX_ERROR)" + VERSION + URL,
        "Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed): failed at position 9 (end of "
        "query) (line 1, col 9): ; SELECT 2. (SYNTAX_ERROR)",
    ),
    (
        WRAP.format(code=395) + "Code: 395. DB::Exception: boom\nmulti: while executing 'FUNCTION throwIf()'. "
        "(FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)" + VERSION + URL,
        "Code: 395. DB::Exception: boom multi: while executing 'FUNCTION throwIf()'. "
        "(FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)",
    ),
]


@pytest.mark.parametrize("text,shown", CASES)
def test_the_server_part_is_kept_on_one_line_without_the_wrapping(text, shown):
    line = server_error(text)
    assert line == shown
    assert "FORMAT Native" not in line and "for url" not in line and "version" not in line and "\n" not in line


def test_a_statement_cut_short_says_so_instead_of_blaming_a_table_named_format():
    text = (
        WRAP.format(code=60) + "Code: 60. DB::Exception: Unknown table expression identifier 'FORMAT'. Maybe "
        "you meant system.formats? In scope SELECT 1 FROM FORMAT AS Native. (UNKNOWN_TABLE)" + VERSION + URL
    )
    line = server_error(text)
    assert "FORMAT AS Native" not in line and line.endswith("the statement ends early: its last clause is incomplete")


def test_text_without_a_server_part_loses_only_the_wrapping():
    assert server_error("HTTP driver received HTTP status 400, server response: bad request" + URL) == "bad request"
    assert server_error("something else") == "something else"
