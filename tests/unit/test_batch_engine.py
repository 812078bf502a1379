"""The batch engine (``UBLK_F_BATCH_IO``) on the host: a fake ring plays the driver.

:class:`BatchKernel` decodes every SQE of the queue with the generated structs: the
PREP_IO_CMDS and COMMIT_IO_CMDS element arrays are read from the queue's memory at
``sqe->addr`` (``ublk_batch_io`` header, ``ublk_elem_header`` + buffer address), and both
are answered at once, as the driver does.  The multishot FETCH_IO_CMDS delivers the script's
batches of tags the way the driver does: into the next buffer of the queue's provided-buffer
ring, read from that ring's memory (entries and tail), the buffer id in the CQE flags.  A
batch waits until its tags are the driver's again (prepared or committed), so a missing
commit fails the test.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import pytest

from ublk_bindings import user_data as ud
from ublk_bindings.batch import ELEMENT, BatchQueue
from ublk_bindings.buffers import BufferMode, buffer_mode
from ublk_bindings.device import queue_class
from ublk_bindings.errors import UblkError
from ublk_bindings.io_uring import (
    IORING_CQE_BUFFER_SHIFT,
    IORING_CQE_F_BUFFER,
    IORING_CQE_F_MORE,
    IORING_OP_READ,
    IORING_OP_URING_CMD,
    IORING_URING_CMD_MULTISHOT,
    IOSQE_BUFFER_SELECT,
    io_uring_buf,
    io_uring_sqe,
)
from ublk_bindings.prep import prep_read
from ublk_bindings.queue import Queue
from ublk_bindings.ring import SQE_CMD_OFFSET, Ring
from ublk_bindings.ublk_cmd import (
    UBLK_BATCH_F_HAS_BUF_ADDR,
    UBLK_F_BATCH_IO,
    UBLK_F_USER_COPY,
    UBLK_F_USER_RECOVERY,
    UBLK_IO_OP_READ,
    UBLK_IO_RES_ABORT,
    UBLK_U_IO_COMMIT_IO_CMDS,
    UBLK_U_IO_FETCH_IO_CMDS,
    UBLK_U_IO_PREP_IO_CMDS,
    ublk_batch_io,
    ublk_elem_header,
    ublksrv_ctrl_dev_info,
    ublksrv_io_desc,
)

DEPTH = 4
CHAR_FD = 1000
JOIN_S = 5.0
FETCH_UD = ud.batch_cmd(ud.BATCH_FETCH)


@dataclass(frozen=True)
class Tags:
    """The driver hands these tags over in one FETCH CQE."""

    tags: tuple[int, ...]


@dataclass(frozen=True)
class FetchEnd:
    """The multishot FETCH ends (no ``IORING_CQE_F_MORE``) with ``res``."""

    res: int


@dataclass(frozen=True)
class Io:
    """The completion of target SQE ``sub`` of ``tag``."""

    tag: int
    sub: int
    res: int


Event = Tags | FetchEnd | Io


def tags(*t: int) -> Tags:
    return Tags(t)


ABORT = FetchEnd(UBLK_IO_RES_ABORT)


@dataclass
class Batch:
    """A PREP or COMMIT as the fake driver read it."""

    cmd_op: int
    q_id: int
    flags: int
    elements: list[tuple[int, int, int, int]]  # (tag, buf_index, result, buf_addr)


@dataclass
class BatchKernel:
    """The queue's ring and, behind it, the batch commands of the ublk driver."""

    script: list[list[Event]]
    submits: list[list[str]] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    fetches: list[io_uring_sqe] = field(default_factory=list)
    delivered: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self.queued: list[tuple[str, object]] = []
        self.owned: set[int] = set(range(DEPTH))  # the server's until prepared/committed
        self.fetch_armed = False
        self.held: dict[int, tuple[object, ...]] = {}
        self.buf_ring: tuple[int, int, int] | None = None  # addr, entries, bgid
        self.head = 0
        self._cq: list[tuple[int, int, int]] = []
        self._wake_fd: int | None = None
        self._target_io: set[int] = set()
        self.waits: list[int] = []  # each submit's wait_nr

    # -- the Ring interface

    def register_buf_ring(self, ring_addr: int, entries: int, bgid: int) -> None:
        assert self.buf_ring is None
        self.buf_ring = (ring_addr, entries, bgid)

    def put(self, image: memoryview | bytes) -> None:
        sqe = io_uring_sqe.from_buffer_copy(bytes(image))
        assert sqe.opcode == IORING_OP_URING_CMD and sqe.fd == CHAR_FD
        self.queued.append(("cmd", sqe))

    def put_many(self, images: list[memoryview]) -> None:
        for image in images:
            self.put(image)

    def prep(self, opcode: int, fd: int, addr: int, length: int, offset: int, user_data: int,
             **kw: int) -> None:
        self.queued.append(("wake" if user_data == ud.WAKE else "io", (opcode, fd, user_data)))

    def hold(self, user_data: int, *buffers: object) -> None:
        self.held[user_data] = buffers

    def reap(self) -> tuple[list[int], list[int], list[int]]:
        cq, self._cq = self._cq, []
        for c in cq:
            self.held.pop(c[0], None)
        return [c[0] for c in cq], [c[1] for c in cq], [c[2] for c in cq]

    def close(self) -> None:
        self.closed = True

    def submit(self, wait_nr: int = 0, timeout: float | None = None) -> int:
        queued, self.queued = self.queued, []
        names = [self._accept(kind, what) for kind, what in queued]
        self.submits.append(names)
        self.waits.append(wait_nr)
        if wait_nr:
            self._wait(wait_nr)
        return len(queued)

    # -- the driver

    def _accept(self, kind: str, what: object) -> str:
        if kind == "wake":
            opcode, fd, _ = cast(tuple[int, int, int], what)
            assert opcode == IORING_OP_READ and self._wake_fd is None
            self._wake_fd = fd
            return "WAKE_READ"
        if kind == "io":
            user_data = cast(tuple[int, int, int], what)[2]
            self._target_io.add(user_data)
            return "IO"
        sqe = cast(io_uring_sqe, what)
        header = ublk_batch_io.from_buffer_copy(bytes(sqe), SQE_CMD_OFFSET)
        if sqe.cmd_op == UBLK_U_IO_FETCH_IO_CMDS:
            assert not self.fetch_armed, "a second FETCH_IO_CMDS while one is armed"
            assert sqe.flags & IOSQE_BUFFER_SELECT
            assert sqe.uring_cmd_flags == IORING_URING_CMD_MULTISHOT
            assert self.buf_ring is not None and sqe.buf_group == self.buf_ring[2]
            assert (header.elem_bytes, header.flags, sqe.user_data) == (2, 0, FETCH_UD)
            self.fetches.append(sqe)
            self.fetch_armed = True
            return "FETCH"
        assert sqe.cmd_op in (UBLK_U_IO_PREP_IO_CMDS, UBLK_U_IO_COMMIT_IO_CMDS), hex(sqe.cmd_op)
        assert header.elem_bytes == ctypes.sizeof(ublk_elem_header) + 8  # + buf_addr
        assert sqe.len == header.nr_elem * header.elem_bytes and header.nr_elem <= DEPTH
        raw = ctypes.string_at(sqe.addr, sqe.len)
        elements = []
        for i in range(header.nr_elem):
            elem = ublk_elem_header.from_buffer_copy(raw, i * header.elem_bytes)
            addr = int.from_bytes(raw[i * header.elem_bytes + 8:(i + 1) * header.elem_bytes],
                                  "little")
            assert elem.tag in self.owned, f"tag {elem.tag} is not the server's"
            self.owned.remove(elem.tag)
            elements.append((elem.tag, elem.buf_index, elem.result, addr))
        self.batches.append(Batch(sqe.cmd_op, header.q_id, header.flags, elements))
        self._cq.append((sqe.user_data, header.nr_elem * header.elem_bytes, 0))  # done inline
        if sqe.cmd_op == UBLK_U_IO_PREP_IO_CMDS:
            assert sqe.user_data == ud.batch_cmd(ud.BATCH_PREP)
            return "PREP"
        assert self.held.get(sqe.user_data), "a commit array the ring does not keep alive"
        return "COMMIT"

    def _select_buffer(self, data: bytes) -> int:
        """What io_uring does for a buffer-select CQE: the next provided buffer."""
        assert self.buf_ring is not None
        addr, entries, _ = self.buf_ring
        tail = ctypes.c_uint16.from_address(addr + 14).value
        assert tail != self.head, "FETCH: no provided buffer left (ENOBUFS)"
        buf = io_uring_buf.from_address(addr + (self.head & (entries - 1)) * 16)
        assert len(data) <= buf.len
        ctypes.memmove(buf.addr, data, len(data))
        self.head = (self.head + 1) & 0xFFFF
        return int(buf.bid)

    def _ready(self, batch: list[Event]) -> bool:
        for e in batch:
            if isinstance(e, (Tags, FetchEnd)) and not self.fetch_armed:
                return False
            if isinstance(e, Tags) and any(t in self.owned for t in e.tags):
                return False
            if isinstance(e, Io) and ud.target_io(e.tag, e.sub) not in self._target_io:
                return False
        return True

    def _deliver(self) -> None:
        if self.script and self._ready(self.script[0]):
            for e in self.script.pop(0):
                if isinstance(e, Tags):
                    self.owned.update(e.tags)
                    data = b"".join(t.to_bytes(2, "little") for t in e.tags)
                    bid = self._select_buffer(data)
                    self._cq.append((FETCH_UD, len(data), IORING_CQE_F_BUFFER | IORING_CQE_F_MORE
                                     | bid << IORING_CQE_BUFFER_SHIFT))
                elif isinstance(e, FetchEnd):
                    self.fetch_armed = False
                    self._cq.append((FETCH_UD, e.res, 0))
                else:
                    self._target_io.remove(ud.target_io(e.tag, e.sub))
                    self._cq.append((ud.target_io(e.tag, e.sub), e.res, 0))
            self.delivered += 1
        fd = self._wake_fd
        if fd is not None and select.select([fd], [], [], 0)[0]:
            os.eventfd_read(fd)
            self._wake_fd = None
            self._cq.append((ud.WAKE, 8, 0))

    def _wait(self, wait_nr: int) -> None:
        """Like io_uring_enter: until ``wait_nr`` completions are there."""
        deadline = time.monotonic() + 2.0
        while True:
            self._deliver()
            if len(self._cq) >= wait_nr:
                return
            if self._wake_fd is None or time.monotonic() > deadline:
                raise AssertionError(f"the queue waits, but nothing can complete: next "
                                     f"{self.script[:1]}, server owns {sorted(self.owned)}")
            select.select([self._wake_fd], [], [], 0.05)

    # -- for assertions

    def commits(self) -> list[list[tuple[int, int]]]:
        """(tag, result) of each COMMIT_IO_CMDS, one list per command."""
        return [[(e[0], e[2]) for e in b.elements] for b in self.batches
                if b.cmd_op == UBLK_U_IO_COMMIT_IO_CMDS]


def descs() -> list[ublksrv_io_desc]:
    return [ublksrv_io_desc(op_flags=UBLK_IO_OP_READ, nr_sectors=8, start_sector=8 * t)
            for t in range(DEPTH)]


def make_queue(target: object, kernel: BatchKernel, q_id: int = 0) -> BatchQueue:
    info = ublksrv_ctrl_dev_info(queue_depth=DEPTH, max_io_buf_bytes=4096, nr_hw_queues=1,
                                 flags=UBLK_F_BATCH_IO | UBLK_F_USER_RECOVERY)
    return BatchQueue(CHAR_FD, info, q_id, target, ring=cast(Ring, kernel),  # type: ignore[arg-type]
                      descs=descs())


def fixed(result: Callable[[int], int]) -> Callable[[int, ublksrv_io_desc, memoryview], int]:
    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        return result(tag)
    return handler


class RingTarget:
    """Every request is one read SQE on the queue's ring, completed in ``io_done``."""

    def __init__(self) -> None:
        self.queued: list[int] = []

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> None:
        self.queued.append(tag)
        prep_read(queue.ring, queue.io_data(tag), 7, queue.buffer_address(tag), 4096, 0)

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> int:
        return res


# -- the mode and the engine -----------------------------------------------------------------


def test_batch_is_a_mode_of_its_own_served_by_the_batch_engine() -> None:
    assert buffer_mode(UBLK_F_BATCH_IO) is BufferMode.BATCH
    assert BufferMode.BATCH.flags == UBLK_F_BATCH_IO and not BufferMode.BATCH.zero_copy
    assert queue_class(UBLK_F_BATCH_IO) is BatchQueue and queue_class(0) is Queue
    with pytest.raises(ValueError, match="copy-mode data only"):
        buffer_mode(UBLK_F_BATCH_IO | UBLK_F_USER_COPY)


def test_element_layout_is_the_generated_struct() -> None:
    raw = ELEMENT.pack(7, 0, -5, 0x1234)
    elem = ublk_elem_header.from_buffer_copy(raw)
    assert (elem.tag, elem.buf_index, elem.result) == (7, 0, -5)
    assert ELEMENT.size == ctypes.sizeof(ublk_elem_header) + 8


def test_fetch_prepares_every_tag_then_arms_one_multishot_fetch() -> None:
    kernel = BatchKernel([])
    with make_queue(fixed(lambda t: 0), kernel) as queue:
        queue.fetch()
        assert kernel.submits == [["PREP"], ["WAKE_READ", "FETCH"]]  # FETCH after PREP's answer
        [prep] = kernel.batches
        assert (prep.cmd_op, prep.q_id, prep.flags) == (UBLK_U_IO_PREP_IO_CMDS, 0,
                                                       UBLK_BATCH_F_HAS_BUF_ADDR)
        assert prep.elements == [(t, 0, 0, queue.buffer_address(t)) for t in range(DEPTH)]
        assert kernel.owned == set()
        assert kernel.buf_ring is not None and kernel.buf_ring[1] == DEPTH


def test_a_prep_refused_is_an_error() -> None:
    kernel = BatchKernel([])
    kernel.owned = set()  # every tag already prepared: the fake refuses a second PREP
    with make_queue(fixed(lambda t: 0), kernel) as queue:
        with pytest.raises(AssertionError, match="not the server's"):
            queue.fetch()


# -- one commit per batch --------------------------------------------------------------------


def test_each_batch_of_tags_is_committed_in_one_command() -> None:
    served: list[int] = []

    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        served.append(tag)
        return 512 * (tag + 1)

    kernel = BatchKernel([[tags(1, 3)], [tags(0, 1, 2)], [tags(3), tags(2)], [ABORT]])
    with make_queue(handler, kernel) as queue:
        queue.run()
        assert served == [1, 3, 0, 1, 2, 3, 2]
        assert kernel.commits() == [[(1, 1024), (3, 2048)], [(0, 512), (1, 1024), (2, 1536)],
                                    [(3, 2048), (2, 1536)]]  # two FETCH CQEs, one wake-up
        commit = [b for b in kernel.batches if b.cmd_op == UBLK_U_IO_COMMIT_IO_CMDS][0]
        assert commit.flags == UBLK_BATCH_F_HAS_BUF_ADDR
        assert [e[3] for e in commit.elements] == [queue.buffer_address(1),
                                                   queue.buffer_address(3)]
        # the commit of a wake-up goes in with the wait for the next, which waits for one
        # completion more than the commit's own (answered inline)
        assert kernel.submits[2:] == [[], ["COMMIT"], ["COMMIT"], ["COMMIT"], []]
        assert kernel.waits[2:] == [1, 2, 2, 2, 0]
        assert kernel.held == {}  # every commit's CQE reaped: no array kept any more
    assert kernel.closed


def test_completions_from_io_done_of_one_wake_up_share_a_commit() -> None:
    target = RingTarget()
    kernel = BatchKernel([[tags(0, 1, 2)], [Io(1, 0, 4096), Io(0, 0, -errno.EIO)],
                          [Io(2, 0, 100)], [ABORT]])
    with make_queue(target, kernel) as queue:
        queue.run()
    assert target.queued == [0, 1, 2]
    assert kernel.commits() == [[(1, 4096), (0, -errno.EIO)], [(2, 100)]]


def test_completions_from_other_threads_join_one_commit() -> None:
    class Later:
        def __init__(self) -> None:
            self.queue: Queue | None = None
            self.pending: list[int] = []

        def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> None:
            self.queue = queue
            self.pending.append(tag)
            if len(self.pending) == 3:
                def finish() -> None:
                    for t in self.pending:
                        queue.complete(t, 7 * t)
                thread = threading.Thread(target=finish)
                thread.start()
                thread.join(JOIN_S)

        def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> None:
            raise AssertionError

    kernel = BatchKernel([[tags(0, 2, 3)], [ABORT]])
    with make_queue(Later(), kernel) as queue:
        queue.run()
    assert kernel.commits() == [[(0, 0), (2, 14), (3, 21)]]


def test_a_partial_commit_is_an_error() -> None:
    kernel = BatchKernel([[tags(0, 1)], [ABORT]])
    real_accept = kernel._accept

    def short_commit(kind: str, what: object) -> str:
        name = real_accept(kind, what)
        if name == "COMMIT":
            u, res, f = kernel._cq.pop()
            kernel._cq.append((u, res - ELEMENT.size, f))  # took one element of two
        return name

    kernel._accept = short_commit  # type: ignore[method-assign]
    with make_queue(fixed(lambda t: 0), kernel) as queue:
        with pytest.raises(UblkError, match="took 1 of 2 elements"):
            queue.run()


# -- the multishot fetch and its buffers ----------------------------------------------------


@pytest.mark.parametrize("end", [0, -errno.ENOBUFS])
def test_a_fetch_that_ends_is_armed_again(end: int) -> None:
    kernel = BatchKernel([[tags(0), FetchEnd(end)], [tags(0, 1)], [ABORT]])
    with make_queue(fixed(lambda t: 1), kernel) as queue:
        queue.run()
    assert len(kernel.fetches) == 2
    assert kernel.submits[3] == ["COMMIT", "FETCH"]  # after PREP, FETCH, the first wait
    assert kernel.commits() == [[(0, 1)], [(0, 1), (1, 1)]]


def test_a_fetch_refused_otherwise_fails_the_queue() -> None:
    kernel = BatchKernel([[FetchEnd(-errno.EINVAL)]])
    with make_queue(fixed(lambda t: 1), kernel) as queue:
        with pytest.raises(UblkError, match="FETCH_IO_CMDS") as e:
            queue.run()
        assert e.value.errno == errno.EINVAL


def test_fetch_buffers_are_recycled_many_times_over() -> None:
    # 4 provided buffers, 12 CQEs: only recycled and published buffers keep it going
    script: list[list[Event]] = [[tags(i % DEPTH)] for i in range(12)]
    kernel = BatchKernel([*script, [ABORT]])
    with make_queue(fixed(lambda t: t), kernel) as queue:
        queue.run()
        assert queue.fetch_buffers.tail == DEPTH + 12
    assert kernel.commits() == [[(i % DEPTH, i % DEPTH)] for i in range(12)]
    assert len(kernel.fetches) == 1


def test_an_abort_with_requests_in_flight_waits_for_them() -> None:
    kernel = BatchKernel([[tags(0, 1)], [ABORT], [Io(0, 0, 1), Io(1, 0, 2)]])
    with make_queue(RingTarget(), kernel) as queue:
        queue.run()
    assert kernel.commits() == [[(0, 1), (1, 2)]]
    assert len(kernel.fetches) == 1  # not re-armed after the abort


def test_a_target_exception_fails_only_its_request() -> None:
    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        if tag == 1:
            raise RuntimeError("boom")
        return 0

    errors: list[BaseException] = []
    kernel = BatchKernel([[tags(0, 1, 2)], [ABORT]])
    info = ublksrv_ctrl_dev_info(queue_depth=DEPTH, max_io_buf_bytes=4096, nr_hw_queues=1,
                                 flags=UBLK_F_BATCH_IO)
    with BatchQueue(CHAR_FD, info, 0, handler, ring=cast(Ring, kernel), descs=descs(),
                    on_error=errors.append) as queue:
        queue.run()
    assert kernel.commits() == [[(0, 0), (1, -errno.EIO), (2, 0)]]
    assert [str(e) for e in errors] == ["boom"]


# -- kick ----------------------------------------------------------------------------------


def test_a_kicked_queue_finishes_its_requests_and_takes_no_new_ones() -> None:
    target = RingTarget()
    kernel = BatchKernel([[tags(0, 1)], [tags(2)], [Io(0, 0, 1)], [Io(1, 0, 2)]])
    with make_queue(target, kernel) as queue:
        real_deliver = kernel._deliver

        def deliver() -> None:
            if kernel.delivered == 1 and not queue._stopping:
                queue.kick()  # after the first batch reached the target
            real_deliver()

        kernel._deliver = deliver  # type: ignore[method-assign]
        queue.run()
    assert target.queued == [0, 1]  # tag 2 came after the kick: left to the kernel
    assert kernel.commits() == [[(0, 1)], [(1, 2)]]
    assert len(kernel.fetches) == 1


def test_a_queue_refuses_a_device_without_batch() -> None:
    info = ublksrv_ctrl_dev_info(queue_depth=DEPTH, max_io_buf_bytes=4096, nr_hw_queues=1)
    with pytest.raises(ValueError, match="served by Queue"):
        BatchQueue(CHAR_FD, info, 0, fixed(lambda t: 0), ring=cast(Ring, BatchKernel([])),
                   descs=descs())
