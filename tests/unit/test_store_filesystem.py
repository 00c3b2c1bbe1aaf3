"""Which filesystem holds the store, and whether it is the ext4 without a journal that makes every part costly."""

from __future__ import annotations

from pathlib import Path

from backfill.store.embedded.filesystem import Filesystem, Mount, filesystem_of, has_journal, mount_of

# /proc/self/mountinfo as Linux writes it (proc(5)): the mount point is field 5, then optional fields up to "-",
# then the type and the source
MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
26 22 0:24 / /dev/shm rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=24683784k
40 22 7:0 / /mnt/fast rw,relatime shared:20 - ext4 /dev/loop0 rw
41 40 259:1 / /mnt/fast/nvme rw,relatime shared:21 - xfs /dev/nvme0n1p1 rw,attr2
42 22 8:1 / /mnt/my\\040disk rw,relatime shared:22 - ext4 /dev/sda1 rw
43 22 8:2 / /mnt/fast rw,relatime shared:23 - ext4 /dev/sda2 rw
"""


def test_the_longest_mount_point_above_the_path_holds_it():
    assert mount_of("/work/data/clickhouse", MOUNTINFO) == Mount("/", "ext4", "/dev/vda", "254:0")
    assert mount_of("/dev/shm/x", MOUNTINFO) == Mount("/dev/shm", "tmpfs", "tmpfs", "0:24")
    assert mount_of("/mnt/fast/nvme/store", MOUNTINFO) == Mount("/mnt/fast/nvme", "xfs", "/dev/nvme0n1p1", "259:1")
    assert mount_of("/mnt/my disk/store", MOUNTINFO) == Mount("/mnt/my disk", "ext4", "/dev/sda1", "8:1")
    # a name that only starts like a mount point is not under it
    assert mount_of("/mnt/fastest", MOUNTINFO) == Mount("/", "ext4", "/dev/vda", "254:0")


def test_the_last_mount_on_a_mount_point_is_the_one_seen():
    assert mount_of("/mnt/fast/store", MOUNTINFO) == Mount("/mnt/fast", "ext4", "/dev/sda2", "8:2")


def test_no_mount_for_a_path_outside_every_one():
    assert mount_of("/x", "garbage line\n") is None


def test_a_journal_is_found_by_the_device_name_jbd2_lists():
    assert has_journal("vda", ["loop0-8"]) is False
    assert has_journal("loop0", ["loop0-8", "sda1-8"]) is True
    assert has_journal("dm-0", ["dm-0-8"]) is True  # device names with a dash
    assert has_journal("dm-0", ["dm-10-8"]) is False
    assert has_journal("vda", None) is None  # the kernel does not say


def test_only_ext4_without_a_journal_is_the_slow_case():
    ext4 = Mount("/", "ext4", "/dev/vda", "254:0")
    assert Filesystem(ext4, False).slow_file_creation
    assert not Filesystem(ext4, True).slow_file_creation
    assert not Filesystem(ext4, None).slow_file_creation
    assert not Filesystem(Mount("/x", "xfs", "/dev/sdb", "8:16"), None).slow_file_creation
    assert Filesystem(ext4, False).describe() == "ext4 (/dev/vda at /, no journal)"


def test_a_path_not_made_yet_is_judged_by_its_nearest_parent(tmp_path: Path):
    here = filesystem_of(tmp_path)
    assert here is not None
    assert filesystem_of(tmp_path / "not" / "made" / "yet") == here
