"""ProvidedBuffers on a real io_uring of the host: the kernel selects our buffers, in the
order we provide them, and takes recycled ones only once the tail is published."""

from __future__ import annotations

import errno
import os

import pytest

from ublk_bindings.buf_ring import ProvidedBuffers, buffer_id
from ublk_bindings.io_uring import IORING_CQE_F_BUFFER, IORING_OP_READ, IOSQE_BUFFER_SELECT
from ublk_bindings.ring import Ring


def read_selected(ring: Ring, fd: int, bgid: int, user_data: int) -> None:
    """A read of up to a buffer's size into a buffer the kernel picks from group ``bgid``."""
    ring.prep(IORING_OP_READ, fd, 0, 0, 0, user_data, sqe_flags=IOSQE_BUFFER_SELECT,
              buf_index=bgid)  # buf_group shares buf_index's u16 in the SQE


def test_reads_land_in_the_provided_buffers_and_recycling_needs_publish() -> None:
    ring = Ring(8)
    r, w = os.pipe()
    try:
        pb = ProvidedBuffers(ring, 3, 16, bgid=5)
        assert pb.entries == 4 and pb.tail == 3 and pb.ring_addr % os.sysconf("SC_PAGESIZE") == 0
        got = []
        for n in range(3):
            os.write(w, bytes([n + 1, 0]) * 2)  # two u16 "tags" each: n+1, n+1
            read_selected(ring, r, 5, n)
            ring.submit(1)
            [u], [res], [fl] = ring.reap()
            assert fl & IORING_CQE_F_BUFFER and res == 4
            got.append((u, buffer_id(fl), pb.tags(buffer_id(fl), res)))
        assert got == [(0, 0, [1, 1]), (1, 1, [2, 2]), (2, 2, [3, 3])]
        os.write(w, b"\x07\x00")
        read_selected(ring, r, 5, 9)
        ring.submit(1)
        assert ring.reap()[1] == [-errno.ENOBUFS]  # all three are ours again
        pb.recycle(1)
        read_selected(ring, r, 5, 10)
        ring.submit(1)
        assert ring.reap()[1] == [-errno.ENOBUFS]  # recycled, not yet published
        pb.publish()
        read_selected(ring, r, 5, 11)
        ring.submit(1)
        [u], [res], [fl] = ring.reap()
        assert (u, buffer_id(fl), pb.tags(buffer_id(fl), res)) == (11, 1, [7])
    finally:
        os.close(r)
        os.close(w)
        ring.close()
        pb.close()


def test_too_many_buffers_are_refused() -> None:
    ring = Ring(2)
    try:
        with pytest.raises(ValueError, match="at most 32768"):
            ProvidedBuffers(ring, 40000, 2)
    finally:
        ring.close()
