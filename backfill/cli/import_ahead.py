"""Modules imported on a thread of their own while a command waits on the chain or the store, so that their
import is not on its path later. The project has no import cycles: two threads importing at once only ever
wait for each other's module, never deadlock."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable


def import_ahead(modules: Iterable[str], name: str) -> None:
    """Import `modules` in order on a daemon thread named `name`; an error is left to the import where the
    module is used, which reports it."""
    wanted = tuple(modules)

    def load() -> None:
        try:
            for module in wanted:
                importlib.import_module(module)
        except Exception:  # noqa: BLE001 - imported again where used, which reports the error
            pass

    threading.Thread(target=load, name=name, daemon=True).start()
