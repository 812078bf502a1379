"""libnbd (``libnbd.so.0``, Debian's ``libnbd0``), loaded with ctypes: the calls the nbd target
makes, each checked by one errno-aware wrapper.

Why ctypes and not libnbd's Python bindings: those are built for one interpreter (Debian's
``python3-libnbd`` imports only in Debian's own python3), and libnbd is not on PyPI as a
wheel, so a pip user in a venv could not have them; the C library is one apt package on every
distribution.  Loaded on first use: a gadget that serves no nbd device never needs it.

Two handles on the library, as for liburing: ``CDLL`` (the GIL released) for what may block
(starting a connection resolves the host's name; closing one), ``PyDLL`` (the GIL kept)
for the non-blocking ``nbd_aio_*`` calls of the hot path, where handing the GIL to another
queue thread on every call would cost more than the call.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import select
import time
from typing import Any

__all__ = ["SONAME", "NbdError", "Nbd", "Handle", "CMD_FLAG_FUA", "DIRECTION_READ",
           "DIRECTION_WRITE", "SIZE_MINIMUM", "SIZE_MAXIMUM"]

SONAME = "libnbd.so.0"
ENV = "UBLK_GADGET_LIBNBD"
"""A path to load instead of the soname."""

# libnbd.h
CMD_FLAG_FUA = 0x01
CMD_FLAG_NO_HOLE = 0x02
DIRECTION_READ = 1
DIRECTION_WRITE = 2
SIZE_MINIMUM, SIZE_MAXIMUM = 0, 2


class NbdError(OSError):
    """A libnbd call failed: ``errno`` as libnbd set it, the message ``nbd_get_error`` gave."""


class _Completion(ctypes.Structure):
    """``nbd_completion_callback``, passed by value; all NULL is ``NBD_NULL_COMPLETION``: the
    command is retired with ``nbd_aio_command_completed`` instead of a callback (no ctypes
    callback, no GIL dance per request)."""

    _fields_ = [("callback", ctypes.c_void_p), ("user_data", ctypes.c_void_p),
                ("free", ctypes.c_void_p)]


NULL_COMPLETION = _Completion()

_h = ctypes.c_void_p  # struct nbd_handle *
_u64, _i64, _u32, _int = ctypes.c_uint64, ctypes.c_int64, ctypes.c_uint32, ctypes.c_int

# name -> (restype, argtypes, may block: release the GIL)
_PROTOTYPES: dict[str, tuple[Any, list[Any], bool]] = {
    "nbd_create": (_h, [], False),
    "nbd_close": (None, [_h], True),
    "nbd_get_error": (ctypes.c_char_p, [], False),
    "nbd_get_errno": (_int, [], False),
    "nbd_set_handle_name": (_int, [_h, ctypes.c_char_p], False),
    "nbd_set_request_structured_replies": (_int, [_h, ctypes.c_bool], False),
    "nbd_aio_connect_uri": (_int, [_h, ctypes.c_char_p], True),  # may resolve a name
    "nbd_get_size": (_i64, [_h], False),
    "nbd_get_block_size": (_i64, [_h, _int], False),
    "nbd_is_read_only": (_int, [_h], False),
    "nbd_can_flush": (_int, [_h], False),
    "nbd_can_fua": (_int, [_h], False),
    "nbd_can_trim": (_int, [_h], False),
    "nbd_can_zero": (_int, [_h], False),
    "nbd_can_multi_conn": (_int, [_h], False),
    "nbd_aio_pread": (_i64, [_h, ctypes.c_void_p, ctypes.c_size_t, _u64, _Completion, _u32],
                      False),
    "nbd_aio_pwrite": (_i64, [_h, ctypes.c_void_p, ctypes.c_size_t, _u64, _Completion, _u32],
                       False),
    "nbd_aio_flush": (_i64, [_h, _Completion, _u32], False),
    "nbd_aio_trim": (_i64, [_h, _u64, _u64, _Completion, _u32], False),
    "nbd_aio_zero": (_i64, [_h, _u64, _u64, _Completion, _u32], False),
    "nbd_aio_get_fd": (_int, [_h], False),
    "nbd_aio_get_direction": (ctypes.c_uint, [_h], False),
    "nbd_aio_notify_read": (_int, [_h], False),
    "nbd_aio_notify_write": (_int, [_h], False),
    "nbd_aio_is_ready": (_int, [_h], False),
    "nbd_aio_is_dead": (_int, [_h], False),
    "nbd_aio_is_closed": (_int, [_h], False),
    "nbd_aio_peek_command_completed": (_i64, [_h], False),
    "nbd_aio_command_completed": (_int, [_h, _u64], False),
}

_INSTALL_HINT = ("the nbd target needs libnbd (Debian/Ubuntu: apt install libnbd0; Fedora: "
                 f"dnf install libnbd), or {ENV}=/path/to/libnbd.so.0")


class Nbd:
    """The library's functions, typed; :meth:`error` turns libnbd's thread-local error into
    an :class:`NbdError`."""

    def __init__(self, path: str) -> None:
        blocking = ctypes.CDLL(path)
        quick = ctypes.PyDLL(path)
        for name, (restype, argtypes, may_block) in _PROTOTYPES.items():
            fn = getattr(blocking if may_block else quick, name)
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)

    def error(self, what: str) -> NbdError:
        """The error of the libnbd call that just failed in this thread, naming ``what``."""
        err = self.nbd_get_errno() or errno.EIO
        message = (self.nbd_get_error() or b"").decode(errors="replace")
        return NbdError(err, f"{what}: {message or os.strerror(err)}")

    # Declared for the type checker; set from _PROTOTYPES in __init__.
    nbd_create: Any
    nbd_close: Any
    nbd_get_error: Any
    nbd_get_errno: Any
    nbd_set_handle_name: Any
    nbd_set_request_structured_replies: Any
    nbd_aio_connect_uri: Any
    nbd_get_size: Any
    nbd_get_block_size: Any
    nbd_is_read_only: Any
    nbd_can_flush: Any
    nbd_can_fua: Any
    nbd_can_trim: Any
    nbd_can_zero: Any
    nbd_can_multi_conn: Any
    nbd_aio_pread: Any
    nbd_aio_pwrite: Any
    nbd_aio_flush: Any
    nbd_aio_trim: Any
    nbd_aio_zero: Any
    nbd_aio_get_fd: Any
    nbd_aio_get_direction: Any
    nbd_aio_notify_read: Any
    nbd_aio_notify_write: Any
    nbd_aio_is_ready: Any
    nbd_aio_is_dead: Any
    nbd_aio_is_closed: Any
    nbd_aio_peek_command_completed: Any
    nbd_aio_command_completed: Any


@functools.lru_cache(maxsize=None)
def load() -> Nbd:
    """The library, loaded once; NbdError (ENOENT) with how to install it, if it is missing."""
    path = os.environ.get(ENV) or SONAME
    try:
        return Nbd(path)
    except OSError as e:
        raise NbdError(errno.ENOENT, f"cannot load {path} ({e}): {_INSTALL_HINT}") from None


class Handle:
    """One NBD connection (``struct nbd_handle``), connected by URI.

    ``connect`` blocks until the server negotiated (start-up: errors go to the user before any
    device exists); ``connect_async`` only starts it, and the queue's ring drives it
    (:meth:`fd`, :meth:`direction`, ``notify_*``) as it drives commands.
    """

    __slots__ = ("lib", "h", "uri")

    def __init__(self, uri: str, name: str = "") -> None:
        self.lib = lib = load()
        self.uri = uri
        self.h = lib.nbd_create()
        if not self.h:
            raise lib.error("nbd_create")
        if name:
            lib.nbd_set_handle_name(self.h, name.encode())
        # Simple replies: a read's reply is a header and the data, two recv() calls; a
        # structured one takes four (header, chunk header, offset, data).  What structured
        # replies add (holes, block status, errors mid-read) a block device does not use.
        lib.nbd_set_request_structured_replies(self.h, False)

    def connect(self, timeout: float) -> Handle:
        """Connect and negotiate, waiting at most ``timeout`` seconds for the server.

        Not ``nbd_connect_uri``: it has no timeout, and a server that serves one client at a
        time (qemu-nbd without ``--shared``) accepts the TCP or unix connection of a second
        one and never starts its handshake.
        """
        lib, h = self.lib, self.h
        self.connect_async()
        deadline = time.monotonic() + timeout
        poller = select.poll()
        while not lib.nbd_aio_is_ready(h):
            if lib.nbd_aio_is_dead(h) or lib.nbd_aio_is_closed(h):
                raise lib.error(f"connecting to {self.uri}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise NbdError(errno.ETIMEDOUT, f"connecting to {self.uri}: no answer in "
                               f"{timeout:g} s (a server that serves one client at a time, "
                               "such as qemu-nbd without --shared, waits for the one it has)")
            fd, direction = lib.nbd_aio_get_fd(h), lib.nbd_aio_get_direction(h)
            events = (select.POLLIN if direction & DIRECTION_READ else 0) | \
                (select.POLLOUT if direction & DIRECTION_WRITE else 0)
            poller.register(fd, events)
            ready = poller.poll(left * 1000)
            poller.unregister(fd)
            for _, revents in ready:
                writable = revents & select.POLLOUT and direction & DIRECTION_WRITE
                if (lib.nbd_aio_notify_write(h) if writable else lib.nbd_aio_notify_read(h)) \
                        == -1:
                    raise lib.error(f"connecting to {self.uri}")
        return self

    def connect_async(self) -> None:
        if self.lib.nbd_aio_connect_uri(self.h, self.uri.encode()) == -1:
            raise self.lib.error(f"connecting to {self.uri}")

    def flag(self, name: str) -> bool:
        """One of ``is_read_only``, ``can_flush``, ``can_fua``, ``can_trim``, ``can_zero``,
        ``can_multi_conn``, as the server negotiated it."""
        r: int = getattr(self.lib, f"nbd_{name}")(self.h)
        if r == -1:
            raise self.lib.error(f"nbd_{name}")
        return bool(r)

    def size(self) -> int:
        r: int = self.lib.nbd_get_size(self.h)
        if r == -1:
            raise self.lib.error("nbd_get_size")
        return r

    def block_size(self, which: int) -> int:
        """The server's minimum/preferred/maximum block size; 0 where it stated none."""
        r: int = self.lib.nbd_get_block_size(self.h, which)
        if r == -1:
            raise self.lib.error("nbd_get_block_size")
        return r

    def close(self) -> None:
        """Drop the connection at once (no NBD_CMD_DISC round trip: a successor may be
        serving already); idempotent."""
        if self.h:
            self.lib.nbd_close(self.h)
            self.h = None
