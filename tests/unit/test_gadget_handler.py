"""How a ready tag's descriptor becomes target I/O, and what goes back to the kernel."""

from __future__ import annotations

import errno

import pytest

from ublk_bindings import (
    UBLK_IO_F_FUA,
    UBLK_IO_F_NOUNMAP,
    UBLK_IO_OP_DISCARD,
    UBLK_IO_OP_FLUSH,
    UBLK_IO_OP_READ,
    UBLK_IO_OP_WRITE,
    UBLK_IO_OP_WRITE_ZEROES,
    UBLK_IO_OP_ZONE_OPEN,
    ublksrv_io_desc,
)
from ublk_gadget.handler import IOErrors, RequestHandler
from ublk_gadget.targets import Target


class Recorder(Target):
    """A target that records what it was asked to do."""

    def __init__(self, size: int = 1 << 20, read_only: bool = False) -> None:
        super().__init__(size, 512, read_only)
        self.calls: list[tuple[object, ...]] = []
        self.fail: OSError | None = None

    def _record(self, *call: object) -> None:
        self.calls.append(call)
        if self.fail:
            raise self.fail

    def read(self, offset: int, view: memoryview) -> int:
        self._record("read", offset, len(view))
        view[:] = b"r" * len(view)
        return len(view)

    def write(self, offset: int, view: memoryview, fua: bool) -> int:
        self._record("write", offset, bytes(view), fua)
        return len(view)

    def flush(self) -> None:
        self._record("flush")

    def discard(self, offset: int, length: int) -> None:
        self._record("discard", offset, length)

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        self._record("write_zeroes", offset, length, unmap)


def iod(op: int, start_sector: int = 0, nr_sectors: int = 0, flags: int = 0) -> ublksrv_io_desc:
    d = ublksrv_io_desc()
    d.op_flags = op | flags
    d.nr_sectors = nr_sectors
    d.start_sector = start_sector
    return d


def serve(target: Target, desc: ublksrv_io_desc, buf: bytearray | None = None) -> int:
    return RequestHandler(target)(7, desc, memoryview(buf if buf is not None else bytearray(65536)))


def test_a_read_fills_the_start_of_the_tag_buffer_and_returns_its_bytes() -> None:
    t = Recorder()
    buf = bytearray(65536)
    assert serve(t, iod(UBLK_IO_OP_READ, start_sector=8, nr_sectors=2), buf) == 1024
    assert t.calls == [("read", 4096, 1024)]  # sectors are 512 bytes whatever the block size
    assert buf[:1024] == b"r" * 1024 and buf[1024:] == bytes(65536 - 1024)


def test_a_write_takes_its_data_from_the_tag_buffer() -> None:
    t = Recorder()
    buf = bytearray(b"w" * 512 + b"x" * 512)
    assert serve(t, iod(UBLK_IO_OP_WRITE, start_sector=1, nr_sectors=1), buf) == 512
    assert t.calls == [("write", 512, b"w" * 512, False)]


def test_fua_is_read_from_the_op_flags_in_place() -> None:
    t = Recorder()
    serve(t, iod(UBLK_IO_OP_WRITE, nr_sectors=1, flags=UBLK_IO_F_FUA))
    assert t.calls[0][-1] is True


def test_flush_discard_and_write_zeroes_complete_with_zero() -> None:
    t = Recorder()
    assert serve(t, iod(UBLK_IO_OP_FLUSH)) == 0
    assert serve(t, iod(UBLK_IO_OP_DISCARD, start_sector=16, nr_sectors=8)) == 0
    assert serve(t, iod(UBLK_IO_OP_WRITE_ZEROES, start_sector=0, nr_sectors=8)) == 0
    assert serve(t, iod(UBLK_IO_OP_WRITE_ZEROES, nr_sectors=8, flags=UBLK_IO_F_NOUNMAP)) == 0
    assert t.calls == [
        ("flush",),
        ("discard", 8192, 4096),
        ("write_zeroes", 0, 4096, True),
        ("write_zeroes", 0, 4096, False),  # NOUNMAP: the range must stay allocated
    ]


def test_a_flush_carries_no_range_and_is_served_whatever_its_sector() -> None:
    t = Recorder(size=4096)
    assert serve(t, iod(UBLK_IO_OP_FLUSH, start_sector=(1 << 64) - 1)) == 0  # as blk-flush sends it
    assert t.calls == [("flush",)]


def test_an_op_the_target_does_not_serve_is_eopnotsupp() -> None:
    assert serve(Recorder(), iod(UBLK_IO_OP_ZONE_OPEN)) == -errno.EOPNOTSUPP


def test_a_target_error_goes_back_as_minus_errno() -> None:
    t = Recorder()
    t.fail = OSError(errno.ENOSPC, "full")
    assert serve(t, iod(UBLK_IO_OP_WRITE, nr_sectors=1)) == -errno.ENOSPC


def test_a_request_past_the_end_of_the_target_is_eio_and_never_reaches_it() -> None:
    t = Recorder(size=4096)
    assert serve(t, iod(UBLK_IO_OP_READ, start_sector=7, nr_sectors=2)) == -errno.EIO
    assert t.calls == []


@pytest.mark.parametrize("op", [UBLK_IO_OP_WRITE, UBLK_IO_OP_DISCARD, UBLK_IO_OP_WRITE_ZEROES])
def test_a_read_only_target_refuses_every_change(op: int) -> None:
    t = Recorder(read_only=True)
    assert serve(t, iod(op, nr_sectors=1)) == -errno.EROFS
    assert t.calls == []


def test_a_read_only_target_still_reads_and_flushes() -> None:
    t = Recorder(read_only=True)
    assert serve(t, iod(UBLK_IO_OP_READ, nr_sectors=1)) == 512
    assert serve(t, iod(UBLK_IO_OP_FLUSH)) == 0


# --- failures of the backing store: told once, then counted ----------------------------------

def test_a_failing_backing_store_is_logged_once_with_device_and_sectors_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = Recorder(size=8 << 20)
    t.fail = OSError(errno.EIO, "Input/output error")
    errors = IOErrors().named("/dev/ublkb4")
    handler = RequestHandler(t, errors)
    buf = memoryview(bytearray(65536))
    with caplog.at_level("ERROR", logger="ublk_gadget"):
        assert handler(1, iod(UBLK_IO_OP_READ, 2048, 8), buf) == -errno.EIO
        assert handler(2, iod(UBLK_IO_OP_READ, 4096, 8), buf) == -errno.EIO
        assert handler(3, iod(UBLK_IO_OP_READ, 1024, 16), buf) == -errno.EIO
        t.fail = OSError(errno.ENOSPC, "No space left on device")
        assert handler(4, iod(UBLK_IO_OP_WRITE, 64, 8), buf) == -errno.ENOSPC
    assert caplog.messages == [
        "/dev/ublkb4: READ of sectors 2048-2055 failed: EIO (Input/output error); more of "
        "these are counted, not logged one by one",
        "/dev/ublkb4: WRITE of sectors 64-71 failed: ENOSPC (No space left on device); more of "
        "these are counted, not logged one by one",
    ]
    caplog.clear()
    with caplog.at_level("ERROR", logger="ublk_gadget"):
        errors.report()
        errors.report()  # nothing new: nothing said
    assert caplog.messages == ["/dev/ublkb4: 2 more READ failures (EIO) in sectors 1024-4103"]


def test_requests_that_succeed_are_not_counted(caplog: pytest.LogCaptureFixture) -> None:
    errors = IOErrors().named("/dev/ublkb0")
    with caplog.at_level("ERROR", logger="ublk_gadget"):
        assert RequestHandler(Recorder(), errors)(1, iod(UBLK_IO_OP_READ, 0, 8),
                                                  memoryview(bytearray(4096))) == 4096
        errors.report()
    assert caplog.messages == []
