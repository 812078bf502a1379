"""Typed Python bindings for the Linux ublk driver.

``import ublk_bindings`` gives the generated UAPI module of the bundled header (structs under
their C tag names, every integer macro, the inline helpers) plus the runtime: errors, the
io_uring ring on liburing-ffi, the control commands, the per-queue engine and the device
around it.

Only the UAPI module is imported up front; the runtime (``ctrl``, ``queue``, ``device``,
``ring``, ``errors`` and the io_uring module they use) is imported the first time one of its
names is used, so a program that wants the constants does not pay for the ring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import ublk_cmd as _ublk_cmd
from .ublk_cmd import *  # noqa: F401,F403  (the generated UAPI names, by contract)

if TYPE_CHECKING:
    from .ctrl import Control, block_dev_path, char_dev_path
    from .errors import LiburingUnavailable, UblkError, UblkTimeout
    from .batch import BatchQueue
    from .device import Device
    from .queue import Handler, Queue, SyncHandler, TargetOps
    from .ring import Ring

# Runtime name -> the submodule that defines it, imported on first use.
_LAZY = {
    "Control": "ctrl", "block_dev_path": "ctrl", "char_dev_path": "ctrl",
    "LiburingUnavailable": "errors", "UblkError": "errors", "UblkTimeout": "errors",
    "Device": "device", "Handler": "queue", "Queue": "queue", "SyncHandler": "queue",
    "TargetOps": "queue", "BatchQueue": "batch",
    "Ring": "ring",
}
_SUBMODULES = frozenset({"aio", "batch", "buf_ring", "buffers", "ctrl", "device", "errors",
                         "io", "io_uring", "liburing", "prep", "queue", "ring", "user_data"})

__all__ = [*_ublk_cmd.__all__, *_LAZY]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _SUBMODULES:  # ``import ublk_bindings; ublk_bindings.io.Device``
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
