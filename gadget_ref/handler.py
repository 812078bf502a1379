"""From a ready tag to target I/O: the code every request runs, so it is kept short.

The kernel describes a request in the tag's ``ublksrv_io_desc``: the op in the low byte of
``op_flags``, the ``UBLK_IO_F_*`` flags in place above it (test them against ``op_flags``
itself, not against ``ublksrv_get_flags()``, which shifts them away), and the range in
512-byte sectors whatever the logical block size.  The handler returns what COMMIT_AND_FETCH
reports: bytes done for READ/WRITE, 0 for the others, or ``-errno``.
"""

from __future__ import annotations

import errno

from ublk_bindings import (
    UBLK_IO_F_FUA,
    UBLK_IO_F_NOUNMAP,
    UBLK_IO_OP_DISCARD,
    UBLK_IO_OP_FLUSH,
    UBLK_IO_OP_READ,
    UBLK_IO_OP_WRITE,
    UBLK_IO_OP_WRITE_ZEROES,
    ublksrv_io_desc,
)

from .targets import Target

SECTOR_SHIFT = 9


class RequestHandler:
    """Serves requests against one target; one instance per queue, called from its thread."""

    __slots__ = ("target", "_size", "_read", "_write", "_flush", "_discard", "_write_zeroes",
                 "_writable")

    def __init__(self, target: Target) -> None:
        self.target = target
        self._size = target.size
        # Bound methods looked up once, not per request.
        self._read = target.read
        self._write = target.write
        self._flush = target.flush
        self._discard = target.discard
        self._write_zeroes = target.write_zeroes
        self._writable = not target.read_only

    def __call__(self, tag: int, iod: ublksrv_io_desc, buf: memoryview) -> int:
        op_flags = iod.op_flags
        op = op_flags & 0xFF
        offset = iod.start_sector << SECTOR_SHIFT
        length = iod.nr_sectors << SECTOR_SHIFT
        # A FLUSH has no range (blk-flush sets its sector to ~0); every other op is checked.
        if offset + length > self._size and op != UBLK_IO_OP_FLUSH:
            return -errno.EIO  # the kernel checks against dev_sectors; never trust, never crash
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
            return -(e.errno or errno.EIO)
