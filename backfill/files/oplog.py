"""Logging set-up, once per entry point. Lines are greppable: `time level worker=3 day=412 ... event=...`."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"


class _FileOnFirstLine(logging.handlers.RotatingFileHandler):
    """A rotating log file (and its folder) created only when the first line is written: a command refused
    before it did anything leaves no file behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, maxBytes=50 * 1024 * 1024, backupCount=5, delay=True)

    def _open(self):  # type: ignore[no-untyped-def,unused-ignore]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


@contextlib.contextmanager
def operation_log(
    path: Path, *loggers: logging.Logger, max_bytes: int = 10 << 20, backups: int = 3, level: int = logging.INFO
) -> Iterator[None]:
    """For the duration of one operation (a rebuild, a promotion, an audit), `loggers` also write to its own
    file (`on-complete.log`, `promote.log`, `audit.log`), in the format of every other log, times in UTC; a
    logger quieter than `level` is opened up to it meanwhile (its lines also reach the caller's handlers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
    handler.setFormatter(formatter())
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > level:
            logger.setLevel(level)
    try:
        yield
    finally:
        for logger, was in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(was)
        handler.close()


_FIELD = re.compile(r"""(\w+)=('[^']*'|"[^"]*"|\S+)""")


class JsonLines(logging.Formatter):
    """One JSON object a line for log shippers (`log_format = "json"`): ts, level, logger, msg, and every
    key=value of the message as a field of its own (quotes taken off); the traceback, if any, as `exc`. The
    message is the one the text format writes, so secrets are redacted the same way."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        doc: dict[str, object] = {
            "ts": time.strftime(DATEFMT, time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": msg,
        }
        for key, value in _FIELD.findall(msg):
            if key not in doc:
                doc[key] = value[1:-1] if value[:1] in ("'", '"') and value[-1:] == value[:1] else value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


_format = {"name": "text"}


def set_log_format(name: str) -> None:
    """`text` (key=value lines, the default) or `json` (JsonLines), for every log this process opens."""
    _format["name"] = name


def formatter() -> logging.Formatter:
    if _format["name"] == "json":
        return JsonLines()
    fmt = logging.Formatter(FORMAT, DATEFMT)
    fmt.converter = time.gmtime  # type: ignore[method-assign,unused-ignore]
    return fmt


def setup_logging(
    path: Path | None, level: int = logging.INFO, also_stderr: bool = False, log_format: str | None = None
) -> None:
    if log_format is not None:
        set_log_format(log_format)
    logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    fmt = formatter()
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


# the store's outage lines (backfill/store/client.py, `Outage`): the start of a wait, a long one, its end
_STORE_WAIT = re.compile(
    r"event=store_(?:down|backpressure) .*?reason=(?P<reason>'[^']*'|\"[^\"]*\")"
    r".*? next_try_s=(?P<next>[\d.]+)"
)
_STORE_STILL = re.compile(r"event=store_still_\w+ .*?reason=(?P<reason>'[^']*'|\"[^\"]*\") down_s=(?P<down>\d+)")
_STORE_BACK = re.compile(r"event=store_(?:back|backpressure_over) .*?down_s=(?P<down>[\d.]+)")


def store_wait_text(message: str) -> str | None:
    """A store log line as a person at a terminal should read it while a command waits; None when the line
    says nothing to them (a store not there at all is the command's own `error:` line, not a wait)."""
    if m := _STORE_WAIT.search(message):
        if float(m["next"]) <= 0:  # given up at once: the error line says it
            return None
        return f"waiting for the store ({m['reason'][1:-1]}); Ctrl-C stops waiting"
    if m := _STORE_STILL.search(message):
        return f"still waiting for the store after {m['down']}s ({m['reason'][1:-1]})"
    if m := _STORE_BACK.search(message):
        return f"the store is back after {float(m['down']):.0f}s"
    return None


class _TerminalLines(logging.Handler):
    """What a command's log lines show at the terminal: a store wait in words, nothing else. Each command
    writes its own log file where it keeps one (monitor.log, promote.log, audit.log, on-complete.log); without
    this handler Python would print the raw lines of loggers that have none (`logging.lastResort`)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "store":
            return
        try:
            text = store_wait_text(record.getMessage())
        except Exception:  # noqa: BLE001 - a malformed record must not break the command
            self.handleError(record)
            return
        if text:
            print(text, file=sys.stderr, flush=True)


def setup_command_logging() -> None:
    """The CLI's logging, once per command before it runs (`backfill start` then sets up monitor.log)."""
    root = logging.getLogger()
    if not any(isinstance(h, _TerminalLines) for h in root.handlers):
        root.addHandler(_TerminalLines())
    logging.getLogger("store").setLevel(logging.INFO)  # a wait's end is an INFO line


@contextlib.contextmanager
def held_until_written() -> Iterator[None]:
    """Log lines of the block are kept in memory and written to the log files when it ends normally, dropped
    when it raises: checks that may refuse a command create no log file (the refusal is the command's one
    line on stderr). Lines for stderr are not held."""
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    buffers = [
        logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1, target=h, flushOnClose=False)
        for h in files
    ]
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
