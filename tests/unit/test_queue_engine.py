"""The queue engine's loop, specified on the host: a fake ring plays the kernel.

The host has io_uring but no ublk driver, so :class:`FakeKernel` stands in for the queue's
ring (``Queue(ring=...)``) and the driver's descriptor array is a plain list
(``Queue(descs=...)``).  The fake decodes every SQE the queue hands it, keeps the state the
driver would (which tags have a ublk command in flight, which target SQEs are outstanding,
whether the wake-up read is armed) and, each time the queue waits, completes the next
scripted batch of CQEs.  A CQE is only delivered once what it completes was submitted: an
ABORT or a new request for a tag waits until the tag's commit reached the "kernel".  The
wake-up is real: when the queue's eventfd is readable and its read is armed, the fake
consumes it and delivers the WAKE completion, so ``kick()`` and ``complete()`` from other
threads go through the same path as on the kernel.

Nothing here sleeps to synchronise: threads are joined, events waited on, with timeouts.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import gc
import mmap
import os
import select
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import pytest

from ublk_bindings import queue as queue_module
from ublk_bindings import user_data as ud
from ublk_bindings.aio import AsyncioTarget, LoopThread
from ublk_bindings.errors import UblkError, UblkTimeout
from ublk_bindings.io_uring import IORING_OP_READ, IORING_OP_URING_CMD, io_uring_sqe
from ublk_bindings.prep import prep_read
from ublk_bindings.queue import Queue, TargetOps
from ublk_bindings.ring import SQE_CMD_OFFSET, SQE_SIZE, Ring
from ublk_bindings.ublk_cmd import (
    UBLK_F_CMD_IOCTL_ENCODE,
    UBLK_IO_COMMIT_AND_FETCH_REQ,
    UBLK_IO_FETCH_REQ,
    UBLK_IO_NEED_GET_DATA,
    UBLK_IO_OP_READ,
    UBLK_IO_OP_WRITE,
    UBLK_IO_RES_ABORT,
    UBLK_IO_RES_NEED_GET_DATA,
    UBLK_IO_RES_OK,
    UBLK_U_IO_COMMIT_AND_FETCH_REQ,
    UBLK_U_IO_FETCH_REQ,
    UBLK_U_IO_NEED_GET_DATA,
    ublksrv_ctrl_dev_info,
    ublksrv_io_cmd,
    ublksrv_io_desc,
)

DEPTH = 4
CHAR_FD = 1000
"""Not an open fd: the fake kernel never uses it, the tests check the commands carry it."""
JOIN_S = 5.0
"""How long a test waits for another thread before failing (never reached when it passes)."""

# -- the kernel's side ---------------------------------------------------------------------

Cqe = tuple[int, int, int]
"""(user_data, res, flags) of one completion."""


def ok(tag: int) -> Cqe:
    """The driver hands ``tag`` a request: its FETCH or COMMIT_AND_FETCH completes."""
    return (ud.ublk_cmd(tag), UBLK_IO_RES_OK, 0)


def need_get_data(tag: int) -> Cqe:
    """A WRITE whose data the server must ask for (``UBLK_F_NEED_GET_DATA``)."""
    return (ud.ublk_cmd(tag), UBLK_IO_RES_NEED_GET_DATA, 0)


def abort(tag: int) -> Cqe:
    """The tag is closed (STOP_DEV, the device going away)."""
    return (ud.ublk_cmd(tag), UBLK_IO_RES_ABORT, 0)


def abort_all() -> list[Cqe]:
    return [abort(tag) for tag in range(DEPTH)]


def refused(tag: int, err: int) -> Cqe:
    """The driver refuses the tag's command with ``-err``."""
    return (ud.ublk_cmd(tag), -err, 0)


def io(tag: int, sub: int, res: int, flags: int = 0) -> Cqe:
    """The completion of target SQE ``sub`` of ``tag``."""
    return (ud.target_io(tag, sub), res, flags)


_COMMAND_NAMES = {
    UBLK_IO_FETCH_REQ: "FETCH", UBLK_U_IO_FETCH_REQ: "FETCH",
    UBLK_IO_COMMIT_AND_FETCH_REQ: "COMMIT", UBLK_U_IO_COMMIT_AND_FETCH_REQ: "COMMIT",
    UBLK_IO_NEED_GET_DATA: "GET_DATA", UBLK_U_IO_NEED_GET_DATA: "GET_DATA",
}


@dataclass(frozen=True)
class Sqe:
    """One SQE as the fake kernel received it.  For a ublk command, ``q_id``, ``tag``,
    ``result`` and ``addr`` are its ``ublksrv_io_cmd`` payload's; otherwise ``addr``,
    ``length`` and ``offset`` are the SQE's own."""

    opcode: int
    fd: int
    user_data: int
    cmd_op: int = 0
    q_id: int = 0
    tag: int = 0
    result: int = 0
    addr: int = 0
    length: int = 0
    offset: int = 0

    @property
    def is_command(self) -> bool:
        return self.opcode == IORING_OP_URING_CMD

    @property
    def what(self) -> tuple[object, ...]:
        """``("FETCH", tag)``, ``("COMMIT", tag, result)``, ``("GET_DATA", tag)``,
        ``("WAKE_READ",)`` or ``("IO", tag, sub)``: what assertions compare."""
        if self.is_command:
            name = _COMMAND_NAMES[self.cmd_op]
            return (name, self.tag, self.result) if name == "COMMIT" else (name, self.tag)
        if self.user_data == ud.WAKE:
            return ("WAKE_READ",)
        return ("IO", ud.tag_of(self.user_data), ud.sub_of(self.user_data))


def decode(image: memoryview | bytes) -> Sqe:
    """A 64-byte SQE image, read with the generated structs."""
    raw = bytes(image)
    assert len(raw) == SQE_SIZE
    sqe = io_uring_sqe.from_buffer_copy(raw)
    if sqe.opcode != IORING_OP_URING_CMD:
        return Sqe(sqe.opcode, sqe.fd, sqe.user_data, addr=sqe.addr, length=sqe.len,
                   offset=sqe.off)
    cmd = ublksrv_io_cmd.from_buffer_copy(raw, SQE_CMD_OFFSET)
    return Sqe(sqe.opcode, sqe.fd, sqe.user_data, cmd_op=sqe.cmd_op, q_id=cmd.q_id, tag=cmd.tag,
               result=cmd.result, addr=cmd.addr)


class FakeKernel:
    """The queue's ring, with the kernel behind it played from a script of CQE batches.

    ``queued`` holds the SQEs put or prepped and not yet submitted; ``submits`` what each
    ``submit()`` handed over, one list per call (a queue makes one call per batch).  On a
    ``submit(wait_nr>=1)`` the fake completes the next batch of the script once every CQE of
    it completes something in flight, plus the wake-up read if its eventfd is readable; with
    neither, it blocks on the eventfd (``waiting`` is set meanwhile).  A queue that waits
    when nothing it submitted can ever complete fails the test at once.
    """

    STUCK_S = 2.0

    def __init__(self, *batches: list[Cqe]) -> None:
        self.script: collections.deque[list[Cqe]] = collections.deque(batches)
        self.queued: list[Sqe] = []
        self.submits: list[list[Sqe]] = []
        self.delivered = 0  # batches of the script delivered so far
        self.wake_reads: list[int] = []  # the eventfd counter each wake-up read consumed
        self.waiting = threading.Event()
        self.closed = False
        self._cq: list[Cqe] = []
        self.commands: set[int] = set()  # tags with a ublk command in flight
        self._target_io: set[int] = set()  # user_data of target SQEs in flight
        self._wake_fd: int | None = None  # the eventfd of the armed wake-up read

    # -- the Ring interface the queue uses

    def put_many(self, images: Sequence[memoryview | bytes]) -> None:
        self.queued.extend(decode(image) for image in images)

    def put(self, image: memoryview | bytes) -> None:
        self.put_many((image,))

    def prep(
        self, opcode: int, fd: int, addr: int, length: int, offset: int, user_data: int, *,
        op_flags: int = 0, sqe_flags: int = 0, ioprio: int = 0, buf_index: int = 0,
    ) -> None:
        self.queued.append(Sqe(opcode, fd, user_data, addr=addr, length=length, offset=offset))

    def submit(self, wait_nr: int = 0, timeout: float | None = None) -> int:
        assert not self.closed, "submit on a closed ring"
        sqes, self.queued = self.queued, []
        for sqe in sqes:
            self._accept(sqe)
        self.submits.append(sqes)
        if wait_nr:
            self._wait(timeout)
        return len(sqes)

    def reap(self) -> tuple[list[int], list[int], list[int]]:
        cq, self._cq = self._cq, []
        return [c[0] for c in cq], [c[1] for c in cq], [c[2] for c in cq]

    def close(self) -> None:
        self.closed = True

    # -- the kernel

    def _accept(self, sqe: Sqe) -> None:
        if sqe.is_command:
            assert sqe.user_data == ud.ublk_cmd(sqe.tag), sqe
            assert sqe.tag not in self.commands, f"a second command in flight for tag {sqe.tag}"
            self.commands.add(sqe.tag)
        elif sqe.user_data == ud.WAKE:
            assert sqe.opcode == IORING_OP_READ and sqe.length == 8, sqe
            assert self._wake_fd is None, "a second wake-up read armed"
            self._wake_fd = sqe.fd
        else:
            assert ud.is_target_io(sqe.user_data), f"unknown user_data {sqe.user_data:#x}"
            assert sqe.user_data not in self._target_io, "two target SQEs with one user_data"
            self._target_io.add(sqe.user_data)

    def _in_flight(self, cqe: Cqe) -> bool:
        user_data = cqe[0]
        if ud.is_target_io(user_data):
            return user_data in self._target_io
        return user_data in self.commands

    def _complete_ready(self) -> None:
        if self.script and all(self._in_flight(cqe) for cqe in self.script[0]):
            batch = self.script.popleft()
            self.delivered += 1
            for user_data, _, _ in batch:
                (self._target_io if ud.is_target_io(user_data) else self.commands).remove(
                    user_data)
            self._cq.extend(batch)
        fd = self._wake_fd
        if fd is not None and select.select([fd], [], [], 0)[0]:
            self.wake_reads.append(os.eventfd_read(fd))
            self._wake_fd = None
            self._cq.append((ud.WAKE, 8, 0))

    def _wait(self, timeout: float | None) -> None:
        limit = self.STUCK_S if timeout is None else min(timeout, self.STUCK_S)
        deadline = time.monotonic() + limit
        while True:
            self._complete_ready()
            if self._cq:
                return
            left = deadline - time.monotonic()
            if self._wake_fd is None or left <= 0:
                if self._wake_fd is not None and timeout is not None and timeout <= limit:
                    raise UblkTimeout("io_uring_submit_and_wait_timeout", timeout)
                raise AssertionError(
                    f"the queue waits, but nothing can complete: next batch "
                    f"{list(self.script)[:1]}, commands in flight for tags {sorted(self.commands)}, wake-up read "
                    f"{'armed' if self._wake_fd is not None else 'not armed'}")
            self.waiting.set()
            select.select([self._wake_fd], [], [], left)
            self.waiting.clear()

    # -- for assertions

    @property
    def submitted(self) -> list[Sqe]:
        return [sqe for sqes in self.submits for sqe in sqes]

    def commits(self) -> list[tuple[int, int]]:
        """(tag, result) of every COMMIT_AND_FETCH submitted, in order."""
        return [(s.tag, s.result) for s in self.submitted if s.what[0] == "COMMIT"]

    def after_fetch(self) -> list[list[tuple[object, ...]]]:
        """What each submit after the first (the FETCHes) carried."""
        return [[sqe.what for sqe in sqes] for sqes in self.submits[1:]]


# -- the queue under test ------------------------------------------------------------------


def read_descs() -> list[ublksrv_io_desc]:
    return [ublksrv_io_desc(op_flags=UBLK_IO_OP_READ, nr_sectors=8, start_sector=8 * tag)
            for tag in range(DEPTH)]


def make_queue(
    target: TargetOps | Callable[[int, ublksrv_io_desc, memoryview], int],
    kernel: FakeKernel,
    *,
    flags: int = 0,
    q_id: int = 0,
    on_error: Callable[[BaseException], None] | None = None,
    descs: list[ublksrv_io_desc] | None = None,
) -> Queue:
    info = ublksrv_ctrl_dev_info(queue_depth=DEPTH, max_io_buf_bytes=4096, flags=flags,
                                 nr_hw_queues=1)
    return Queue(CHAR_FD, info, q_id, target, on_error=on_error, ring=cast(Ring, kernel),
                 descs=read_descs() if descs is None else descs)


def in_another_thread(fn: Callable[[], object]) -> None:
    """Run ``fn`` in a new thread and wait for it: a call from another thread, at a moment
    the test chooses."""
    thread = threading.Thread(target=fn)
    thread.start()
    thread.join(JOIN_S)
    assert not thread.is_alive()


def fixed(result: int) -> Callable[[int, ublksrv_io_desc, memoryview], int]:
    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        return result
    return handler


class RingTarget:
    """A target whose every request is one read SQE on the queue's ring, completed with the
    read's result in ``io_done``.  ``kick_on`` kicks the queue from another thread while
    queueing that tag."""

    def __init__(self, kick_on: int | None = None) -> None:
        self.queued: list[int] = []
        self.done: list[tuple[int, int, int, int]] = []
        self.kick_on = kick_on

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> int | None:
        self.queued.append(tag)
        prep_read(queue.ring, queue.io_data(tag), 7, queue.buffer_address(tag), 4096, 0)
        if tag == self.kick_on:
            in_another_thread(queue.kick)
        return None

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> None:
        self.done.append((tag, sub, res, flags))
        queue.complete(tag, res)


# -- fetch and the synchronous handler -----------------------------------------------------


@pytest.mark.parametrize(("flags", "fetch_op"), [(0, UBLK_IO_FETCH_REQ),
                                                 (UBLK_F_CMD_IOCTL_ENCODE, UBLK_U_IO_FETCH_REQ)])
def test_fetch_submits_one_fetch_per_tag_and_the_wake_up_read(flags: int, fetch_op: int) -> None:
    kernel = FakeKernel()
    with make_queue(fixed(0), kernel, flags=flags) as queue:
        queue.fetch()
        assert len(kernel.submits) == 1 and kernel.queued == []
        [wake] = [s for s in kernel.submits[0] if s.user_data == ud.WAKE]
        assert wake.opcode == IORING_OP_READ and wake.length == 8
        assert os.readlink(f"/proc/self/fd/{wake.fd}") == "anon_inode:[eventfd]"
        fetches = [s for s in kernel.submits[0] if s.is_command]
        assert [(s.cmd_op, s.fd, s.user_data, s.q_id, s.tag, s.addr) for s in fetches] == [
            (fetch_op, CHAR_FD, tag, 0, tag, queue.buffer_address(tag)) for tag in range(DEPTH)]
        addrs = [queue.buffer_address(tag) for tag in range(DEPTH)]
        assert all(a % mmap.PAGESIZE == 0 for a in addrs) and len(set(addrs)) == DEPTH
        assert kernel.commands == set(range(DEPTH))


def test_a_ready_tag_is_committed_with_the_synchronous_handlers_result() -> None:
    calls: list[tuple[int, int, int]] = []
    q: list[Queue] = []

    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        assert desc is q[0].descs[tag] and buf is q[0].buffers[tag]
        calls.append((tag, desc.start_sector, len(buf)))
        buf[:5] = b"read%d" % tag
        return 512 * (tag + 1)

    kernel = FakeKernel([ok(1)], [ok(3), ok(1)], abort_all())
    with make_queue(handler, kernel) as queue:
        q.append(queue)
        queue.run()
        assert calls == [(1, 8, 4096), (3, 24, 4096), (1, 8, 4096)]
        assert bytes(queue.buffers[1][:5]) == b"read1" and bytes(queue.buffers[3][:5]) == b"read3"
        # one submit per batch: the commits of a batch go in with the wait for the next
        assert kernel.after_fetch() == [[], [("COMMIT", 1, 1024)],
                                        [("COMMIT", 3, 2048), ("COMMIT", 1, 1024)]]
        commit = kernel.submits[2][0]
        assert (commit.cmd_op, commit.fd, commit.q_id, commit.addr) == (
            UBLK_IO_COMMIT_AND_FETCH_REQ, CHAR_FD, 0, queue.buffer_address(1))
    assert kernel.closed


def test_need_get_data_sends_the_tags_get_data_command_then_the_write_is_served() -> None:
    served: list[tuple[int, int]] = []
    kernel = FakeKernel([need_get_data(1)], [ok(1)], abort_all())

    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        served.append((tag, kernel.delivered))
        return 4096

    descs = read_descs()
    descs[1].op_flags = UBLK_IO_OP_WRITE
    with make_queue(handler, kernel, descs=descs) as queue:
        queue.run()
        assert served == [(1, 2)]  # not on NEED_GET_DATA: once the data came (2nd batch)
        assert kernel.after_fetch() == [[], [("GET_DATA", 1)], [("COMMIT", 1, 4096)]]
        get_data = kernel.submits[2][0]
        assert (get_data.cmd_op, get_data.fd, get_data.addr) == (
            UBLK_IO_NEED_GET_DATA, CHAR_FD, queue.buffer_address(1))


def test_run_returns_only_when_every_tag_has_aborted() -> None:
    served: list[int] = []

    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        served.append(tag)
        return 0

    # three tags close; the fourth still gets a request, and closes only after its commit
    kernel = FakeKernel([abort(0), abort(2)], [abort(3), ok(1)], [abort(1)])
    with make_queue(handler, kernel) as queue:
        queue.run()
        assert served == [1]
        assert not kernel.script and kernel.delivered == 3
        assert kernel.after_fetch() == [[], [], [("COMMIT", 1, 0)]]
        assert kernel.commands == set()  # no command sent to a closed tag


def test_a_handler_exception_fails_only_its_request_with_eio_and_the_queue_goes_on() -> None:
    first, second = RuntimeError("backend gone"), KeyError("no such block")
    raises = {0: first, 2: second}
    reported: list[BaseException] = []

    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        exc = raises.pop(tag, None)
        if exc is not None:
            raise exc
        return 4096

    kernel = FakeKernel([ok(0), ok(1), ok(2)], [ok(0), ok(2)], abort_all())
    with make_queue(handler, kernel, on_error=reported.append) as queue:
        queue.run()
        assert kernel.commits() == [(0, -errno.EIO), (1, 4096), (2, -errno.EIO),
                                    (0, 4096), (2, 4096)]
        assert queue.error is first  # the first one is kept
        assert reported == [first, second]  # on_error sees each
        assert queue.in_flight == 0


def test_a_kernel_error_on_a_ublk_command_raises_ublk_error_naming_the_queue_and_tag() -> None:
    kernel = FakeKernel([ok(0), refused(2, errno.EINVAL)])
    with make_queue(fixed(0), kernel, q_id=3) as queue:
        with pytest.raises(UblkError) as raised:
            queue.run()
    assert raised.value.errno == errno.EINVAL
    assert "queue 3" in str(raised.value) and "tag 2" in str(raised.value)
    assert "EINVAL" in str(raised.value)


# -- kick ----------------------------------------------------------------------------------


def test_kick_from_another_thread_returns_after_submitting_the_commits_of_the_batch() -> None:
    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        if tag == 1:
            in_another_thread(q[0].kick)  # during the batch, before its commits are queued
        return 100 + tag

    q: list[Queue] = []
    kernel = FakeKernel([ok(0), ok(1)])  # no ABORT ever comes
    with make_queue(handler, kernel) as queue:
        q.append(queue)
        queue.run()
        assert kernel.commits() == [(0, 100), (1, 101)]
        assert kernel.queued == []  # submitted, not just queued
        assert kernel.commands == set(range(DEPTH))  # every tag still fetched: nothing aborted


def test_kick_from_another_thread_while_run_waits_makes_it_return() -> None:
    kernel = FakeKernel([ok(0)])
    with make_queue(fixed(4096), kernel) as queue:
        def kick_when_waiting() -> None:
            assert kernel.waiting.wait(JOIN_S)
            queue.kick()

        kicker = threading.Thread(target=kick_when_waiting)
        kicker.start()
        queue.run()
        kicker.join(JOIN_S)
        assert kernel.wake_reads == [1]  # woken by the eventfd, not by a completion
        assert kernel.commits() == [(0, 4096)]
        assert kernel.queued == []


def test_kick_with_a_request_in_flight_serves_until_it_is_committed_and_no_new_one() -> None:
    target = RingTarget(kick_on=0)
    # tag 0 is in the target when the kick comes; tag 1's request arrives after it
    kernel = FakeKernel([ok(0)], [ok(1)], [io(0, 0, 4096)])
    with make_queue(target, kernel) as queue:
        queue.run()
        assert target.queued == [0]  # tag 1 is not given to the target
        assert target.done == [(0, 0, 4096, 0)]
        assert not kernel.script  # run went on serving after the kick
        assert kernel.commits() == [(0, 4096)]
        assert 1 not in kernel.commands  # left to the kernel: no command for it after the kick
        assert queue.in_flight == 0


def test_a_kicked_queue_whose_target_never_completes_reports_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "DRAIN_TIMEOUT_S", 0.05)
    reported: list[BaseException] = []
    target = RingTarget(kick_on=0)
    kernel = FakeKernel([ok(0)])  # the read never completes
    with make_queue(target, kernel, on_error=reported.append) as queue:
        queue.run()
        [timeout] = reported
        assert isinstance(timeout, TimeoutError) and "1 requests" in str(timeout)
        assert queue.in_flight == 1 and kernel.commits() == []


# -- an asynchronous target on the queue's ring --------------------------------------------


class TwoReads:
    """Each request is two SQEs on the queue's ring (sub 0 and 1); the tag is completed once
    both are back: with the sum of their results, or the error of one."""

    def __init__(self) -> None:
        self.done: list[tuple[int, int, int, int]] = []
        self.results: dict[int, list[int]] = {}

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> int | None:
        addr = queue.buffer_address(tag)
        queue.ring.prep(IORING_OP_READ, 7, addr, 2048, desc.start_sector * 512,
                        queue.io_data(tag, 0))
        queue.ring.prep(IORING_OP_READ, 7, addr + 2048, 2048, desc.start_sector * 512 + 2048,
                        queue.io_data(tag, 1))
        self.results[tag] = []
        return None

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> None:
        self.done.append((tag, sub, res, flags))
        got = self.results[tag]
        got.append(res)
        if len(got) == 2:
            queue.complete(tag, min(got) if min(got) < 0 else sum(got))


def test_an_async_target_gets_each_cqe_in_io_done_and_is_committed_when_it_completes() -> None:
    target = TwoReads()
    kernel = FakeKernel(
        [ok(0)],
        [io(0, 1, 2048, 0x2), ok(2)],  # sub 1 first, with another tag's request
        [io(2, 0, 2048), io(0, 0, 1024, 0x4)],
        [io(2, 1, -errno.EIO)],
        abort_all(),
    )
    with make_queue(target, kernel) as queue:
        assert isinstance(target, TargetOps)
        queue.run()
        assert target.done == [(0, 1, 2048, 0x2), (2, 0, 2048, 0), (0, 0, 1024, 0x4),
                               (2, 1, -errno.EIO, 0)]
        assert kernel.after_fetch() == [
            [],
            [("IO", 0, 0), ("IO", 0, 1)],
            [("IO", 2, 0), ("IO", 2, 1)],  # tag 0 half done: no commit
            [("COMMIT", 0, 3072)],
            [("COMMIT", 2, -errno.EIO)],
        ]
        reads = [s for s in kernel.submitted if s.what[:2] == ("IO", 2)]
        assert [(s.opcode, s.fd, s.addr, s.length, s.offset) for s in reads] == [
            (IORING_OP_READ, 7, queue.buffer_address(2), 2048, 8192),
            (IORING_OP_READ, 7, queue.buffer_address(2) + 2048, 2048, 10240)]


class ReturningTarget(RingTarget):
    """As RingTarget, but io_done returns the result instead of calling complete(); with
    ``twice``, each request queues two reads and (wrongly) returns a result for each."""

    def __init__(self, twice: bool = False) -> None:
        super().__init__()
        self.twice = twice

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> int | None:
        super().queue_io(queue, tag, desc)
        if self.twice:
            prep_read(queue.ring, queue.io_data(tag, 1), 7, queue.buffer_address(tag), 4096, 0)
        return None

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> int | None:
        self.done.append((tag, sub, res, flags))
        return res


def test_a_result_io_done_returns_is_committed_as_complete_would() -> None:
    target = ReturningTarget()
    kernel = FakeKernel([ok(0), ok(1)], [io(1, 0, -errno.EIO), io(0, 0, 4096)], abort_all())
    with make_queue(target, kernel) as queue:
        queue.run()
        assert kernel.commits() == [(1, -errno.EIO), (0, 4096)]
        assert queue.in_flight == 0


def test_a_result_for_a_tag_not_in_flight_is_reported_not_committed() -> None:
    reported: list[BaseException] = []
    target = ReturningTarget(twice=True)
    kernel = FakeKernel([ok(0)], [io(0, 0, 4096), io(0, 1, 4096)], abort_all())
    with make_queue(target, kernel, on_error=reported.append) as queue:
        queue.run()
        assert kernel.commits() == [(0, 4096)]
        [stray] = reported
        assert isinstance(stray, ValueError) and "tag 0 completed but not in flight" in str(stray)


# -- complete() from other threads ---------------------------------------------------------


class PoolTarget:
    """Every request completed by a worker of ``pool``."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self.pool = pool
        self.threads: set[int] = set()

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> int | None:
        self.pool.submit(self._work, queue, tag)
        return None

    def _work(self, queue: Queue, tag: int) -> None:
        self.threads.add(threading.get_ident())
        queue.complete(tag, 512 * (tag + 1))

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> None:
        raise AssertionError("no SQEs")


def test_complete_from_other_threads_is_committed_through_the_wake_up() -> None:
    with concurrent.futures.ThreadPoolExecutor(DEPTH) as pool:
        target = PoolTarget(pool)
        kernel = FakeKernel([ok(0), ok(1), ok(2), ok(3)], abort_all())
        with make_queue(target, kernel) as queue:
            queue.run()
    assert sorted(kernel.commits()) == [(0, 512), (1, 1024), (2, 1536), (3, 2048)]
    assert threading.get_ident() not in target.threads
    assert 1 <= len(kernel.wake_reads) <= DEPTH


class BurstTarget:
    """Keeps every request; when the last tag arrives, another thread completes them all."""

    def __init__(self) -> None:
        self.tags: list[int] = []

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> int | None:
        self.tags.append(tag)
        if len(self.tags) == DEPTH:
            def burst() -> None:
                for t in self.tags:
                    queue.complete(t, 100 + t)

            in_another_thread(burst)
        return None

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> None:
        raise AssertionError("no SQEs")


def test_a_burst_of_completions_from_another_thread_costs_one_wake_up() -> None:
    kernel = FakeKernel([ok(0), ok(1), ok(2), ok(3)], abort_all())
    with make_queue(BurstTarget(), kernel) as queue:
        queue.run()
        assert kernel.wake_reads == [1]  # one eventfd write, one read, for four completions
        assert kernel.after_fetch() == [
            [], [], [("WAKE_READ",), ("COMMIT", 0, 100), ("COMMIT", 1, 101), ("COMMIT", 2, 102),
                     ("COMMIT", 3, 103)]]


# -- completing what is not in flight ------------------------------------------------------


class CompleteTwice(RingTarget):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[ValueError] = []

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> None:
        super().io_done(queue, tag, sub, res, flags)
        try:
            queue.complete(tag, res)
        except ValueError as e:
            self.errors.append(e)


def test_completing_a_tag_not_in_flight_in_the_queue_thread_raises_value_error() -> None:
    target = CompleteTwice()
    kernel = FakeKernel([ok(0)], [io(0, 0, 4096)], abort_all())
    with make_queue(target, kernel) as queue:
        queue.fetch()
        with pytest.raises(ValueError, match="tag 2 completed but not in flight"):
            queue.complete(2, 0)  # never started
        assert kernel.queued == []
        queue.run()
        [twice] = target.errors
        assert "tag 0 completed but not in flight" in str(twice)
        assert kernel.commits() == [(0, 4096)]
        assert queue.in_flight == 0


def test_completing_a_tag_not_in_flight_from_another_thread_is_reported_via_on_error() -> None:
    reported: list[tuple[BaseException, int]] = []

    def on_error(exc: BaseException) -> None:
        reported.append((exc, threading.get_ident()))

    class Remote:
        def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> int | None:
            def work() -> None:
                queue.complete(0, 4096)
                queue.complete(0, 4096)  # twice
                queue.complete(2, 0)  # never started

            in_another_thread(work)
            return None

        def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> None:
            raise AssertionError("no SQEs")

    kernel = FakeKernel([ok(0)], abort_all())
    with make_queue(Remote(), kernel, on_error=on_error) as queue:
        queue.run()
        assert kernel.commits() == [(0, 4096)]
        assert [(type(e), thread) for e, thread in reported] == [
            (ValueError, threading.get_ident())] * 2  # reported in the queue's thread
        assert "tag 0 " in str(reported[0][0]) and "tag 2 " in str(reported[1][0])
        assert queue.error is reported[0][0]


# -- the asyncio adapter -------------------------------------------------------------------


def test_asyncio_handlers_complete_out_of_order_and_an_exception_fails_with_eio() -> None:
    boom = RuntimeError("peer reset")
    reported: list[BaseException] = []

    async def new_event() -> asyncio.Event:
        return asyncio.Event()

    with LoopThread() as loop:
        tag1_done = asyncio.run_coroutine_threadsafe(new_event(), loop).result(JOIN_S)

        async def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
            assert desc.start_sector == 8 * tag and len(buf) == 4096
            if tag == 0:
                await tag1_done.wait()  # tag 0 finishes after tag 1
                return 100
            if tag == 2:
                raise boom
            tag1_done.set()
            return 200

        kernel = FakeKernel([ok(0), ok(1), ok(2)], abort_all())
        with make_queue(AsyncioTarget(handler, loop), kernel,
                        on_error=reported.append) as queue:
            queue.run()
    commits = kernel.commits()
    assert sorted(commits) == [(0, 100), (1, 200), (2, -errno.EIO)]
    assert commits.index((1, 200)) < commits.index((0, 100))
    assert reported == [boom] and queue.error is boom


def test_asyncio_target_keeps_a_pending_handlers_task_alive() -> None:
    # asyncio keeps only weak references to tasks: a handler awaiting a future that nothing
    # else holds must not be collected, or its request is never completed
    refs: list[weakref.ref[asyncio.Future[int]]] = []
    started = threading.Event()
    alive: list[bool] = []

    async def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        refs.append(weakref.ref(future))
        started.set()
        return await future

    async def collect() -> None:
        gc.collect()

    kernel = FakeKernel([ok(0)], abort_all())
    with LoopThread() as loop:
        with make_queue(AsyncioTarget(handler, loop), kernel) as queue:
            def resolve() -> None:
                assert started.wait(JOIN_S)
                asyncio.run_coroutine_threadsafe(collect(), loop).result(JOIN_S)
                future = refs[0]()
                alive.append(future is not None)
                if future is None:
                    queue.kick()  # lost: let run() return so that the test fails, not hangs
                else:
                    loop.call_soon_threadsafe(future.set_result, 4096)

            resolver = threading.Thread(target=resolve)
            resolver.start()
            queue.run()
            resolver.join(JOIN_S)
    assert alive == [True]
    assert kernel.commits() == [(0, 4096)]
