"""Where a device's bytes live, named so that a successor finds the very same bytes again.

A handover is only as good as the successor's claim to serve *the same* data.  A file target
names its file by an absolute path (a relative one would resolve against the successor's
working directory) and by its identity (``st_dev``, ``st_ino``: a file replaced under the
same name is refused, not served).  A mem target's memory must outlive the process that
wrote it: with a state file it is a file on a tmpfs (``/dev/shm`` by default), created
here exclusively under a random name, which the state file names and the successor
re-opens; without one it is a memfd that dies with the process, as nothing could adopt it.

The files a successor trusts (the state file, a memory file) are refused when someone else
could have written them: not ours, writable by group or others, a symlink, or in a
directory others can write to without the sticky bit.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

DEFAULT_MEMORY_DIR = "/dev/shm"
MEMORY_PREFIX = "ublk-gadget-mem."


class BackingError(ValueError):
    """The backing store is not the one the device was served with, or is not safe to trust."""


@dataclass(frozen=True)
class Backing:
    """A backing file as the state file records it: path and identity.

    The identity tells a file replaced under the same name while the old one still exists
    (renamed, or held open); a file deleted and recreated may get the old inode number back
    (tmpfs reuses them), which no check of names and numbers can tell.
    """

    path: str
    dev: int
    ino: int

    @classmethod
    def of(cls, path: str, fd: int) -> Backing:
        st = os.fstat(fd)
        return cls(path=path, dev=st.st_dev, ino=st.st_ino)

    def check(self, fd: int, what: str) -> None:
        """Refuse ``fd`` unless it is this very file (same device and inode)."""
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            raise BackingError(
                f"{what}: {self.path} is not the file the device was served with (device "
                f"{st.st_dev:#x} inode {st.st_ino}, recorded {self.dev:#x} inode {self.ino}): "
                "it was replaced; refusing to serve other data under the same device")


def check_trusted(path: str, st: os.stat_result, what: str) -> None:
    """Refuse a file another user could have written (``st`` from an fstat of it, not a
    second lookup of ``path``), or one in a directory such a user could swap it in."""
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise BackingError(f"{what} {path}: owned by uid {st.st_uid}, not by this user ({me})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise BackingError(f"{what} {path}: writable by others (mode "
                           f"{stat.S_IMODE(st.st_mode):04o}); chmod go-w it")
    directory = os.path.dirname(os.path.abspath(path))
    dst = os.stat(directory)
    if dst.st_mode & stat.S_IWOTH and not dst.st_mode & stat.S_ISVTX:
        raise BackingError(f"{what} {path}: its directory {directory} is world-writable "
                           "without the sticky bit, so anyone could replace it")


def open_trusted(path: str, flags: int, what: str) -> int:
    """Open ``path`` refusing a symlink (O_NOFOLLOW) and anything :func:`check_trusted`
    refuses; returns the fd, a regular file."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW: the last component is a symlink
            raise BackingError(f"{what} {path}: a symlink; refusing to follow it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BackingError(f"{what} {path}: not a regular file")
        check_trusted(path, st, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def memory_capacity(directory: str | None) -> int:
    """Bytes a memory store can grow to: the tmpfs's size, or RAM plus swap for a memfd."""
    if directory is not None:
        vfs = os.statvfs(directory)
        return vfs.f_blocks * vfs.f_frsize
    total = 0
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("MemTotal", "SwapTotal"):
                total += int(value.split()[0]) * 1024
    return total


def create_memory(size: int, directory: str | None) -> tuple[int, str | None]:
    """A new, empty (sparse) memory store of ``size`` bytes: ``(fd, path)``.

    With ``directory``, a file created exclusively there under a random name (``path``; the
    caller records it, and unlinks it once the device is deleted); without, a memfd
    (``path`` None).
    """
    if directory is not None and not os.path.isdir(directory):
        raise BackingError(f"memory directory {directory}: no such directory "
                           "(--memory-dir names a tmpfs where mem devices keep their data)")
    capacity = memory_capacity(directory)
    where = directory if directory is not None else "RAM and swap"
    if size > capacity:
        raise BackingError(f"size={size} bytes is more than {where} can hold ({capacity} bytes)")
    if directory is None:
        fd = os.memfd_create("ublk-gadget-mem", os.MFD_CLOEXEC)
        path = None
    else:
        fd, path = _create_exclusive(directory)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        if path is not None:
            os.unlink(path)
        raise
    return fd, path


def _create_exclusive(directory: str) -> tuple[int, str]:
    while True:
        path = os.path.join(os.path.abspath(directory), MEMORY_PREFIX + os.urandom(8).hex())
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
        except FileExistsError:
            continue
        return fd, path
