"""ClickHouse's answer to an operator's statement (`backfill sql`), without the driver's wrapping.

clickhouse-connect wraps the server's text (`Received ClickHouse exception, code: 62, server response: …
(version 26.9.2.1) (for url http://…)`) and appends `FORMAT Native` to the statement it sends, which the
server then quotes back. People should read what the server said about what they wrote: `Code: 62.
DB::Exception: Syntax error: … (SYNTAX_ERROR)`. Pure text in, one line out.
"""

from __future__ import annotations

import re

_SERVER_PART = re.compile(r"Code: \d+\. DB::Exception: ")
_URL_TRAILER = re.compile(r"\s*\(for url [^)]*\)\s*$")
_VERSION_TRAILER = re.compile(r"\s*\(version [\w.\-]+\)\s*$")
# the driver sends `<statement>\n FORMAT Native`; the server quotes it back as written or as `FORMAT AS Native`
_APPENDED_FORMAT = re.compile(r"\s*\bFORMAT (?:AS )?Native\b")
_DRIVER_PREFIX = re.compile(r"^.*?server response:\s*", re.DOTALL)
_EXPECTED = re.compile(r"(Expected one of: )([^.]*)(\.)")
EXPECTED_SHOWN = 6  # items of a parser's "Expected one of: …" list shown before the rest is counted


def _shorter_expected(m: re.Match[str]) -> str:
    items = [i.strip() for i in m[2].split(",")]
    if len(items) <= EXPECTED_SHOWN:
        return m[0]
    return f"{m[1]}{', '.join(items[:EXPECTED_SHOWN])}, … ({len(items) - EXPECTED_SHOWN} more){m[3]}"


def server_error(text: str) -> str:
    """`Code: N. DB::Exception: … (NAME)` out of the driver's exception text, on one line: no driver prefix,
    no `FORMAT Native` the driver appended, no version or URL trailer, a parser's list of what it expected cut
    short. Text without a server part loses only the wrapping."""
    found = _SERVER_PART.search(text)
    body = text[found.start() :] if found else _DRIVER_PREFIX.sub("", text, count=1)
    body = _URL_TRAILER.sub("", body)
    body = _VERSION_TRAILER.sub("", body)
    body = _APPENDED_FORMAT.sub("", body)
    body = " ".join(body.split())
    body = re.sub(r"\.(?: \.)+", ".", body)  # "…: ; SELECT 2. . (SYNTAX_ERROR)": the quoted statement ended early
    body = _EXPECTED.sub(_shorter_expected, body)
    if "'FORMAT'" in body or "`FORMAT`" in body:  # `SELECT 1 FROM` took the appended clause for a table name
        body += " — the statement ends early: its last clause is incomplete"
    return body
