"""The device SPEC of ``ublk-gadget serve --device SPEC``: ``TARGET[,key=value...]``.

Everything a user can get wrong on the command line is caught here, before the daemon touches
``/dev/ublk-control``, so a bad SPEC never leaves a half-made device behind.  What can only be
checked against the host (does the file exist, is it big enough) is checked by the target when
it opens, still before any device is added.  The targets, their keys and which keys each one
needs come from the registry (``targets.KINDS``); the grammar here is the same for all.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

from ublk_bindings import UBLK_MAX_NR_QUEUES, UBLK_MAX_QUEUE_DEPTH
from ublk_bindings.buffers import BufferMode

from .targets import KINDS

TARGETS = tuple(KINDS)

DEFAULT_QUEUES = 1
DEFAULT_DEPTH = 64
DEFAULT_BLOCK_SIZE = 512
DEFAULT_RECONNECT_S = 30
"""How long requests wait for a lost network server before they fail with EIO: the SCSI
layer's default command timeout, which is what a Linux user expects a disk to give."""
MAX_RECONNECT_S = 24 * 3600
BLOCK_SIZES = (512, 4096)
MAX_SIZE = (1 << 63) - 1
"""The largest size= Linux can serve: a block device's byte offsets are signed 64-bit."""

TARGET_KEYS = ("path", "size", "uri", "reconnect")
"""The keys a target may take (``TargetKind.keys``): DeviceSpec has a field for each."""
DEVICE_KEYS = ("queues", "depth", "block_size", "read_only", "buffers")
"""The keys every target takes: the queue geometry and the device's attributes."""
KEYS = {kind.name: (*kind.keys, *DEVICE_KEYS) for kind in KINDS.values()}
"""The keys of each target's SPEC, in the order an error message lists them."""

BUFFERS = ("auto", *(mode.value for mode in BufferMode))
"""``buffers=``: a buffer mode, or auto."""

_SUFFIX = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
# re.ASCII: with Unicode case folding, IGNORECASE would take the KELVIN SIGN for a "k".
_SIZE_RE = re.compile(r"([0-9]+)([KMGT]?)", re.IGNORECASE | re.ASCII)


class SpecError(ValueError):
    """A SPEC the user must fix; the message names the SPEC and the problem."""


@dataclass(frozen=True)
class DeviceSpec:
    """One ``--device``: what to serve and the queue geometry to serve it with."""

    target: str
    size: int | None = None  # bytes; None where size= is optional (file): the backing's size
    path: str | None = None
    uri: str | None = None
    """An NBD URI (nbd target): whatever libnbd's ``nbd_connect_uri`` takes."""
    reconnect: int = DEFAULT_RECONNECT_S
    """Seconds a network target retries lost requests on new connections before EIO."""
    queues: int = DEFAULT_QUEUES
    depth: int = DEFAULT_DEPTH
    block_size: int = DEFAULT_BLOCK_SIZE
    read_only: bool = False
    buffers: str = "auto"
    """A buffer mode (``ublk_bindings.buffers.BufferMode`` value) or ``auto``: the fastest
    this kernel and target allow."""

    def with_size(self, size: int) -> DeviceSpec:
        """This SPEC with its size resolved (file targets learn it when they open)."""
        return dataclasses.replace(self, size=size)

    def absolute(self) -> DeviceSpec:
        """This SPEC with its path absolute: a successor may run in another directory."""
        if self.path is None:
            return self
        return dataclasses.replace(self, path=os.path.abspath(self.path))

    def __str__(self) -> str:
        """The canonical SPEC text: parses back to an equal DeviceSpec."""
        parts = [self.target]
        if self.path is not None:
            parts.append(f"path={self.path}")
        if self.uri is not None:
            parts.append(f"uri={self.uri}")
        if self.size is not None:
            parts.append(f"size={self.size}")
        if self.reconnect != DEFAULT_RECONNECT_S:
            parts.append(f"reconnect={self.reconnect}")
        parts += [f"queues={self.queues}", f"depth={self.depth}", f"block_size={self.block_size}"]
        if self.read_only:
            parts.append("read_only=1")
        if self.buffers != "auto":
            parts.append(f"buffers={self.buffers}")
        return ",".join(parts)


def parse_size(text: str) -> int:
    """Bytes from ``N`` or ``N{K,M,G,T}`` (binary multiples, case-insensitive)."""
    m = _SIZE_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size (a whole number with an optional K, M, G or T)")
    digits = m.group(1).lstrip("0") or "0"
    # Too many digits for any device, and for int() (sys.get_int_max_str_digits()) too.
    too_long = len(digits) > len(str(MAX_SIZE))
    size = MAX_SIZE + 1 if too_long else int(digits) << _SUFFIX[m.group(2).upper()]
    if size > MAX_SIZE:
        raise ValueError(f"{text.strip()!r} is too large (at most {MAX_SIZE} bytes)")
    return size


def _int_in(key: str, text: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError(f"{key}={text!r} is not a whole number")
    digits = text.lstrip("0") or "0"  # int() counts leading zeros against its digit limit
    if len(digits) > len(str(high)):
        raise ValueError(f"{key}={text} is out of range {low}..{high}")
    value = int(digits)
    if not low <= value <= high:
        raise ValueError(f"{key}={value} is out of range {low}..{high}")
    return value


def parse_spec(text: str) -> DeviceSpec:
    """Parse and validate one SPEC; raise SpecError naming the SPEC and what is wrong."""
    try:
        return _parse(text)
    except ValueError as e:
        raise SpecError(f"--device {text!r}: {e}") from None


def _parse(text: str) -> DeviceSpec:
    target, *items = text.split(",")
    target = target.strip()
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (expected one of: {', '.join(TARGETS)})")
    keys = KEYS[target]
    values: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"{item!r} is not key=value")
        if key not in keys:
            raise ValueError(f"unknown key {key!r} for target {target} (known: {', '.join(keys)})")
        if key in values:
            raise ValueError(f"key {key!r} given twice")
        values[key] = value.strip()

    block_size = DEFAULT_BLOCK_SIZE
    if "block_size" in values:
        block_size = parse_size(values["block_size"])
        if block_size not in BLOCK_SIZES:
            raise ValueError(f"block_size={block_size} is not one of {BLOCK_SIZES}")

    size: int | None = None
    if "size" in values:
        size = parse_size(values["size"])
        if size == 0:
            raise ValueError("size=0: a device needs at least one block")
        if size % block_size:
            raise ValueError(f"size={size} is not a multiple of the block size {block_size}")

    for key in KINDS[target].required:
        if not values.get(key):
            raise ValueError(f"target {target} needs {key}=")

    read_only = False
    if "read_only" in values:
        if values["read_only"] not in ("0", "1"):
            raise ValueError(f"read_only={values['read_only']!r} is not 0 or 1")
        read_only = values["read_only"] == "1"

    buffers = values.get("buffers", "auto")
    if buffers not in BUFFERS:
        raise ValueError(f"buffers={buffers!r} is not one of {', '.join(BUFFERS)}")
    if buffers != "auto" and BufferMode(buffers).zero_copy and not KINDS[target].zero_copy:
        raise ValueError(f"buffers={buffers}: target {target} needs the data in userspace "
                         "(copy or user-copy)")

    return DeviceSpec(
        buffers=buffers,
        target=target,
        size=size,
        path=values.get("path"),
        uri=values.get("uri"),
        reconnect=_int_in("reconnect", values.get("reconnect", str(DEFAULT_RECONNECT_S)), 0,
                          MAX_RECONNECT_S),
        queues=_int_in("queues", values.get("queues", str(DEFAULT_QUEUES)), 1, UBLK_MAX_NR_QUEUES),
        depth=_int_in("depth", values.get("depth", str(DEFAULT_DEPTH)), 1, UBLK_MAX_QUEUE_DEPTH),
        block_size=block_size,
        read_only=read_only,
    )
