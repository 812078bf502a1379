"""Typed Python bindings for the Linux ublk driver.

``import ublk_bindings`` gives the generated UAPI module of the bundled header (structs under
their C tag names, every integer macro, the inline helpers) plus the runtime: errors, the
io_uring ring on liburing-ffi, the control commands and the per-queue data plane.
"""

from .ublk_cmd import *  # noqa: F401,F403  (the generated UAPI names, by contract)
from .ctrl import Control, block_dev_path, char_dev_path
from .errors import LiburingUnavailable, UblkError, UblkTimeout
from .io import Device, Handler, Queue
from .ring import Ring
