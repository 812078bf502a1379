"""liburing-ffi, loaded with ctypes, with the C prototype of every function the runtime calls.

liburing >= 2.4 ships ``liburing-ffi.so.2``, which exports the helpers ``liburing.h`` defines
inline (``io_uring_get_sqe``, ``io_uring_cq_advance``, ...) as real symbols; the plain
``liburing.so.2`` does not, which makes it useless to ctypes. The library is opened by soname,
so the dynamic loader's search (``LD_LIBRARY_PATH``, ``ld.so.cache``) applies, unless
``$UBLK_BINDINGS_LIBURING`` names a file. Nothing here needs 2.13's ``io_uring_prep_uring_cmd``
or ``io_uring_get_sqe128``: uring_cmd SQEs are prepared through the generated ``io_uring_sqe``.

The same library is opened through two ctypes handles. ``CDLL`` releases the GIL around a call:
it is used for what may sleep in ``io_uring_enter`` (submit, wait, ring teardown). ``PyDLL``
keeps the GIL: it is used for the pure memory operations on the mapped rings (get an SQE,
peek CQEs, advance the CQ head), where handing the GIL to another queue thread on every call
would cost far more than the call itself.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any, Callable

from .errors import LiburingUnavailable

__all__ = ["ENV", "SONAME", "Liburing", "load", "KernelTimespec", "IO_URING_SIZE"]

ENV = "UBLK_BINDINGS_LIBURING"
SONAME = "liburing-ffi.so.2"

# liburing's ``struct io_uring`` is 216 bytes on x86-64 in 2.4 .. 2.15. It is ABI-frozen for
# soname .so.2 (that is what its pad fields are for) and only ever touched by liburing itself,
# so we reserve generous room instead of describing its fields.
IO_URING_SIZE = 512

_INSTALL_HINT = (
    "ublk_bindings needs liburing >= 2.4, whose liburing-ffi.so.2 exports the inline helpers "
    "to ctypes. Install it (Debian trixie or later: apt install liburing2; or build "
    "https://github.com/axboe/liburing), or set "
    f"{ENV}=/path/to/liburing-ffi.so.2"
)

_c_ring = ctypes.c_void_p  # struct io_uring *  (opaque, see IO_URING_SIZE)
_c_ptr = ctypes.c_void_p


class KernelTimespec(ctypes.Structure):
    """``struct __kernel_timespec`` (linux/time_types.h), the timeout argument of the waits."""

    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_longlong)]


# name -> (restype, argtypes, may sleep in the kernel: release the GIL)
_PROTOTYPES: dict[str, tuple[Any, list[Any], bool]] = {
    # int io_uring_queue_init_params(unsigned entries, struct io_uring *, struct io_uring_params *)
    "io_uring_queue_init_params": (ctypes.c_int, [ctypes.c_uint, _c_ring, _c_ptr], True),
    # void io_uring_queue_exit(struct io_uring *)
    "io_uring_queue_exit": (None, [_c_ring], True),
    # struct io_uring_sqe *io_uring_get_sqe(struct io_uring *)
    "io_uring_get_sqe": (_c_ptr, [_c_ring], False),
    # int io_uring_submit_and_wait(struct io_uring *, unsigned wait_nr)
    "io_uring_submit_and_wait": (ctypes.c_int, [_c_ring, ctypes.c_uint], True),
    # int io_uring_submit_and_wait_timeout(struct io_uring *, struct io_uring_cqe **,
    #                                      unsigned wait_nr, struct __kernel_timespec *, sigset_t *)
    "io_uring_submit_and_wait_timeout": (
        ctypes.c_int,
        [_c_ring, ctypes.POINTER(_c_ptr), ctypes.c_uint, ctypes.POINTER(KernelTimespec), _c_ptr],
        True,
    ),
    # unsigned io_uring_sq_ready(const struct io_uring *)
    "io_uring_sq_ready": (ctypes.c_uint, [_c_ring], False),
    # unsigned io_uring_peek_batch_cqe(struct io_uring *, struct io_uring_cqe **, unsigned count)
    "io_uring_peek_batch_cqe": (ctypes.c_uint, [_c_ring, _c_ptr, ctypes.c_uint], False),
    # void io_uring_cq_advance(struct io_uring *, unsigned nr)
    "io_uring_cq_advance": (None, [_c_ring, ctypes.c_uint], False),
    # int io_uring_register_buffers_sparse(struct io_uring *, unsigned nr)
    "io_uring_register_buffers_sparse": (ctypes.c_int, [_c_ring, ctypes.c_uint], True),
    # int io_uring_unregister_buffers(struct io_uring *)
    "io_uring_unregister_buffers": (ctypes.c_int, [_c_ring], True),
    # int io_uring_register_buf_ring(struct io_uring *, struct io_uring_buf_reg *, unsigned flags)
    "io_uring_register_buf_ring": (ctypes.c_int, [_c_ring, _c_ptr, ctypes.c_uint], True),
    # int io_uring_unregister_buf_ring(struct io_uring *, int bgid)
    "io_uring_unregister_buf_ring": (ctypes.c_int, [_c_ring, ctypes.c_int], True),
    # int io_uring_major_version(void), int io_uring_minor_version(void)
    "io_uring_major_version": (ctypes.c_int, [], False),
    "io_uring_minor_version": (ctypes.c_int, [], False),
}


class Liburing:
    """The opened library: one attribute per function in ``_PROTOTYPES``, prototypes declared."""

    path: str
    version: tuple[int, int]
    io_uring_queue_init_params: Callable[..., int]
    io_uring_queue_exit: Callable[..., None]
    io_uring_get_sqe: Callable[..., int | None]
    io_uring_sq_ready: Callable[..., int]
    io_uring_submit_and_wait: Callable[..., int]
    io_uring_submit_and_wait_timeout: Callable[..., int]
    io_uring_peek_batch_cqe: Callable[..., int]
    io_uring_cq_advance: Callable[..., None]
    io_uring_register_buffers_sparse: Callable[..., int]
    io_uring_unregister_buffers: Callable[..., int]
    io_uring_register_buf_ring: Callable[..., int]
    io_uring_unregister_buf_ring: Callable[..., int]

    def __init__(self, path: str) -> None:
        self.path = path
        releasing = ctypes.CDLL(path)
        holding = ctypes.PyDLL(path)
        for name, (restype, argtypes, sleeps) in _PROTOTYPES.items():
            try:
                fn = getattr(releasing if sleeps else holding, name)
            except AttributeError:
                raise LiburingUnavailable(
                    f"{path} has no {name}: it is not a liburing-ffi >= 2.4. {_INSTALL_HINT}"
                ) from None
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)
        major: Callable[[], int] = getattr(self, "io_uring_major_version")
        minor: Callable[[], int] = getattr(self, "io_uring_minor_version")
        self.version = (major(), minor())
        if self.version < (2, 4):
            raise LiburingUnavailable(f"{path} is liburing {self.version_string}. {_INSTALL_HINT}")

    @property
    def version_string(self) -> str:
        return "%d.%d" % self.version

    def __repr__(self) -> str:
        return f"<Liburing {self.version_string} {self.path}>"


def _open(name: str) -> Liburing:
    try:
        return Liburing(name)
    except OSError as e:
        raise LiburingUnavailable(f"cannot load {name}: {e}. {_INSTALL_HINT}") from None


@functools.lru_cache(maxsize=None)
def load() -> Liburing:
    """Open liburing-ffi once per process: ``$UBLK_BINDINGS_LIBURING`` or the soname."""
    override = os.environ.get(ENV)
    if override:
        return _open(override)
    try:
        return Liburing(SONAME)
    except OSError:
        pass
    try:  # say why, if it is the pre-2.4 library without the ffi variant
        ctypes.CDLL("liburing.so.2")
        found = " (found liburing.so.2, a liburing older than 2.4 without liburing-ffi)"
    except OSError:
        found = ""
    raise LiburingUnavailable(f"{SONAME} not found{found}. {_INSTALL_HINT}") from None
