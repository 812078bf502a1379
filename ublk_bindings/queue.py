"""The per-queue engine on ``/dev/ublkcN``: one thread, one io_uring, one target.

Where a request's data lives is the device's buffer mode (:mod:`ublk_bindings.buffers`): in
copy mode every tag owns a page-aligned buffer whose address it hands the driver with
FETCH_REQ; for a WRITE the driver copies the data in before the completion, for a READ it
copies our data out when we COMMIT.  The driver describes each request in a read-only shared
array of ``ublksrv_io_desc``, one per tag, mmapped from the char device.

A queue's life: FETCH_REQ for every tag; then per wake-up, a batch of completions.  A ready
tag goes to the target's ``queue_io``, which either returns the result at once or starts I/O
and completes it later: from ``io_done`` (returning the result, or calling
:meth:`Queue.complete`) when the CQE of an SQE it queued on this ring comes back, or with
:meth:`Queue.complete` from any other thread.  Each completed tag is committed with
COMMIT_AND_FETCH_REQ, all of a batch submitted together with the next wait.  A completion
of ``UBLK_IO_RES_ABORT`` means the tag is closed (STOP_DEV, QUIESCE_DEV, the device going
away); the queue ends when all its tags are.

The target contract is kublk's (``queue_io``/``tgt_io_done``): the ring is the queue's own,
so a target's backing I/O costs no thread and no wake-up of its own, and CQEs of the ublk
commands and of the target's I/O come back in one batch (``user_data`` tells them apart:
:mod:`ublk_bindings.user_data`).
"""

from __future__ import annotations

import collections
import ctypes
import errno
import mmap
import os
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol, Union, runtime_checkable

from . import user_data as ud
from .buffers import (
    MAX_USER_COPY_BYTES,
    BufferMode,
    auto_buf_reg_addr,
    buffer_mode,
    user_copy_offset,
)
from .errors import UblkError, UblkTimeout
from .io_uring import (
    IORING_OP_READ,
    IORING_OP_URING_CMD,
    IORING_SETUP_COOP_TASKRUN,
    IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_SINGLE_ISSUER,
    io_uring_sqe,
)
from .ring import SQE_CMD_OFFSET, Ring
from .ublk_cmd import (
    UBLK_F_CMD_IOCTL_ENCODE,
    UBLK_IO_COMMIT_AND_FETCH_REQ,
    UBLK_IO_FETCH_REQ,
    UBLK_IO_NEED_GET_DATA,
    UBLK_IO_OP_READ,
    UBLK_IO_OP_WRITE,
    UBLK_IO_RES_ABORT,
    UBLK_IO_RES_NEED_GET_DATA,
    UBLK_IO_RES_OK,
    UBLK_MAX_QUEUE_DEPTH,
    UBLK_U_IO_COMMIT_AND_FETCH_REQ,
    UBLK_U_IO_FETCH_REQ,
    UBLK_U_IO_NEED_GET_DATA,
    UBLK_U_IO_REGISTER_IO_BUF,
    UBLK_U_IO_UNREGISTER_IO_BUF,
    UBLKSRV_CMD_BUF_OFFSET,
    ublksrv_ctrl_dev_info,
    ublksrv_get_op,
    ublksrv_io_cmd,
    ublksrv_io_desc,
)

__all__ = ["Handler", "TargetOps", "Served", "SyncHandler", "Queue", "desc_array_offset",
           "desc_array_size", "QUEUE_RING_FLAGS"]

Handler = Callable[[int, ublksrv_io_desc, memoryview], int]
"""A synchronous handler: ``handler(tag, desc, buf) -> bytes done, or -errno``; ``buf`` is
the tag's whole buffer.  Served through :class:`SyncHandler`."""


@runtime_checkable
class TargetOps(Protocol):
    """What a queue calls; one instance per queue, called only from that queue's thread.

    ``queue_io`` gets each ready request: return its result (bytes done, 0, or ``-errno``) to
    commit it now, or None once I/O for it has started; then the target calls
    ``queue.complete(tag, result)`` when that I/O is done, exactly once.  The descriptor and
    the tag's buffer stay the target's until then.

    ``io_done`` gets the CQE of each SQE the target queued on ``queue.ring`` with
    ``user_data=queue.io_data(tag, sub)``: ``res`` and ``flags`` as the kernel wrote them, in
    whatever order they complete.  It may return the request's result when this CQE finished
    it (the same as calling ``complete``, one call cheaper), else None.
    """

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> int | None: ...

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> int | None: ...


Served = Union[TargetOps, Handler]
"""What a queue serves: a target, or a synchronous handler."""


class SyncHandler:
    """A :data:`Handler` served as a target: every request completes in ``queue_io``."""

    __slots__ = ("handler",)

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> int:
        return self.handler(tag, desc, queue.buffers[tag])

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> None:
        raise RuntimeError(f"tag {tag}: a CQE for a synchronous handler, which queues no I/O")


QUEUE_RING_FLAGS = (
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
)
"""Completions run as task work in the queue thread when it waits, never as an interrupt of
it: the ublk driver already requires that one task submits all of a queue's commands."""

DRAIN_TIMEOUT_S = 30.0
"""How long a kicked queue waits for the requests its target still has in flight."""

_PAGE = mmap.PAGESIZE
_DESC_SIZE = ctypes.sizeof(ublksrv_io_desc)

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                  ctypes.c_long]
_mmap.restype = ctypes.c_void_p
_munmap = _libc.munmap
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_munmap.restype = ctypes.c_int
_MAP_FAILED = ctypes.c_void_p(-1).value


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def desc_array_size(depth: int) -> int:
    """Bytes of one queue's descriptor array, as the driver maps it."""
    return _round_up(depth * _DESC_SIZE, _PAGE)


def desc_array_offset(q_id: int) -> int:
    """mmap offset of queue ``q_id``'s descriptors on ``/dev/ublkcN``.

    Queues are spaced by the array size of the *maximum* depth, whatever the device's
    depth (``ublk_ch_mmap`` divides the offset by ``ublk_max_cmd_buf_size()``).
    """
    return UBLKSRV_CMD_BUF_OFFSET + q_id * desc_array_size(UBLK_MAX_QUEUE_DEPTH)


class Queue:
    """One hardware queue of a device, served by exactly one thread.

    Construct it in the thread that will serve it (its ring is ``SINGLE_ISSUER`` and the
    driver ties the queue to the task that fetched). It takes the ``/dev/ublkcN`` fd, which it
    does not own, the device's info as ADD_DEV wrote it back, and the target (or a plain
    :data:`Handler`).  ``ring`` and ``descs`` replace the real ring and the mapped
    descriptors, for tests of the engine without a kernel driver.
    """

    def __init__(
        self,
        char_fd: int,
        info: ublksrv_ctrl_dev_info,
        q_id: int,
        target: TargetOps | Handler,
        *,
        ring_flags: int = QUEUE_RING_FLAGS,
        on_error: Callable[[BaseException], None] | None = None,
        ring: Ring | None = None,
        descs: Sequence[ublksrv_io_desc] | None = None,
    ) -> None:
        self.mode = mode = buffer_mode(info.flags)
        """Where requests' data lives (:mod:`ublk_bindings.buffers`), from the device's flags."""
        self.q_id = q_id
        self.depth = depth = info.queue_depth
        self.target: TargetOps = target if isinstance(target, TargetOps) else SyncHandler(target)
        if mode.zero_copy and isinstance(self.target, SyncHandler):
            raise ValueError(f"a {mode.value} device's data never reaches a buffer of ours: "
                             "serve it with a TargetOps that uses fixed buffers (buf_index), "
                             "not a synchronous handler")
        if mode is BufferMode.USER_COPY and info.max_io_buf_bytes > MAX_USER_COPY_BYTES:
            raise ValueError(f"user copy addresses at most {MAX_USER_COPY_BYTES} bytes per "
                             f"request; max_io_buf_bytes is {info.max_io_buf_bytes}")
        self.error: BaseException | None = None
        """The first exception the target raised (its request was failed with EIO)."""
        self.on_error = on_error
        """Called (in this queue's thread) with each exception the target raises."""
        self._fd = char_fd
        self._closed = False
        self._stopping = False
        self._fetched = False
        self._thread = threading.get_ident()
        encoded = bool(info.flags & UBLK_F_CMD_IOCTL_ENCODE)
        # only ioctl-encoded: the driver that has zero copy (6.15+) has no other encoding
        self._register_ops = (UBLK_U_IO_REGISTER_IO_BUF, UBLK_U_IO_UNREGISTER_IO_BUF)
        fetch_op = UBLK_U_IO_FETCH_REQ if encoded else UBLK_IO_FETCH_REQ
        commit_op = UBLK_U_IO_COMMIT_AND_FETCH_REQ if encoded else UBLK_IO_COMMIT_AND_FETCH_REQ
        get_data_op = UBLK_U_IO_NEED_GET_DATA if encoded else UBLK_IO_NEED_GET_DATA

        self._desc_addr = 0
        self._desc_len = desc_array_size(depth)
        self.descs: Sequence[ublksrv_io_desc] = [] if descs is None else descs
        self._mapped = descs is None
        self.buf_size = _round_up(info.max_io_buf_bytes, _PAGE)
        self.buffers: list[memoryview] = []
        self._buf_map: mmap.mmap | None = None
        self._buf_anchor: ctypes.c_char | None = None
        self._buf_base = 0
        # Per tag: handed to the target and not yet completed.
        self._busy = [False] * depth
        self._ready: list[memoryview] = []  # commits of this batch
        # Completions from other threads, and the eventfd whose read wakes the ring for them.
        self._remote: collections.deque[tuple[int, int, BaseException | None]] = (
            collections.deque())
        self._wake_pending = False
        self._wake_fd = -1
        self._wake_lock = threading.Lock()  # kick()/complete() never write to a closed fd
        try:
            if not mode.zero_copy:
                self._buf_base = self._allocate_buffers()
            self._prepare_sqes(char_fd, self._buf_base if mode is BufferMode.COPY else 0,
                               (fetch_op, commit_op, get_data_op))
            self._wake_buf = ctypes.create_string_buffer(8)
            # blocking: io_uring answers a read of an O_NONBLOCK file with EAGAIN, not a wait
            self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC)
            # Room for a commit and a target SQE per tag, and the wake-up read.
            # Room for a commit and the target's SQEs per tag (three when it registers the
            # request's buffer itself), and the wake-up read.
            per_tag = 4 if mode is BufferMode.ZERO_COPY else 2
            self.ring = ring if ring is not None else Ring(
                per_tag * depth + 1, flags=ring_flags, cq_entries=2 * per_tag * (depth + 1))
            if mode.zero_copy and ring is None:
                self.ring.register_buffers_sparse(depth)  # index = tag (buf_index)
        except BaseException:
            self._release()
            raise

    def _map_descriptors(self, char_fd: int) -> None:
        """The driver-written ``ublksrv_io_desc`` array: read-only (the driver refuses
        PROT_WRITE), so mapped with libc's mmap, which gives an address for ctypes views."""
        addr = _mmap(None, self._desc_len, mmap.PROT_READ, mmap.MAP_SHARED, char_fd,
                     desc_array_offset(self.q_id))
        if addr in (None, _MAP_FAILED):
            raise UblkError(ctypes.get_errno(), f"mmap of queue {self.q_id}'s descriptors")
        self._desc_addr = addr
        descs = (ublksrv_io_desc * self.depth).from_address(addr)
        self.descs = [descs[tag] for tag in range(self.depth)]  # one view per tag, made once

    def _allocate_buffers(self) -> int:
        """One page-aligned buffer per tag, in one anonymous mapping; returns its address."""
        self._buf_map = mmap.mmap(-1, self.depth * self.buf_size)
        self._buf_anchor = ctypes.c_char.from_buffer(self._buf_map)
        whole = memoryview(self._buf_map)
        size = self.buf_size
        self.buffers = [whole[t * size:(t + 1) * size] for t in range(self.depth)]
        whole.release()
        return ctypes.addressof(self._buf_anchor)

    def _prepare_sqes(self, char_fd: int, buf_base: int, ops: tuple[int, int, int]) -> None:
        """FETCH, COMMIT_AND_FETCH and NEED_GET_DATA SQEs for every tag, complete but for a
        commit's result: the hot path copies one with :meth:`Ring.put_many`."""
        self._images = (io_uring_sqe * (3 * self.depth))()
        image_bytes = memoryview(self._images).cast("B")
        size = ctypes.sizeof(io_uring_sqe)
        self._payloads: list[ublksrv_io_cmd] = []  # the commits' ublksrv_io_cmd, per tag
        self._fetch_sqe: list[memoryview] = []
        self._commit_sqe: list[memoryview] = []
        self._get_data_sqe: list[memoryview] = []
        lists = (self._fetch_sqe, self._commit_sqe, self._get_data_sqe)
        for tag in range(self.depth):
            for kind, (cmd_op, images) in enumerate(zip(ops, lists)):
                index = 3 * tag + kind
                sqe = self._images[index]
                sqe.opcode = IORING_OP_URING_CMD
                sqe.fd = char_fd
                sqe.cmd_op = cmd_op
                sqe.user_data = ud.ublk_cmd(tag)
                if self.mode is BufferMode.AUTO_BUF_REG and kind < 2:  # FETCH, COMMIT
                    sqe.addr = auto_buf_reg_addr(tag)  # the request's pages at index tag
                payload = ublksrv_io_cmd.from_address(ctypes.addressof(sqe) + SQE_CMD_OFFSET)
                payload.q_id = self.q_id
                payload.tag = tag
                payload.addr = buf_base + tag * self.buf_size if buf_base else 0
                images.append(image_bytes[index * size:(index + 1) * size])
                if images is self._commit_sqe:
                    self._payloads.append(payload)

    # -- what a target uses -----------------------------------------------------------------

    def buffer_address(self, tag: int) -> int:
        """The address of ``tag``'s buffer, for an SQE that reads into or writes from it
        (copy and user copy; a zero-copy request's data is at :meth:`buf_index`)."""
        return self._buf_base + tag * self.buf_size

    def prep_register_io_buf(self, tag: int, user_data: int, sqe_flags: int = 0) -> None:
        """Queue ``UBLK_U_IO_REGISTER_IO_BUF``: ``tag``'s request pages into the ring's buffer
        table at :meth:`buf_index` (``zero-copy`` devices; ``auto-zc`` needs none)."""
        self._prep_buf_cmd(self._register_ops[0], tag, user_data, sqe_flags)

    def prep_unregister_io_buf(self, tag: int, user_data: int, sqe_flags: int = 0) -> None:
        """Queue ``UBLK_U_IO_UNREGISTER_IO_BUF`` of ``tag``'s buffer; the request completes
        once it is unregistered and committed."""
        self._prep_buf_cmd(self._register_ops[1], tag, user_data, sqe_flags)

    def _prep_buf_cmd(self, cmd_op: int, tag: int, user_data: int, sqe_flags: int) -> None:
        payload = ublksrv_io_cmd(q_id=self.q_id, tag=tag, addr=self.buf_index(tag))
        sqe = self.ring.prep_uring_cmd(self._fd, cmd_op, payload, user_data)
        sqe.flags = sqe_flags

    @staticmethod
    def buf_index(tag: int) -> int:
        """Where a zero-copy (``auto-zc``) request's pages are in the ring's buffer table:
        the ``buf_index`` of a READ_FIXED/WRITE_FIXED, with ``addr`` the offset within them."""
        return tag

    @staticmethod
    def io_data(tag: int, sub: int = 0) -> int:
        """The ``user_data`` of a target SQE for ``tag``: its CQE reaches ``io_done``."""
        return ud.TARGET_IO | sub << ud.SUB_SHIFT | tag

    @property
    def in_flight(self) -> int:
        """Requests handed to the target and not completed yet."""
        return self._busy.count(True)

    def complete(self, tag: int, result: int) -> None:
        """Commit ``tag`` with ``result`` (bytes done, 0, or ``-errno``): once per request.

        From the queue's thread it joins the batch being served; from any other thread it is
        queued and the ring woken (one eventfd write per wake-up, not per request).
        """
        if threading.get_ident() != self._thread:
            self._post(tag, result, None)
            return
        if not self._busy[tag]:
            raise ValueError(f"queue {self.q_id}: tag {tag} completed but not in flight")
        self._busy[tag] = False
        if self.mode is BufferMode.USER_COPY and result > 0:
            result = self._copy_out(tag, result)
        self._payloads[tag].result = result
        self._ready.append(self._commit_sqe[tag])

    # -- user copy: the data in and out of /dev/ublkcN -----------------------------------------

    def _copy_in(self, tag: int, desc: ublksrv_io_desc) -> int:
        """A WRITE's data into the tag's buffer; 0, or ``-errno`` to fail the request."""
        length = desc.nr_sectors << 9
        try:
            got = os.preadv(self._fd, [self.buffers[tag][:length]],
                            user_copy_offset(self.q_id, tag))
        except OSError as e:
            return -(e.errno or errno.EIO)
        return 0 if got == length else -errno.EIO

    def _copy_out(self, tag: int, result: int) -> int:
        """A READ's data, ``result`` bytes, to the driver before its COMMIT; the result, or
        ``-errno`` when the copy failed."""
        if ublksrv_get_op(self.descs[tag]) != UBLK_IO_OP_READ:
            return result
        try:
            put = os.pwritev(self._fd, [self.buffers[tag][:result]],
                             user_copy_offset(self.q_id, tag))
        except OSError as e:
            return -(e.errno or errno.EIO)
        return result if put == result else -errno.EIO

    def fail(self, tag: int, exc: BaseException) -> None:
        """Fail ``tag`` with EIO for an exception of the target, and report it (``error``,
        ``on_error``); from any thread, as :meth:`complete`."""
        if threading.get_ident() != self._thread:
            self._post(tag, -errno.EIO, exc)
            return
        self._report(exc)
        if self._busy[tag]:
            self.complete(tag, -errno.EIO)

    def _post(self, tag: int, result: int, exc: BaseException | None) -> None:
        self._remote.append((tag, result, exc))
        if not self._wake_pending:
            self._wake_pending = True
            self._wake()

    def _report(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if self.on_error is not None:
            self.on_error(exc)

    # -- control from other threads ---------------------------------------------------------

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_fd >= 0:
                os.eventfd_write(self._wake_fd, 1)

    def kick(self) -> None:
        """Make :meth:`run` return (from any thread) once the requests the target has in
        flight are done: the way out when no STOP_DEV will ever abort the tags, e.g.
        START_DEV failed, or after QUIESCE_DEV."""
        self._stopping = True
        self._wake()

    # -- the data plane ---------------------------------------------------------------------

    def _arm_wake(self) -> None:
        self.ring.prep(IORING_OP_READ, self._wake_fd, ctypes.addressof(self._wake_buf), 8, 0,
                       ud.WAKE)

    def _take_remote(self) -> None:
        """Completions other threads queued: commit them in this batch; re-arm the wake-up."""
        self._wake_pending = False  # before draining: a later append wakes us again
        remote = self._remote
        while remote:
            tag, result, exc = remote.popleft()
            if exc is not None:
                self._report(exc)
            try:
                self.complete(tag, result)
            except ValueError as e:
                self._report(e)
        self._arm_wake()

    def fetch(self) -> None:
        """Submit FETCH_REQ for every tag (and the wake-up read), then map the descriptors;
        START_DEV waits for this.

        Mapped after the FETCHes, not before: the driver dispatches nothing until START_DEV
        or END_USER_RECOVERY, and the first mmap ties the device to this process (the
        driver's ``ub->mm``).  On Linux 6.12 a recovering server that died after mapping but
        before any queue was ready leaves a device no START_USER_RECOVERY accepts again
        (EINVAL); fetched first, this queue is ready before it maps anything.
        """
        self._arm_wake()
        self.ring.put_many(self._fetch_sqe)
        self.ring.submit()
        self._fetched = True
        if self._mapped:
            self._map_descriptors(self._fd)

    def run(self) -> None:
        """Serve until every tag is closed (ABORT), or :meth:`kick` was called and the
        target has nothing in flight.

        The hot loop: one ``io_uring_enter`` per batch submits the previous batch's commits
        and target SQEs and waits; each ready tag then costs the target's ``queue_io``, one
        field write and one SQE copy into the ring.  After a kick the batch in hand is
        finished and its commits submitted, so no request the target completed is lost;
        requests that arrive after it are left to the kernel (requeued for a successor, or
        failed when the device goes).
        """
        if not self._fetched:
            self.fetch()
        ring = self.ring
        submit, reap, put_many = ring.submit, ring.reap, ring.put_many
        target = self.target
        queue_io, io_done = target.queue_io, target.io_done
        descs, busy = self.descs, self._busy
        commit, get_data, payloads = self._commit_sqe, self._get_data_sqe, self._payloads
        ready = self._ready
        open_tags = self.depth
        user_copy = self.mode is BufferMode.USER_COPY
        target_io, wake, tag_mask, sub_shift, sub_mask = (
            ud.TARGET_IO, ud.WAKE, ud.TAG_MASK, ud.SUB_SHIFT, ud.SUB_MASK)
        drain_deadline: float | None = None
        while open_tags:
            if drain_deadline is None:
                submit(1)
            else:
                try:
                    submit(1, timeout=max(0.0, drain_deadline - time.monotonic()))
                except UblkTimeout:
                    self._report(TimeoutError(
                        f"queue {self.q_id}: {self.in_flight} requests still in the target "
                        f"{DRAIN_TIMEOUT_S:g} s after the kick"))
                    return
            user_data, results, flags = reap()
            for i, tag in enumerate(user_data):
                res = results[i]
                if tag < target_io:  # a ublk command of this tag
                    if res == UBLK_IO_RES_OK:
                        if self._stopping:
                            continue  # kicked: the kernel requeues it when we let go
                        busy[tag] = True
                        desc = descs[tag]
                        if user_copy and ublksrv_get_op(desc) == UBLK_IO_OP_WRITE:
                            err = self._copy_in(tag, desc)
                            if err:
                                self.complete(tag, err)
                                continue
                        try:
                            result = queue_io(self, tag, desc)
                        except Exception as e:  # fail this request, not the device
                            self.fail(tag, e)
                            continue
                        if result is not None:  # done at once; else the target completes it
                            busy[tag] = False
                            if user_copy and result > 0:
                                result = self._copy_out(tag, result)
                            payloads[tag].result = result
                            ready.append(commit[tag])
                    elif res == UBLK_IO_RES_NEED_GET_DATA:
                        ready.append(get_data[tag])
                    elif res == UBLK_IO_RES_ABORT:
                        open_tags -= 1
                    else:
                        raise UblkError(-res, f"FETCH/COMMIT_AND_FETCH_REQ (queue {self.q_id}, "
                                              f"tag {tag})")
                elif tag & wake:
                    if res < 0:
                        raise UblkError(-res, f"read of queue {self.q_id}'s wake-up eventfd")
                    self._take_remote()
                else:
                    t = tag & tag_mask
                    try:
                        result = io_done(self, t, tag >> sub_shift & sub_mask, res, flags[i])
                    except Exception as e:
                        self.fail(t, e)
                        continue
                    if result is None:
                        continue
                    if not busy[t]:
                        self._report(ValueError(f"queue {self.q_id}: tag {t} completed but "
                                                "not in flight"))
                        continue
                    busy[t] = False  # complete(), written out: the hot path of ring I/O
                    if user_copy and result > 0:
                        result = self._copy_out(t, result)
                    payloads[t].result = result
                    ready.append(commit[t])
            if ready:
                put_many(ready)
                ready.clear()
            if self._stopping:
                if True not in busy:
                    submit()
                    return
                if drain_deadline is None:
                    drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S

    # -- teardown ---------------------------------------------------------------------------

    def _release(self) -> None:
        if self._desc_addr:
            _munmap(self._desc_addr, self._desc_len)
            self._desc_addr = 0
        self.descs = []
        for b in self.buffers:
            b.release()
        self.buffers = []
        self._buf_anchor = None
        if self._buf_map is not None:
            try:
                self._buf_map.close()
            except BufferError:  # a target kept a view of a buffer; the GC unmaps it later
                pass
            self._buf_map = None
        with self._wake_lock:
            if self._wake_fd >= 0:
                os.close(self._wake_fd)
            self._wake_fd = -1

    def close(self) -> None:
        """Close the ring (the kernel cancels what is outstanding), unmap, free buffers.

        Call it from the serving thread once :meth:`run` returned.
        """
        if self._closed:
            return
        self._closed = True
        self.ring.close()
        self._release()

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

