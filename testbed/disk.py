"""A real disk for the guest: a host file full of data, attached as virtio-blk (``/dev/vda``).

tmpfs and null devices cannot show what queue depth buys: their requests never wait for a
device.  qemu with ``cache=none`` opens the host file with O_DIRECT, so the guest's disk has the
host disk's latency.  The file is written once with random data and cached by size: a hole
would read as zeroes without touching the disk, and repetitive data would flatter a
compressing or deduplicating host file system.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from . import TestbedError, debian

GUEST_PATH = "/dev/vda"  # the guest's only virtio-blk disk
MIN_SIZE = 1 << 20
_CHUNK = 1 << 20
_SUFFIX = {"": 0, "K": 10, "M": 20, "G": 30}
_SIZE = re.compile(r"([0-9]+)([KMG]?)(?:i?B)?", re.IGNORECASE | re.ASCII)


def parse_size(text: str) -> int:
    """Bytes from ``N``, ``NK``, ``NM`` or ``NG`` (binary multiples): whole MiB, at least one."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise TestbedError(f"--disk {text!r}: not a size (e.g. 512M, 2G)")
    size = int(m.group(1)) << _SUFFIX[m.group(2).upper()]
    if size < MIN_SIZE or size % MIN_SIZE:
        raise TestbedError(f"--disk {text!r}: the disk must be a whole number of MiB, at least 1M")
    return size


def _dir() -> Path:
    return debian.CACHE / "disks"


def image_path(size: int) -> Path:
    return _dir() / f"disk-{size >> 20}M.img"


def is_complete(path: Path, size: int) -> bool:
    """Whether ``path`` is ``size`` bytes, every one of them allocated (no holes)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    return st.st_size == size and st.st_blocks * 512 >= size


def image(size: int) -> Path:
    """The cached disk image of ``size`` bytes, written (once) if missing or incomplete."""
    path = image_path(size)
    if is_complete(path, size):
        return path
    with debian.locked("disks"):
        if not is_complete(path, size):
            _write(path, size)
    return path


def _write(path: Path, size: int) -> None:
    print(f"testbed: writing the {size >> 20} MiB disk image {path} (once)", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            for _ in range(size // _CHUNK):
                f.write(os.urandom(_CHUNK))
            f.flush()
            os.fsync(f.fileno())
        if not is_complete(tmp, size):
            raise TestbedError(f"{tmp}: written, yet not {size} allocated bytes (holes?)")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def qemu_args(path: Path) -> list[str]:
    """The virtio-blk drive: raw, O_DIRECT on the host (``cache=none``), qemu's thread pool."""
    escaped = str(path).replace(",", ",,")  # qemu's option syntax doubles a literal comma
    return ["-drive", f"file={escaped},if=virtio,format=raw,cache=none,aio=threads"]


@contextlib.contextmanager
def in_use(path: Path) -> Iterator[None]:
    """Hold ``path`` for one VM: qemu refuses an image another qemu has open for writing, so a
    second run waits here, saying so, instead of failing after its build."""
    with open(path.with_name(path.name + ".lock"), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"testbed: waiting for another VM using {path}", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
