"""The filesystem under the store's directory, and whether it makes the engine's parts expensive to create.

Every insert writes a part: a directory of about a dozen small files, and merges write more and delete the old
ones at once. On ext4 without a journal, the kernel will not reuse an inode freed in the last minute (five if its
inode table block is still dirty) and scans past each such inode for every file it creates: with the engine's
steady churn that scan was 34% of the embedded server's CPU during a copy, and a small insert took 15 ms instead
of 5 ms on a journaled ext4 of the same machine (docs/benchmarks.md, 2026-12-04 later). The server says so when
it starts (backfill.store.embedded.server), and `scripts/bench` records the filesystem of its data directories.

Pure parsing of /proc/self/mountinfo and of the names under /proc/fs/jbd2, then one function that reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

JOURNALLED = ("ext3", "ext4")  # the filesystems whose journal /proc/fs/jbd2 lists (jbd2 is theirs)


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    device: str  # major:minor


@dataclass(frozen=True)
class Filesystem:
    mount: Mount
    journal: bool | None  # None: not an ext3/ext4, or the kernel does not say

    @property
    def slow_file_creation(self) -> bool:
        return self.mount.fstype == "ext4" and self.journal is False

    def describe(self) -> str:
        journal = {True: ", journal", False: ", no journal", None: ""}[self.journal]
        return f"{self.mount.fstype} ({self.mount.source} at {self.mount.mount_point}{journal})"


def _unescape(field: str) -> str:
    """mountinfo writes a space, tab, newline and backslash in a path as an octal escape (\\040 ...)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_of(path: str, mountinfo: str) -> Mount | None:
    """The mount that holds the absolute, resolved `path`: the longest mount point above it, the last one
    mounted there when several are."""
    best: Mount | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 7:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 3:
            continue
        point = _unescape(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = Mount(point, fields[sep + 1], _unescape(fields[sep + 2]), fields[2])
    return best


def has_journal(device_name: str, journals: list[str] | None) -> bool | None:
    """Whether /proc/fs/jbd2 (its entries are `<device>-<journal inode>`, e.g. `vda-8`) lists a journal for the
    block device; None when the kernel has no such list."""
    if journals is None:
        return None
    return any(name.rpartition("-")[0] == device_name for name in journals)


def filesystem_of(path: Path) -> Filesystem | None:
    """The filesystem of `path` (or of its nearest existing parent) on Linux; None where /proc does not say."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    target = path.resolve()
    while not target.exists() and target != target.parent:
        target = target.parent
    mount = mount_of(str(target), mountinfo)
    if mount is None:
        return None
    if mount.fstype not in JOURNALLED:
        return Filesystem(mount, None)
    try:
        device_name = Path(os.readlink(f"/sys/dev/block/{mount.device}")).name
    except OSError:
        device_name = Path(mount.source).name
    try:
        journals: list[str] | None = os.listdir("/proc/fs/jbd2")
    except OSError:
        journals = None
    return Filesystem(mount, has_journal(device_name, journals))
