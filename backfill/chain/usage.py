"""RPC usage summed over several clients of one process, for the store's one cumulative row per process and
endpoint (rpc_usage): the audit opens a client per set of endpoints, the follower one per poll.

    merge_usage(before, client.usage())   -> one dict per endpoint label, counts summed
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

SUMMED = ("requests", "compute_units", "limit_answers", "waits", "waited_s", "damaged")


def merge_usage(*usages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """RpcClient.usage() lists summed per endpoint: counts and errors (by kind) added, parked if any is, the
    pace (rps) of the latest one that has one."""
    merged: dict[str, dict[str, Any]] = {}
    for usage in usages:
        for u in usage:
            have = merged.get(u["endpoint"])
            if have is None:
                merged[u["endpoint"]] = {**u, "errors": Counter(u["errors"])}
                continue
            for key in SUMMED:
                have[key] = have[key] + u[key]
            have["errors"] = have["errors"] + Counter(u["errors"])
            have["parked"] = bool(have["parked"] or u["parked"])
            have["rps"] = u["rps"] if u.get("rps") else have.get("rps")
    return list(merged.values())
