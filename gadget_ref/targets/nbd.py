"""The nbd target: an NBD export (nbdkit, qemu-nbd, nbd-server, ...) served as a ublk device.

Opening it connects, with libnbd, once per queue (``uri=``, whatever ``nbd_connect_uri``
takes), before any device exists: a URI that does not resolve, a refused connection or a
wrong export name is a usage error at start, and a successor (or a standby) is connected
before its owner lets go.  What the server negotiated decides the device: its size (``size=``
may ask for less), read-only, FLUSH/FUA, TRIM and WRITE_ZEROES, the block size.  More than
one queue needs a server that allows multi-conn: otherwise a FLUSH on one connection would
not cover the writes completed on another.

The requests themselves go on each queue's ring (``nbd_ring.NbdRingIO``); the byte-addressed
methods of :class:`Target` are not used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ublk_bindings.buffers import BufferMode

from ..libnbd import SIZE_MAXIMUM, SIZE_MINIMUM, Handle
from .base import Target, TargetError
from .kind import TargetKind
from .nbd_ring import NbdRingIO

if TYPE_CHECKING:
    from ..backing import Backing
    from ..handler import RingIO
    from ..spec import DeviceSpec

log = logging.getLogger("ublk_gadget")


class NbdTarget(Target):
    """An NBD export, one connection per queue."""

    kind = "nbd"

    def __init__(self, spec: DeviceSpec) -> None:
        assert spec.uri is not None
        self.uri = spec.uri
        self.reconnect = spec.reconnect
        self._spare: list[Handle] = []  # connected, not yet given to a queue
        self._queues: list[NbdRingIO] = []
        try:
            first = self._connect(0)
            self._check(first, spec)
            for q_id in range(1, spec.queues):
                self._spare.append(self._connect(q_id))
        except BaseException:
            self.close()
            raise

    def _connect(self, q_id: int) -> Handle:
        handle = Handle(self.uri, f"ublk-gadget q{q_id}")
        try:
            return handle.connect(max(self.reconnect, 1))
        except OSError as e:
            handle.close()
            raise TargetError(f"nbd target: {e.strerror}") from None

    def _check(self, first: Handle, spec: DeviceSpec) -> None:
        """The device this export makes; TargetError for what the SPEC must change."""
        from ..params import DEFAULT_MAX_IO_BYTES  # params builds on the targets package
        self._spare.append(first)
        export_size = first.size()
        size = spec.size if spec.size is not None else export_size - export_size % spec.block_size
        if size > export_size:
            raise TargetError(f"nbd target: {self.uri} exports {export_size} bytes, "
                              f"size={size} asked")
        if size == 0:
            raise TargetError(f"nbd target: {self.uri} exports {export_size} bytes, less than "
                              f"one block of {spec.block_size}")
        if first.flag("is_read_only") and not spec.read_only:
            raise TargetError(f"nbd target: the server exports {self.uri} read-only: add "
                              "read_only=1")
        minimum, maximum = first.block_size(SIZE_MINIMUM), first.block_size(SIZE_MAXIMUM)
        if minimum > spec.block_size:
            raise TargetError(f"nbd target: {self.uri} has a minimum block size of {minimum}: "
                              f"block_size={spec.block_size} is too small")
        if maximum and maximum < DEFAULT_MAX_IO_BYTES:
            raise TargetError(f"nbd target: {self.uri} takes at most {maximum} bytes per "
                              f"request; the device's requests are up to {DEFAULT_MAX_IO_BYTES}")
        self.multi_conn = first.flag("can_multi_conn")
        if spec.queues > 1 and not self.multi_conn:
            raise TargetError(f"nbd target: the server does not allow multi-conn on {self.uri}, "
                              f"so one connection per queue could lose flushes: use queues=1")
        super().__init__(size, spec.block_size, spec.read_only)
        self.volatile_cache = first.flag("can_flush")
        self.can_fua = first.flag("can_fua")
        self.can_discard = first.flag("can_trim") and first.flag("can_zero")
        self.export_size = export_size

    zero_copy = False  # the data crosses a socket: it must be in our buffers

    def ring_io(self, depth: int, mode: BufferMode = BufferMode.COPY) -> RingIO:
        """The next queue's connection (a queue made again gets a new one)."""
        q_id = len(self._queues)
        handle = self._spare.pop(0) if self._spare else self._connect(q_id)
        io = NbdRingIO(self, handle, depth, f"nbd q{q_id}")
        self._queues.append(io)
        return io

    def close(self) -> None:
        for handle in self._spare:
            handle.close()
        self._spare = []
        for io in self._queues:
            io.close()
        self._queues = []

    def describe(self) -> dict[str, object]:
        return {"target": self.kind, "uri": self.uri, "multi_conn": self.multi_conn,
                "flush": self.volatile_cache, "fua": self.can_fua, "trim": self.can_discard}


def open_nbd(spec: DeviceSpec, memory_dir: str | None = None) -> NbdTarget:
    """Connected to the export, once per queue, and checked."""
    return NbdTarget(spec)


def reopen_nbd(spec: DeviceSpec, backing: Backing | None, what: str) -> NbdTarget:
    """The same export: the data lives on the server, so a successor only connects."""
    return NbdTarget(spec)


KIND = TargetKind(
    name="nbd",
    keys=("uri", "size", "reconnect"),
    required=("uri",),
    summary="an NBD export (nbdkit, qemu-nbd, nbd-server), over TCP or a unix socket",
    details=("size= defaults to the export's size; queues>1 needs a multi-conn server",),
    has_backing=False,
    open=open_nbd,
    reopen=reopen_nbd,
)
