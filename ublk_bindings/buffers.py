"""Where a request's data lives: the buffer modes of a ublk device, one chosen by its flags.

* ``copy``: each tag has a buffer of ours whose address FETCH_REQ names; the driver copies a
  WRITE's data into it before we see the request and a READ's data out of it at COMMIT.
* ``user-copy`` (``UBLK_F_USER_COPY``, Linux 6.5+): FETCH names no buffer; the server copies
  the data itself, with pread/pwrite on ``/dev/ublkcN`` at :func:`user_copy_offset`: a WRITE's
  data in before the target runs, a READ's data out before COMMIT.  The queue does both, so a
  target sees the same full buffer as in copy mode.
* ``zero-copy`` (``UBLK_F_SUPPORT_ZERO_COPY``, 6.15+): the target registers a request's pages
  in the ring's buffer table itself (``UBLK_U_IO_REGISTER_IO_BUF``), reads or writes them
  with fixed-buffer SQEs, and unregisters them (``Queue.prep_register_io_buf``): three SQEs,
  hard-linked, where auto-zc needs one.
* ``auto-zc`` (``UBLK_F_AUTO_BUF_REG``, 6.16+): zero copy with no command of ours.  The driver
  registers each request's own pages in the queue ring's buffer table at the index the FETCH
  or COMMIT named (``sqe->addr``, :func:`auto_buf_reg_addr`), and unregisters them at COMMIT.
  The target reads and writes them with fixed-buffer SQEs (``buf_index``), so the data never
  enters the process: there is no buffer to touch.
* ``batch`` (``UBLK_F_BATCH_IO``, 7.0+): the data as in copy mode (the driver copies to and
  from a buffer of ours per tag), but the commands are per queue, not per tag: one
  PREP_IO_CMDS arms every tag, one multishot FETCH_IO_CMDS hands over ready tags in batches,
  and one COMMIT_IO_CMDS completes a whole batch (:mod:`ublk_bindings.batch`).  Batch with
  user copy or zero copy is not served.

The driver leaves a flag it does not know out of what ADD_DEV writes back (Linux 6.12 drops
zero copy silently), so a mode is always taken from the flags the device *has*.
"""

from __future__ import annotations

import enum

from .ublk_cmd import (
    UBLK_F_AUTO_BUF_REG,
    UBLK_F_BATCH_IO,
    UBLK_F_SUPPORT_ZERO_COPY,
    UBLK_F_USER_COPY,
    UBLK_IO_BUF_BITS,
    UBLK_QID_OFF,
    UBLK_TAG_OFF,
    UBLKSRV_IO_BUF_OFFSET,
    ublk_auto_buf_reg,
    ublk_auto_buf_reg_to_sqe_addr,
)

__all__ = ["BufferMode", "buffer_mode", "user_copy_offset", "auto_buf_reg_addr",
           "MAX_USER_COPY_BYTES", "BUFFER_MODE_FLAGS"]


class BufferMode(enum.Enum):
    COPY = "copy"
    USER_COPY = "user-copy"
    ZERO_COPY = "zero-copy"
    AUTO_BUF_REG = "auto-zc"
    BATCH = "batch"

    @property
    def flags(self) -> int:
        """The ``UBLK_F_*`` a device is added with to be served in this mode."""
        return _FLAGS[self]

    @property
    def zero_copy(self) -> bool:
        """Whether the data never reaches the server (no buffer of ours holds it)."""
        return self in (BufferMode.ZERO_COPY, BufferMode.AUTO_BUF_REG)


_FLAGS = {BufferMode.COPY: 0, BufferMode.USER_COPY: UBLK_F_USER_COPY,
          BufferMode.ZERO_COPY: UBLK_F_SUPPORT_ZERO_COPY,
          BufferMode.AUTO_BUF_REG: UBLK_F_AUTO_BUF_REG, BufferMode.BATCH: UBLK_F_BATCH_IO}

BUFFER_MODE_FLAGS = (UBLK_F_USER_COPY | UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_AUTO_BUF_REG
                     | UBLK_F_BATCH_IO)
"""Every flag that changes where a request's data lives."""

MAX_USER_COPY_BYTES = 1 << UBLK_IO_BUF_BITS
"""The largest request user copy can address: the offset within a request has 25 bits."""


def buffer_mode(flags: int) -> BufferMode:
    """The mode a device with ``flags`` (as the driver has them) is served in; ValueError for
    modes this engine does not serve."""
    if flags & UBLK_F_BATCH_IO:
        other = flags & (UBLK_F_USER_COPY | UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_AUTO_BUF_REG)
        if other:
            raise ValueError("UBLK_F_BATCH_IO is served with copy-mode data only, not with "
                             f"flags {other:#x} (user copy, zero copy)")
        return BufferMode.BATCH
    if flags & UBLK_F_AUTO_BUF_REG:
        return BufferMode.AUTO_BUF_REG
    if flags & UBLK_F_SUPPORT_ZERO_COPY:
        return BufferMode.ZERO_COPY
    if flags & UBLK_F_USER_COPY:
        return BufferMode.USER_COPY
    return BufferMode.COPY


def user_copy_offset(q_id: int, tag: int, offset: int = 0) -> int:
    """The ``/dev/ublkcN`` file offset of byte ``offset`` of ``tag``'s request (user copy)."""
    return UBLKSRV_IO_BUF_OFFSET + (q_id << UBLK_QID_OFF) + (tag << UBLK_TAG_OFF) + offset


def auto_buf_reg_addr(index: int, flags: int = 0) -> int:
    """``sqe->addr`` of a FETCH/COMMIT that asks the driver to register the next request's
    pages at buffer ``index`` (``UBLK_AUTO_BUF_REG_FALLBACK`` in ``flags``: hand it over
    unregistered, flagged ``UBLK_IO_F_NEED_REG_BUF``, when that fails)."""
    return ublk_auto_buf_reg_to_sqe_addr(ublk_auto_buf_reg(index=index, flags=flags))
