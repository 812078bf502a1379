"""The null target: reads return zeroes, writes are dropped; no data, so nothing to hand over."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ublk_bindings.buffers import BufferMode

from .base import Target, fill_zero
from .kind import TargetKind

if TYPE_CHECKING:
    from ublk_bindings.queue import Queue

    from ..backing import Backing
    from ..handler import RingIO
    from ..spec import DeviceSpec


class _Untouched:
    """The null target's zero-copy requests: done at once, all bytes, nothing queued."""

    def __init__(self) -> None:
        self.finished: list[tuple[int, int]] = []

    def start(self, queue: Queue, tag: int, op: int, op_flags: int, offset: int,
              length: int) -> int:
        return length

    def done(self, queue: Queue, tag: int, sub: int, res: int) -> int | None:
        raise AssertionError("the null target queues no I/O")


class NullTarget(Target):
    """Reads return zeroes, writes are dropped: measures the ublk round trip and nothing else.

    Zero copy: every request completes at once and its data is never touched (as kublk's
    null does), so a read returns whatever the pages held, not zeroes.
    """

    kind = "null"
    zero_copy = True

    def ring_io(self, depth: int, mode: BufferMode = BufferMode.COPY) -> RingIO | None:
        return _Untouched() if mode.zero_copy else None

    def read(self, offset: int, view: memoryview) -> int:
        fill_zero(view)
        return len(view)

    def write(self, offset: int, view: memoryview, fua: bool) -> int:
        return len(view)

    def discard(self, offset: int, length: int) -> None:
        pass

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        pass


def open_null(spec: DeviceSpec, memory_dir: str | None = None) -> NullTarget:
    assert spec.size is not None  # required: the SPEC parser saw to it
    return NullTarget(spec.size, spec.block_size, spec.read_only)


def reopen_null(spec: DeviceSpec, backing: Backing | None, what: str) -> NullTarget:
    """A null device has no data to find again: a new one serves it just as well."""
    return open_null(spec)


KIND = TargetKind(
    name="null",
    keys=("size",),
    required=("size",),
    summary="reads return zeroes, writes are dropped",
    zero_copy=True,
    has_backing=False,
    open=open_null,
    reopen=reopen_null,
)
