"""The quality gates' thresholds: their names and their values at each level. Here, below the gates
(monitor/gates/judge.py), so settings can check the `[gates.relaxed]` / `[gates.strict]` keys of backfill.toml."""

from __future__ import annotations

import math

LEVELS = ("relaxed", "strict")

# name -> (relaxed, strict). Counts are totals over the judged days; a count above its threshold fails the
# gate, a non-zero count within a raised threshold warns. inf = not judged at that level.
THRESHOLDS: dict[str, tuple[float, float]] = {
    # coverage: FAILED days are the operator's to retry while backfilling (warned); more than a few means
    # something systemic (an endpoint, a decoder bug). Before promotion none may be left.
    "failed_days": (3, 0),
    # coverage: PENDING / RUNNING days are the normal state of a backfill; before promotion none may be left.
    "unfinished_days": (math.inf, 0),
    # coverage: COMPLETE days whose rows after FINAL differ from their checkpoint counts or fingerprint.
    # Nothing rewrites a COMPLETE day without reopening it, so any difference is damage.
    "mismatched_days": (0, 0),
    # coverage: consecutive planned days whose block ranges leave a gap or overlap (a planning bug).
    "plan_gaps": (0, 0),
    # duplicates: rows after FINAL sharing a key (tx_hash, log_index[, batch_index]) with another row.
    "duplicate_rows": (0, 0),
    # duplicates: keys with several different rows at their newest _version (dedup would keep any one).
    "ambiguous_keys": (0, 0),
    # timestamps: rows with block_timestamp 0, not their block's timestamp, or before genesis.
    "bad_timestamp_rows": (0, 0),
    # timestamps: blocks outside their planned day's UTC date, before genesis, or earlier than the block before.
    "bad_timestamp_blocks": (0, 0),
    # malformed: rows (staging and block_timestamps) with a hash or address that is not lowercase 0x hex.
    "malformed_rows": (0, 0),
    # empty_days: a COMPLETE day with no rows is suspicious when its neighbours' median reaches this many
    # rows. On a chain with transfers every few blocks a silent day is far likelier a lost answer than a lull.
    "busy_neighbour_rows": (100, 100),
    # quarantine: quarantined logs / (transfer rows + quarantined logs) of a day. The test chain's Weird
    # contract quarantines 9 of ~3,300 / ~3,900 logs (0.27 % / 0.23 %) on its two noisy days; mainnet's malformed logs are
    # rarer still. A decoder that misreads a whole event kind pushes a day to tens of percent.
    "quarantine_share": (0.05, 0.01),
    # quarantine: a day with fewer quarantined logs than this is not judged (a share of a near-empty day
    # says nothing).
    "quarantine_min_logs": (5, 5),
    # missing_timestamps: blocks with transfer rows but no block_timestamps row.
    "missing_timestamp_blocks": (0, 0),
}
