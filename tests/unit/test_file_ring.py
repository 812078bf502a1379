"""The file target's ring I/O (``gadget_ref.targets.file_ring``): which SQE each request becomes,
and what each CQE makes of it.

Two rigs: a recording ring, to script the kernel's answers (short transfers, EAGAIN, a file
system without ZERO_RANGE), and the host's real io_uring on a real file, to prove the SQEs
do what they say.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ublk_bindings import (
    UBLK_IO_F_FUA,
    UBLK_IO_F_NOUNMAP,
    UBLK_IO_OP_DISCARD,
    UBLK_IO_OP_FLUSH,
    UBLK_IO_OP_READ,
    UBLK_IO_OP_WRITE,
    UBLK_IO_OP_WRITE_ZEROES,
)
from ublk_bindings.buffers import BufferMode
from ublk_bindings.io_uring import (
    IORING_FSYNC_DATASYNC,
    IORING_OP_FALLOCATE,
    IORING_OP_FSYNC,
    IORING_OP_READ,
    IORING_OP_READ_FIXED,
    IORING_OP_WRITE,
    IORING_OP_WRITE_FIXED,
    IOSQE_CQE_SKIP_SUCCESS,
    IOSQE_IO_HARDLINK,
)
from ublk_bindings.queue import Queue
from ublk_bindings.ring import Ring
from ublk_gadget.fallocate import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
from ublk_gadget.targets.file_ring import RETRIES, FileRingIO
from ublk_gadget.spec import DeviceSpec
from ublk_gadget.targets import FileTarget

KiB = 1 << 10
BUF = 64 * KiB


@dataclass
class Prepped:
    opcode: int
    fd: int
    addr: int
    length: int
    offset: int
    user_data: int
    op_flags: int


@dataclass
class RecordingRing:
    sqes: list[Prepped] = field(default_factory=list)
    buf_index: list[int] = field(default_factory=list)

    def prep(self, opcode: int, fd: int, addr: int, length: int, offset: int, user_data: int,
             *, op_flags: int = 0, buf_index: int = 0, sqe_flags: int = 0, **_: int) -> None:
        self.sqes.append(Prepped(opcode, fd, addr, length, offset, user_data, op_flags))
        self.buf_index.append(buf_index)


class FakeQueue:
    """What FileRingIO uses of a Queue: its ring, the user_data codec, tag buffer addresses,
    the zero-copy buffer index and commands."""

    io_data = staticmethod(Queue.io_data)
    buf_index = staticmethod(Queue.buf_index)

    def prep_register_io_buf(self, tag: int, user_data: int, sqe_flags: int = 0) -> None:
        assert isinstance(self.ring, RecordingRing)
        self.ring.sqes.append(Prepped(-1, tag, 0, 0, 0, user_data, sqe_flags))

    def prep_unregister_io_buf(self, tag: int, user_data: int, sqe_flags: int = 0) -> None:
        assert isinstance(self.ring, RecordingRing)
        self.ring.sqes.append(Prepped(-2, tag, 0, 0, 0, user_data, sqe_flags))

    def __init__(self, ring: object) -> None:
        self.ring = ring
        self.buf = mmap.mmap(-1, 4 * BUF)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))

    def buffer_address(self, tag: int) -> int:
        return self.base + tag * BUF


@pytest.fixture
def target(tmp_path: Path) -> FileTarget:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(1 << 20))
    return FileTarget(DeviceSpec("file", path=str(path)))


def started(target: FileTarget, op: int, offset: int = 0, length: int = 0,
            op_flags: int = 0) -> tuple[FileRingIO, FakeQueue, RecordingRing]:
    ring = RecordingRing()
    q = FakeQueue(ring)
    io = FileRingIO(target, 4)
    assert io.start(q, 2, op, op | op_flags, offset, length) is None  # type: ignore[arg-type]
    return io, q, ring


def test_a_read_is_one_read_sqe_into_the_tag_s_buffer(target: FileTarget) -> None:
    io, q, ring = started(target, UBLK_IO_OP_READ, 8192, 4096)
    assert ring.sqes == [Prepped(IORING_OP_READ, target.fd, q.buffer_address(2), 4096, 8192,
                                 Queue.io_data(2), 0)]
    assert io.done(q, 2, 0, 4096) == 4096  # type: ignore[arg-type]


def test_a_fua_write_carries_rwf_dsync(target: FileTarget) -> None:
    _, _, ring = started(target, UBLK_IO_OP_WRITE, 0, 4096, UBLK_IO_F_FUA)
    assert (ring.sqes[0].opcode, ring.sqes[0].op_flags) == (IORING_OP_WRITE, os.RWF_DSYNC)
    _, _, ring = started(target, UBLK_IO_OP_WRITE, 0, 4096)
    assert ring.sqes[0].op_flags == 0


def test_flush_discard_and_write_zeroes_become_fdatasync_and_fallocate(target: FileTarget) -> None:
    _, _, ring = started(target, UBLK_IO_OP_FLUSH)
    assert (ring.sqes[0].opcode, ring.sqes[0].op_flags) == (IORING_OP_FSYNC, IORING_FSYNC_DATASYNC)
    punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    _, _, ring = started(target, UBLK_IO_OP_DISCARD, 4096, 8192)
    # io_uring's fallocate: the length travels in addr, the mode in len
    assert (ring.sqes[0].opcode, ring.sqes[0].addr, ring.sqes[0].length,
            ring.sqes[0].offset) == (IORING_OP_FALLOCATE, 8192, punch, 4096)
    target.can_discard = True
    _, _, ring = started(target, UBLK_IO_OP_WRITE_ZEROES, 0, 4096)
    assert ring.sqes[0].length == punch  # unmapping allowed: a punch
    _, _, ring = started(target, UBLK_IO_OP_WRITE_ZEROES, 0, 4096, UBLK_IO_F_NOUNMAP)
    assert ring.sqes[0].length == FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE


def test_a_short_transfer_is_resubmitted_for_the_rest(target: FileTarget) -> None:
    io, q, ring = started(target, UBLK_IO_OP_WRITE, 65536, 16384, UBLK_IO_F_FUA)
    assert io.done(q, 2, 0, 4096) is None  # type: ignore[arg-type]
    rest = ring.sqes[-1]
    assert (rest.addr, rest.length, rest.offset, rest.op_flags) == (
        q.buffer_address(2) + 4096, 12288, 65536 + 4096, os.RWF_DSYNC)
    assert io.done(q, 2, 0, 12288) == 16384  # type: ignore[arg-type]


def test_no_progress_is_an_io_error_not_a_loop(target: FileTarget) -> None:
    io, q, ring = started(target, UBLK_IO_OP_READ, 0, 4096)
    assert io.done(q, 2, 0, 0) == -errno.EIO  # type: ignore[arg-type]
    assert len(ring.sqes) == 1


def test_eagain_is_retried_a_bounded_number_of_times(target: FileTarget) -> None:
    io, q, ring = started(target, UBLK_IO_OP_READ, 0, 4096)
    for _ in range(RETRIES):
        assert io.done(q, 2, 0, -errno.EAGAIN) is None  # type: ignore[arg-type]
    assert len(ring.sqes) == 1 + RETRIES
    assert io.done(q, 2, 0, -errno.EAGAIN) == -errno.EAGAIN  # type: ignore[arg-type]


def test_errors_are_returned_as_negative_errno(target: FileTarget) -> None:
    io, q, _ = started(target, UBLK_IO_OP_WRITE, 0, 4096)
    assert io.done(q, 2, 0, -errno.ENOSPC) == -errno.ENOSPC  # type: ignore[arg-type]


def contents(target: FileTarget, offset: int, length: int) -> bytes:
    """Read through a buffered fd of its own: the target's may be O_DIRECT."""
    with open(target.path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_without_zero_range_the_zeroes_are_written_and_remembered(target: FileTarget) -> None:
    with open(target.path, "r+b") as f:
        f.write(b"\xff" * 8192)
    io, q, ring = started(target, UBLK_IO_OP_WRITE_ZEROES, 0, 8192, UBLK_IO_F_NOUNMAP)
    assert io.done(q, 2, 0, -errno.EOPNOTSUPP) == 0  # type: ignore[arg-type]
    assert contents(target, 0, 8192) == bytes(8192)
    assert not target.zero_range_works
    io2 = FileRingIO(target, 4)  # the next one goes the slow way at once, no SQE
    assert io2.start(q, 1, UBLK_IO_OP_WRITE_ZEROES,  # type: ignore[arg-type]
                     UBLK_IO_OP_WRITE_ZEROES | UBLK_IO_F_NOUNMAP, 0, 4096) == 0
    assert len(ring.sqes) == 1


def test_on_a_real_ring_the_sqes_write_read_and_punch_the_file(target: FileTarget) -> None:
    from ublk_bindings import liburing
    from ublk_bindings.errors import LiburingUnavailable

    try:
        liburing.load()
    except LiburingUnavailable as e:
        pytest.skip(f"liburing-ffi unavailable: {e}")
    data = os.urandom(8192)
    with Ring(8) as ring:
        q = FakeQueue(ring)
        io = FileRingIO(target, 4)

        def serve(op: int, offset: int, length: int, flags: int = 0) -> int:
            assert io.start(q, 1, op, op | flags, offset, length) is None  # type: ignore[arg-type]
            while True:
                ring.submit(wait_nr=1)
                (ud,), (res,), _ = ring.reap()
                assert ud == Queue.io_data(1)
                result = io.done(q, 1, 0, res)  # type: ignore[arg-type]
                if result is not None:
                    return result

        q.buf[BUF:BUF + 8192] = data
        assert serve(UBLK_IO_OP_WRITE, 12288, 8192, UBLK_IO_F_FUA) == 8192
        assert serve(UBLK_IO_OP_FLUSH, 0, 0) == 0
        assert contents(target, 12288, 8192) == data
        q.buf[BUF:BUF + 8192] = bytes(8192)
        assert serve(UBLK_IO_OP_READ, 12288, 8192) == 8192
        assert q.buf[BUF:BUF + 8192] == data
        if target.can_discard:
            assert serve(UBLK_IO_OP_DISCARD, 12288, 4096) == 0
            assert contents(target, 12288, 4096) == bytes(4096)


def zero_copy(target: FileTarget, mode: BufferMode, op: int, offset: int, length: int
              ) -> tuple[FileRingIO, FakeQueue, RecordingRing]:
    ring = RecordingRing()
    q = FakeQueue(ring)
    io = FileRingIO(target, 4, mode)
    assert io.start(q, 3, op, op, offset, length) is None  # type: ignore[arg-type]
    return io, q, ring


def test_auto_zc_reads_into_the_request_s_own_pages_at_buffer_index_tag(target: FileTarget) -> None:
    io, q, ring = zero_copy(target, BufferMode.AUTO_BUF_REG, UBLK_IO_OP_READ, 8192, 16384)
    assert ring.sqes == [Prepped(IORING_OP_READ_FIXED, target.fd, 0, 16384, 8192,
                                 Queue.io_data(3), 0)]
    assert ring.buf_index == [3]
    assert io.done(q, 3, 0, 4096) is None  # type: ignore[arg-type]
    assert (ring.sqes[-1].addr, ring.sqes[-1].length) == (4096, 12288)  # offset in the pages


def test_zero_copy_links_register_transfer_unregister_and_waits_for_both(
    target: FileTarget,
) -> None:
    io, q, ring = zero_copy(target, BufferMode.ZERO_COPY, UBLK_IO_OP_WRITE, 0, 4096)
    assert [s.opcode for s in ring.sqes] == [-1, IORING_OP_WRITE_FIXED, -2]
    assert [s.user_data for s in ring.sqes] == [Queue.io_data(3, 1), Queue.io_data(3),
                                               Queue.io_data(3, 2)]
    assert ring.sqes[0].op_flags == IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS
    assert io.done(q, 3, 0, 4096) is None  # type: ignore[arg-type]
    assert io.done(q, 3, 2, 0) == 4096  # type: ignore[arg-type]


def test_a_failed_register_is_the_request_s_error(target: FileTarget) -> None:
    io, q, _ = zero_copy(target, BufferMode.ZERO_COPY, UBLK_IO_OP_READ, 0, 4096)
    assert io.done(q, 3, 1, -errno.EBUSY) is None  # type: ignore[arg-type]
    assert io.done(q, 3, 0, -errno.EFAULT) is None  # type: ignore[arg-type]
    assert io.done(q, 3, 2, -errno.EINVAL) == -errno.EBUSY  # type: ignore[arg-type]
