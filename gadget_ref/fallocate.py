"""fallocate(2) with a mode: Python's ``os.posix_fallocate`` can only allocate, never punch.

DISCARD and WRITE_ZEROES on the file target become hole punches and zeroed ranges; both need
the mode argument, so libc's ``fallocate`` is called through ctypes (the GIL is released for
the call, like any ctypes foreign call).
"""

from __future__ import annotations

import ctypes
import os

# <linux/falloc.h>
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = _libc.fallocate64
_fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_fallocate.restype = ctypes.c_int


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2); raises OSError with the errno (EOPNOTSUPP where the file system can't)."""
    if _fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fallocate(mode={mode:#x}, offset={offset}, length={length}): "
                      f"{os.strerror(err)}")


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range: reads return zeroes and the blocks go back to the file system."""
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)


def zero_range(fd: int, offset: int, length: int) -> None:
    """Zero a range and keep it allocated (WRITE_ZEROES with NOUNMAP)."""
    fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)
