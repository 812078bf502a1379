"""The backing stores (null, mem, file), one module each, and the registry that names them.

``base`` is what every target is (``Target``, ``TargetError``, the zero helpers); ``null``,
``mem`` and ``file`` (with ``file_ring``, its I/O on the queue's ring) are the targets, each
ending in its ``KIND``, the registry entry; ``registry`` lists those entries and opens a
target by the name a SPEC gives.  To add a target: write its module, add its ``KIND`` to
``registry.KINDS``.
"""

from __future__ import annotations

from .base import ZERO_CHUNK, ZEROES, Target, TargetError, fill_zero
from .file import FileTarget
from .kind import TargetKind
from .mem import MemTarget
from .null import NullTarget
from .registry import KINDS, kind_of, open_target, reopen_target

__all__ = [
    "KINDS",
    "ZERO_CHUNK",
    "ZEROES",
    "FileTarget",
    "MemTarget",
    "NullTarget",
    "Target",
    "TargetError",
    "TargetKind",
    "fill_zero",
    "kind_of",
    "open_target",
    "reopen_target",
]
