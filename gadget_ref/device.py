"""One gadget device: a target served on ``/dev/ublkbN`` through ``ublk_bindings.io.Device``.

The runtime owns the device's life (ADD_DEV, SET_PARAMS, one thread and ring per queue,
START_DEV; STOP_DEV, join, close, DEL_DEV, also when setup fails half-way; and the recovery
path a handover will use).  This module
adds what is the gadget's: the ADD_DEV request and the parameters a target calls for, one
request handler per queue, queue threads that never take the daemon's signals, and the
facts the ready line reports.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ublk_bindings import ublksrv_ctrl_dev_info
from ublk_bindings.ctrl import NEW_DEV_ID, Control, block_dev_path, char_dev_path
from ublk_bindings.io import Device as UblkDevice

from . import faults
from .handler import IOErrors, RequestHandler
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


class Device:
    """A live device serving ``target``; make it with :meth:`create`."""

    def __init__(self, spec: DeviceSpec, target: Target, ublk: UblkDevice,
                 errors: IOErrors) -> None:
        assert ublk.info is not None
        self.spec = spec
        self.target = target
        self.dev_id = ublk.dev_id
        self.flags = int(ublk.info.flags)
        """The UBLK_F_* the device has, as ADD_DEV wrote them back."""
        self._ublk = ublk
        self._reported: set[int] = set()
        self._errors = errors

    @classmethod
    def create(cls, ctrl: Control, spec: DeviceSpec, target: Target, flags: int,
               max_io_bytes: int = DEFAULT_MAX_IO_BYTES) -> Device:
        """Add, configure and start a device; on any failure nothing of it is left."""
        errors = IOErrors()
        ublk = UblkDevice(  # handlers are made once ADD_DEV has numbered the device
            ctrl, lambda q_id: RequestHandler(target, errors.named(block_dev_path(ublk.dev_id))))
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
    def adopt(cls, ctrl: Control, record: DeviceState, target: Target, timeout_s: float) -> Device:
        """Serve a device a previous gadget handed over (user recovery); same dev_id.

        START_USER_RECOVERY (retried while the old server still holds it), the queues,
        END_USER_RECOVERY; within ``timeout_s``, and on failure nothing of it is left open.
        """
        errors = IOErrors().named(block_dev_path(record.dev_id))
        ublk = UblkDevice(ctrl, lambda q_id: RequestHandler(target, errors),
                          ready_timeout=timeout_s, on_step=faults.adopt_step)
        with _signals_blocked():
            ublk.adopt(record.dev_id)
        device = cls(record.device_spec(), target, ublk, errors)
        log.info("%s: adopted %s", device.block_device, device.spec)
        return device

    def release(self) -> None:
        """Let go for a successor: drain the queues, close ring, mapping and /dev/ublkcN.

        The device stays (no STOP_DEV, no DEL_DEV); see ``handover.hand_over``.
        """
        self._ublk.detach()
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
            "flags": feature_names(self.flags),
        }

    def failure(self) -> BaseException | None:
        """A queue thread that died (its tags are no longer served), else None.

        A handler that raised only failed its own request with EIO; that is logged once
        per queue here and reported again when the device stops.  Requests the target
        failed (EIO from a disk, ENOSPC) are logged once, then counted (``IOErrors``).
        """
        self.report_io_errors()
        for q in self._ublk.queues:
            if q is not None and q.error is not None and q.q_id not in self._reported:
                self._reported.add(q.q_id)
                log.error("%s queue %d: a request failed: %r", self.block_device, q.q_id, q.error)
        return self._ublk.errors[0] if self._ublk.errors else None

    def report_io_errors(self) -> None:
        """Log the failed requests counted since the last report (also before letting go)."""
        self._errors.report()

    def stop_and_delete(self) -> None:
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
