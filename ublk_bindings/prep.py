"""SQE preparation for a target's I/O, named after liburing's ``io_uring_prep_*``.

Each helper queues one SQE on ``ring`` (``Ring.prep``: one ``pack_into``, no foreign call)
with the ``user_data`` the caller gives, normally ``Queue.io_data(tag, sub)``.  Addresses are
plain integers (a tag's buffer: ``Queue.buffer_address(tag)``; an iovec array you keep alive
until the completion arrives).
"""

from __future__ import annotations

from .io_uring import (
    IORING_FSYNC_DATASYNC,
    IORING_OP_FALLOCATE,
    IORING_OP_FSYNC,
    IORING_OP_POLL_ADD,
    IORING_OP_READ,
    IORING_OP_READ_FIXED,
    IORING_OP_READV,
    IORING_OP_TIMEOUT,
    IORING_OP_WRITE,
    IORING_OP_WRITE_FIXED,
    IORING_OP_WRITEV,
)
from .ring import Ring

__all__ = ["prep_read", "prep_write", "prep_readv", "prep_writev", "prep_read_fixed",
           "prep_write_fixed", "prep_fsync", "prep_fallocate", "prep_poll_add", "prep_timeout"]


def prep_read(ring: Ring, user_data: int, fd: int, addr: int, nbytes: int, offset: int,
              rw_flags: int = 0) -> None:
    ring.prep(IORING_OP_READ, fd, addr, nbytes, offset, user_data, op_flags=rw_flags)


def prep_write(ring: Ring, user_data: int, fd: int, addr: int, nbytes: int, offset: int,
               rw_flags: int = 0) -> None:
    """``rw_flags``: ``os.RWF_DSYNC`` makes it a FUA write."""
    ring.prep(IORING_OP_WRITE, fd, addr, nbytes, offset, user_data, op_flags=rw_flags)


def prep_readv(ring: Ring, user_data: int, fd: int, iovecs: int, nr_vecs: int, offset: int,
               rw_flags: int = 0) -> None:
    ring.prep(IORING_OP_READV, fd, iovecs, nr_vecs, offset, user_data, op_flags=rw_flags)


def prep_writev(ring: Ring, user_data: int, fd: int, iovecs: int, nr_vecs: int, offset: int,
                rw_flags: int = 0) -> None:
    ring.prep(IORING_OP_WRITEV, fd, iovecs, nr_vecs, offset, user_data, op_flags=rw_flags)


def prep_read_fixed(ring: Ring, user_data: int, fd: int, addr: int, nbytes: int, offset: int,
                    buf_index: int, rw_flags: int = 0, sqe_flags: int = 0) -> None:
    """Into registered buffer ``buf_index`` (``addr`` lies inside it; for a kernel-registered
    ublk request buffer, the offset within the request)."""
    ring.prep(IORING_OP_READ_FIXED, fd, addr, nbytes, offset, user_data, op_flags=rw_flags,
              buf_index=buf_index, sqe_flags=sqe_flags)


def prep_write_fixed(ring: Ring, user_data: int, fd: int, addr: int, nbytes: int, offset: int,
                     buf_index: int, rw_flags: int = 0, sqe_flags: int = 0) -> None:
    ring.prep(IORING_OP_WRITE_FIXED, fd, addr, nbytes, offset, user_data, op_flags=rw_flags,
              buf_index=buf_index, sqe_flags=sqe_flags)


def prep_fsync(ring: Ring, user_data: int, fd: int, datasync: bool = True) -> None:
    """fdatasync (``datasync``) or fsync of the whole file."""
    ring.prep(IORING_OP_FSYNC, fd, 0, 0, 0, user_data,
              op_flags=IORING_FSYNC_DATASYNC if datasync else 0)


def prep_fallocate(ring: Ring, user_data: int, fd: int, mode: int, offset: int,
                   length: int) -> None:
    """``fallocate(fd, mode, offset, length)``: io_uring carries the length in ``addr`` and
    the mode in ``len``."""
    ring.prep(IORING_OP_FALLOCATE, fd, length, mode, offset, user_data)


def prep_poll_add(ring: Ring, user_data: int, fd: int, events: int) -> None:
    """One-shot poll for ``events`` (``select.POLLIN``, ...); the CQE's res is the revents."""
    ring.prep(IORING_OP_POLL_ADD, fd, 0, 0, 0, user_data, op_flags=events)


def prep_timeout(ring: Ring, user_data: int, timespec: int, count: int = 0,
                 flags: int = 0) -> None:
    """A timer: completes with -ETIME once the ``__kernel_timespec`` at address ``timespec``
    (``liburing.KernelTimespec``, kept alive until then) has passed, or with 0 after ``count``
    other completions (0: only the time counts)."""
    ring.prep(IORING_OP_TIMEOUT, -1, timespec, 1, count, user_data, op_flags=flags)
