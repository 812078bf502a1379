"""One registry entry: what the SPEC parser, ``--help`` and the daemon know about a target.

Plain data and two callables, so that ``spec`` and ``cli`` learn a target's name, keys and
help from here instead of repeating them, and the daemon opens it without naming its class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..backing import Backing
    from ..spec import DeviceSpec
    from .base import Target


@dataclass(frozen=True)
class TargetKind:
    """A target as the registry lists it.

    ``keys`` are the SPEC keys of the target itself (``path``, ``size``); every target also
    takes the device's keys (``spec.DEVICE_KEYS``).  ``required`` are the keys a SPEC must
    give ("target NAME needs KEY=").  ``open(spec, memory_dir)`` opens a new target and
    checks it against the host; ``reopen(spec, backing, what)`` opens the very store a
    previous server served device ``what`` with (``backing``, from the state file; None
    where the state did not record one).  Both raise TargetError for what the user must fix.
    """

    name: str
    keys: tuple[str, ...]
    required: tuple[str, ...]
    #: One line for ``serve --help``; ``details`` are lines printed under it.
    summary: str
    #: Whether a state file (version 2) records a backing file for a device of this target.
    has_backing: bool
    open: Callable[[DeviceSpec, str | None], Target]
    reopen: Callable[[DeviceSpec, Backing | None, str], Target]
    details: tuple[str, ...] = ()
    #: Whether it serves zero-copy devices (its requests need no data in userspace).
    zero_copy: bool = False

    def __post_init__(self) -> None:
        missing = [key for key in self.required if key not in self.keys]
        if missing:
            raise ValueError(f"target {self.name}: required {missing} not among its keys "
                             f"{self.keys}")
