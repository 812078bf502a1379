"""A provided-buffer ring: buffers of ours that the kernel picks for a multishot command.

A batch queue's FETCH_IO_CMDS (:mod:`ublk_bindings.batch`) is one multishot command; each
CQE it posts carries a batch of ready tags, written into a buffer the kernel selects from
this ring (``IOSQE_BUFFER_SELECT``, buffer group ``bgid``) and names in the CQE's flags
(``IORING_CQE_F_BUFFER``, the id above ``IORING_CQE_BUFFER_SHIFT``).  Once read, a buffer is
handed back with :meth:`ProvidedBuffers.recycle`, all of a wake-up's published with one
tail write (:meth:`ProvidedBuffers.publish`).

The ring's entries and tail are written directly, with no foreign call and no memory
barrier: the kernel selects a buffer for a ublk command only in the task that owns the
ring (task work, or inline in its own ``io_uring_enter``), so it reads what this thread
wrote in program order.  Layouts come from the generated ``io_uring_buf``.
"""

from __future__ import annotations

import ctypes
import mmap
import struct

from .io_uring import IORING_CQE_BUFFER_SHIFT, io_uring_buf, io_uring_buf_ring
from .ring import Ring

__all__ = ["ProvidedBuffers", "buffer_id"]

_ENTRY = struct.Struct("<QIH")  # addr, len, bid: an io_uring_buf without its resv (the tail)
_ENTRY_SIZE = ctypes.sizeof(io_uring_buf)
_TAIL = int(getattr(io_uring_buf_ring, "tail").offset)
if (_ENTRY_SIZE != 16 or _TAIL != 14
        or [int(getattr(io_uring_buf, f).offset) for f in ("addr", "len", "bid")] != [0, 8, 12]):
    raise ImportError("the generated io_uring_buf is not laid out as ProvidedBuffers writes it")
_MAX_ENTRIES = 1 << 15  # the kernel's limit for a provided-buffer ring


def buffer_id(cqe_flags: int) -> int:
    """The provided buffer a CQE used (valid with ``IORING_CQE_F_BUFFER``)."""
    return cqe_flags >> IORING_CQE_BUFFER_SHIFT


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


class ProvidedBuffers:
    """``count`` buffers of ``size`` bytes, registered on ``ring`` as group ``bgid``, all
    provided at once.  One thread: the ring's owner."""

    def __init__(self, ring: Ring, count: int, size: int, bgid: int = 0) -> None:
        entries = 1
        while entries < count:
            entries *= 2
        if entries > _MAX_ENTRIES:
            raise ValueError(f"{count} provided buffers: at most {_MAX_ENTRIES}")
        self.count, self.size, self.bgid, self.entries = count, size, bgid, entries
        ring_bytes = _round_up(entries * _ENTRY_SIZE, mmap.PAGESIZE)
        self._mem = mmap.mmap(-1, ring_bytes + count * size)
        anchor = ctypes.c_char.from_buffer(self._mem)
        self._anchor: ctypes.c_char | None = anchor
        self.ring_addr = ctypes.addressof(anchor)
        self._bytes = memoryview(self._mem)
        self._buf_base = self.ring_addr + ring_bytes
        self._buf_off = ring_bytes
        self._mask = entries - 1
        self._tail = 0
        ring.register_buf_ring(self.ring_addr, entries, bgid)
        for bid in range(count):
            self.recycle(bid)
        self.publish()

    def address(self, bid: int) -> int:
        return self._buf_base + bid * self.size

    def tags(self, bid: int, nbytes: int) -> list[int]:
        """The u16 values (ublk tags) the kernel wrote into buffer ``bid``: ``nbytes`` of them."""
        start = self._buf_off + bid * self.size
        view = self._bytes[start:start + nbytes].cast("H")
        try:
            return view.tolist()
        finally:
            view.release()

    def recycle(self, bid: int) -> None:
        """Give buffer ``bid`` back; the kernel sees it after :meth:`publish`."""
        _ENTRY.pack_into(self._bytes, (self._tail & self._mask) * _ENTRY_SIZE,
                         self._buf_base + bid * self.size, self.size, bid)
        self._tail = (self._tail + 1) & 0xFFFF

    def publish(self) -> None:
        """Make every recycled buffer visible: the ring's u16 tail, after the entries."""
        struct.pack_into("<H", self._bytes, _TAIL, self._tail)

    @property
    def tail(self) -> int:
        return self._tail

    def close(self) -> None:
        """Drop the memory (after the ring is closed: the kernel no longer selects from it)."""
        self._bytes.release()
        self._anchor = None
        try:
            self._mem.close()
        except BufferError:
            pass
