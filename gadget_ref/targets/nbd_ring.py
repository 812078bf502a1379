"""One queue's NBD connection, driven by the queue's own ring: depth requests on the wire.

Each request becomes one libnbd command (``nbd_aio_pread``/``pwrite``/``flush``/``trim``/
``zero``) on the tag's own buffer; libnbd writes what the socket takes at once.  The ring
polls the socket (POLLIN always, POLLOUT while libnbd has more to send, as
``nbd_aio_get_direction`` says); each poll CQE is handed to ``nbd_aio_notify_read``/``write``,
then every command libnbd has finished is retired and its tag completed.  No thread, no
blocking call: a queue keeps its whole depth in flight over the network.

When the connection is lost, the requests on it (and those that arrive meanwhile) wait; a new
connection is tried at once and then every ``RETRY_INTERVAL_S``, each attempt driven by the
same polls, and the waiting requests are sent again on the first one that negotiates.  Past
the device's ``reconnect=`` window they fail with EIO, and so does every new request until a
connection is made again: the device never hangs.  Each loss, give-up and reconnect is logged
once, with the reason.  Resending is safe: NBD reads, writes, trims and zeroes are
idempotent, and a write is acknowledged to the kernel only after the server replied to it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import select
import time
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
from ublk_bindings.liburing import KernelTimespec
from ublk_bindings.prep import prep_poll_add, prep_timeout

from ..libnbd import CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, DIRECTION_WRITE, NULL_COMPLETION, Handle

if TYPE_CHECKING:
    from ublk_bindings.queue import Queue

    from .nbd import NbdTarget  # which builds on this module

log = logging.getLogger("ublk_gadget")

RETRY_INTERVAL_S = 1.0
"""Between two connection attempts while the server is unreachable."""
ATTEMPT_TIMEOUT_S = 5.0
"""How long one connection attempt may go unanswered (a blackholed host, a server busy with
another client) before it is dropped for a new one."""

# The sub-indexes of tag 0 that name this module's own SQEs (requests queue none): the
# timer, and the socket polls, whose low bits carry the connection's generation so that a
# poll left on a connection given up is told apart from the live one's.
_SUB_TIMER = 0x7FFF
_SUB_POLL = 0x8000
_SUB_POLL_OUT = 0x4000
_GEN_MASK = 0x3FFF

_BOTH = select.POLLIN | select.POLLOUT
_LOST = (errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNRESET, errno.EPIPE)
"""A command's errno that says the connection, not the server's disk, failed."""


class NbdRingIO:
    """One queue's connection and the requests on it (a ``handler.RingIO``)."""

    __slots__ = ("target", "lib", "handle", "h", "name", "finished", "_op", "_op_flags",
                 "_offset", "_length", "_then_flush", "_tag_of", "_waiting", "_gen",
                 "_polling", "_connecting", "_attempt_at", "_lost_at", "_gave_up", "_reason", "_timer",
                 "_timespec")

    def __init__(self, target: NbdTarget, handle: Handle, depth: int, name: str) -> None:
        """``handle``: connected already (the target opens them before the device exists, so
        a successor is connected before its owner lets go)."""
        self.target = target
        self.lib = handle.lib
        self.handle = handle
        self.h = handle.h
        self.name = name
        self.finished: list[tuple[int, int]] = []
        self._op = [0] * depth
        self._op_flags = [0] * depth
        self._offset = [0] * depth
        self._length = [0] * depth
        self._then_flush = [False] * depth  # a FUA write to a server without FUA: then FLUSH
        self._tag_of: dict[int, int] = {}  # the cookie of each command on the wire -> its tag
        self._waiting: list[int] = []  # tags to send once connected
        self._gen = 0  # bumped with each new connection
        self._polling = 0  # the poll directions armed on the current connection
        self._connecting = False
        self._attempt_at = 0.0
        self._lost_at: float | None = None  # when the connection was lost (None: it is up)
        self._gave_up = False  # past the reconnect window: requests fail at once
        self._reason = ""
        self._timer = False
        self._timespec = KernelTimespec(int(RETRY_INTERVAL_S),
                                        int(RETRY_INTERVAL_S % 1 * 1e9))

    # -- requests ---------------------------------------------------------------------------

    def start(self, queue: Queue, tag: int, op: int, op_flags: int, offset: int,
              length: int) -> int | None:
        self._op[tag] = op
        self._op_flags[tag] = op_flags
        self._offset[tag] = offset
        self._length[tag] = length
        self._then_flush[tag] = False
        if self._lost_at is None:
            result = self._send(queue, tag)
            self._arm(queue)
            return result
        if self._gave_up:
            return -errno.EIO
        self._waiting.append(tag)
        return None

    def _send(self, queue: Queue, tag: int) -> int | None:
        """Put ``tag``'s command on the wire; its result if it failed at once, else None."""
        lib, h, op = self.lib, self.h, self._op[tag]
        length, offset = self._length[tag], self._offset[tag]
        if op == UBLK_IO_OP_READ:
            cookie = lib.nbd_aio_pread(h, queue.buffer_address(tag), length, offset,
                                       NULL_COMPLETION, 0)
        elif op == UBLK_IO_OP_WRITE:
            flags = 0
            if self._op_flags[tag] & UBLK_IO_F_FUA:
                if self.target.can_fua:
                    flags = CMD_FLAG_FUA
                else:
                    self._then_flush[tag] = True
            cookie = lib.nbd_aio_pwrite(h, queue.buffer_address(tag), length, offset,
                                        NULL_COMPLETION, flags)
        elif op == UBLK_IO_OP_FLUSH:
            if not self.target.volatile_cache:
                return 0
            cookie = lib.nbd_aio_flush(h, NULL_COMPLETION, 0)
        elif op == UBLK_IO_OP_DISCARD:
            cookie = lib.nbd_aio_trim(h, length, offset, NULL_COMPLETION, 0)
        elif op == UBLK_IO_OP_WRITE_ZEROES:
            flags = CMD_FLAG_NO_HOLE if self._op_flags[tag] & UBLK_IO_F_NOUNMAP else 0
            cookie = lib.nbd_aio_zero(h, length, offset, NULL_COMPLETION, flags)
        else:
            return -errno.EOPNOTSUPP
        if cookie == -1:
            err = lib.nbd_get_errno() or errno.EIO
            if err in _LOST or lib.nbd_aio_is_dead(h) or lib.nbd_aio_is_closed(h):
                self._waiting.append(tag)
                self._lost(queue, lib.error("sending a command"))
                return None
            return -err
        self._tag_of[cookie] = tag
        return None

    def _retire(self, queue: Queue) -> None:
        """Complete every command libnbd has finished (into ``finished``)."""
        lib, h, tag_of = self.lib, self.h, self._tag_of
        while True:
            cookie = lib.nbd_aio_peek_command_completed(h)
            if cookie <= 0:
                return
            tag = tag_of.pop(cookie)
            if lib.nbd_aio_command_completed(h, cookie) == 1:
                if self._then_flush[tag]:  # the FUA of a server without it: flush, then done
                    self._then_flush[tag] = False
                    self._op[tag] = UBLK_IO_OP_FLUSH
                    result = self._send(queue, tag)
                    if result is not None:
                        self.finished.append((tag, result))
                    continue
                op = self._op[tag]
                done = self._length[tag] if op in (UBLK_IO_OP_READ, UBLK_IO_OP_WRITE) else 0
                self.finished.append((tag, done))
                continue
            err = lib.nbd_get_errno() or errno.EIO
            if err in _LOST:
                self._waiting.append(tag)  # the connection failed, not the command
            else:
                self.finished.append((tag, -err))

    # -- the socket, driven by the ring ---------------------------------------------------

    def done(self, queue: Queue, tag: int, sub: int, res: int) -> None:
        if sub == _SUB_TIMER:
            self._timer = False
            self._on_timer(queue)
            return None
        if sub & _GEN_MASK != self._gen & _GEN_MASK:
            return None  # a poll of a connection given up
        out = bool(sub & _SUB_POLL_OUT)
        self._polling &= ~(select.POLLOUT if out else select.POLLIN)
        if res == -errno.ECANCELED:  # the ring is going away
            return None
        if res < 0:
            self._lost(queue, OSError(-res, f"poll of the NBD socket: {errno.errorcode.get(-res)}"))
            return None
        lib, h = self.lib, self.h
        if res > 0:  # revents; POLLHUP/POLLERR come as a read that fails
            if (lib.nbd_aio_notify_write(h) if out else lib.nbd_aio_notify_read(h)) == -1 \
                    or lib.nbd_aio_is_dead(h):
                self._lost(queue, lib.error("connection"))
                return None
        if self._connecting:
            if not lib.nbd_aio_is_ready(h):
                self._arm(queue)
                return None
            self._connected(queue)
        self._retire(queue)
        self._arm(queue)
        return None

    def _arm(self, queue: Queue) -> None:
        """Poll for what libnbd waits on: replies always, room to send while it has some."""
        if not self.h or self._polling == _BOTH:
            return
        want = select.POLLIN
        if self.lib.nbd_aio_get_direction(self.h) & DIRECTION_WRITE:
            want |= select.POLLOUT
        missing = want & ~self._polling
        if not missing:
            return
        fd = self.lib.nbd_aio_get_fd(self.h)
        if fd < 0:  # the connection died inside a call (a send that met a closed socket)
            self._lost(queue, OSError(errno.ENOTCONN, "the socket closed under a send"))
            return
        gen = self._gen & _GEN_MASK
        if missing & select.POLLIN:
            prep_poll_add(queue.ring, queue.io_data(0, _SUB_POLL | gen), fd, select.POLLIN)
        if missing & select.POLLOUT:
            prep_poll_add(queue.ring, queue.io_data(0, _SUB_POLL | _SUB_POLL_OUT | gen), fd,
                          select.POLLOUT)
        self._polling |= missing

    # -- losing and finding the server ----------------------------------------------------

    def _lost(self, queue: Queue, reason: BaseException) -> None:
        """The connection (or an attempt at one) failed: keep its requests and try again."""
        for tag in self._tag_of.values():
            self._waiting.append(tag)
        self._tag_of.clear()
        was_connecting = self._connecting
        self._drop()
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.warning("%s: connection to %s lost: %s; retrying for %d s with %d requests "
                        "waiting", self.name, self.target.uri, reason, self.target.reconnect,
                        len(self._waiting))
        else:
            self._reason = str(reason)
        if was_connecting or not self._start_connect(queue):
            self._set_timer(queue)

    def _drop(self) -> None:
        self.handle.close()
        self.h = None
        self._gen += 1
        self._polling = 0
        self._connecting = False

    def _start_connect(self, queue: Queue) -> bool:
        """Begin a new connection; whether it is under way (else the timer tries again)."""
        self.handle = Handle(self.target.uri, self.name)
        self.h = self.handle.h
        self._connecting = True
        self._attempt_at = time.monotonic()
        try:
            self.handle.connect_async()
        except OSError as e:
            self._reason = str(e)
            self._drop()
            return False
        if self.lib.nbd_aio_is_ready(self.h):
            self._connected(queue)
        self._arm(queue)
        return True

    def _connected(self, queue: Queue) -> None:
        """A new connection negotiated: check it serves the same export, send what waits."""
        self._connecting = False
        try:
            size = self.handle.size()
        except OSError as e:
            size, self._reason = -1, str(e)
        if size < self.target.size:
            if size >= 0:
                self._reason = f"the export is {size} bytes now, the device {self.target.size}"
            self._drop()
            self._set_timer(queue)
            return
        assert self._lost_at is not None
        waiting, self._waiting = self._waiting, []
        log.warning("%s: reconnected to %s after %.1f s; sending %d waiting requests again",
                    self.name, self.target.uri, time.monotonic() - self._lost_at, len(waiting))
        self._lost_at = None
        self._gave_up = False
        for i, tag in enumerate(waiting):
            result = self._send(queue, tag)
            if result is not None:
                self.finished.append((tag, result))
            if self._lost_at is not None:  # lost again while sending: the rest wait on
                self._waiting.extend(waiting[i + 1:])
                return

    def _set_timer(self, queue: Queue) -> None:
        if not self._timer:
            prep_timeout(queue.ring, queue.io_data(0, _SUB_TIMER),
                         ctypes.addressof(self._timespec))
            self._timer = True

    def _on_timer(self, queue: Queue) -> None:
        if self._lost_at is None:
            return
        if not self._gave_up and time.monotonic() - self._lost_at >= self.target.reconnect:
            self._gave_up = True
            waiting, self._waiting = self._waiting, []
            log.error("%s: %s unreachable for %d s (%s): %d requests failed with EIO; new "
                      "ones fail at once until it answers again", self.name, self.target.uri,
                      self.target.reconnect, self._reason or "no answer", len(waiting))
            self.finished.extend((tag, -errno.EIO) for tag in waiting)
        if self._connecting and time.monotonic() - self._attempt_at > ATTEMPT_TIMEOUT_S:
            self._reason = f"no answer to a connection attempt in {ATTEMPT_TIMEOUT_S:g} s"
            self._drop()
        if not self._connecting:
            self._start_connect(queue)
        self._set_timer(queue)  # until connected: the window's end, or the next attempt

    def close(self) -> None:
        self.handle.close()
        self.h = None
