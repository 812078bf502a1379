"""The io_uring layer on the host's own kernel: NOPs, file I/O, SQE128, batched reaping.

No ublk here: these prove the ring against real io_uring (which the host has), so a ublk
failure in the VM can be told apart from a ring bug.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import weakref
from pathlib import Path

import pytest

from ublk_bindings import liburing
from ublk_bindings.errors import LiburingUnavailable, UblkError, UblkTimeout
from ublk_bindings.io_uring import (
    IORING_OP_NOP,
    IORING_OP_READ,
    IORING_OP_URING_CMD,
    IORING_OP_WRITE,
    io_uring_cqe,
    io_uring_sqe,
)
from ublk_bindings.ring import CQE_SIZE, SQE_CMD_OFFSET, SQE_SIZE, Ring
from ublk_bindings.ublk_cmd import ublksrv_ctrl_cmd, ublksrv_io_cmd


@pytest.fixture(scope="module", autouse=True)
def _liburing() -> None:
    try:
        liburing.load()
    except LiburingUnavailable as e:
        pytest.skip(f"liburing-ffi unavailable: {e}")


def nop(ring: Ring, user_data: int) -> None:
    sqe = ring.get_sqe()
    sqe.opcode = IORING_OP_NOP
    sqe.user_data = user_data


def test_layout_comes_from_the_generated_uapi() -> None:
    # the kernel ABI: a 64-byte SQE whose uring_cmd payload starts at byte 48; 16-byte CQE
    assert (SQE_SIZE, SQE_CMD_OFFSET, CQE_SIZE) == (64, 48, 16)
    assert SQE_CMD_OFFSET == io_uring_sqe.cmd.offset
    assert ctypes.sizeof(io_uring_cqe) == CQE_SIZE


def test_nop_round_trip() -> None:
    with Ring(4) as ring:
        nop(ring, 0xDEAD_BEEF_0000_0001)
        assert ring.submit(wait_nr=1) == 1
        assert ring.reap() == ([0xDEAD_BEEF_0000_0001], [0], [0])
        assert ring.reap() == ([], [], [])


def test_batches_keep_order_across_cq_wraparound() -> None:
    # 4 SQ entries, 8 CQ entries: 7 rounds of 3 push the CQ head around the ring twice
    with Ring(4, cq_entries=8) as ring:
        assert ring.cq_entries == 8
        seen: list[int] = []
        for round_no in range(7):
            for i in range(3):
                nop(ring, round_no * 10 + i)
            ring.submit(wait_nr=3)
            user_data, res, _ = ring.reap()
            assert res == [0, 0, 0]
            seen += user_data
        assert seen == [r * 10 + i for r in range(7) for i in range(3)]


def test_reap_takes_at_most_max() -> None:
    with Ring(8) as ring:
        for i in range(5):
            nop(ring, i)
        ring.submit(wait_nr=5)
        assert ring.reap(2)[0] == [0, 1]
        assert ring.reap()[0] == [2, 3, 4]


def test_reap_never_asks_for_more_than_the_cq_holds() -> None:
    with Ring(4, cq_entries=4) as ring:
        for i in range(4):
            nop(ring, i)
        ring.submit(wait_nr=4)
        assert ring.reap(1 << 20) == ([0, 1, 2, 3], [0, 0, 0, 0], [0, 0, 0, 0])


def test_full_submission_queue_is_flushed_not_overrun() -> None:
    with Ring(2, cq_entries=16) as ring:
        for i in range(6):  # more SQEs than the SQ holds: get_sqe submits to make room
            nop(ring, i)
        ring.submit(wait_nr=6)
        got: list[int] = []
        while len(got) < 6:
            got += ring.reap()[0]
        assert got == list(range(6))


def test_write_then_read_a_file(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"\0" * 8192)
    data = os.urandom(4096)
    src = ctypes.create_string_buffer(data, 4096)
    dst = ctypes.create_string_buffer(4096)
    fd = os.open(path, os.O_RDWR)
    try:
        with Ring(4) as ring:
            sqe = ring.get_sqe()
            sqe.opcode, sqe.fd, sqe.off = IORING_OP_WRITE, fd, 4096
            sqe.addr, sqe.len, sqe.user_data = ctypes.addressof(src), 4096, 1
            ring.submit(wait_nr=1)
            assert ring.reap() == ([1], [4096], [0])
            sqe = ring.get_sqe()
            sqe.opcode, sqe.fd, sqe.off = IORING_OP_READ, fd, 4096
            sqe.addr, sqe.len, sqe.user_data = ctypes.addressof(dst), 4096, 2
            ring.submit(wait_nr=1)
            assert ring.reap() == ([2], [4096], [0])
    finally:
        os.close(fd)
    assert dst.raw == data
    assert path.read_bytes()[4096:] == data


def test_errors_arrive_as_negative_res(tmp_path: Path) -> None:
    with Ring(2) as ring:
        sqe = ring.get_sqe()
        sqe.opcode, sqe.fd, sqe.user_data = IORING_OP_READ, 1_000_000, 7  # no such fd
        ring.submit(wait_nr=1)
        assert ring.reap() == ([7], [-errno.EBADF], [0])


def test_sqe128_ring_carries_an_80_byte_uring_cmd(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        with Ring(2, sqe128=True) as ring:
            assert ring.sqe_size == 128
            payload = ublksrv_ctrl_cmd()
            payload.dev_id, payload.queue_id, payload.len = 0x01020304, 0xFFFF, 8
            payload.data[0] = 0x1122334455667788
            sqe = ring.prep_uring_cmd(fd, 0xABCD, payload, user_data=99)
            assert (sqe.opcode, sqe.fd, sqe.cmd_op, sqe.user_data) == (
                IORING_OP_URING_CMD, fd, 0xABCD, 99)
            cmd = ctypes.string_at(ctypes.addressof(sqe) + SQE_CMD_OFFSET, ctypes.sizeof(payload))
            assert cmd == bytes(payload)
            ring.submit(wait_nr=1)
            # a regular file has no ->uring_cmd: the kernel saw a well-formed URING_CMD
            assert ring.reap() == ([99], [-errno.EOPNOTSUPP], [0])
    finally:
        os.close(fd)


def test_64_byte_ring_refuses_a_control_payload() -> None:
    with Ring(2) as ring:
        assert ring.sqe_size == 64
        ring.prep_uring_cmd(0, 1, ublksrv_io_cmd(), user_data=1)  # 16 bytes fit
        with pytest.raises(ValueError, match="ublksrv_ctrl_cmd is 32 bytes; a 64-byte SQE"):
            ring.prep_uring_cmd(0, 1, ublksrv_ctrl_cmd(), user_data=2)


def test_get_sqe_is_zeroed_even_when_the_slot_was_used() -> None:
    with Ring(1) as ring:
        sqe = ring.get_sqe()
        sqe.opcode, sqe.user_data = IORING_OP_NOP, 5
        sqe.off, sqe.addr, sqe.len = 0x1234, 0x5678, 9  # ignored by NOP, left in the slot
        ring.submit(wait_nr=1)
        assert ring.reap() == ([5], [0], [0])
        again = ring.get_sqe()  # a 1-entry ring hands out the same slot again
        assert ctypes.addressof(again) == ctypes.addressof(sqe)
        assert ctypes.string_at(ctypes.addressof(again), ring.sqe_size) == bytes(ring.sqe_size)


def test_held_buffer_lives_until_its_completion_is_reaped() -> None:
    class Buffer:
        pass

    with Ring(2) as ring:
        buf = Buffer()
        gone = weakref.ref(buf)
        nop(ring, 3)
        ring.hold(3, buf)
        del buf
        ring.submit(wait_nr=1)
        gc.collect()
        assert gone() is not None, "released before its completion was reaped"
        ring.reap()
        gc.collect()
        assert gone() is None


def test_buffers_in_flight_when_the_ring_closes_are_never_freed() -> None:
    from ublk_bindings import ring as ring_module

    class Buffer:
        pass

    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        ring = Ring(2)
        buf = Buffer()
        gone = weakref.ref(buf)
        sqe = ring.get_sqe()  # a read that never completes: nobody writes to the pipe
        sqe.opcode, sqe.fd, sqe.addr, sqe.len, sqe.user_data = IORING_OP_READ, r, 0, 1, 8
        ring.hold(8, buf)
        ring.submit()
        del buf, sqe
        ring.close()
        del ring
        gc.collect()
        assert gone() is not None
        assert any(o is gone() for o in ring_module._ORPHANS)
    finally:
        os.close(r)
        os.close(w)


def test_another_thread_wakes_a_waiting_ring_through_a_pipe() -> None:
    # what Queue.kick relies on: a read pending on a pipe completes when any thread writes
    import threading

    r, w = os.pipe2(os.O_CLOEXEC)
    buf = ctypes.create_string_buffer(8)
    try:
        with Ring(2) as ring:
            sqe = ring.get_sqe()
            sqe.opcode, sqe.fd, sqe.addr, sqe.len = IORING_OP_READ, r, ctypes.addressof(buf), 1
            sqe.user_data = 1 << 32
            timer = threading.Timer(0.1, os.write, (w, b"k"))
            timer.start()
            ring.submit(wait_nr=1, timeout=10)
            assert ring.reap() == ([1 << 32], [1], [0])
            timer.join()
    finally:
        os.close(r)
        os.close(w)


def test_put_copies_a_prepared_image() -> None:
    image = io_uring_sqe()
    image.opcode, image.user_data = IORING_OP_NOP, 77
    with Ring(4) as ring:
        ring.put(memoryview(image).cast("B"))
        ring.put(bytes(image))
        ring.submit(wait_nr=2)
        assert ring.reap() == ([77, 77], [0, 0], [0, 0])


def test_bounded_wait_times_out() -> None:
    with Ring(2) as ring:
        with pytest.raises(UblkTimeout):
            ring.submit(wait_nr=1, timeout=0.05)


def test_closed_ring_refuses_use() -> None:
    ring = Ring(2)
    ring.close()
    ring.close()  # idempotent
    assert ring.closed
    with pytest.raises(ValueError, match="closed"):
        ring.get_sqe()
    with pytest.raises(ValueError, match="closed"):
        ring.submit()


def test_impossible_ring_names_the_call() -> None:
    with pytest.raises(UblkError, match=r"^io_uring_queue_init_params\(entries=0.*EINVAL"):
        Ring(0)


def test_missing_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(liburing.ENV, "/nonexistent/liburing-ffi.so.2")
    liburing.load.cache_clear()
    try:
        with pytest.raises(LiburingUnavailable, match=r"/nonexistent/liburing-ffi.so.2.*"
                                                      r"liburing >= 2.4.*UBLK_BINDINGS_LIBURING"):
            liburing.load()
    finally:
        liburing.load.cache_clear()
        monkeypatch.undo()
        liburing.load()


QUEUE_FLAGS = 0
try:  # the flags a ublk queue ring uses; the host kernel may predate DEFER_TASKRUN (6.1)
    from ublk_bindings.io import QUEUE_RING_FLAGS as QUEUE_FLAGS
except ImportError:  # pragma: no cover
    pass


def nop_image(user_data: int) -> bytes:
    image = io_uring_sqe()
    image.opcode, image.user_data = IORING_OP_NOP, user_data
    return bytes(image)


def test_put_writes_the_mapped_sq_without_calling_liburing() -> None:
    # liburing 2.4+'s struct io_uring_sq is where ring.py expects it, so the hot path is on
    with Ring(4) as ring:
        assert ring._sqe_bytes is not None and ring._sq_tail_word is not None
        ring.put(nop_image(1))
        assert ring._lib.io_uring_sq_ready(ring._ring) == 1  # liburing sees our SQE


@pytest.mark.parametrize("flags", [0, QUEUE_FLAGS], ids=["plain", "defer-taskrun"])
def test_put_and_get_sqe_interleave_across_many_ring_wraps(flags: int) -> None:
    with Ring(4, flags=flags) as ring:
        for i in range(50):  # 100 SQEs through a 4-entry SQ, 100 CQEs through an 8-entry CQ
            ring.put(nop_image(i))
            nop(ring, 1000 + i)
            assert ring.submit(wait_nr=2) == 2
            assert ring.reap() == ([i, 1000 + i], [0, 0], [0, 0])
        assert ring.reap() == ([], [], [])


def test_a_defer_taskrun_ring_reads_the_cq_tail_itself() -> None:
    with Ring(4, flags=QUEUE_FLAGS) as ring:
        for i in range(3):
            ring.put(nop_image(i))
        ring.submit(wait_nr=3)
        assert ring.reap(2) == ([0, 1], [0, 0], [0, 0])  # partial: the head moves by what was taken
        assert ring._cq_ktail is not None
        assert ring.reap() == ([2], [0], [0])
        assert ring.reap() == ([], [], [])


def test_put_into_a_full_sq_submits_first() -> None:
    with Ring(2) as ring:
        for i in range(5):
            ring.put(nop_image(i))  # the 3rd and 5th find the SQ full and submit it
        ring.submit(wait_nr=5)
        got: list[int] = []
        while len(got) < 5:
            got += ring.reap()[0]
        assert sorted(got) == list(range(5))


def test_put_many_queues_a_batch_and_falls_back_when_it_does_not_fit() -> None:
    with Ring(4) as ring:
        ring.put_many([memoryview(nop_image(i)) for i in range(3)])
        ring.put_many([memoryview(nop_image(i)) for i in range(3, 6)])  # 1 slot left: submits
        ring.submit(wait_nr=6)
        got: list[int] = []
        while len(got) < 6:
            got += ring.reap()[0]
        assert sorted(got) == list(range(6))


def test_a_liburing_laid_out_otherwise_is_driven_through_its_functions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ublk_bindings import ring as ring_module

    # as if sqe_tail sat elsewhere: the check at set-up must refuse, and leave no trace
    monkeypatch.setattr(ring_module, "_LIBURING_SQE_TAIL", ring_module._LIBURING_SQE_TAIL + 8)
    with Ring(4) as ring:
        assert ring._sqe_bytes is None
        assert ring._lib.io_uring_sq_ready(ring._ring) == 0
        ring.put_many([memoryview(nop_image(i)) for i in range(3)])
        ring.put(nop_image(3))
        ring.submit(wait_nr=4)
        assert ring.reap() == ([0, 1, 2, 3], [0, 0, 0, 0], [0, 0, 0, 0])


def test_prep_packs_an_sqe_the_kernel_reads_as_the_generated_struct_says(tmp_path: Path) -> None:
    from ublk_bindings.prep import prep_read, prep_write

    path = tmp_path / "data"
    path.write_bytes(b"\0" * 8192)
    data = os.urandom(4096)
    src = ctypes.create_string_buffer(data, 4096)
    dst = ctypes.create_string_buffer(4096)
    fd = os.open(path, os.O_RDWR)
    try:
        with Ring(4) as ring:
            prep_write(ring, 1 << 40 | 5, fd, ctypes.addressof(src), 4096, 4096, os.RWF_DSYNC)
            ring.submit(wait_nr=1)
            assert ring.reap() == ([1 << 40 | 5], [4096], [0])
            prep_read(ring, 6, fd, ctypes.addressof(dst) + 100, 1000, 4196)
            ring.submit(wait_nr=1)
            assert ring.reap() == ([6], [1000], [0])
    finally:
        os.close(fd)
    assert dst.raw[100:1100] == data[100:1100]


def test_prep_on_a_full_sq_submits_first() -> None:
    from ublk_bindings.io_uring import IORING_OP_NOP

    with Ring(2, cq_entries=16) as ring:
        for i in range(5):
            ring.prep(IORING_OP_NOP, -1, 0, 0, 0, i)
        ring.submit(wait_nr=5)
        got: list[int] = []
        while len(got) < 5:
            got += ring.reap()[0]
        assert got == list(range(5))


def test_prep_falls_back_to_liburing_when_its_layout_is_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ublk_bindings import ring as ring_module
    from ublk_bindings.io_uring import IORING_OP_NOP

    monkeypatch.setattr(ring_module, "_LIBURING_SQE_TAIL", ring_module._LIBURING_SQE_TAIL + 8)
    with Ring(4) as ring:
        assert ring._sqe_bytes is None
        ring.prep(IORING_OP_NOP, -1, 0, 0, 0, 42)
        ring.submit(wait_nr=1)
        assert ring.reap() == ([42], [0], [0])


def test_reap_returns_each_cqes_flags() -> None:
    # a multishot poll posts CQEs with IORING_CQE_F_MORE (more to come) set
    import select

    from ublk_bindings.io_uring import IORING_CQE_F_MORE, IORING_OP_POLL_ADD, IORING_POLL_ADD_MULTI

    efd = os.eventfd(1)
    try:
        with Ring(4) as ring:
            ring.prep(IORING_OP_POLL_ADD, efd, 0, IORING_POLL_ADD_MULTI, 0, 9,
                      op_flags=select.POLLIN)
            ring.submit(wait_nr=1)
            user_data, res, flags = ring.reap()
            assert user_data == [9] and res[0] & select.POLLIN
            assert flags[0] & IORING_CQE_F_MORE
    finally:
        os.close(efd)
