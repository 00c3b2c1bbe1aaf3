"""Restart backoff for worker slots. Pure."""


def restart_delay(restarts: int, base_s: float = 0.5, cap_s: float = 60.0) -> float:
    """0.5 s, 1 s, 2 s, … capped: a worker that keeps dying does not spin."""
    return min(cap_s, base_s * 2 ** max(0, min(restarts - 1, 16)))
