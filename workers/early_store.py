"""A warm worker's early store connection (monitor/warm.py, workers/worker.py `serve_warm`).

While a warm worker waits for its shard, a thread opens the connection to the store its spawn environment names:
the client's handshake (three round trips), the column types and the insert machinery, off the path from the
hand-over to the first fetch (measured: hand-over to the endpoints' heads 90-165 ms -> 50-60 ms). The worker takes
it only when the hand-over names the same store; any failure leaves it to connect after the hand-over, as a cold
worker does. Nothing is started from here (an embedded server that is down stays down) and nothing is logged: a
store not up yet is the normal case, not an outage of the worker.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass

from backfill.errors import ConfigError
from backfill.settings import Settings, load_settings
from backfill.store.client import Store, on_thread

EARLY_THREAD = "store-early"


@dataclass(frozen=True)
class EarlyStore:
    target: tuple  # the store it reached (store_target)
    store: Store


def store_target(settings: Settings) -> tuple:
    return (settings.store, str(settings.data_dir))


def connect_early() -> Future[EarlyStore | None] | None:
    """The early connection, on a thread of its own, to the store the process's environment names (None when the
    settings do not load: the hand-over's settings are the ones that count, and report their errors)."""
    try:
        settings = load_settings()
    except ConfigError:
        return None
    logging.getLogger("store").addFilter(_QUIET_EARLY)
    return on_thread(lambda: open_early(settings), EARLY_THREAD)


class _NotFromEarlyConnect(logging.Filter):
    """The early attempt's store lines are dropped (the thread's name marks them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName or "").startswith(EARLY_THREAD)


_QUIET_EARLY = _NotFromEarlyConnect()


def open_early(settings: Settings) -> EarlyStore | None:
    """The connection to the store these settings name, if it is up; None otherwise."""
    try:
        store = Store.connect(settings, create=False, start_embedded=False, patience_s=None, connect_patience_s=0.0)
    except Exception:  # noqa: BLE001 - not up yet (or not reachable): the hand-over connects as usual
        return None
    try:
        store.warm_up()
    except Exception:  # noqa: BLE001 - the schema may not be there yet: types are read at the first insert
        pass
    return EarlyStore(store_target(settings), store)
