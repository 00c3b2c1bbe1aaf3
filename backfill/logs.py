"""Logging set-up, once per entry point. Lines are greppable: `time level worker=3 day=412 ... event=...`."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
from collections.abc import Iterator
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


@contextlib.contextmanager
def held_until_written() -> Iterator[None]:
    """Log lines of the block are kept in memory and written to the log files when it ends normally, dropped
    when it raises: checks that may refuse a command create no log file (the refusal is the command's one
    line on stderr). Lines for stderr are not held."""
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    buffers = [logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1, target=h,
                                              flushOnClose=False) for h in files]
    for file, buffer in zip(files, buffers):
        buffer.setLevel(file.level)
        root.removeHandler(file)
        root.addHandler(buffer)
    ok = False
    try:
        yield
        ok = True
    finally:
        for file, buffer in zip(files, buffers):
            root.removeHandler(buffer)
            root.addHandler(file)
            if ok:
                buffer.flush()
            buffer.close()
