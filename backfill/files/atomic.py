"""Files written whole or not at all: written beside their final name, then renamed over it, so a reader (or
a process killed half way) never sees half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    write_bytes_atomic(path, json.dumps(doc, default=str).encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file written by `write_json_atomic`, or None when it is not there (or not JSON)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
