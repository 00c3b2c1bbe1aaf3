"""The CLI's exit codes: one table for every command (README "Exit codes").

The worker -> supervisor protocol is another table (workers/exitcodes.py); where the two meet (a bad config,
the wrong chain, an unreachable store) they use the same numbers.
"""

from __future__ import annotations

OK = 0
FAILED = 1  # the command ran and its job failed: days FAILED, the rebuild or a promotion stopped, an audit mismatch
USAGE = 2  # the request cannot be run as given: a bad flag or config, a data directory without a run, a run active
PROVIDER = 3  # no RPC endpoint answers, or a provider condition (quota, key) outlasted the retries
WRONG_CHAIN = 4  # the endpoint serves another chain than the database records, or forked deeper than finality
STORE = 5  # ClickHouse (server or embedded) cannot be reached
SQL = 6  # ClickHouse refused the operator's own statement (`backfill sql`)
SHARD_TAKEN = 7  # `backfill worker`: another live worker holds the shard (or this one's lease lapsed)
# Gates failed (`backfill gates` verdict, a promotion refused by the strict gates): docs/gates.md defined this as
# 1 before this table existed, and scripts test it, so it keeps that number.
GATES_FAILED = FAILED
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)

TABLE: dict[int, str] = {
    OK: "ok",
    FAILED: "the command failed at its job (days FAILED, rebuild or promotion stopped, audit mismatch) or the "
    "gates failed (`gates`, a promotion refused by them)",
    USAGE: "usage or config: a bad flag, value or config file; a data directory without a run; a run active",
    PROVIDER: "RPC provider: no endpoint answers, quota used up or key refused",
    WRONG_CHAIN: "the RPC endpoint serves another chain than the database holds, or it forked deeper than the "
    "finality depth",
    STORE: "the store (ClickHouse) cannot be reached",
    SQL: "ClickHouse refused the statement given to `backfill sql`",
    SHARD_TAKEN: "`backfill worker`: another live worker holds the shard",
    INTERRUPTED: "stopped by Ctrl-C",
}
