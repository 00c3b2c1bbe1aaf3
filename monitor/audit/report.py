"""The audit's reporting and its choices: which days and which endpoints, and the report (per day and per run)
with its rendering. The verdicts are monitor.audit.judge's, the measuring monitor.audit.measure's. No I/O:
tested in tests/unit/test_audit.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from backfill.chain.planner import DayPlan
from backfill.dates import day_list
from backfill.errors import ConfigError
from backfill.redact import endpoint_label
from backfill.store import digest
from monitor.audit.judge import STANDARDS, UNRECOUNTED, Digests, full

DAY_CONCURRENCY = 4  # days recounted at once (memory: one day's rows each)
DAYS_HELP = "dates and ranges, e.g. 2024-01-03,2024-01-05..2024-01-07"


# -- choosing days (pure) ---------------------------------------------------------------------------------------
def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--days: {text!r} is not a date like 2024-01-03 ({DAYS_HELP})") from None


def parse_days(text: str) -> list[dt.date]:
    """`2024-01-03,2024-01-05..2024-01-07` -> the dates, in order, without repeats."""
    out: list[dt.date] = []
    parts = [p.strip() for p in (text or "").split(",")]
    if not any(parts):
        raise ConfigError(f"--days is empty; give {DAYS_HELP}")
    for part in parts:
        if not part:
            raise ConfigError(f"--days has an empty item in {text!r}; give {DAYS_HELP}")
        first, sep, last = part.partition("..")
        a = _date(first.strip())
        b = _date(last.strip()) if sep else a
        if b < a:
            raise ConfigError(f"--days: the range {part!r} ends before it starts")
        out.extend(a + dt.timedelta(days=i) for i in range((b - a).days + 1))
    return list(dict.fromkeys(out))


def day_indices(text: str, plan: Iterable[DayPlan]) -> list[int]:
    """--days text -> planned day_idx; a date outside the plan is a user error."""
    by_date = {p.day: p.day_idx for p in plan}
    dates = parse_days(text)
    missing = [d for d in dates if d not in by_date]
    if missing:
        span = f"{min(by_date)}..{max(by_date)}" if by_date else "nothing is planned yet"
        what = (
            f"{missing[0]} is not a planned day"
            if len(missing) == 1
            else f"{missing[0]} and {len(missing) - 1} more days are not planned"
        )
        raise ConfigError(f"--days: {what} (planned: {span})")
    return [by_date[d] for d in dates]


@dataclass(frozen=True)
class Span:
    """The part of a day a sampled recount covers, when it is not the whole day."""

    from_block: int
    to_block: int
    day_from: int  # the day's planned blocks
    day_to: int
    day_rows: int  # the day's rows by its checkpoint: why only a span of it was recounted

    @property
    def share(self) -> float:
        """The span's part of the day's blocks."""
        return (self.to_block - self.from_block + 1) / (self.day_to - self.day_from + 1)

    def text(self) -> str:
        return (
            f"sampled span: blocks {self.from_block}-{self.to_block} of the day's {self.day_from}-{self.day_to} "
            f"(a day of {self.day_rows} rows; counts are the span's)"
        )


def sampled_span(plan: DayPlan, day_rows: int, budget: int, rng: random.Random) -> Span | None:
    """The random span of a sampled day's blocks a recount covers, sized by the day's rows to about `budget` of
    them (at least one block); None when the day is recounted whole (budget 0, or not more rows than it)."""
    if budget <= 0 or day_rows <= budget or plan.n_blocks <= 1:
        return None
    width = min(plan.n_blocks, max(1, -(-plan.n_blocks * budget // day_rows)))
    start = plan.start_block + rng.randrange(plan.n_blocks - width + 1)
    return Span(start, start + width - 1, plan.start_block, plan.end_block, day_rows)


def span_plans(
    plans: list[DayPlan], sampled: Iterable[int], day_rows: dict[int, int], budget: int, seed: int
) -> tuple[list[DayPlan], dict[int, Span]]:
    """The plans to recount: each `sampled` day of more than `budget` rows narrowed to a random span of its
    blocks (seeded, so a run's seed reproduces its spans); the others whole. Also the spans, by day."""
    rng, chosen, spans, out = random.Random(seed), set(sampled), {}, []
    for p in plans:
        span = sampled_span(p, day_rows.get(p.day_idx, 0), budget, rng) if p.day_idx in chosen else None
        if span is not None:
            spans[p.day_idx] = span
            p = dataclasses.replace(p, start_block=span.from_block, end_block=span.to_block)
        out.append(p)
    return out, spans


@dataclass(frozen=True)
class Selection:
    days: list[int]  # to audit, ascending
    skipped: list[int]  # asked for (listed or included) but not COMPLETE


def choose_days(
    complete: Iterable[int],
    *,
    days: Iterable[int] | None = None,
    sample: int | None = None,
    include: Iterable[int] = (),
    all_days: bool = False,
    seed: int = 0,
) -> Selection:
    """Only COMPLETE days: every one (all_days), or the listed days, plus `include`, plus `sample` more drawn
    at random (seeded) from the remaining COMPLETE days."""
    done = set(complete)
    asked = set(days or ()) | set(include)
    chosen = set(done) if all_days else asked & done
    if sample and not all_days:
        rest = sorted(done - chosen)
        chosen |= set(random.Random(seed).sample(rest, min(sample, len(rest))))
    return Selection(sorted(chosen), sorted(asked - done))


# -- endpoints (pure) -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointSet:
    """Endpoints (indices into rpc_urls) one RPC client recounts a day with."""

    indices: tuple[int, ...]
    same: bool = False  # they filled the day: a recount there is less independent


def _served(filled_by: str | Iterable[str]) -> set[str]:
    labels = filled_by.split(",") if isinstance(filled_by, str) else filled_by
    return {label.strip() for label in labels if label and label.strip()}


def endpoint_sets(urls: Iterable[str], filled_by: str) -> list[EndpointSet]:
    """The endpoint sets to recount a day with, tried in turn: those whose label (`host#i`) did not serve the
    day, then the ones that did (`same`). Every endpoint as one set when they all served it (or there is one),
    and as one independent set when the filler is unknown."""
    used = _served(filled_by)
    urls = list(urls)
    others = tuple(i for i, url in enumerate(urls) if endpoint_label(url, i) not in used)
    serving = tuple(i for i, url in enumerate(urls) if endpoint_label(url, i) in used)
    if not urls:
        return []
    if not others:
        return [EndpointSet(serving, same=True)]
    return [EndpointSet(others)] + ([EndpointSet(serving, same=True)] if serving else [])


def audit_endpoints(urls: Iterable[str], filled_by: str) -> list[int]:
    """The endpoints tried first for a day (see endpoint_sets): those that did not serve it, else all."""
    sets = endpoint_sets(urls, filled_by)
    return list(sets[0].indices) if sets else []


def recheck_sets(urls: Iterable[str], filled_by: str, first_served: Iterable[str]) -> list[EndpointSet]:
    """Where to recount a day again after its recount disagreed with the store, tried in turn: the endpoints
    that did not answer the first recount (those that did not fill the day first). When every endpoint took a
    part of the first recount, each one alone. Empty with a single endpoint: nothing to re-check on."""
    urls = list(urls)
    answered = _served(first_served)
    out = []
    for s in endpoint_sets(urls, filled_by):
        rest = tuple(i for i in s.indices if endpoint_label(urls[i], i) not in answered)
        if rest:
            out.append(EndpointSet(rest, s.same))
    if out or len(urls) < 2:
        return out
    return [EndpointSet((i,), s.same) for s in endpoint_sets(urls, filled_by) for i in s.indices]


# -- the report ---------------------------------------------------------------------------------------------------
@dataclass
class VersionSummary:
    """One `_version` of a day's raw rows (before FINAL)."""

    version: int
    rows: dict[str, int]
    hashes: dict[str, int]
    zero_timestamps: int
    latest: bool = False
    equals_chain: bool | None = None  # its rows are exactly the recount (None: no recount)
    not_on_chain: int | None = None  # its rows that are not rows of the recount (None: not computed)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "latest": self.latest,
            "zero_timestamps": self.zero_timestamps,
            **{f"{s}_rows": self.rows.get(s, 0) for s in STANDARDS},
            **{f"{s}_hash": digest.fmt_hash(self.hashes.get(s, 0)) for s in STANDARDS},
            "equals_chain": self.equals_chain,
            "not_on_chain": self.not_on_chain,
        }

    def line(self) -> str:
        if self.equals_chain:
            verdict = "equals the chain"
        elif self.not_on_chain == 0:
            verdict = "part of the chain's rows"
        elif self.not_on_chain:
            verdict = f"differs from the chain: {self.not_on_chain} rows not on chain"
        else:
            verdict = "differs from the chain" if self.equals_chain is False else "not compared"
        counts = " ".join(f"{s}={self.rows.get(s, 0)}" for s in STANDARDS)
        return (
            f"    version {self.version}{' (latest)' if self.latest else ''}: {counts} "
            f"zero_timestamps={self.zero_timestamps} -- {verdict}"
        )


def _hashes(d: Digests | None) -> str:
    return "" if d is None else "/".join(digest.fmt_hash(full(d)[s][1]) for s in STANDARDS)


@dataclass
class DayAudit:
    day_idx: int
    day: dt.date
    endpoint: str  # label(s) of the endpoint(s) that answered the recount
    verdict: str  # ok | mismatch | error
    detail: str
    chain: Digests | None  # None when the recount failed
    store: Digests
    recorded: Digests | None  # None when the day has no fingerprint
    versions: list[VersionSummary] = field(default_factory=list)
    problem: str = ""  # error kind: "unrecounted" (no endpoint could recount it) | "disagree" (recounts differ)
    span: Span | None = None  # the blocks recounted, when only a sampled span of the day was (its detail says so)

    def hash_equal(self, std: str) -> bool | None:
        return None if self.chain is None else full(self.chain)[std][1] == full(self.store)[std][1]

    def line(self) -> str:
        parts = [f"{self.day} day={self.day_idx} endpoint={self.endpoint or '-'} {self.verdict.upper()}"]
        chain, store, rec = full(self.chain), full(self.store), full(self.recorded)
        for std in STANDARDS:
            equal = self.hash_equal(std)
            parts.append(
                f"{std} chain={chain[std][0] if self.chain is not None else '?'} store={store[std][0]} "
                f"recorded={rec[std][0] if self.recorded is not None else '-'} "
                f"hash={'?' if equal is None else 'equal' if equal else 'differs'}"
            )
        return "  ".join(parts) + (f"  -- {self.detail}" if self.detail else "")

    def lines(self) -> list[str]:
        return [self.line()] + ([v.line() for v in self.versions] if len(self.versions) > 1 else [])

    def to_json(self) -> dict[str, Any]:
        def side(d: Digests | None) -> dict[str, Any] | None:
            return None if d is None else {s: {"rows": n, "hash": digest.fmt_hash(h)} for s, (n, h) in full(d).items()}

        return {
            "day_idx": self.day_idx,
            "day": self.day.isoformat(),
            "endpoint": self.endpoint,
            "verdict": self.verdict,
            "detail": self.detail,
            "chain": side(self.chain),
            "store": side(self.store),
            "recorded": side(self.recorded),
            "hash_equal": {s: self.hash_equal(s) for s in STANDARDS},
            "problem": self.problem or None,
            "span": None if self.span is None else dataclasses.asdict(self.span),
            "versions": [v.to_json() for v in self.versions],
        }

    def row(self, run_id: str, run_at: dt.datetime) -> tuple:
        """The audit_results row (schema.AUDIT_COLUMNS); -1 = unknown."""
        chain, store, rec = full(self.chain), full(self.store), full(self.recorded)
        return (
            run_id,
            run_at,
            self.day_idx,
            self.day,
            self.endpoint,
            self.verdict,
            chain["erc20"][0] if self.chain is not None else -1,
            chain["erc1155"][0] if self.chain is not None else -1,
            store["erc20"][0],
            store["erc1155"][0],
            rec["erc20"][0] if self.recorded is not None else -1,
            rec["erc1155"][0] if self.recorded is not None else -1,
            _hashes(self.chain),
            _hashes(self.store),
            _hashes(self.recorded),
            json.dumps([v.to_json() for v in self.versions]),
            self.detail,
        )


@dataclass
class AuditReport:
    run_id: str
    run_at: dt.datetime
    source: str
    seed: int
    results: list[DayAudit]
    skipped: list[int] = field(default_factory=list)  # asked for but not COMPLETE
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """No mismatch and no error (an audit of no day passes: callers that need days check `results`)."""
        return all(r.verdict == "ok" for r in self.results)

    @property
    def mismatched_days(self) -> list[int]:
        return [r.day_idx for r in self.results if r.verdict == "mismatch"]

    @property
    def error_days(self) -> list[int]:
        return [r.day_idx for r in self.results if r.verdict == "error"]

    @property
    def unrecounted_days(self) -> list[int]:
        """Days no endpoint could recount (errors of the RPC side, not of the store)."""
        return [r.day_idx for r in self.results if r.verdict == "error" and r.problem != "disagree"]

    @property
    def disagreeing_days(self) -> list[int]:
        """Days whose recounts on two endpoint sets disagree with each other."""
        return [r.day_idx for r in self.results if r.problem == "disagree"]

    def failure_text(self, name_days: Callable[[list[int]], str] | None = None) -> str:
        """Why the audit did not pass, naming the days of each class; "" when it passed. name_days turns
        day indices into text (default: the dates)."""
        by_idx = {r.day_idx: r for r in self.results}
        name = name_days or (lambda days: day_list(days, {d: by_idx[d].day for d in days}))
        parts = []
        mismatched = self.mismatched_days
        if mismatched:
            parts.append(f"the recount from RPC differs from the store on day(s) {name(mismatched)}")
        disagree = self.disagreeing_days
        if disagree:
            parts.append(
                f"the recounts from RPC disagree between endpoints on day(s) {name(disagree)} "
                "(a node is serving wrong or short answers)"
            )
        unrecounted = self.unrecounted_days
        if unrecounted:
            reasons = list(dict.fromkeys(by_idx[d].detail.removeprefix(f"{UNRECOUNTED}: ") for d in unrecounted))
            reason = (
                reasons[0][:300]
                + (" …" if len(reasons[0]) > 300 else "")
                + (f"; and {len(reasons) - 1} other reason(s)" if len(reasons) > 1 else "")
            )
            parts.append(f"day(s) {name(unrecounted)} {UNRECOUNTED} ({reason})")
        return "; ".join(parts)

    def summary(self) -> str:
        n = {v: sum(r.verdict == v for r in self.results) for v in ("ok", "mismatch", "error")}
        bad = day_list([r.day_idx for r in self.results if r.verdict != "ok"], {r.day_idx: r.day for r in self.results})
        return (
            f"audit {'passed' if self.passed else 'FAILED'}: {len(self.results)} days, {n['ok']} ok, "
            f"{n['mismatch']} mismatch, {n['error']} error"
            + (f" ({bad})" if bad else "")
            + f"; run_id={self.run_id} seed={self.seed}"
        )

    def lines(self) -> list[str]:
        """One line per day, plus its versions side by side when it has more than one."""
        return [line for r in self.results for line in r.lines()]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "run_id": self.run_id,
            "run_at": self.run_at.isoformat(),
            "source": self.source,
            "seed": self.seed,
            "passed": self.passed,
            "mismatched_days": self.mismatched_days,
            "error_days": self.error_days,
            "skipped_days": self.skipped,
            "seconds": round(self.seconds, 3),
            "results": [r.to_json() for r in self.results],
        }
