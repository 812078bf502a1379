"""A backing store that fails: the application gets the errno, the rest is served, and the
device can still be handed over.

The failing stores are the kernel's own: a null_blk disk with bad blocks (configfs
``badblocks``: reads and writes of those sectors fail with EIO, as a disk's media errors
do) and a file on a size-limited tmpfs (writes past its size fail with ENOSPC).  Each
failure reaches the application as its errno (the driver turns ``-errno`` into the block
status), the gadget logs the first failure of each kind once with the device and sector
range and then counts, and a live handover afterwards keeps what was written.
"""

from __future__ import annotations

import errno
import mmap
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_gadget import run
from test_handover import Owner, finish, hand_over, no_gadget_left_running, state_file

pytestmark = pytest.mark.ublk

__all__ = ["no_gadget_left_running", "state_file"]  # fixtures, used by name

MiB = 1 << 20
NULLB = Path("/sys/kernel/config/nullb")
BAD_SECTORS = (8192, 8199)  # 4 KiB at 4 MiB


@contextmanager
def null_blk(prefix: str, powered: dict[str, str] | None = None, **attrs: str) -> Iterator[str]:
    """A null_blk disk made through configfs with ``attrs`` (size in MiB, memory_backed,
    ...), powered on, then given ``powered`` (badblocks); yields its /dev path, and removes
    it afterwards."""
    node = NULLB / f"{prefix}{uuid.uuid4().hex[:6]}"
    node.mkdir()
    try:
        for key, value in {**attrs, "power": "1", **(powered or {})}.items():
            (node / key).write_text(value)
        yield f"/dev/{node.name}"
    finally:
        (node / "power").write_text("0")
        node.rmdir()


@pytest.fixture
def bad_disk() -> Iterator[str]:
    """A 64 MiB memory-backed null_blk disk whose sectors 8192-8199 fail."""
    with null_blk("bad", {"badblocks": f"+{BAD_SECTORS[0]}-{BAD_SECTORS[1]}"}, size="64",
                  memory_backed="1", blocksize="512") as dev:
        yield dev


def direct(dev: str, offset: int, data: bytes | None = None, length: int = 4096) -> bytes:
    """One O_DIRECT read (``data`` None) or write at ``offset``; OSError as the kernel said."""
    buf = mmap.mmap(-1, len(data) if data is not None else length)
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    try:
        if data is not None:
            buf[:] = data
            assert os.pwritev(fd, [buf], offset) == len(data)
            return data
        assert os.preadv(fd, [buf], offset) == length
        return bytes(buf)
    finally:
        os.close(fd)
        buf.close()


def errno_of(dev: str, offset: int, data: bytes | None = None) -> int:
    with pytest.raises(OSError) as raised:
        direct(dev, offset, data)
    return raised.value.errno or 0


def test_bad_sectors_fail_with_eio_and_the_rest_is_served_across_a_handover(
    bad_disk: str, state_file: str
) -> None:
    owner = Owner(f"file,path={bad_disk},queues=2", state_file=state_file).__enter__()
    dev = owner.dev()
    good = os.urandom(MiB)
    direct(dev, 0, good)
    bad = BAD_SECTORS[0] * 512
    for _ in range(3):
        assert errno_of(dev, bad) == errno.EIO
    assert errno_of(dev, bad, os.urandom(4096)) == errno.EIO
    assert direct(dev, 0, length=MiB) == good  # the rest is still served
    assert direct(dev, bad + 4096, os.urandom(4096))
    successor = hand_over(owner, state_file)
    assert direct(dev, 0, length=MiB) == good
    assert errno_of(dev, bad) == errno.EIO
    time.sleep(2.5)  # the successor's health check claims the disk once the owner let go
    with pytest.raises(OSError) as raised:
        os.close(os.open(bad_disk, os.O_RDONLY | os.O_EXCL))
    assert raised.value.errno == errno.EBUSY, "the successor holds the disk exclusively"
    finish(successor, state_file)
    said = owner.stderr
    assert said.count(f"READ of sectors {BAD_SECTORS[0]}-{BAD_SECTORS[1]} failed: EIO") == 1, said
    assert said.count(f"WRITE of sectors {BAD_SECTORS[0]}-{BAD_SECTORS[1]} failed: EIO") == 1
    assert "2 more READ failures (EIO) in sectors 8192-8199" in said, said
    assert f"READ of sectors {BAD_SECTORS[0]}-{BAD_SECTORS[1]} failed: EIO" in successor.stderr


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs holding a sparse 16 MiB backing file: writes run out of space."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt))
    try:
        backing = mnt / "disk.img"
        with open(backing, "wb") as f:
            f.truncate(16 * MiB)
        yield backing
    finally:
        run("umount", str(mnt))


def test_a_full_file_system_fails_writes_with_enospc_and_keeps_what_fit(
    small_tmpfs: Path, state_file: str
) -> None:
    owner = Owner(f"file,path={small_tmpfs},queues=2", state_file=state_file).__enter__()
    dev = owner.dev()
    chunks: list[bytes] = []
    with pytest.raises(OSError) as raised:
        for i in range(16):
            chunks.append(direct(dev, i * MiB, os.urandom(MiB)))
    assert raised.value.errno == errno.ENOSPC
    assert 2 <= len(chunks) <= 4, "a 4 MiB file system holds some MiB and no more"
    assert errno_of(dev, 12 * MiB, os.urandom(4096)) == errno.ENOSPC
    successor = hand_over(owner, state_file)
    for i, data in enumerate(chunks):
        assert direct(dev, i * MiB, length=MiB) == data
    finish(successor, state_file)
    assert "failed: ENOSPC (No space left on device)" in owner.stderr, owner.stderr
