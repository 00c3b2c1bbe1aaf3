"""An aiohttp server run in a background thread with its own event loop, for the test proxies.

A subclass implements `_serve(ready)`: set up, set `self._port`, `ready.set()`, await `self._stopping`, clean
up (a failure goes to `self._startup_error`, then `ready.set()`). `start()` / `stop()` / `with` do the rest.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Self

log = logging.getLogger(__name__)


class BackgroundServer:
    name = "server"  # for thread names and messages

    def __init__(self) -> None:
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    async def _serve(self, ready: threading.Event) -> None:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"the {self.name} is not running")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self.name.replace(" ", "-"), daemon=True)
        self._thread.start()
        if not ready.wait(timeout=15) or self._startup_error is not None:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {self._startup_error!r}")
        log.info("%s started url=%s", self.name, self.url)
        return self

    def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=15)
        if thread.is_alive():
            raise RuntimeError(f"{self.name} thread did not stop")
        self._thread = self._loop = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        finally:
            loop.close()
