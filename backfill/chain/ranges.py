"""How many blocks to ask eth_getLogs for. Pure.

Shrinks to what the provider says it accepts (its suggested range when the text gives one, half
otherwise) and grows back when calls are cheap, so requests stay close to the minimum: about
ceil(logs / result cap) plus one per window.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

OWN_NODE_ANSWER_LOGS = 2_500  # what a node serves most cheaply per log (docs/benchmarks.md)
PROVIDER_ANSWER_LOGS = 10_000  # a typical provider result cap: fewest requests, which providers bill and limit
RESULT_CAP_MARGIN = 0.8  # under a stated result cap, answers aim at this share of it (density varies block to block)


def _is_own_node(url: str) -> bool:
    """An endpoint on loopback or a private network address: a node of the operator's own."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


def answer_target(urls: list[str] | tuple[str, ...], configured: int = 0) -> int:
    """Logs per eth_getLogs answer to size ranges for: the configured number, else (0 = auto) 2,500 when every
    endpoint is the operator's own node (cheapest per log for the node) and 10,000 when any is a remote provider
    (fewer requests: what a provider bills and rate-limits)."""
    if configured > 0:
        return configured
    return OWN_NODE_ANSWER_LOGS if urls and all(_is_own_node(u) for u in urls) else PROVIDER_ANSWER_LOGS


class RangeSizer:
    """Answers are aimed at about `cheap_logs` logs: a node serialises a few thousand logs at a time much more
    cheaply per log than tens of thousands (measured on anvil: ~3 vs ~5 cpu-s per million logs), and the
    client parses them faster; an answer over `big_logs` shrinks the range back to `cheap_logs`."""

    def __init__(
        self, initial: int, maximum: int, cheap_logs: int = 2_500, grow_after: int = 1, big_logs: int | None = None
    ):
        self.maximum = max(1, maximum)
        self.size = max(1, min(initial, self.maximum))
        self.cheap_logs = max(1, cheap_logs)  # an answer this small means the range could be larger
        self.grow_after = grow_after
        self.big_logs = big_logs if big_logs is not None else 2 * self.cheap_logs  # this large: smaller ranges
        self.cap: int | None = None  # the largest range a refusal allows (never grow past it)
        self._cheap_streak = 0

    def split(
        self,
        a: int,
        b: int,
        suggested: tuple[int, int] | None,
        max_blocks: int | None = None,
        max_results: int | None = None,
    ) -> int:
        """Where to cut [a, b] after a refusal: the end of the provider's suggestion when it starts at a, else
        its stated block limit, else the middle. A stated result cap becomes the most logs answers aim at; the
        range it suggests fits this stretch's density only, so it caps this range, not the ranges to come."""
        results_only = bool(max_results) and not max_blocks
        if max_results:
            self.cheap_logs = max(1, min(self.cheap_logs, int(max_results * RESULT_CAP_MARGIN)))
            self.big_logs = min(self.big_logs, max_results)
        if suggested and suggested[0] == a and a <= suggested[1] < b:
            mid = suggested[1]
            allowed = suggested[1] - suggested[0] + 1  # the provider said what it accepts
            if results_only:
                self.size = max(1, min(self.size, allowed))
                self._cheap_streak = 0
                return mid
        elif max_blocks and max_blocks < b - a + 1:
            mid = a + max_blocks - 1
            allowed = max_blocks  # the provider stated its limit
        else:
            mid = (a + b) // 2
            allowed = max(1, (b - a + 1) // 2)  # unknown: assume half (growing back to just under the refused
            # size would be refused again, one block at a time)
        self.cap = allowed if self.cap is None else min(self.cap, allowed)
        self.size = max(1, min(self.size, mid - a + 1))
        self._cheap_streak = 0
        return mid

    def answered(self, n_blocks: int, n_logs: int) -> None:
        """A call over n_blocks returned n_logs: grow after a few cheap full-size answers; shrink after a very
        large one (even a node without a result cap should not hand us a few hundred MB of JSON at once)."""
        if n_logs > self.big_logs:
            self.size = max(1, min(self.size, n_blocks * self.cheap_logs // n_logs))
            self._cheap_streak = 0
        elif n_blocks >= self.size and n_logs < self.cheap_logs:
            self._cheap_streak += 1
            if self._cheap_streak >= self.grow_after and self.size < min(self.maximum, self.cap or self.maximum):
                # toward cheap_logs per answer at the density just seen, at most 4x a step (density can change
                # along the chain), 16x when the answer was tiny against the target (the first ranges of a
                # sparse chain); not even one block more when that block would take the answer past the aim
                # (under a result cap, the next range would be refused)
                step = 16.0 if n_logs * 16 < self.cheap_logs else 4.0
                fits = self.cheap_logs * n_blocks // n_logs if n_logs else self.maximum
                limit = self.maximum if self.cap is None else min(self.maximum, self.cap)
                self.size = max(self.size, min(limit, int(self.size * step), fits))
                self._cheap_streak = 0
        elif n_logs >= self.cheap_logs:
            self._cheap_streak = 0
