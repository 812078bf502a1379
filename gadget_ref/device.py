"""One gadget device: a target served on ``/dev/ublkbN`` through ``ublk_bindings.device``.

The runtime owns the device's life (ADD_DEV, SET_PARAMS, one thread and ring per queue,
START_DEV; STOP_DEV, join, close, DEL_DEV, also when setup fails half-way; and the recovery
path a handover will use).  This module adds what is the gadget's: the ADD_DEV request and
the parameters a target calls for, what each queue serves (the target's ring I/O, or its
methods called at once), failures told to the daemon as they happen, queue threads that
never take the daemon's signals, and the facts the ready line reports.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from ublk_bindings import ublksrv_ctrl_dev_info
from ublk_bindings.ctrl import NEW_DEV_ID, Control, block_dev_path, char_dev_path
from ublk_bindings.buffers import BufferMode, buffer_mode
from ublk_bindings.device import Device as UblkDevice
from ublk_bindings.queue import Served

from . import events, faults
from .handler import IOErrors, RequestHandler, RingRequests
from .params import DEFAULT_MAX_IO_BYTES, device_params
from .report import feature_names
from .spec import DeviceSpec
from .state import DeviceState
from .targets import Target

log = logging.getLogger("ublk_gadget")

#: Signals the daemon's main thread acts on; queue threads block them (see _signals_blocked).
DAEMON_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


@contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block the daemon's signals in this thread, so threads started meanwhile inherit the mask.

    A signal that lands on a queue thread would leave the main thread asleep in its wait,
    unaware; blocked there, it is delivered to the main thread instead (once unblocked).
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, DAEMON_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def dev_info_request(spec: DeviceSpec, flags: int, max_io_bytes: int) -> ublksrv_ctrl_dev_info:
    """The ADD_DEV payload: let the driver pick the number, ask for the spec's geometry."""
    info = ublksrv_ctrl_dev_info()
    info.dev_id = NEW_DEV_ID
    info.nr_hw_queues = spec.queues
    info.queue_depth = spec.depth
    info.max_io_buf_bytes = max_io_bytes
    info.flags = flags
    return info


def queue_target(target: Target, errors: IOErrors, depth: int, mode: BufferMode) -> Served:
    """What one queue serves: the target's ring I/O (file; null and file in zero copy), else
    its methods called at once."""
    ring_io = target.ring_io(depth, mode)
    if ring_io is not None:
        return RingRequests(ring_io, target, errors)
    return RequestHandler(target, errors)


class ServedDevice:
    """A live device serving ``target``; make it with :meth:`create` or :meth:`adopt`.

    ``on_failure(device, exc)`` is told, from the queue's thread, when a queue stops
    serving (the daemon then stops); a target's exception only fails its request (EIO) and
    is logged here once per queue.
    """

    def __init__(self, spec: DeviceSpec, target: Target, ublk: UblkDevice,
                 errors: IOErrors) -> None:
        assert ublk.info is not None
        self.spec = spec
        self.target = target
        self.dev_id = ublk.dev_id
        self.flags = int(ublk.info.flags)
        """The UBLK_F_* the device has, as ADD_DEV wrote them back."""
        self._ublk = ublk
        self._errors = errors

    @staticmethod
    def _runtime(ctrl: Control, target: Target, errors: IOErrors, depth: int,
                 on_failure: Callable[[BaseException], None] | None,
                 **kwargs: Any) -> UblkDevice:
        """The runtime device, its queues serving ``target``, failures told as they happen."""
        reported: set[int] = set()

        def target_error(q_id: int, exc: BaseException) -> None:
            if q_id not in reported:  # a target bug fails every request alike: tell it once
                reported.add(q_id)
                log.error("%s queue %d: a request failed (EIO): %r", errors.device, q_id, exc)

        def queue_failed(q_id: int, exc: BaseException) -> None:
            log.error("%s queue %d stopped serving: %s", errors.device, q_id, exc)
            events.emit("failed", dev_id=dev.dev_id, queue=q_id, error=str(exc))
            if on_failure is not None:
                on_failure(exc)

        def make(q_id: int) -> Served:  # called once ADD_DEV (or GET_DEV_INFO) numbered it
            assert dev.info is not None
            errors.named(block_dev_path(dev.dev_id))
            return queue_target(target, errors, depth, buffer_mode(dev.info.flags))

        dev = UblkDevice(ctrl, make, on_failure=queue_failed, on_target_error=target_error,
                         **kwargs)
        return dev

    @classmethod
    def create(cls, ctrl: Control, spec: DeviceSpec, target: Target, flags: int,
               max_io_bytes: int = DEFAULT_MAX_IO_BYTES,
               on_failure: Callable[[BaseException], None] | None = None) -> ServedDevice:
        """Add, configure and start a device; on any failure nothing of it is left."""
        errors = IOErrors()
        ublk = cls._runtime(ctrl, target, errors, spec.depth, on_failure)
        with _signals_blocked():
            ublk.create(dev_info_request(spec, flags, max_io_bytes),
                        device_params(target, max_io_bytes))
        assert ublk.info is not None
        if ublk.info.nr_hw_queues != spec.queues:  # the driver caps queues at the CPU count
            log.info("ublkb%d: %d queues asked, the driver made %d", ublk.dev_id, spec.queues,
                     ublk.info.nr_hw_queues)
            spec = dataclasses.replace(spec, queues=int(ublk.info.nr_hw_queues))
        device = cls(spec, target, ublk, errors)
        log.info("%s: %s", device.block_device, device.spec)
        return device

    @classmethod
    def adopt(cls, ctrl: Control, record: DeviceState, target: Target, timeout_s: float,
              on_failure: Callable[[BaseException], None] | None = None) -> ServedDevice:
        """Serve a device a previous gadget handed over (user recovery); same dev_id.

        START_USER_RECOVERY (retried while the old server still holds it), the queues,
        END_USER_RECOVERY; within ``timeout_s``, and on failure nothing of it is left open.
        """
        errors = IOErrors().named(block_dev_path(record.dev_id))
        spec = record.device_spec()
        ublk = cls._runtime(ctrl, target, errors, spec.depth, on_failure,
                            ready_timeout=timeout_s, on_step=faults.adopt_step)
        with _signals_blocked():
            ublk.adopt(record.dev_id)
        device = cls(spec, target, ublk, errors)
        log.info("%s: adopted %s", device.block_device, device.spec)
        return device

    def release(self) -> None:
        """Let go for a successor: drain the queues, close ring, mapping and /dev/ublkcN.

        The device stays (no STOP_DEV, no DEL_DEV); see ``handover.hand_over``.
        """
        self._ublk.release()
        self.report_io_errors()  # those that failed while the queues drained

    @property
    def block_device(self) -> str:
        return block_dev_path(self.dev_id)

    def describe(self) -> dict[str, Any]:
        """This device's entry in the ready line."""
        return {
            "dev_id": self.dev_id,
            "block_device": self.block_device,
            "char_device": char_dev_path(self.dev_id),
            **self.target.describe(),
            "size": self.target.size,
            "block_size": self.spec.block_size,
            "queues": self.spec.queues,
            "depth": self.spec.depth,
            "read_only": self.spec.read_only,
            "buffers": buffer_mode(self.flags).value,
            "flags": feature_names(self.flags),
        }

    def report_io_errors(self) -> None:
        """Log the failed requests counted since the last report (also before letting go)."""
        self._errors.report()

    def stop(self) -> None:
        """STOP_DEV (in-flight requests finish first), join the queues, DEL_DEV.

        The delete does not wait for the device's last holder (a file system left mounted,
        an open fd): the daemon must end on SIGTERM, and the kernel frees the device's
        number as soon as that holder lets go; ``/dev/ublkbN`` and ``/dev/ublkcN`` are gone
        at once either way.
        """
        self._ublk.stop(wait_deleted=False)
        self.report_io_errors()
        self.target.remove()  # the device is gone: so is what only it could read
        log.info("%s: deleted", self.block_device)
