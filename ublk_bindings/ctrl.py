"""Control commands on ``/dev/ublk-control``: one method per ``UBLK_U_CMD_*``.

Every command is an ``IORING_OP_URING_CMD`` whose 80-byte payload is a ``ublksrv_ctrl_cmd``,
so the control ring needs ``IORING_SETUP_SQE128`` (the driver answers ``EINVAL`` otherwise).
Buffer contracts follow the comments in ``ublk_cmd.h`` and the driver: ``addr``/``len``
describe the command's in/out buffer, ``data[0]`` carries the scalar argument (a pid, a size,
a timeout, a queue id), and ``GET_DEV_INFO2`` (and every command on an unprivileged device)
prefixes the buffer with the NUL-terminated char device path, ``dev_path_len`` long.

What the kernel can do is learnt from ``GET_FEATURES`` once per :class:`Control`, and what a
device does from the flags ``ADD_DEV`` writes back; never from the kernel's version. Linux
6.1 has neither ``GET_FEATURES`` nor ioctl-encoded opcodes, so when the probe fails the
legacy ``UBLK_CMD_*`` numbers are used.
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Union

from .errors import UblkError, UblkTimeout
from .ring import Ring
from .ublk_cmd import (
    UBLK_CMD_ADD_DEV,
    UBLK_CMD_DEL_DEV,
    UBLK_CMD_END_USER_RECOVERY,
    UBLK_CMD_GET_DEV_INFO,
    UBLK_CMD_GET_DEV_INFO2,
    UBLK_CMD_GET_PARAMS,
    UBLK_CMD_GET_QUEUE_AFFINITY,
    UBLK_CMD_SET_PARAMS,
    UBLK_CMD_START_DEV,
    UBLK_CMD_START_USER_RECOVERY,
    UBLK_CMD_STOP_DEV,
    UBLK_F_CMD_IOCTL_ENCODE,
    UBLK_F_UNPRIVILEGED_DEV,
    UBLK_FEATURES_LEN,
    UBLK_U_CMD_ADD_DEV,
    UBLK_U_CMD_DEL_DEV,
    UBLK_U_CMD_DEL_DEV_ASYNC,
    UBLK_U_CMD_END_USER_RECOVERY,
    UBLK_U_CMD_GET_DEV_INFO,
    UBLK_U_CMD_GET_DEV_INFO2,
    UBLK_U_CMD_GET_FEATURES,
    UBLK_U_CMD_GET_PARAMS,
    UBLK_U_CMD_GET_QUEUE_AFFINITY,
    UBLK_U_CMD_QUIESCE_DEV,
    UBLK_U_CMD_SET_PARAMS,
    UBLK_U_CMD_START_DEV,
    UBLK_U_CMD_START_USER_RECOVERY,
    UBLK_U_CMD_STOP_DEV,
    UBLK_U_CMD_TRY_STOP_DEV,
    UBLK_U_CMD_UPDATE_SIZE,
    UblkF,
    ublk_params,
    ublksrv_ctrl_cmd,
    ublksrv_ctrl_dev_info,
)

__all__ = ["CONTROL_PATH", "Control", "char_dev_path", "block_dev_path", "NEW_DEV_ID"]

CONTROL_PATH = "/dev/ublk-control"
NEW_DEV_ID = 0xFFFF_FFFF
"""``dev_id`` for ``ADD_DEV`` that lets the driver pick the number."""
AbortCheck = Callable[[], Union[BaseException, None]]
"""Asked while START_DEV or END_USER_RECOVERY waits: an exception to give up with, or None."""
ABORT_POLL_S = 0.1
_NO_QUEUE = 0xFFFF  # ublksrv_ctrl_cmd.queue_id "must be -1 if the cmd isn't for queue"
_AFFINITY_BYTES = 1024  # a cpumask for up to 8192 CPUs (NR_CPUS on Debian); len is a __u16

_Buffer = Union[ctypes.Structure, "ctypes.Array[Any]", ctypes.c_uint64]


def char_dev_path(dev_id: int) -> str:
    """The queues' char device, ``/dev/ublkcN`` (the driver names it ``ublkc%d``)."""
    return f"/dev/ublkc{dev_id}"


def block_dev_path(dev_id: int) -> str:
    """The block device START_DEV creates, ``/dev/ublkbN``."""
    return f"/dev/ublkb{dev_id}"


@dataclass(frozen=True)
class _Cmd:
    name: str
    legacy: int | None  # UBLK_CMD_*, None for commands born ioctl-encoded
    ioctl: int  # UBLK_U_CMD_*


_GET_QUEUE_AFFINITY = _Cmd("GET_QUEUE_AFFINITY", UBLK_CMD_GET_QUEUE_AFFINITY,
                           UBLK_U_CMD_GET_QUEUE_AFFINITY)
_GET_DEV_INFO = _Cmd("GET_DEV_INFO", UBLK_CMD_GET_DEV_INFO, UBLK_U_CMD_GET_DEV_INFO)
_ADD_DEV = _Cmd("ADD_DEV", UBLK_CMD_ADD_DEV, UBLK_U_CMD_ADD_DEV)
_DEL_DEV = _Cmd("DEL_DEV", UBLK_CMD_DEL_DEV, UBLK_U_CMD_DEL_DEV)
_START_DEV = _Cmd("START_DEV", UBLK_CMD_START_DEV, UBLK_U_CMD_START_DEV)
_STOP_DEV = _Cmd("STOP_DEV", UBLK_CMD_STOP_DEV, UBLK_U_CMD_STOP_DEV)
_SET_PARAMS = _Cmd("SET_PARAMS", UBLK_CMD_SET_PARAMS, UBLK_U_CMD_SET_PARAMS)
_GET_PARAMS = _Cmd("GET_PARAMS", UBLK_CMD_GET_PARAMS, UBLK_U_CMD_GET_PARAMS)
_START_USER_RECOVERY = _Cmd("START_USER_RECOVERY", UBLK_CMD_START_USER_RECOVERY,
                            UBLK_U_CMD_START_USER_RECOVERY)
_END_USER_RECOVERY = _Cmd("END_USER_RECOVERY", UBLK_CMD_END_USER_RECOVERY,
                          UBLK_U_CMD_END_USER_RECOVERY)
_GET_DEV_INFO2 = _Cmd("GET_DEV_INFO2", UBLK_CMD_GET_DEV_INFO2, UBLK_U_CMD_GET_DEV_INFO2)
_GET_FEATURES = _Cmd("GET_FEATURES", None, UBLK_U_CMD_GET_FEATURES)
_DEL_DEV_ASYNC = _Cmd("DEL_DEV_ASYNC", None, UBLK_U_CMD_DEL_DEV_ASYNC)
_UPDATE_SIZE = _Cmd("UPDATE_SIZE", None, UBLK_U_CMD_UPDATE_SIZE)
_QUIESCE_DEV = _Cmd("QUIESCE_DEV", None, UBLK_U_CMD_QUIESCE_DEV)
_TRY_STOP_DEV = _Cmd("TRY_STOP_DEV", None, UBLK_U_CMD_TRY_STOP_DEV)


class Control:
    """``/dev/ublk-control`` with its own SQE128 ring; one command at a time.

    Like :class:`~ublk_bindings.ring.Ring` it has one owner thread. ``START_DEV`` and
    ``END_USER_RECOVERY`` block until every queue has fetched, so the thread that owns a
    Control must not be one that serves a queue; open a second Control for a second thread.

    ``timeout`` (seconds, ``None`` = wait forever) bounds every command; on expiry
    :class:`UblkTimeout` is raised and the command's buffers stay alive until it completes.
    ``ioctl_encode`` overrides the choice of opcodes (``False``: the legacy numbers, which is
    how a 6.1 kernel is driven; newer ones accept them with CONFIG_BLKDEV_UBLK_LEGACY_OPCODES).
    """

    def __init__(
        self,
        path: str = CONTROL_PATH,
        *,
        timeout: float | None = None,
        ioctl_encode: bool | None = None,
    ) -> None:
        self.timeout = timeout
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._ring = Ring(4, sqe128=True)
        except BaseException:
            os.close(self._fd)
            raise
        self._user_data = 0
        self._unprivileged: set[int] = set()
        self._ioctl_encode = False
        self.features: UblkF | None = None
        """What this kernel's driver supports, or None where GET_FEATURES is missing (6.1)."""
        self.features_error: UblkError | None = None
        """Why GET_FEATURES failed when :attr:`features` is None."""
        try:
            self.features = self.get_features()
        except UblkTimeout:
            self.close()
            raise
        except UblkError as e:  # 6.1: no GET_FEATURES (EOPNOTSUPP, or its internal ENOTSUPP)
            self.features_error = e
        except BaseException:
            self.close()
            raise
        if ioctl_encode is None:
            ioctl_encode = bool(self.features and self.features & UBLK_F_CMD_IOCTL_ENCODE)
        self._ioctl_encode = ioctl_encode

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._fd >= 0:
            self._ring.close()  # cancels whatever timed out and is still in flight
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Control:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def ioctl_encode(self) -> bool:
        """Whether commands go out as ``UBLK_U_CMD_*`` (else the legacy ``UBLK_CMD_*``)."""
        return self._ioctl_encode

    # -- the one way a command is issued ----------------------------------------------------

    def _run(
        self,
        cmd: _Cmd,
        dev_id: int,
        *,
        buf: _Buffer | None = None,
        data: int = 0,
        dev_path: bool = False,
        abort_if: AbortCheck | None = None,
    ) -> int:
        """Issue ``cmd`` and wait for its completion; ``buf`` is the in/out buffer."""
        if self._fd < 0:
            raise ValueError("Control is closed")
        header = ublksrv_ctrl_cmd()
        header.dev_id = dev_id
        header.queue_id = _NO_QUEUE
        header.data[0] = data
        wire = buf
        path = b""
        if dev_path or dev_id in self._unprivileged:
            # The kernel reads dev_path_len bytes of path, checks access to that char
            # device, then treats the rest of the buffer as the command's own.
            path = char_dev_path(dev_id).encode() + b"\0"
            size = len(path) + (ctypes.sizeof(buf) if buf is not None else 0)
            wire = (ctypes.c_char * size).from_buffer_copy(
                path + (bytes(buf) if buf is not None else b"")
            )
            header.dev_path_len = len(path)
        if wire is not None:
            header.addr = ctypes.addressof(wire)
            header.len = ctypes.sizeof(wire)
        opcode = cmd.ioctl if self._ioctl_encode or cmd.legacy is None else cmd.legacy
        self._user_data += 1
        user_data = self._user_data
        self._ring.prep_uring_cmd(self._fd, opcode, header, user_data)
        if wire is not None:
            self._ring.hold(user_data, wire)
        res = self._wait(user_data, cmd.name, abort_if)
        if res < 0:
            raise UblkError(-res, cmd.name)
        if wire is not buf and buf is not None and wire is not None:
            ctypes.memmove(ctypes.addressof(buf), ctypes.addressof(wire) + len(path),
                           ctypes.sizeof(buf))
        return res

    def _wait(self, user_data: int, name: str, abort_if: AbortCheck | None = None) -> int:
        """The completion of ``user_data``. With ``abort_if``, it is asked every
        :data:`ABORT_POLL_S` while the command waits; an exception it returns is raised and
        the command stays in flight (its buffers held), as after a timeout."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            slice_s = left
            if abort_if is not None:
                slice_s = ABORT_POLL_S if left is None else min(ABORT_POLL_S, left)
            try:
                self._ring.submit(wait_nr=1, timeout=slice_s)
            except UblkTimeout:
                failure = abort_if() if abort_if is not None else None
                if failure is not None:
                    raise failure from None
                if deadline is None or time.monotonic() < deadline:
                    continue
                raise UblkTimeout(name, self.timeout or 0.0) from None
            for ud, res, _ in zip(*self._ring.reap()):
                if ud == user_data:  # others: late completions of commands that timed out
                    return res

    # -- the commands -----------------------------------------------------------------------

    def get_features(self) -> UblkF:
        """The ``UBLK_F_*`` this driver supports (GET_FEATURES); its repr names them."""
        features = ctypes.c_uint64()
        assert ctypes.sizeof(features) == UBLK_FEATURES_LEN
        self._run(_GET_FEATURES, NEW_DEV_ID, buf=features)
        return UblkF(features.value)

    def add_dev(self, info: ublksrv_ctrl_dev_info) -> ublksrv_ctrl_dev_info:
        """Create ``/dev/ublkcN``; returns ``info`` as the kernel wrote it back.

        The written-back copy is the negotiation result: ``dev_id`` (when
        :data:`NEW_DEV_ID` was asked), ``flags`` with what the driver does not support
        cleared and what it always does set, ``nr_hw_queues`` capped to the CPUs,
        ``max_io_buf_bytes`` aligned, the owner's uid/gid. ``info`` itself is not modified.
        """
        wire = ublksrv_ctrl_dev_info.from_buffer_copy(info)
        self._run(_ADD_DEV, info.dev_id, buf=wire)
        if wire.flags & UBLK_F_UNPRIVILEGED_DEV:
            self._unprivileged.add(wire.dev_id)
        return wire

    def del_dev(self, dev_id: int) -> None:
        """Remove the device; returns once its number is free again (the char device closed)."""
        self._run(_DEL_DEV, dev_id)
        self._unprivileged.discard(dev_id)

    def del_dev_async(self, dev_id: int) -> None:
        """Remove the device without waiting for its last user to let go."""
        self._run(_DEL_DEV_ASYNC, dev_id)
        self._unprivileged.discard(dev_id)

    def start_dev(self, dev_id: int, daemon_pid: int | None = None, *,
                  abort_if: AbortCheck | None = None) -> None:
        """Create ``/dev/ublkbN``; ``daemon_pid`` (default: this process) serves the queues.

        Blocks in the kernel until every tag of every queue has a FETCH_REQ outstanding,
        then through add_disk. Call it from a thread that serves no queue, after (or while)
        the queue threads submit their FETCHes; :class:`~ublk_bindings.io.Device` does this.
        A FETCH the driver refused is never outstanding, so the wait would last until this
        Control closes: ``abort_if`` (say, "did a queue thread fail?") ends it early.
        """
        self._run(_START_DEV, dev_id, data=os.getpid() if daemon_pid is None else daemon_pid,
                  abort_if=abort_if)

    def stop_dev(self, dev_id: int) -> None:
        """Remove ``/dev/ublkbN``; the queues' outstanding FETCHes complete with ABORT."""
        self._run(_STOP_DEV, dev_id)

    def try_stop_dev(self, dev_id: int) -> None:
        """STOP_DEV only if nobody has the block device open (``EBUSY`` otherwise)."""
        self._run(_TRY_STOP_DEV, dev_id)

    def set_params(self, dev_id: int, params: ublk_params) -> None:
        """Set the device's parameters; only before START_DEV (``EACCES`` after)."""
        wire = ublk_params.from_buffer_copy(params)
        if not wire.len:
            wire.len = ctypes.sizeof(wire)
        self._run(_SET_PARAMS, dev_id, buf=wire)

    def get_params(self, dev_id: int) -> ublk_params:
        """The device's parameters, with the read-only ``devt`` filled in by the kernel."""
        wire = ublk_params()
        wire.len = ctypes.sizeof(wire)
        self._run(_GET_PARAMS, dev_id, buf=wire)
        return wire

    def get_dev_info(self, dev_id: int) -> ublksrv_ctrl_dev_info:
        wire = ublksrv_ctrl_dev_info()
        self._run(_GET_DEV_INFO, dev_id, buf=wire)
        return wire

    def get_dev_info2(self, dev_id: int) -> ublksrv_ctrl_dev_info:
        """GET_DEV_INFO with the char device path, which the kernel checks access to."""
        wire = ublksrv_ctrl_dev_info()
        self._run(_GET_DEV_INFO2, dev_id, buf=wire, dev_path=True)
        if wire.flags & UBLK_F_UNPRIVILEGED_DEV:
            self._unprivileged.add(dev_id)
        return wire

    def send_dev_path(self, dev_id: int) -> None:
        """Send ``/dev/ublkcN`` with every later command for ``dev_id``, as an unprivileged
        device requires (EINVAL without it).  :meth:`add_dev` and :meth:`get_dev_info2` learn
        this themselves; this is for a device known to be unprivileged whose GET_DEV_INFO2
        the caller may not run (the kernel answers EACCES to a user who cannot open it)."""
        self._unprivileged.add(dev_id)

    def get_queue_affinity(self, dev_id: int, q_id: int) -> frozenset[int]:
        """The CPUs whose I/O is mapped to queue ``q_id``."""
        mask = (ctypes.c_uint64 * (_AFFINITY_BYTES // 8))()
        self._run(_GET_QUEUE_AFFINITY, dev_id, buf=mask, data=q_id)
        return frozenset(
            word_no * 64 + bit
            for word_no, word in enumerate(mask)
            if word
            for bit in range(64)
            if word >> bit & 1
        )

    def update_size(self, dev_id: int, sectors: int) -> None:
        """Resize a started device to ``sectors`` (512-byte) sectors (UBLK_F_UPDATE_SIZE)."""
        self._run(_UPDATE_SIZE, dev_id, data=sectors)

    def quiesce_dev(self, dev_id: int, timeout_ms: int = 0) -> None:
        """Quiesce a UBLK_F_QUIESCE device; idle FETCHes complete with ABORT.

        ``timeout_ms`` = 0 waits forever; ``EBUSY`` if some queue still has no idle tag
        when it runs out.
        """
        self._run(_QUIESCE_DEV, dev_id, data=timeout_ms)

    def start_user_recovery(self, dev_id: int) -> None:
        """Begin recovery of a device whose server is gone (``EBUSY`` while its char device
        is still open or the device is not yet quiesced/failing)."""
        self._run(_START_USER_RECOVERY, dev_id)

    def end_user_recovery(self, dev_id: int, daemon_pid: int | None = None, *,
                          abort_if: AbortCheck | None = None) -> None:
        """Hand the device to ``daemon_pid``'s queues; blocks like :meth:`start_dev`."""
        self._run(_END_USER_RECOVERY, dev_id,
                  data=os.getpid() if daemon_pid is None else daemon_pid, abort_if=abort_if)

