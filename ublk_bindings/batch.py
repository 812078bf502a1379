"""The per-queue engine of a ``UBLK_F_BATCH_IO`` device (Linux 7.0+): commands per batch.

The target contract is :class:`~ublk_bindings.queue.Queue`'s (``queue_io``/``io_done``/
``complete``), and so are the buffers (copy mode: the driver copies to and from a buffer of
ours per tag), the descriptors, the wake-up and :meth:`kick`.  What differs is how tags
travel; a batch device refuses FETCH_REQ and COMMIT_AND_FETCH_REQ (EOPNOTSUPP):

* ``UBLK_U_IO_PREP_IO_CMDS``, once, before START_DEV (or END_USER_RECOVERY): one array of
  elements (``ublk_elem_header`` + the tag's buffer address) arms every tag of the queue.
* ``UBLK_U_IO_FETCH_IO_CMDS``, one multishot command: each CQE is a batch of ready tags
  (u16 each, ``res`` bytes), written into a provided buffer (:mod:`ublk_bindings.buf_ring`).
  Without ``IORING_CQE_F_MORE`` it has ended: re-armed, unless it ended with
  ``UBLK_IO_RES_ABORT`` (STOP_DEV, QUIESCE_DEV, the device going away: the driver cancels
  the queue's fetch commands, which is how a batch queue learns its tags are closed).
* ``UBLK_U_IO_COMMIT_IO_CMDS``: every completion of one wake-up, in one element array, one
  command; its CQE answers the bytes of elements the driver took.  A commit does not fetch:
  a committed tag's next request comes through FETCH again.

Per wake-up the Python work per request is the target call and one ``pack_into`` of its
element; the per-request SQE copy and kernel command of the per-tag engine are gone.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import threading
import time
from collections.abc import Callable, Sequence

from . import user_data as ud
from .buf_ring import ProvidedBuffers, buffer_id
from .buffers import BufferMode
from .errors import UblkError, UblkTimeout
from .io_uring import (
    IORING_CQE_F_BUFFER,
    IORING_CQE_F_MORE,
    IORING_OP_URING_CMD,
    IORING_URING_CMD_MULTISHOT,
    IOSQE_BUFFER_SELECT,
    io_uring_sqe,
)
from .queue import DRAIN_TIMEOUT_S, QUEUE_RING_FLAGS, Handler, Queue, TargetOps
from .ring import SQE_CMD_OFFSET, Ring
from .ublk_cmd import (
    UBLK_BATCH_F_HAS_BUF_ADDR,
    UBLK_IO_RES_ABORT,
    UBLK_U_IO_COMMIT_IO_CMDS,
    UBLK_U_IO_FETCH_IO_CMDS,
    UBLK_U_IO_PREP_IO_CMDS,
    ublk_batch_io,
    ublk_elem_header,
    ublksrv_ctrl_dev_info,
    ublksrv_io_desc,
)

__all__ = ["BatchQueue", "ELEMENT", "MAX_TAGS_PER_FETCH"]

ELEMENT = struct.Struct("<HHiQ")
"""One element of a PREP/COMMIT array in copy mode: ``ublk_elem_header`` (tag, buf_index,
result), then the tag's buffer address (``UBLK_BATCH_F_HAS_BUF_ADDR``)."""
if (ctypes.sizeof(ublk_elem_header) != 8
        or [int(getattr(ublk_elem_header, f).offset) for f in ("tag", "buf_index", "result")]
        != [0, 2, 4]):
    raise ImportError("the generated ublk_elem_header is not laid out as ELEMENT packs it")

MAX_TAGS_PER_FETCH = 128
"""The driver copies at most this many tags into one provided buffer (``MAX_NR_TAG``)."""

_TAG_BYTES = 2  # the FETCH_IO_CMDS element: a u16 tag


class _Commit:
    """One element array and the COMMIT_IO_CMDS SQE that carries it; in flight from its
    submission until its CQE (the ring holds it, so the kernel never reads freed memory)."""

    __slots__ = ("index", "array", "view", "sqe", "header", "image", "count")

    def __init__(self, index: int, fd: int, q_id: int, depth: int, cmd_op: int,
                 user_data: int) -> None:
        self.index = index
        self.array = ctypes.create_string_buffer(depth * ELEMENT.size)
        self.view = memoryview(self.array).cast("B")
        self.sqe = sqe = io_uring_sqe()
        sqe.opcode = IORING_OP_URING_CMD
        sqe.fd = fd
        sqe.cmd_op = cmd_op
        sqe.addr = ctypes.addressof(self.array)
        sqe.user_data = user_data
        self.header = ublk_batch_io.from_address(ctypes.addressof(sqe) + SQE_CMD_OFFSET)
        self.header.q_id = q_id
        self.header.flags = UBLK_BATCH_F_HAS_BUF_ADDR
        self.header.elem_bytes = ELEMENT.size
        self.image = memoryview(sqe).cast("B")
        self.count = 0

    def seal(self, count: int) -> memoryview:
        """The SQE of a commit of the first ``count`` elements."""
        self.count = count
        self.header.nr_elem = count
        self.sqe.len = count * ELEMENT.size
        return self.image


class BatchQueue(Queue):
    """One hardware queue of a ``UBLK_F_BATCH_IO`` device; see :class:`Queue` for the
    contract, the buffers and the threads.  ``ring`` and ``descs`` replace the real ring
    and descriptors for tests; a replacement ring must take ``register_buf_ring``."""

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
        super().__init__(char_fd, info, q_id, target, ring_flags=ring_flags, on_error=on_error,
                         ring=ring, descs=descs)
        if self.mode is not BufferMode.BATCH:
            raise ValueError(f"a {self.mode.value} device is served by Queue, not BatchQueue")
        try:
            # one buffer per tag at most: every CQE not yet read holds a tag not yet
            # committed, so the kernel never runs out (ENOBUFS only ends a fetch, re-armed)
            self.fetch_buffers = ProvidedBuffers(
                self.ring, self.depth, _TAG_BYTES * min(self.depth, MAX_TAGS_PER_FETCH))
        except BaseException:
            self.close()
            raise

    # -- the commands, prepared once --------------------------------------------------------

    def _prepare_sqes(self, char_fd: int, buf_base: int, ops: tuple[int, int, int]) -> None:
        """The FETCH_IO_CMDS SQE and the first commit arrays; ``ops`` are the per-tag
        engine's and unused here."""
        self._addrs = [self._buf_base + tag * self.buf_size for tag in range(self.depth)]
        self._commits: list[_Commit] = []
        self._free: list[_Commit] = []
        self._in_flight_commits: dict[int, _Commit] = {}
        self._cur = self._new_commit()
        self._cur_view = self._cur.view
        self._n = 0  # elements in the current array
        self._fetch = sqe = io_uring_sqe()
        sqe.opcode = IORING_OP_URING_CMD
        sqe.fd = char_fd
        sqe.cmd_op = UBLK_U_IO_FETCH_IO_CMDS
        sqe.flags = IOSQE_BUFFER_SELECT
        sqe.uring_cmd_flags = IORING_URING_CMD_MULTISHOT
        sqe.buf_group = 0  # the ProvidedBuffers' bgid
        sqe.user_data = ud.batch_cmd(ud.BATCH_FETCH)
        header = ublk_batch_io.from_address(ctypes.addressof(sqe) + SQE_CMD_OFFSET)
        header.q_id = self.q_id
        header.elem_bytes = _TAG_BYTES
        header.nr_elem = min(self.depth, MAX_TAGS_PER_FETCH)
        self._fetch_image = memoryview(sqe).cast("B")

    def _new_commit(self) -> _Commit:
        c = _Commit(len(self._commits), self._fd, self.q_id, self.depth,
                    UBLK_U_IO_COMMIT_IO_CMDS, ud.batch_cmd(ud.BATCH_COMMIT, len(self._commits)))
        self._commits.append(c)
        return c

    # -- what a target uses -----------------------------------------------------------------

    def complete(self, tag: int, result: int) -> None:
        """Commit ``tag`` with ``result`` in this wake-up's COMMIT_IO_CMDS; from any thread,
        as :meth:`Queue.complete`."""
        if threading.get_ident() != self._thread:
            self._post(tag, result, None)
            return
        if not self._busy[tag]:
            raise ValueError(f"queue {self.q_id}: tag {tag} completed but not in flight")
        self._busy[tag] = False
        ELEMENT.pack_into(self._cur_view, self._n * ELEMENT.size, tag, 0, result,
                          self._addrs[tag])
        self._n += 1

    # -- the data plane ---------------------------------------------------------------------

    def _flush(self, ring: Ring) -> None:
        """Queue the current array as one COMMIT_IO_CMDS, and start the next array."""
        c = self._cur
        ring.put(c.seal(self._n))
        ring.hold(c.sqe.user_data, c)
        self._in_flight_commits[c.index] = c
        self._cur = self._free.pop() if self._free else self._new_commit()
        self._cur_view = self._cur.view
        self._n = 0

    def _commit_done(self, index: int, res: int) -> None:
        c = self._in_flight_commits.pop(index)
        self._free.append(c)
        if res != c.count * ELEMENT.size:
            what = (f"took {res // ELEMENT.size} of {c.count} elements" if res >= 0
                    else f"failed: {errno.errorcode.get(-res, -res)}")
            raise UblkError(errno.EIO if res >= 0 else -res,
                            f"COMMIT_IO_CMDS (queue {self.q_id}) {what}")

    def fetch(self) -> None:
        """PREP_IO_CMDS for every tag (answered at once), then the multishot FETCH_IO_CMDS
        and the wake-up read, then the descriptors mapped; START_DEV waits for the PREP.

        The FETCH goes in after the PREP has completed: during a recovery the driver refuses
        a fetch (ABORT) until every tag of the queue is prepared again.
        """
        # a one-off array: every tag with its buffer
        prep = _Commit(-1, self._fd, self.q_id, self.depth, UBLK_U_IO_PREP_IO_CMDS,
                       ud.batch_cmd(ud.BATCH_PREP))
        for tag in range(self.depth):
            ELEMENT.pack_into(prep.view, tag * ELEMENT.size, tag, 0, 0, self._addrs[tag])
        ring = self.ring
        ring.put(prep.seal(self.depth))
        ring.submit(1)
        user_data, res, _ = ring.reap()
        if user_data != [ud.batch_cmd(ud.BATCH_PREP)]:
            raise UblkError(errno.EIO, f"PREP_IO_CMDS (queue {self.q_id}): completions "
                                       f"{[hex(u) for u in user_data]}")
        if res[0] < 0:
            raise UblkError(-res[0], f"PREP_IO_CMDS (queue {self.q_id}, {self.depth} tags)")
        self._arm_wake()
        ring.put(self._fetch_image)
        ring.submit()
        self._fetched = True
        if self._mapped:
            self._map_descriptors(self._fd)

    def run(self) -> None:
        """Serve until the fetch is aborted (the tags are closed) and nothing is in flight,
        or :meth:`kick` was called and the target has nothing in flight.

        One ``io_uring_enter`` per wake-up submits the previous one's COMMIT_IO_CMDS (and
        the target's SQEs, a re-armed FETCH, recycled fetch buffers) and waits.  After a kick
        tags still arriving are left to the kernel, as in :meth:`Queue.run`.
        """
        if not self._fetched:
            self.fetch()
        ring = self.ring
        submit, reap = ring.submit, ring.reap
        target = self.target
        queue_io, io_done = target.queue_io, target.io_done
        descs, busy, addrs = self.descs, self._busy, self._addrs
        fetch_buffers = self.fetch_buffers
        tags_of, recycle = fetch_buffers.tags, fetch_buffers.recycle
        pack_into, elem_size = ELEMENT.pack_into, ELEMENT.size
        target_io, wake, tag_mask, sub_shift, sub_mask = (
            ud.TARGET_IO, ud.WAKE, ud.TAG_MASK, ud.SUB_SHIFT, ud.SUB_MASK)
        fetch_ud = ud.batch_cmd(ud.BATCH_FETCH)
        f_buffer, f_more = IORING_CQE_F_BUFFER, IORING_CQE_F_MORE
        aborted = False
        drain_deadline: float | None = None
        wait_nr = 1
        while True:
            if drain_deadline is None:
                submit(wait_nr)
            else:
                try:
                    submit(wait_nr, timeout=max(0.0, drain_deadline - time.monotonic()))
                except UblkTimeout:
                    self._report(TimeoutError(
                        f"queue {self.q_id}: {self.in_flight} requests still in the target "
                        f"{DRAIN_TIMEOUT_S:g} s after the kick"))
                    return
            user_data, results, flags = reap()
            recycled = rearm = False
            for i, u in enumerate(user_data):
                res = results[i]
                if u == fetch_ud:
                    fl = flags[i]
                    if fl & f_buffer:
                        bid = fl >> 16
                        tags = tags_of(bid, res) if res > 0 else ()
                        recycle(bid)
                        recycled = True
                        if self._stopping:
                            tags = ()  # kicked: the kernel requeues them when we let go
                        for tag in tags:
                            busy[tag] = True
                            try:
                                result = queue_io(self, tag, descs[tag])
                            except Exception as e:  # fail this request, not the device
                                self.fail(tag, e)
                                continue
                            if result is not None:  # done at once: into this batch's commit
                                busy[tag] = False
                                pack_into(self._cur_view, self._n * elem_size, tag, 0, result,
                                          addrs[tag])
                                self._n += 1
                    if not fl & f_more:
                        if res == UBLK_IO_RES_ABORT:
                            aborted = True
                        elif res >= 0 or res == -errno.ENOBUFS:
                            rearm = not self._stopping  # ended: fetch again
                        else:
                            raise UblkError(-res, f"FETCH_IO_CMDS (queue {self.q_id})")
                elif u < target_io:
                    kind = u >> sub_shift
                    if kind == ud.BATCH_COMMIT:
                        self._commit_done(u & tag_mask, res)
                    else:
                        raise UblkError(errno.EIO, f"queue {self.q_id}: a completion of "
                                                   f"command {u:#x} (res {res})")
                elif u & wake:
                    if res < 0:
                        raise UblkError(-res, f"read of queue {self.q_id}'s wake-up eventfd")
                    self._take_remote()
                else:
                    t = u & tag_mask
                    try:
                        result = io_done(self, t, u >> sub_shift & sub_mask, res, flags[i])
                    except Exception as e:
                        self.fail(t, e)
                        continue
                    if result is None:
                        continue
                    if not busy[t]:
                        self._report(ValueError(f"queue {self.q_id}: tag {t} completed but "
                                                "not in flight"))
                        continue
                    busy[t] = False
                    pack_into(self._cur_view, self._n * elem_size, t, 0, result, addrs[t])
                    self._n += 1
            if recycled:
                fetch_buffers.publish()
            # A commit is answered inline, as it is submitted: wait for one more completion
            # than that, or the next wait returns at once with only the commit's answer.
            wait_nr = 1
            if self._n:
                self._flush(ring)
                wait_nr = 2
            if rearm:  # after the commit: the tags it frees may be fetched at once
                ring.put(self._fetch_image)
            if aborted or self._stopping:
                if True not in busy:
                    submit()
                    self._reap_commits()
                    return
                if self._stopping and drain_deadline is None:
                    drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S

    def _reap_commits(self) -> None:
        """The answers to the last commits (the driver takes a commit inline, so they are
        there once submitted); what else completes now is of no use any more."""
        user_data, results, _ = self.ring.reap()
        for u, res in zip(user_data, results):
            if u < ud.TARGET_IO and u >> ud.SUB_SHIFT == ud.BATCH_COMMIT:
                self._commit_done(u & ud.TAG_MASK, res)

    # -- teardown ---------------------------------------------------------------------------

    def __enter__(self) -> BatchQueue:
        return self

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        buffers = getattr(self, "fetch_buffers", None)
        if buffers is not None:
            buffers.close()
