"""Every target the gadget serves, by name, and the two ways of opening one.

Adding a target is one module (its Target subclass and its ``KIND``) and one line in
``KINDS`` below: the SPEC parser, ``serve --help``, the state-file reader and the daemon all
read this registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from . import file, mem, nbd, null
from .base import Target, TargetError
from .kind import TargetKind

if TYPE_CHECKING:
    from ..backing import Backing
    from ..spec import DeviceSpec


def _by_name(*kinds: TargetKind) -> Mapping[str, TargetKind]:
    registry: dict[str, TargetKind] = {}
    for kind in kinds:
        if kind.name in registry:
            raise ValueError(f"target {kind.name!r} registered twice")
        registry[kind.name] = kind
    return MappingProxyType(registry)


#: In the order ``--help`` lists them.
KINDS = _by_name(
    null.KIND,
    mem.KIND,
    file.KIND,
    nbd.KIND,
)


def kind_of(name: str) -> TargetKind:
    """The registry entry of target ``name``; TargetError if there is none."""
    try:
        return KINDS[name]
    except KeyError:
        raise TargetError(f"unknown target {name!r}") from None


def open_target(spec: DeviceSpec, memory_dir: str | None = None) -> Target:
    """The target a SPEC names, opened and checked against the host; a mem target keeps its
    memory in a new file under ``memory_dir`` (else a memfd)."""
    return kind_of(spec.target).open(spec, memory_dir)


def reopen_target(spec: DeviceSpec, backing: Backing | None, what: str) -> Target:
    """The target a previous server served ``what`` (a device) with, and nothing else: the
    same file or memory, or TargetError saying why not, before any device is touched."""
    return kind_of(spec.target).reopen(spec, backing, what)
