"""Logging set-up, once per entry point. Lines are greppable: `time level worker=3 day=412 ... event=...`."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"


class _FileOnFirstLine(logging.handlers.RotatingFileHandler):
    """A rotating log file (and its folder) created only when the first line is written: a command refused
    before it did anything leaves no file behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, maxBytes=50 * 1024 * 1024, backupCount=5, delay=True)

    def _open(self):  # type: ignore[no-untyped-def]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def setup_logging(path: Path | None, level: int = logging.INFO, also_stderr: bool = False) -> None:
    import time

    logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    fmt = logging.Formatter(FORMAT, DATEFMT)
    if path is not None:
        handler = _FileOnFirstLine(path)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    if also_stderr or path is None:
        stream = logging.StreamHandler()
        stream.setFormatter(fmt)
        root.addHandler(stream)
    for noisy in ("urllib3", "aiohttp"):  # (the store module quiets its driver itself)
        logging.getLogger(noisy).setLevel(logging.WARNING)
