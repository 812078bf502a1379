"""What every target is and shares: the Target contract, TargetError, the zero helpers.

A target knows nothing about ublk: it reads into and writes from a buffer (the tag's buffer,
as a memoryview of exactly the request's length) at a byte offset, and says which optional
semantics it has (a volatile cache that FLUSH must write back, DISCARD support).  Failures
raise OSError; the request dispatcher turns them into ``-errno`` for the kernel.  Opening a
target checks everything about the host that a SPEC can get wrong (missing file, file too
small) and raises TargetError, before any ublk device exists.
"""

from __future__ import annotations

import mmap
from typing import TYPE_CHECKING

from ublk_bindings.buffers import BufferMode

if TYPE_CHECKING:
    from ..backing import Backing
    from ..handler import RingIO

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

    #: Whether it can serve a zero-copy device, whose data never reaches a buffer of ours.
    zero_copy = False

    def ring_io(self, depth: int, mode: BufferMode = BufferMode.COPY) -> RingIO | None:
        """This target's I/O on a queue's own ring, one per queue (in a zero-copy ``mode``: on
        the request's own pages, in the ring's buffer table); None: served at once by the
        byte-addressed methods above, in the queue thread."""
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
