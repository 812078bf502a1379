"""The mem target: RAM that a successor can find again (a tmpfs file) when there is a state file."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from ..backing import Backing, BackingError, create_memory, open_trusted
from ..fallocate import punch_hole
from .base import Target, TargetError
from .kind import TargetKind

if TYPE_CHECKING:
    from ..spec import DeviceSpec


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


def open_mem(spec: DeviceSpec, memory_dir: str | None = None) -> MemTarget:
    """New, empty memory: a file under ``memory_dir`` (a successor can adopt it), else a memfd."""
    return MemTarget.create(spec, memory_dir)


def reopen_mem(spec: DeviceSpec, backing: Backing | None, what: str) -> MemTarget:
    """The memory file the state names; without one (version 1) the data died with its owner."""
    if backing is None:
        raise TargetError(f"{what}: its memory belonged to the server that wrote the state "
                          "file (state version 1) and died with it; adopting would serve "
                          "zeroes")
    return MemTarget.reopen(spec, backing)


KIND = TargetKind(
    name="mem",
    keys=("size",),
    required=("size",),
    summary="RAM-backed, allocated as written",
    details=("with --state-file its memory is a file in --memory-dir, so it survives a "
             "handover",),
    has_backing=True,
    open=open_mem,
    reopen=reopen_mem,
)
