"""Ctrl-C held back while a step must not stop half way (the swaps of a promotion or a rollback).

Anywhere else a Ctrl-C ends a command at once (`KeyboardInterrupt`, one line, exit 130: backfill/cli/app.py). Inside
`finished_first()` it is answered with one line and the block runs to its end: a production half swapped is
worse than a Ctrl-C not obeyed, and what follows the swap is short. Only the main thread receives signals:
elsewhere (the supervisor's rebuild thread) the block just runs, as the supervisor's own handler decides.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def finished_first(what: str) -> Iterator[None]:
    """Run the block to its end even when Ctrl-C is pressed during it (said once, on stderr)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield  # not ours to hold: another handler (the supervisor's) decides what SIGINT means
        return
    pressed: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        if not pressed:
            print(
                f"Ctrl-C: {what} is under way and cannot stop half way; it is finished first",
                file=sys.stderr,
                flush=True,
            )
        pressed.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
