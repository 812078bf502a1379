"""Errors of the ublk runtime: the kernel's errno, its name, and the command that got it.

liburing and the ublk driver report failure as a negative errno in a return value or in
``cqe->res``; :func:`check` turns that convention into a :class:`UblkError` at the one place
the command's name is known, so a caller never sees a bare number.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

__all__ = ["UblkError", "UblkTimeout", "LiburingUnavailable", "check", "checked"]


# Where two names share a number, the one the kernel's sources use (Python's
# errno.errorcode picks ENOTSUP and EDEADLOCK on Linux); ENOTSUPP is kernel-internal but
# early ublk (6.1) lets it reach user space for an unknown command.
_KERNEL_NAMES = {errno.EOPNOTSUPP: "EOPNOTSUPP", errno.EDEADLK: "EDEADLK", 524: "ENOTSUPP"}


def errno_name(err: int) -> str:
    """``ENODEV`` for 19; ``errno 4242`` for a number this platform does not name."""
    return _KERNEL_NAMES.get(err) or errno.errorcode.get(err, f"errno {err}")


class UblkError(OSError):
    """A command the kernel refused: ``ADD_DEV failed: EINVAL (Invalid argument)``.

    An :class:`OSError` so existing ``except OSError`` code and ``e.errno`` checks keep
    working; ``command`` names what was refused (the UAPI name without ``UBLK_CMD_``/
    ``UBLK_IO_``, or the io_uring call).
    """

    command: str

    def __init__(self, err: int, command: str) -> None:
        super().__init__(err, os.strerror(err))
        self.command = command

    @property
    def errno_name(self) -> str:
        return errno_name(self.errno or 0)

    def __str__(self) -> str:
        return f"{self.command} failed: {self.errno_name} ({self.strerror})"

    def __reduce__(self) -> tuple[type[UblkError], tuple[int, str]]:
        # OSError pickles as (errno, strerror); ours is (errno, command).
        return (type(self), (self.errno or 0, self.command))


class UblkTimeout(UblkError, TimeoutError):
    """A command whose completion did not arrive in time; it is still in flight.

    Its buffers stay referenced by the ring until the completion comes (or the ring is
    closed), so the kernel never writes into freed memory.
    """

    def __init__(self, command: str, timeout: float) -> None:
        super().__init__(errno.ETIME, command)
        self.timeout = timeout

    def __str__(self) -> str:
        return f"{self.command}: no completion within {self.timeout:g} s (still in flight)"

    def __reduce__(self) -> tuple[type[UblkTimeout], tuple[str, float]]:  # type: ignore[override]
        return (type(self), (self.command, self.timeout))


class LiburingUnavailable(ImportError):
    """liburing-ffi could not be loaded; the message says what to install."""


def check(ret: int, command: str) -> int:
    """Pass a non-negative return value through; raise :class:`UblkError` for ``-errno``."""
    if ret < 0:
        raise UblkError(-ret, command)
    return ret


def checked(command: str, function: Callable[..., int], *args: object) -> int:
    """Call a C function that returns ``-errno`` on failure (liburing's convention).

    The errno-aware wrapper in the style of inotify_simple's ``_libc_call``: the name of
    the operation travels with the error instead of being reconstructed by the caller.
    """
    return check(function(*args), command)
