"""The per-queue data plane on ``/dev/ublkcN``, and a :class:`Device` that ties it together.

Copy mode: every tag owns a page-aligned buffer whose address it hands the driver with
FETCH_REQ; for a WRITE the driver copies the data in before the completion, for a READ it
copies our data out when we COMMIT. The driver describes each request in a read-only shared
array of ``ublksrv_io_desc``, one per tag, mmapped from the char device.

A queue's life: FETCH_REQ for every tag; then per wake-up, a batch of completions, the handler
for each ready tag, COMMIT_AND_FETCH_REQ with its result, all submitted together with the next
wait. A completion of ``UBLK_IO_RES_ABORT`` means the tag is closed (STOP_DEV, QUIESCE_DEV,
the device going away); the queue ends when all its tags are.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import threading
import time
from types import TracebackType
from typing import Callable

from .ctrl import Control, block_dev_path, char_dev_path
from .errors import UblkError
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
    UBLK_F_AUTO_BUF_REG,
    UBLK_F_BATCH_IO,
    UBLK_F_CMD_IOCTL_ENCODE,
    UBLK_F_SUPPORT_ZERO_COPY,
    UBLK_F_USER_COPY,
    UBLK_F_USER_RECOVERY,
    UBLK_IO_COMMIT_AND_FETCH_REQ,
    UBLK_IO_FETCH_REQ,
    UBLK_IO_NEED_GET_DATA,
    UBLK_IO_RES_ABORT,
    UBLK_IO_RES_NEED_GET_DATA,
    UBLK_IO_RES_OK,
    UBLK_MAX_QUEUE_DEPTH,
    UBLK_S_DEV_QUIESCED,
    UBLK_U_IO_COMMIT_AND_FETCH_REQ,
    UBLK_U_IO_FETCH_REQ,
    UBLK_U_IO_NEED_GET_DATA,
    UBLKSRV_CMD_BUF_OFFSET,
    ublk_params,
    ublksrv_ctrl_dev_info,
    ublksrv_io_cmd,
    ublksrv_io_desc,
)

__all__ = ["Handler", "Queue", "Device", "desc_array_offset", "desc_array_size", "QUEUE_RING_FLAGS"]

Handler = Callable[[int, ublksrv_io_desc, memoryview], int]
"""``handler(tag, desc, buf) -> bytes done, or -errno``; ``buf`` is the tag's whole buffer."""

QUEUE_RING_FLAGS = (
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
)
"""Completions run as task work in the queue thread when it waits, never as an interrupt of
it: the ublk driver already requires that one task submits all of a queue's commands."""

_PAGE = mmap.PAGESIZE
_DESC_SIZE = ctypes.sizeof(ublksrv_io_desc)
_ENOTSUPP = 524  # the kernel-internal errno some drivers leak for "no such command"
_KICK = 1 << 32  # user_data of the wake-up read; tags are 16-bit
_UNSUPPORTED = UBLK_F_USER_COPY | UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_AUTO_BUF_REG | UBLK_F_BATCH_IO

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
    does not own, and the device's info as ADD_DEV wrote it back.
    """

    def __init__(
        self,
        char_fd: int,
        info: ublksrv_ctrl_dev_info,
        q_id: int,
        handler: Handler,
        *,
        ring_flags: int = QUEUE_RING_FLAGS,
    ) -> None:
        if info.flags & _UNSUPPORTED:
            raise ValueError(f"Queue serves copy mode only; device flags {info.flags:#x} ask "
                             "for user copy, zero copy, auto buffer registration or batch I/O")
        self.q_id = q_id
        self.depth = depth = info.queue_depth
        self.handler = handler
        self.error: BaseException | None = None
        """The first exception a handler raised (its request was failed with EIO)."""
        self._fd = char_fd
        self._closed = False
        self._stopping = False
        self._fetched = False
        encoded = bool(info.flags & UBLK_F_CMD_IOCTL_ENCODE)
        fetch_op = UBLK_U_IO_FETCH_REQ if encoded else UBLK_IO_FETCH_REQ
        commit_op = UBLK_U_IO_COMMIT_AND_FETCH_REQ if encoded else UBLK_IO_COMMIT_AND_FETCH_REQ
        get_data_op = UBLK_U_IO_NEED_GET_DATA if encoded else UBLK_IO_NEED_GET_DATA

        self._desc_addr = 0
        self._desc_len = desc_array_size(depth)
        self.descs: list[ublksrv_io_desc] = []
        self.buf_size = _round_up(info.max_io_buf_bytes, _PAGE)
        self.buffers: list[memoryview] = []
        self._buf_map: mmap.mmap | None = None
        self._buf_anchor: ctypes.c_char | None = None
        self._kick_r = self._kick_w = -1
        self._kick_lock = threading.Lock()  # kick() must not write to a closed, reused fd
        try:
            buf_base = self._allocate_buffers()
            self._prepare_sqes(char_fd, buf_base, (fetch_op, commit_op, get_data_op))
            self._kick_buf = ctypes.create_string_buffer(8)
            self._kick_r, self._kick_w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(self._kick_w, False)  # kick() never blocks; the read end waits
            self.ring = Ring(depth + 1, flags=ring_flags, cq_entries=2 * (depth + 1))
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
        commit's result: the hot path copies one with :meth:`Ring.put`."""
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
                sqe.user_data = tag
                payload = ublksrv_io_cmd.from_address(ctypes.addressof(sqe) + SQE_CMD_OFFSET)
                payload.q_id = self.q_id
                payload.tag = tag
                payload.addr = buf_base + tag * self.buf_size
                images.append(image_bytes[index * size:(index + 1) * size])
                if images is self._commit_sqe:
                    self._payloads.append(payload)

    # -- control from other threads ---------------------------------------------------------

    def kick(self) -> None:
        """Make :meth:`run` return at its next wake-up (from any thread): the way out when
        no STOP_DEV will ever abort the tags, e.g. START_DEV failed."""
        self._stopping = True
        with self._kick_lock:
            if self._kick_w >= 0:
                try:
                    os.write(self._kick_w, b"\1")
                except BlockingIOError:  # the pipe is full of kicks already
                    pass

    # -- the data plane ---------------------------------------------------------------------

    def fetch(self) -> None:
        """Submit FETCH_REQ for every tag (and the wake-up read), then map the descriptors;
        START_DEV waits for this.

        Mapped after the FETCHes, not before: the driver dispatches nothing until START_DEV
        or END_USER_RECOVERY, and the first mmap ties the device to this process (the
        driver's ``ub->mm``).  On Linux 6.12 a recovering server that died after mapping but
        before any queue was ready leaves a device no START_USER_RECOVERY accepts again
        (EINVAL); fetched first, this queue is ready before it maps anything.
        """
        sqe = self.ring.get_sqe()
        sqe.opcode = IORING_OP_READ
        sqe.fd = self._kick_r
        sqe.addr = ctypes.addressof(self._kick_buf)
        sqe.len = 1
        sqe.user_data = _KICK
        self.ring.put_many(self._fetch_sqe)
        self.ring.submit()
        self._fetched = True
        self._map_descriptors(self._fd)

    def run(self) -> None:
        """Serve until every tag is closed (ABORT) or :meth:`kick` is called.

        The hot loop: one ``io_uring_enter`` per batch submits the previous batch's commits
        and waits; each ready tag then costs the handler call, one field write and, with the
        batch, one SQE copy into the ring. After a kick the batch in hand is finished and its
        commits are submitted, so no request the handler completed is lost.
        """
        if not self._fetched:
            self.fetch()
        ring = self.ring
        submit, reap, put_many = ring.submit, ring.reap, ring.put_many
        handler, descs, buffers = self.handler, self.descs, self.buffers
        commit, get_data, payloads = self._commit_sqe, self._get_data_sqe, self._payloads
        open_tags = self.depth
        while open_tags:
            submit(1)
            tags, results = reap()
            ready = []
            for tag, res in zip(tags, results):
                if res == UBLK_IO_RES_OK:
                    try:
                        payloads[tag].result = handler(tag, descs[tag], buffers[tag])
                    except Exception as e:  # fail this request, not the device
                        if self.error is None:
                            self.error = e
                        payloads[tag].result = -errno.EIO
                    ready.append(commit[tag])
                elif tag == _KICK:  # tested before the ublk results: a 1-byte read is res 1
                    continue
                elif res == UBLK_IO_RES_NEED_GET_DATA:
                    ready.append(get_data[tag])
                elif res == UBLK_IO_RES_ABORT:
                    open_tags -= 1
                else:
                    raise UblkError(-res, f"FETCH/COMMIT_AND_FETCH_REQ (queue {self.q_id}, "
                                          f"tag {tag})")
            put_many(ready)
            if self._stopping:
                submit()
                return

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
            except BufferError:  # a handler kept a view of a buffer; the GC unmaps it later
                pass
            self._buf_map = None
        with self._kick_lock:
            for fd in (self._kick_r, self._kick_w):
                if fd >= 0:
                    os.close(fd)
            self._kick_r = self._kick_w = -1

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


STEP_BEFORE_START = "before START_USER_RECOVERY"
STEP_AFTER_START = "after START_USER_RECOVERY"
STEP_QUEUE_FETCHED = "a queue fetched"
"""Reported from that queue's thread, once its FETCHes are queued (create and adopt alike)."""
STEP_BEFORE_END = "before END_USER_RECOVERY"
STEP_RESUMED = "START_USER_RECOVERY refused (EINVAL): resuming the recovery an earlier server began"
ADOPT_STEPS = (STEP_BEFORE_START, STEP_RESUMED, STEP_AFTER_START, STEP_QUEUE_FETCHED,
               STEP_BEFORE_END)


class Device:
    """A device served by this process, with one thread per queue.

    ``handlers(q_id)`` makes each queue's handler (called in that queue's thread). The control
    commands that wait for the queues (START_DEV, END_USER_RECOVERY) are issued from the
    calling thread once every queue thread has submitted its FETCHes.

    * :meth:`create`: ADD_DEV, SET_PARAMS, queues, START_DEV; ``/dev/ublkbN`` then exists.
    * :meth:`stop` (or leaving ``with``): STOP_DEV, queues end, char device closed, DEL_DEV.
    * :meth:`detach`: queues end and the char device is closed, the device stays (after
      QUIESCE_DEV, or to let a successor recover it).
    * :meth:`adopt`: take over a detached device: START_USER_RECOVERY, queues,
      END_USER_RECOVERY.

    Whatever fails half-way is undone: no queue thread, char device or (for create) device
    is left behind.
    """

    def __init__(
        self, ctrl: Control, handlers: Callable[[int], Handler], *, ready_timeout: float = 30.0,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.ctrl = ctrl
        self.handlers = handlers
        self.ready_timeout = ready_timeout
        self.on_step = on_step
        """Called with each step of :meth:`adopt` as it is reached (``ADOPT_STEPS``): for
        logs, and for tests that kill a server at each one."""
        self.info: ublksrv_ctrl_dev_info | None = None
        """The device's dev_info: as ADD_DEV wrote it back, or GET_DEV_INFO for adopt."""
        self.queues: list[Queue | None] = []
        self.errors: list[BaseException] = []
        """Exceptions of queue threads and handlers (a handler's request got EIO)."""
        self._threads: list[threading.Thread] = []
        self._ready: list[threading.Event] = []
        self._fd = -1
        self._abandoned = False  # a START_DEV/END_USER_RECOVERY given up while in flight

    def _step(self, name: str) -> None:
        if self.on_step is not None:
            self.on_step(name)

    @property
    def dev_id(self) -> int:
        if self.info is None:
            raise ValueError("no device")
        return int(self.info.dev_id)

    @property
    def block_path(self) -> str:
        return block_dev_path(self.dev_id)

    # -- queue threads ----------------------------------------------------------------------

    def _serve(self, q_id: int) -> None:
        try:
            assert self.info is not None
            with Queue(self._fd, self.info, q_id, self.handlers(q_id)) as q:
                self.queues[q_id] = q
                q.fetch()
                self._step(STEP_QUEUE_FETCHED)
                self._ready[q_id].set()
                q.run()
                if q.error is not None:
                    self.errors.append(q.error)
        except BaseException as e:
            self.errors.append(e)
        finally:
            self._ready[q_id].set()

    def _open_char_dev(self, deadline: float) -> int:
        path = char_dev_path(self.dev_id)
        while True:  # devtmpfs creates the node at once; udev may still be at work on it
            try:
                return os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _start_queues(self, deadline: float | None = None) -> None:
        """Open the char device, start one thread per queue, wait until all have fetched;
        all by ``deadline`` (``time.monotonic()``; default: ``ready_timeout`` from now)."""
        assert self.info is not None
        if deadline is None:
            deadline = time.monotonic() + self.ready_timeout
        self._fd = self._open_char_dev(deadline)
        n = self.info.nr_hw_queues
        self.queues = [None] * n
        self._ready = [threading.Event() for _ in range(n)]
        for q_id in range(n):
            t = threading.Thread(target=self._serve, args=(q_id,),
                                 name=f"ublk{self.dev_id}q{q_id}", daemon=True)
            self._threads.append(t)
            t.start()
        for ev in self._ready:
            ev.wait(max(0.0, deadline - time.monotonic()))
        if self.errors:
            raise self.errors[0]
        if not all(ev.is_set() for ev in self._ready):
            raise TimeoutError(f"queues of ublk{self.dev_id} did not fetch in "
                               f"{self.ready_timeout:g} s")

    def _end_queues(self, grace: float) -> None:
        """Join the queue threads, kicking them out after ``grace`` seconds, then close the
        char device so that the driver can release it."""
        deadline = time.monotonic() + grace
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            for q in self.queues:
                if q is not None:
                    q.kick()
            deadline = time.monotonic() + self.ready_timeout
            for t in self._threads:
                t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:  # a handler that never returns; its ring keeps the char device busy
            self.errors.append(TimeoutError(f"queue threads {', '.join(stuck)} did not end "
                                            f"in {self.ready_timeout:g} s"))
        self._threads = []
        self.queues = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _queue_failed(self) -> BaseException | None:
        """Why START_DEV/END_USER_RECOVERY will never return: a queue thread that died (its
        FETCHes are gone, so the device never becomes ready); else None."""
        if self.errors:
            self._abandoned = True
            return self.errors[0]
        return None

    # -- life cycle -------------------------------------------------------------------------

    def create(self, info: ublksrv_ctrl_dev_info, params: ublk_params) -> Device:
        """ADD_DEV, SET_PARAMS, queue threads, START_DEV; returns self."""
        self.info = self.ctrl.add_dev(info)
        try:
            self.ctrl.set_params(self.dev_id, params)
            self._start_queues()
            self.ctrl.start_dev(self.dev_id, abort_if=self._queue_failed)
        except BaseException:
            self.stop(raise_errors=False)
            raise
        return self

    def adopt(self, dev_id: int) -> Device:
        """Serve a device whose server is gone (``UBLK_F_USER_RECOVERY``); returns self.

        START_USER_RECOVERY answers EBUSY until the driver has released the old server's
        char device (asynchronously after it closed); that, and only that, is retried.
        """
        self.info = self.ctrl.get_dev_info(dev_id)
        deadline = time.monotonic() + self.ready_timeout
        self._step(STEP_BEFORE_START)
        resumed: UblkError | None = None  # START refused, an earlier one's recovery resumed
        while True:
            try:
                self.ctrl.start_user_recovery(dev_id)
                break
            except UblkError as e:
                if e.errno == errno.EINVAL and self._resumable(dev_id):
                    resumed = e
                    self._step(STEP_RESUMED)
                    break
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    self.info = None
                    raise
                time.sleep(0.02)
        try:
            self._step(STEP_AFTER_START)
            self._start_queues(deadline)  # the same deadline: ready_timeout bounds it all
            self._step(STEP_BEFORE_END)
            self.ctrl.end_user_recovery(dev_id, abort_if=self._queue_failed)
        except BaseException as e:
            self._end_queues(grace=0)
            if resumed is not None and isinstance(e, OSError):
                raise resumed from e  # not resumable after all: START's refusal is the cause
            raise
        return self

    def _resumable(self, dev_id: int) -> bool:
        """Whether a START_USER_RECOVERY refused with EINVAL is one an earlier server already
        did: Linux 6.12 refuses a second START until a queue of the first became ready
        (``nr_queues_ready`` is 0), yet the device is QUIESCED with its queues reset, so a
        server that died before it mapped them leaves a recovery that FETCH and
        END_USER_RECOVERY can finish.  If it had mapped them the mapping is refused (EINVAL)
        and the device can only be deleted."""
        info = self.ctrl.get_dev_info(dev_id)
        return bool(info.state == UBLK_S_DEV_QUIESCED and info.flags & UBLK_F_USER_RECOVERY)

    def detach(self, *, raise_errors: bool = True) -> None:
        """Stop serving but leave the device: after QUIESCE_DEV, or for a successor.

        Then, with ``raise_errors``, re-raise the first exception of a queue thread or a
        handler.
        """
        if self.info is not None:
            self._end_queues(grace=0)
            self.info = None
        if raise_errors and self.errors:
            raise self.errors[0]

    def stop(self, *, raise_errors: bool = True, wait_deleted: bool = True) -> None:
        """STOP_DEV, join the queues, close ``/dev/ublkcN``, DEL_DEV; safe to call twice.

        DEL_DEV returns only once nothing holds the device any more: a file system still
        mounted from ``/dev/ublkbN``, or any open fd of it, keeps it waiting.  With
        ``wait_deleted=False`` DEL_DEV_ASYNC is used instead (where the driver has it): the
        device is removed all the same and its number is freed when the last holder lets go.
        Then, with ``raise_errors``, re-raise the first exception of a queue thread or a
        handler.
        """
        if self.info is None:
            return
        dev_id = self.dev_id
        try:
            try:
                self.ctrl.stop_dev(dev_id)  # aborts every outstanding FETCH
            finally:
                # STOP_DEV aborts every FETCH; the kick after a grace period covers a
                # device that never started on kernels that leave those FETCHes pending.
                self._end_queues(grace=5.0)
        finally:
            self.info = None
            # an abandoned START_DEV holds the device until this Control closes: DEL_DEV
            # would wait for that forever
            self._delete(dev_id, wait_deleted and not self._abandoned)
        if raise_errors and self.errors:
            raise self.errors[0]

    def _delete(self, dev_id: int, wait: bool) -> None:
        if not wait:
            try:
                self.ctrl.del_dev_async(dev_id)
                return
            except UblkError as e:  # before Linux 6.9 there is only the waiting DEL_DEV
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, _ENOTSUPP):
                    raise
        self.ctrl.del_dev(dev_id)

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(raise_errors=exc is None)
