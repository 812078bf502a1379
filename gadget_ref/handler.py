"""From a ready tag to target I/O: the code every request runs, so it is kept short.

The kernel describes a request in the tag's ``ublksrv_io_desc``: the op in the low byte of
``op_flags``, the ``UBLK_IO_F_*`` flags in place above it (test them against ``op_flags``
itself, not against ``ublksrv_get_flags()``, which shifts them away), and the range in
512-byte sectors whatever the logical block size.  The handler returns what COMMIT_AND_FETCH
reports: bytes done for READ/WRITE, 0 for the others, or ``-errno``.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import Protocol

from ublk_bindings import (
    UBLK_IO_F_FUA,
    UBLK_IO_F_NOUNMAP,
    UBLK_IO_OP_DISCARD,
    UBLK_IO_OP_FLUSH,
    UBLK_IO_OP_READ,
    UBLK_IO_OP_WRITE,
    UBLK_IO_OP_WRITE_ZEROES,
    ublksrv_get_op,
    ublksrv_io_desc,
)
from ublk_bindings.queue import Queue

from .targets import Target

SECTOR_SHIFT = 9

log = logging.getLogger("ublk_gadget")

_OP_NAMES = {UBLK_IO_OP_READ: "READ", UBLK_IO_OP_WRITE: "WRITE", UBLK_IO_OP_FLUSH: "FLUSH",
             UBLK_IO_OP_DISCARD: "DISCARD", UBLK_IO_OP_WRITE_ZEROES: "WRITE_ZEROES"}


class IOErrors:
    """A device's failed requests, told once: a failing disk fails thousands of requests.

    The first failure of each (op, errno) is logged at once with its sector range; later
    ones are only counted, with the range they span, until :meth:`report` (the daemon's
    health check, every second) logs how many more there were.  Shared by the device's
    queues; the lock is taken only on the failure path.
    """

    def __init__(self) -> None:
        self.device = "ublkb?"  # named (``named``) once the driver has numbered the device
        self._lock = threading.Lock()
        self._seen: set[tuple[int, int]] = set()
        self._pending: dict[tuple[int, int], list[int]] = {}  # count, first, last sector

    def named(self, device: str) -> IOErrors:
        self.device = device
        return self

    def failed(self, op: int, sector: int, sectors: int, err: int) -> None:
        key = (op, err)
        last = sector + max(sectors, 1) - 1
        with self._lock:
            if key not in self._seen:
                self._seen.add(key)
                log.error("%s: %s of sectors %d-%d failed: %s (%s); more of these are counted, "
                          "not logged one by one", self.device, _OP_NAMES.get(op, f"op {op}"),
                          sector, last, errno.errorcode.get(err, str(err)), os.strerror(err))
                return
            pending = self._pending.setdefault(key, [0, sector, last])
            pending[0] += 1
            pending[1] = min(pending[1], sector)
            pending[2] = max(pending[2], last)

    def report(self) -> None:
        """Log the failures counted since the last report, one line per (op, errno)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for (op, err), (count, first, last) in sorted(pending.items()):
            log.error("%s: %d more %s failures (%s) in sectors %d-%d", self.device, count,
                      _OP_NAMES.get(op, f"op {op}"), errno.errorcode.get(err, str(err)),
                      first, last)


class RingIO(Protocol):
    """A target's I/O on the queue's own ring (the file target's ``FileRingIO``).

    ``start`` queues the SQEs of one request, or returns its result when there is nothing to
    queue; ``done`` takes each of their CQEs and returns the request's result once it is
    finished (None: more I/O is on its way for it).  A CQE may also finish requests of other
    tags (a network target's socket poll): it appends their ``(tag, result)`` to
    ``finished``, which the caller empties after each call.
    """

    finished: list[tuple[int, int]]

    def start(self, queue: Queue, tag: int, op: int, op_flags: int, offset: int,
              length: int) -> int | None: ...

    def done(self, queue: Queue, tag: int, sub: int, res: int) -> int | None: ...


class RequestHandler:
    """Serves requests against one target at once (null, mem); one instance per queue,
    called from its thread as a ``ublk_bindings.queue.Handler``."""

    __slots__ = ("target", "_size", "_read", "_write", "_flush", "_discard", "_write_zeroes",
                 "_writable", "_errors")

    def __init__(self, target: Target, errors: IOErrors | None = None) -> None:
        self.target = target
        self._errors = errors if errors is not None else IOErrors()
        self._size = target.size
        # Bound methods looked up once, not per request.
        self._read = target.read
        self._write = target.write
        self._flush = target.flush
        self._discard = target.discard
        self._write_zeroes = target.write_zeroes
        self._writable = not target.read_only

    def __call__(self, tag: int, iod: ublksrv_io_desc, buf: memoryview) -> int:
        """Serve one request at once with the target's byte-addressed methods."""
        op_flags = iod.op_flags
        op = ublksrv_get_op(iod)
        offset = iod.start_sector << SECTOR_SHIFT
        length = iod.nr_sectors << SECTOR_SHIFT
        if offset + length > self._size and op != UBLK_IO_OP_FLUSH:
            return -errno.EIO
        try:
            if op == UBLK_IO_OP_READ:
                return self._read(offset, buf[:length])
            if op == UBLK_IO_OP_FLUSH:
                self._flush()
                return 0
            if not self._writable:
                return -errno.EROFS
            if op == UBLK_IO_OP_WRITE:
                return self._write(offset, buf[:length], bool(op_flags & UBLK_IO_F_FUA))
            if op == UBLK_IO_OP_DISCARD:
                self._discard(offset, length)
                return 0
            if op == UBLK_IO_OP_WRITE_ZEROES:
                self._write_zeroes(offset, length, not op_flags & UBLK_IO_F_NOUNMAP)
                return 0
            return -errno.EOPNOTSUPP
        except OSError as e:
            err = e.errno or errno.EIO
            self._errors.failed(op, iod.start_sector, iod.nr_sectors, err)
            return -err


class RingRequests:
    """Serves requests as SQEs on the queue's own ring (file); one instance per queue.

    A ``ublk_bindings.queue.TargetOps``: each request is checked here (range, read-only, op)
    as :class:`RequestHandler` checks it, started by the target's :class:`RingIO`, and
    completed when it says its CQEs are all back.
    """

    __slots__ = ("_io", "_size", "_writable", "_errors", "_finished")

    def __init__(self, ring_io: RingIO, target: Target, errors: IOErrors | None = None) -> None:
        self._io = ring_io
        self._finished = ring_io.finished
        self._size = target.size
        self._writable = not target.read_only
        self._errors = errors if errors is not None else IOErrors()

    def queue_io(self, queue: Queue, tag: int, iod: ublksrv_io_desc) -> int | None:
        op = ublksrv_get_op(iod)
        offset = iod.start_sector << SECTOR_SHIFT
        length = iod.nr_sectors << SECTOR_SHIFT
        if offset + length > self._size and op != UBLK_IO_OP_FLUSH:
            return -errno.EIO
        if op not in _OP_NAMES:
            return -errno.EOPNOTSUPP
        if not self._writable and op not in (UBLK_IO_OP_READ, UBLK_IO_OP_FLUSH):
            return -errno.EROFS
        try:
            result = self._io.start(queue, tag, op, iod.op_flags, offset, length)
        except OSError as e:
            result = -(e.errno or errno.EIO)
        if result is not None and result < 0:
            self._errors.failed(op, iod.start_sector, iod.nr_sectors, -result)
        if self._finished:
            self._complete_finished(queue)
        return result

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> int | None:
        result = self._io.done(queue, tag, sub, res)
        if result is not None and result < 0:
            self._failed(queue, tag, result)
        if self._finished:
            self._complete_finished(queue)
        return result  # the queue commits it (None: more CQEs to come)

    def _complete_finished(self, queue: Queue) -> None:
        """Commit the requests of other tags that the last call finished."""
        for tag, result in self._finished:
            if result < 0:
                self._failed(queue, tag, result)
            queue.complete(tag, result)
        self._finished.clear()

    def _failed(self, queue: Queue, tag: int, result: int) -> None:
        iod = queue.descs[tag]
        self._errors.failed(ublksrv_get_op(iod), iod.start_sector, iod.nr_sectors, -result)
