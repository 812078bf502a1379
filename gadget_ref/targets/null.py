"""The null target: reads return zeroes, writes are dropped; no data, so nothing to hand over."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Target, fill_zero
from .kind import TargetKind

if TYPE_CHECKING:
    from ..backing import Backing
    from ..spec import DeviceSpec


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
    has_backing=False,
    open=open_null,
    reopen=reopen_null,
)
