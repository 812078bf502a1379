"""The file target: a regular file or a block device, found again by path and identity.

Its requests go on the queue's own ring (``file_ring.FileRingIO``, this target's second
module); the byte-addressed methods here do the same at once, and the ring falls back to
them where it must (zeroes on a file system without ZERO_RANGE).
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from typing import TYPE_CHECKING

from ublk_bindings.buffers import BufferMode

from ..backing import Backing, BackingError
from ..fallocate import punch_hole, zero_range
from .base import ZERO_CHUNK, ZEROES, Target, TargetError
from .file_ring import FileRingIO
from .kind import TargetKind

if TYPE_CHECKING:
    from ..handler import RingIO
    from ..spec import DeviceSpec


class FileTarget(Target):
    """A regular file or a block device, O_DIRECT where the file system takes it.

    Without O_DIRECT (tmpfs, or a block size below the file system's direct I/O alignment)
    writes sit in the page cache, which is exactly the volatile cache the device advertises:
    FLUSH is ``fdatasync`` and a FUA write is written with RWF_DSYNC.  With O_DIRECT the disk
    below may still cache, so the same holds.
    """

    kind = "file"
    volatile_cache = True

    def __init__(self, spec: DeviceSpec, exclusive: bool = True) -> None:
        """``exclusive``: claim a block device (O_EXCL) now; a successor cannot while its
        owner holds the claim, so it opens the disk shared and claims it later (:meth:`claim`).
        """
        assert spec.path is not None
        self.path = os.path.abspath(spec.path)
        self._claim_fd = -1
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise TargetError(f"file target: {self.path}: no such file") from None
        except OSError as e:
            raise TargetError(f"file target: {self.path}: {e.strerror}") from None
        self.is_block_device = stat.S_ISBLK(st.st_mode)
        if not (self.is_block_device or stat.S_ISREG(st.st_mode)):
            raise TargetError(f"file target: {self.path} is neither a regular file nor a block device")

        flags = (os.O_RDONLY if spec.read_only else os.O_RDWR) | os.O_CLOEXEC
        if self.is_block_device and exclusive:
            flags |= os.O_EXCL  # refuses a disk that is mounted or otherwise claimed
        self._opened_exclusive = bool(flags & os.O_EXCL)
        self.fd, self.direct = _open(self.path, flags, spec.block_size)
        try:
            file_size = os.lseek(self.fd, 0, os.SEEK_END)
            size = spec.size
            if size is None:
                size = file_size - file_size % spec.block_size
                if size == 0:
                    raise TargetError(
                        f"file target: {self.path} is {file_size} bytes, "
                        f"smaller than one block of {spec.block_size}"
                    )
            elif size > file_size:
                raise TargetError(
                    f"file target: {self.path} is too small: {file_size} bytes, size={size} needed"
                )
            super().__init__(size, spec.block_size, spec.read_only)
            self.can_discard = not spec.read_only and (
                self.is_block_device or _punches_holes(self.fd, file_size, spec.block_size)
            )
            self.zero_range_works = True
        except BaseException:
            os.close(self.fd)
            raise

    def read(self, offset: int, view: memoryview) -> int:
        return os.preadv(self.fd, [view], offset)

    def write(self, offset: int, view: memoryview, fua: bool) -> int:
        return os.pwritev(self.fd, [view], offset, os.RWF_DSYNC if fua else 0)

    def flush(self) -> None:
        os.fdatasync(self.fd)

    def discard(self, offset: int, length: int) -> None:
        punch_hole(self.fd, offset, length)

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        """Punch when unmapping is allowed, else zero in place; write zeroes as the last resort."""
        if unmap and self.can_discard:
            punch_hole(self.fd, offset, length)
            return
        if self.zero_range_works:
            try:
                zero_range(self.fd, offset, length)
                return
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                self.zero_range_works = False  # tmpfs, 9p, ...: remember, don't retry each time
        end = offset + length
        while offset < end:
            n = min(ZERO_CHUNK, end - offset)
            offset += os.pwritev(self.fd, [ZEROES[:n]], offset)

    zero_copy = True  # reads and writes the request's pages with fixed-buffer SQEs

    def ring_io(self, depth: int, mode: BufferMode = BufferMode.COPY) -> RingIO:
        return FileRingIO(self, depth, mode)

    @property
    def claimed(self) -> bool:
        """Whether nobody else can open the disk exclusively (mount it) meanwhile."""
        return not self.is_block_device or self._claim_fd >= 0 or self._opened_exclusive

    def claim(self) -> bool:
        """Try to take the exclusive claim on a block device opened shared (after a handover,
        once the old owner has let go of it); whether it is held now."""
        if self.claimed:
            return True
        try:
            self._claim_fd = os.open(self.path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            return False
        return True

    def close(self) -> None:
        for fd in (self.fd, self._claim_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self._claim_fd = -1

    def backing(self) -> Backing | None:
        return Backing.of(self.path, self.fd)

    def describe(self) -> dict[str, object]:
        return {"target": self.kind, "path": self.path, "direct_io": self.direct}


def _open(path: str, flags: int, block_size: int) -> tuple[int, bool]:
    """Open with O_DIRECT if a block-sized aligned read works, else buffered."""
    try:
        fd = os.open(path, flags | os.O_DIRECT)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: this file system has no O_DIRECT (tmpfs)
            raise TargetError(f"file target: {path}: {e.strerror}") from None
    else:
        probe = mmap.mmap(-1, block_size)  # page-aligned, as the tag buffers are
        try:
            os.preadv(fd, [probe], 0)
            return fd, True
        except OSError as e:
            os.close(fd)
            if e.errno != errno.EINVAL:  # EINVAL: block size below the direct I/O alignment
                raise TargetError(f"file target: {path}: {e.strerror}") from None
        finally:
            probe.close()
    try:
        return os.open(path, flags), False
    except OSError as e:
        raise TargetError(f"file target: {path}: {e.strerror}") from None


def _punches_holes(fd: int, file_size: int, block_size: int) -> bool:
    """Whether the file system can punch holes, asked without touching data (past EOF)."""
    try:
        punch_hole(fd, file_size, block_size)
        return True
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return False
        raise


def open_file(spec: DeviceSpec, memory_dir: str | None = None) -> FileTarget:
    """The file or disk ``path=`` names, claimed (a block device: O_EXCL) and checked."""
    return FileTarget(spec)


def reopen_file(spec: DeviceSpec, backing: Backing | None, what: str) -> FileTarget:
    """The very file a previous server served (same device and inode), opened shared: the
    owner still holds its claim.  Without a recorded backing (state version 1), by path."""
    if backing is None:
        return open_file(spec)
    target = FileTarget(spec, exclusive=False)
    try:
        backing.check(target.fd, what)
    except BackingError as e:
        target.close()
        raise TargetError(str(e)) from None
    return target


KIND = TargetKind(
    name="file",
    keys=("path", "size"),
    required=("path",),
    summary="a regular file or a block device",
    details=("size= defaults to the file's size",),
    zero_copy=True,
    has_backing=True,
    open=open_file,
    reopen=reopen_file,
)
