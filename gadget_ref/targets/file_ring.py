"""The file target's requests as SQEs on the queue's own ring: N tags, N backing I/Os.

Each request becomes one SQE on the backing fd, into or out of the tag's own buffer: READ
and WRITE (FUA as ``RWF_DSYNC``), FLUSH as fdatasync, DISCARD as a hole punch, WRITE_ZEROES
as a punch or a zeroed range.  Its CQE finishes it, or continues it: a short transfer is
resubmitted for the rest, -EAGAIN and -EINTR are retried (a bounded number of times), and a
file system without ZERO_RANGE gets the zeroes written, once, the slow way.

Zero copy: the transfer is a READ_FIXED/WRITE_FIXED on the request's own pages, buffer
``queue.buf_index(tag)`` of the ring (``addr``: the offset within them).  With ``auto-zc``
the driver registered them; with ``zero-copy`` the transfer is hard-linked between our
REGISTER_IO_BUF and UNREGISTER_IO_BUF, and the request is done when both the transfer's and
the unregister's CQEs are back (a failed register reports too, and its errno wins).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from ublk_bindings import (
    UBLK_IO_F_FUA,
    UBLK_IO_F_NOUNMAP,
    UBLK_IO_OP_DISCARD,
    UBLK_IO_OP_FLUSH,
    UBLK_IO_OP_READ,
    UBLK_IO_OP_WRITE,
    UBLK_IO_OP_WRITE_ZEROES,
)
from ublk_bindings.prep import (
    prep_fallocate,
    prep_fsync,
    prep_read,
    prep_read_fixed,
    prep_write,
    prep_write_fixed,
)

from ublk_bindings.buffers import BufferMode
from ublk_bindings.io_uring import (
    IORING_OP_READ,
    IORING_OP_READ_FIXED,
    IORING_OP_WRITE,
    IORING_OP_WRITE_FIXED,
    IOSQE_CQE_SKIP_SUCCESS,
    IOSQE_IO_HARDLINK,
)
from ublk_bindings.user_data import TARGET_IO  # io_data(tag) of sub-index 0

from ..fallocate import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE

if TYPE_CHECKING:
    from ublk_bindings.queue import Queue

    from .file import FileTarget  # which builds on this module

RETRIES = 8
"""Resubmissions of one request after -EAGAIN/-EINTR before its errno is returned."""

_PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_ZERO = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
_RETRY = (-errno.EAGAIN, -errno.EINTR)


# The sub-indexes of a zero-copy READ/WRITE's three linked SQEs (``zero-copy`` mode).
_SUB_RW, _SUB_REGISTER, _SUB_UNREGISTER = 0, 1, 2
_LINKED = IOSQE_IO_HARDLINK  # the next SQE runs even if this one fails: always unregistered


class FileRingIO:
    """One queue's file I/O in flight; per tag: the op, its range, the bytes done so far."""

    __slots__ = ("target", "fd", "fixed", "register", "finished", "_op", "_op_flags", "_offset",
                 "_length", "_done", "_retries", "_pending", "_rw_res", "_reg_err")

    def __init__(self, target: FileTarget, depth: int, mode: BufferMode = BufferMode.COPY
                 ) -> None:
        """In a zero-copy ``mode`` the request's pages are buffer ``queue.buf_index(tag)`` of
        the ring, read into and written from with READ_FIXED/WRITE_FIXED (``zero-copy``:
        registered around each transfer by our own commands); else the tag's buffer at
        ``queue.buffer_address(tag)``."""
        self.target = target
        self.fd = target.fd
        self.fixed = mode.zero_copy
        self.register = mode is BufferMode.ZERO_COPY
        self.finished: list[tuple[int, int]] = []  # stays empty: a CQE finishes its own tag
        self._pending = [0] * depth  # CQEs still due for the linked SQEs (zero-copy)
        self._rw_res = [0] * depth
        self._reg_err = [0] * depth
        self._op = [0] * depth
        self._op_flags = [0] * depth
        self._offset = [0] * depth
        self._length = [0] * depth
        self._done = [0] * depth
        self._retries = [0] * depth

    def start(self, queue: Queue, tag: int, op: int, op_flags: int, offset: int,
              length: int) -> int | None:
        self._op[tag] = op
        self._op_flags[tag] = op_flags
        self._offset[tag] = offset
        self._length[tag] = length
        self._done[tag] = 0
        self._retries[tag] = 0
        if (op == UBLK_IO_OP_READ or op == UBLK_IO_OP_WRITE) and not self.register:
            # the hot path, written out: one SQE, no call but the ring's
            read = op == UBLK_IO_OP_READ
            rw_flags = 0 if read or not op_flags & UBLK_IO_F_FUA else os.RWF_DSYNC
            if self.fixed:
                queue.ring.prep(IORING_OP_READ_FIXED if read else IORING_OP_WRITE_FIXED,
                                self.fd, 0, length, offset, TARGET_IO | tag, op_flags=rw_flags,
                                buf_index=queue.buf_index(tag))
            else:
                queue.ring.prep(IORING_OP_READ if read else IORING_OP_WRITE, self.fd,
                                queue.buffer_address(tag), length, offset, TARGET_IO | tag,
                                op_flags=rw_flags)
            return None
        return self._issue(queue, tag)

    def _issue(self, queue: Queue, tag: int) -> int | None:
        """Queue the SQE for what is left of ``tag``'s request; or its result, if done here."""
        op, op_flags = self._op[tag], self._op_flags[tag]
        ring, user_data, fd = queue.ring, queue.io_data(tag), self.fd
        if op == UBLK_IO_OP_READ or op == UBLK_IO_OP_WRITE:
            done = self._done[tag]
            length, offset = self._length[tag] - done, self._offset[tag] + done
            rw_flags = os.RWF_DSYNC if op == UBLK_IO_OP_WRITE and op_flags & UBLK_IO_F_FUA else 0
            if self.register:  # register -> transfer -> unregister, hard-linked
                queue.prep_register_io_buf(tag, queue.io_data(tag, _SUB_REGISTER),
                                           _LINKED | IOSQE_CQE_SKIP_SUCCESS)
                prep = prep_read_fixed if op == UBLK_IO_OP_READ else prep_write_fixed
                prep(ring, user_data, fd, done, length, offset, queue.buf_index(tag), rw_flags,
                     _LINKED)
                queue.prep_unregister_io_buf(tag, queue.io_data(tag, _SUB_UNREGISTER))
                self._pending[tag] = 2  # the transfer's CQE and the unregister's
            elif self.fixed:  # addr: the offset within the request's registered pages
                prep = prep_read_fixed if op == UBLK_IO_OP_READ else prep_write_fixed
                prep(ring, user_data, fd, done, length, offset, queue.buf_index(tag), rw_flags)
            elif op == UBLK_IO_OP_READ:
                prep_read(ring, user_data, fd, queue.buffer_address(tag) + done, length, offset)
            else:
                prep_write(ring, user_data, fd, queue.buffer_address(tag) + done, length, offset,
                           rw_flags)
        elif op == UBLK_IO_OP_FLUSH:
            prep_fsync(ring, user_data, fd, datasync=True)
        elif op == UBLK_IO_OP_DISCARD:
            prep_fallocate(ring, user_data, fd, _PUNCH, self._offset[tag], self._length[tag])
        elif op == UBLK_IO_OP_WRITE_ZEROES:
            target = self.target
            if not op_flags & UBLK_IO_F_NOUNMAP and target.can_discard:
                prep_fallocate(ring, user_data, fd, _PUNCH, self._offset[tag], self._length[tag])
            elif target.zero_range_works:
                prep_fallocate(ring, user_data, fd, _ZERO, self._offset[tag], self._length[tag])
            else:  # tmpfs, 9p, ...: no ZERO_RANGE; written in the queue thread, rarely asked
                target.write_zeroes(self._offset[tag], self._length[tag], unmap=False)
                return 0
        else:
            return -errno.EOPNOTSUPP
        return None

    def done(self, queue: Queue, tag: int, sub: int, res: int) -> int | None:
        if self._pending[tag]:  # zero-copy: wait for the transfer and the unregister
            if sub == _SUB_REGISTER:  # only a failed register reports (CQE_SKIP_SUCCESS)
                self._reg_err[tag] = res
                return None
            if sub == _SUB_RW:
                self._rw_res[tag] = res
            self._pending[tag] -= 1
            if self._pending[tag]:
                return None
            res = self._reg_err[tag] or self._rw_res[tag]
            self._reg_err[tag] = 0
        if res > 0:  # READ/WRITE: bytes moved (the other ops complete with 0)
            done = self._done[tag] + res
            if done >= self._length[tag]:
                return done
            self._done[tag] = done
            return self._issue(queue, tag)  # a short transfer: the rest
        op = self._op[tag]
        if res in _RETRY and self._retries[tag] < RETRIES:
            self._retries[tag] += 1
            return self._issue(queue, tag)
        if op == UBLK_IO_OP_WRITE_ZEROES and res in (-errno.EOPNOTSUPP, -errno.EINVAL) \
                and self.target.zero_range_works:
            self.target.zero_range_works = False  # remember: the next ones go the slow way
            return self._issue(queue, tag)
        if res == 0 and (op == UBLK_IO_OP_READ or op == UBLK_IO_OP_WRITE):
            return -errno.EIO  # no progress: the file shrank under us
        return res
