"""The audit's judging: pure comparisons of a day's recount with the store, its fingerprint and its row
versions, and the verdict of a day. No I/O: tested in tests/unit/test_audit.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

STANDARDS = ("erc20", "erc1155")
Digests = dict[str, tuple[int, int]]  # standard -> (rows, hash)

SAME_ENDPOINT = "same endpoint: less independent"
UNRECOUNTED = "could not be recounted from RPC"
DISAGREE = "recounts disagree between endpoints"


# -- the verdict -------------------------------------------------------------------------------------------
def full(d: Digests | None) -> Digests:
    return {std: tuple(map(int, (d or {}).get(std, (0, 0)))) for std in STANDARDS}  # type: ignore[misc]


def judge(chain: Digests, store: Digests, recorded: Digests | None) -> tuple[str, str]:
    """(verdict, detail): `ok` when the recount equals the store after FINAL and the fingerprint (if any)."""
    chain, store = full(chain), full(store)
    problems = []
    for std in STANDARDS:
        (cn, ch), (sn, sh) = chain[std], store[std]
        if cn != sn:
            problems.append(f"{std}: chain {cn} rows / store {sn} rows")
        elif ch != sh:
            problems.append(f"{std} hash differs, same count")
    if recorded is not None and full(recorded) != store:
        rec = full(recorded)
        counts = [
            f"{std} {store[std][0]} rows, recorded {rec[std][0]}" for std in STANDARDS if rec[std][0] != store[std][0]
        ]
        problems.append("store differs from its fingerprint" + (f" ({'; '.join(counts)})" if counts else ""))
    return ("mismatch", "; ".join(problems)) if problems else ("ok", "")


def recorded_digests(fp: dict[str, Any] | None) -> Digests | None:
    """A day_fingerprints row -> digests (its hashes are stored as hex)."""
    if fp is None:
        return None
    return {std: (int(fp[f"{std}_count"]), int(str(fp[f"{std}_hash"]) or "0", 16)) for std in STANDARDS}


@dataclass(frozen=True)
class Recount:
    """One recount of a day from RPC, over the endpoint sets tried in turn."""

    digests: Digests | None  # None: no set could recount the day
    served: str = ""  # labels that answered its eth_getLogs
    same: bool = False  # answered by the endpoints that filled the day
    failures: tuple[str, ...] = ()  # "<labels>: <reason>" per set that could not recount it


def _counts(d: Digests) -> str:
    return ", ".join(f"{std} {n} rows" for std, (n, _) in full(d).items())


def decide(
    first: Recount, store: Digests, recorded: Digests | None, second: Recount | None = None
) -> tuple[str, str, str]:
    """(verdict, detail, problem) of a day. `second` is the re-check of a recount that differs from the store
    (None: there was no other endpoint to re-check on). problem: "" | "unrecounted" | "disagree".

    A day no endpoint could recount is an `error`, never a mismatch. A recount that differs from the store is
    a `mismatch` only when a second recount on other endpoints agrees with it (or none could be made); two
    recounts that disagree with each other are an `error` of the endpoints, not of the store."""
    if first.digests is None:
        return "error", f"{UNRECOUNTED}: " + ("; ".join(first.failures) or "no endpoint configured"), "unrecounted"
    verdict, detail = judge(first.digests, store, recorded)
    notes = [detail] if detail else []
    if first.same:
        notes.append(
            f"recounted on {first.served or 'the endpoints'}, which filled the day ({SAME_ENDPOINT})"
            + (f": the others could not ({'; '.join(first.failures)})" if first.failures else "")
        )
    elif first.failures:
        notes.append(f"recounted on {first.served or 'other endpoints'} after {'; '.join(first.failures)}")
    if full(first.digests) == full(store):  # the recount equals the store: nothing to re-check
        return verdict, "; ".join(notes), ""
    if second is None:
        return "mismatch", "; ".join(notes + ["not re-checked: one endpoint"]), ""
    if second.digests is None:
        return "mismatch", "; ".join(notes + ["not re-checked: " + ("; ".join(second.failures) or "no endpoint")]), ""
    if full(second.digests) == full(first.digests):
        return (
            "mismatch",
            "; ".join(notes + [f"confirmed by a second recount on {second.served or 'other endpoints'}"]),
            "",
        )
    text = (
        f"{DISAGREE} {first.served or '?'} and {second.served or '?'}: a node is serving wrong or short answers "
        f"({first.served or '?'}: {_counts(first.digests)}; {second.served or '?'}: {_counts(second.digests)}; "
        f"store: {_counts(store)})"
    )
    if full(second.digests) == full(store):
        text += f"; the recount on {second.served or '?'} equals the store"
    fingerprint_verdict, fingerprint_detail = judge(store, store, recorded)  # the store against itself alone
    if fingerprint_verdict == "mismatch":  # that part needs no recount: a real difference of the store
        return "mismatch", f"{fingerprint_detail}; {text}", "disagree"
    return "error", text, "disagree"


# -- the row versions ------------------------------------------------------------------------------------------------
class _Version(Protocol):  # monitor.audit.report.VersionSummary, as far as judging it goes
    version: int
    rows: dict[str, int]
    hashes: dict[str, int]
    equals_chain: bool | None
    not_on_chain: int | None


V = TypeVar("V", bound=_Version)


def place_versions(versions: list[V], chain: Digests, missing: dict[int, int] | None) -> list[V]:
    """Each of a day's row versions against the recount: whether it equals the chain, and (with `missing`, its
    rows per version that are not rows of the recount) how many of its rows are not on chain."""
    cd = full(chain)
    for v in versions:
        v.equals_chain = all((v.rows.get(s, 0), v.hashes.get(s, 0)) == cd[s] for s in STANDARDS)
        if v.equals_chain:
            v.not_on_chain = 0
    if missing is not None:
        for v in versions:
            v.not_on_chain = missing.get(v.version, 0)
    return versions
