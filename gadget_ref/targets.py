"""The backing stores: null, mem and file, as plain objects doing byte-addressed I/O.

A target knows nothing about ublk: it reads into and writes from a buffer (the tag's buffer,
as a memoryview of exactly the request's length) at a byte offset, and says which optional
semantics it has (a volatile cache that FLUSH must write back, DISCARD support).  Failures
raise OSError; the request dispatcher turns them into ``-errno`` for the kernel.  Opening a
target checks everything about the host that a SPEC can get wrong (missing file, file too
small) and raises TargetError, before any ublk device exists.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
from typing import TYPE_CHECKING

from .backing import Backing, BackingError, create_memory, open_trusted
from .fallocate import punch_hole, zero_range
from .spec import DeviceSpec

if TYPE_CHECKING:
    from .handler import RingIO

ZERO_CHUNK = 1 << 20
# Never written (PROT_READ): every page maps the kernel's zero page, and the mapping is
# page-aligned, so it also serves O_DIRECT writes of zeroes.
_ZERO_MAP = mmap.mmap(-1, ZERO_CHUNK, prot=mmap.PROT_READ)
ZEROES = memoryview(_ZERO_MAP)


class TargetError(ValueError):
    """The host does not match the SPEC (no such file, file too small, ...): a usage error."""


def fill_zero(view: memoryview) -> None:
    """Zero ``view`` by copying from the shared zero chunk (no allocation per call)."""
    n = len(view)
    if n <= ZERO_CHUNK:
        view[:] = ZEROES[:n]
        return
    for start in range(0, n, ZERO_CHUNK):
        end = min(start + ZERO_CHUNK, n)
        view[start:end] = ZEROES[: end - start]


class Target:
    """What a request dispatcher needs from a backing store; the defaults fit a RAM store."""

    kind = ""
    #: FLUSH and FUA are meaningful: the device advertises UBLK_ATTR_VOLATILE_CACHE | FUA.
    volatile_cache = False
    #: The device advertises DISCARD (and WRITE_ZEROES) limits.
    can_discard = True

    def __init__(self, size: int, block_size: int, read_only: bool) -> None:
        self.size = size
        self.block_size = block_size
        self.read_only = read_only

    def read(self, offset: int, view: memoryview) -> int:
        raise NotImplementedError

    def write(self, offset: int, view: memoryview, fua: bool) -> int:
        raise NotImplementedError

    def flush(self) -> None:
        """Make completed writes durable; nothing to do without a volatile cache."""

    def discard(self, offset: int, length: int) -> None:
        raise NotImplementedError

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        raise NotImplementedError

    def backing(self) -> Backing | None:
        """The file a successor must find again to serve the same data (None: no data)."""
        return None

    def ring_io(self, depth: int) -> RingIO | None:
        """This target's I/O on a queue's own ring, one per queue; None: served at once by
        the byte-addressed methods above, in the queue thread."""
        return None

    def claim(self) -> bool:
        """Take what a successor could not while its owner held it; whether it is held."""
        return True

    def close(self) -> None:
        """Release what the target holds; idempotent.  The data stays (a handover)."""

    def remove(self) -> None:
        """The device is deleted: drop data that only it could reach (a mem target's file)."""

    def describe(self) -> dict[str, object]:
        """Facts for the ready line and logs."""
        return {"target": self.kind}


class NullTarget(Target):
    """Reads return zeroes, writes are dropped: measures the ublk round trip and nothing else."""

    kind = "null"

    def read(self, offset: int, view: memoryview) -> int:
        fill_zero(view)
        return len(view)

    def write(self, offset: int, view: memoryview, fua: bool) -> int:
        return len(view)

    def discard(self, offset: int, length: int) -> None:
        pass

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        pass


class MemTarget(Target):
    """RAM-backed: a sparse tmpfs file or memfd (``backing.create_memory``), filled as written.

    Read and written with ``preadv``/``pwritev``, not through a mapping: a full tmpfs then
    fails the write with ENOSPC for the application to see, where a store into a mapping
    would kill the server with SIGBUS.  ``path`` is the file's name when it must outlive this
    process (a handover); :meth:`remove` deletes it once the device is gone.
    """

    kind = "mem"

    def __init__(self, fd: int, path: str | None, size: int, block_size: int,
                 read_only: bool) -> None:
        super().__init__(size, block_size, read_only)
        self.fd = fd
        self.path = path

    @classmethod
    def create(cls, spec: DeviceSpec, memory_dir: str | None) -> MemTarget:
        assert spec.size is not None
        try:
            fd, path = create_memory(spec.size, memory_dir)
        except (BackingError, OSError) as e:
            raise TargetError(f"mem target: {e}") from None
        return cls(fd, path, spec.size, spec.block_size, spec.read_only)

    @classmethod
    def reopen(cls, spec: DeviceSpec, backing: Backing) -> MemTarget:
        """The memory a previous server left in ``backing``, checked to be that very file."""
        assert spec.size is not None
        try:
            fd = open_trusted(backing.path, os.O_RDWR, "memory file")
        except FileNotFoundError:
            raise TargetError(f"mem target: memory file {backing.path} is gone: the data of "
                              "this device is lost") from None
        except (BackingError, OSError) as e:
            raise TargetError(f"mem target: {e}") from None
        try:
            backing.check(fd, "mem target")
            size = os.fstat(fd).st_size
            if size != spec.size:
                raise TargetError(f"mem target: memory file {backing.path} is {size} bytes, "
                                  f"the device {spec.size}")
        except BackingError as e:
            os.close(fd)
            raise TargetError(str(e)) from None
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, backing.path, spec.size, spec.block_size, spec.read_only)

    def read(self, offset: int, view: memoryview) -> int:
        return os.preadv(self.fd, [view], offset)

    def write(self, offset: int, view: memoryview, fua: bool) -> int:
        return os.pwritev(self.fd, [view], offset)

    def discard(self, offset: int, length: int) -> None:
        """Give the range back to the kernel: it reads as zeroes again."""
        punch_hole(self.fd, offset, length)

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        punch_hole(self.fd, offset, length)  # tmpfs zeroes only by punching

    def backing(self) -> Backing | None:
        return None if self.path is None else Backing.of(self.path, self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def describe(self) -> dict[str, object]:
        return {"target": self.kind, "memory": self.path or "memfd"}


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

    def ring_io(self, depth: int) -> RingIO:
        from .file_ring import FileRingIO  # that module builds on this one

        return FileRingIO(self, depth)

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


def open_target(spec: DeviceSpec, memory_dir: str | None = None) -> Target:
    """The target a SPEC names, opened and checked against the host; a mem target keeps its
    memory in a new file under ``memory_dir`` (else a memfd)."""
    if spec.target == "null":
        assert spec.size is not None
        return NullTarget(spec.size, spec.block_size, spec.read_only)
    if spec.target == "mem":
        return MemTarget.create(spec, memory_dir)
    if spec.target == "file":
        return FileTarget(spec)
    raise TargetError(f"unknown target {spec.target!r}")


def reopen_target(spec: DeviceSpec, backing: Backing | None, what: str) -> Target:
    """The target a previous server served ``what`` (a device) with, and nothing else: the
    same file or memory, or TargetError saying why not, before any device is touched."""
    if spec.target == "mem":
        if backing is None:
            raise TargetError(f"{what}: its memory belonged to the server that wrote the state "
                              "file (state version 1) and died with it; adopting would serve "
                              "zeroes")
        return MemTarget.reopen(spec, backing)
    if spec.target != "file" or backing is None:  # null; or a file recorded by state version 1
        return open_target(spec)
    target = FileTarget(spec, exclusive=False)  # the owner still holds its claim
    try:
        backing.check(target.fd, what)
    except BackingError as e:
        target.close()
        raise TargetError(str(e)) from None
    return target
