"""The successor's half of a handover (``serve --adopt``): take the devices named by the state file.

Whether the owner is alive (live upgrade) or dead (SIGKILL, OOM), the steps are the same:
read and check the state, ask a *verified* live owner to let go (SIGHUP through a pidfd),
then per device START_USER_RECOVERY, open /dev/ublkcN, FETCH every tag, END_USER_RECOVERY.
The kernel says when a device is adoptable: START_USER_RECOVERY answers EBUSY until the
previous server has closed /dev/ublkcN and the device is QUIESCED, so the same retry loop
waits for a draining owner and for the kernel's cleanup after a crash.

Each device is started and then fully fetched before the next one is touched, and never
started twice: on Linux 6.12 a second START_USER_RECOVERY on a started device is EINVAL.
If anything fails or the deadline passes, every device taken so far is released again
(closing /dev/ublkcN returns it to QUIESCED, its I/O waiting in the kernel) and the state
file is left as it was, so a later ``--adopt`` starts over from the same place.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ublk_bindings import (
    UBLK_F_USER_RECOVERY,
    UBLK_S_DEV_DEAD,
    UBLK_S_DEV_LIVE,
    ublksrv_ctrl_dev_info,
)
from ublk_bindings.errors import UblkError

from .handover import Deadline, Releasable
from .owner import Owner, OwnerMismatch, ProcessIdentity, boot_id
from .state import DaemonState, DeviceState, adoption_lock, read_state, write_state

log = logging.getLogger("ublk_gadget.adopt")

DEFAULT_DEADLINE_S = 60.0
RETRY_S = 0.02
"""Pause between EBUSY retries: the kernel's own release work polls at 3 ms."""


class AdoptError(RuntimeError):
    """Adoption did not happen; the message says why and what was left as it was."""


class RecoveryControl(Protocol):
    def get_dev_info2(self, dev_id: int) -> ublksrv_ctrl_dev_info: ...

    def start_user_recovery(self, dev_id: int) -> None: ...

    def end_user_recovery(self, dev_id: int, daemon_pid: int | None = None) -> None: ...


Attach = Callable[[DeviceState, ublksrv_ctrl_dev_info, int], Releasable]
"""The daemon's device lifecycle: serve ``record`` on the open /dev/ublkcN fd (taking it
over), its queue threads FETCHing every tag; returns the served device."""


@dataclass
class Adopted:
    state: DaemonState  # as rewritten, this process the owner
    devices: list[Releasable]


def check_devices(
    ctrl: RecoveryControl, state: DaemonState, path: str
) -> dict[int, ublksrv_ctrl_dev_info]:
    """GET_DEV_INFO2 for each device, refusing any the state file does not describe."""
    if state.owner.boot_id != boot_id():
        raise AdoptError(f"{path} was written before this host last booted: its devices are "
                         "gone (remove the file and serve afresh)")
    infos = {}
    for rec in state.devices:
        try:
            info = ctrl.get_dev_info2(rec.dev_id)
        except UblkError as e:
            if e.errno == errno.ENODEV:
                raise AdoptError(f"device {rec.dev_id} named in {path} does not exist") from None
            raise
        problems = []
        if not info.flags & UBLK_F_USER_RECOVERY:
            problems.append("it was added without UBLK_F_USER_RECOVERY")
        if info.state == UBLK_S_DEV_DEAD:
            problems.append("it is not started (DEAD)")
        if (info.nr_hw_queues, info.queue_depth) != (rec.queues, rec.depth):
            problems.append(f"it has {info.nr_hw_queues} queues of depth {info.queue_depth}, "
                            f"the state file says {rec.queues} of {rec.depth}")
        if problems:
            raise AdoptError(f"device {rec.dev_id} cannot be adopted from {path}: "
                             + "; ".join(problems))
        infos[rec.dev_id] = info
    return infos


def ask_owner_to_let_go(
    ctrl: RecoveryControl, recorded: ProcessIdentity, infos: dict[int, ublksrv_ctrl_dev_info]
) -> Owner | None:
    """SIGHUP the recorded owner if, and only if, it is alive and the kernel's server.

    None when there is nobody to ask: the owner is gone (its devices are, or will soon be,
    QUIESCED by the kernel) or its pid now names another process, which is never signalled.
    """
    serving = [d for d, info in infos.items()
               if info.state == UBLK_S_DEV_LIVE and info.ublksrv_pid == recorded.pid]
    if not serving:
        log.info("owner pid %d serves none of the devices: adopting without a handover signal",
                 recorded.pid)
        return None
    try:
        owner = Owner.verify(recorded)
    except ProcessLookupError:
        log.info("owner pid %d is gone: adopting its devices after the crash", recorded.pid)
        return None
    except OwnerMismatch as e:
        log.warning("%s: not signalling it; waiting for the kernel to release the devices", e)
        return None
    # The pidfd now pins the verified process: if the kernel still names its pid as the
    # server, it is this process the kernel means.
    if ctrl.get_dev_info2(serving[0]).ublksrv_pid != recorded.pid:
        owner.close()
        log.info("owner pid %d let go meanwhile: no handover signal needed", recorded.pid)
        return None
    log.info("asking owner pid %d to hand over (SIGHUP)", recorded.pid)
    try:
        owner.signal(signal.SIGHUP)
    except ProcessLookupError:
        log.info("owner pid %d exited before the signal", recorded.pid)
    return owner


def start_recovery(
    ctrl: RecoveryControl, dev_id: int, deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """START_USER_RECOVERY once it succeeds: EBUSY means "not released yet", so retry it."""
    waited = False
    while True:
        try:
            ctrl.start_user_recovery(dev_id)
            return
        except UblkError as e:
            if e.errno == errno.EINVAL:
                raise AdoptError(
                    f"device {dev_id}: {e}: the kernel will not recover it (on Linux 6.12 and "
                    "older this happens when an earlier successor died before its first queue "
                    "was ready; only deleting the device helps)") from None
            if e.errno != errno.EBUSY:
                raise
        if deadline.expired():
            info = ctrl.get_dev_info2(dev_id)
            raise AdoptError(f"device {dev_id} was not released within {deadline.seconds:g} s "
                             f"(kernel server pid {info.ublksrv_pid}, state {info.state})")
        if not waited:
            log.info("device %d: waiting for the previous server to let go", dev_id)
            waited = True
        sleep(RETRY_S)


def open_char_dev(
    dev_id: int, deadline: Deadline, sleep: Callable[[float], None] = time.sleep
) -> int:
    """Open /dev/ublkcN, retrying EBUSY (the kernel allows one opener) until ``deadline``."""
    path = f"/dev/ublkc{dev_id}"
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.EBUSY or deadline.expired():
                raise AdoptError(f"device {dev_id}: cannot open {path}: {e.strerror}") from None
        sleep(RETRY_S)


def adopt(
    ctrl: RecoveryControl,
    state_path: str,
    attach: Attach,
    deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
    open_dev: Callable[[int, Deadline, Callable[[float], None]], int] = open_char_dev,
) -> Adopted:
    """Take every device of ``state_path``; on failure release what was taken and raise.

    ``attach`` gets the open /dev/ublkcN and keeps it; if it raises, the fd is closed here.
    """
    with adoption_lock(state_path):
        state = read_state(state_path)
        infos = check_devices(ctrl, state, state_path)
        owner = ask_owner_to_let_go(ctrl, state.owner, infos)
        taken: list[Releasable] = []
        try:
            for rec in state.devices:
                start_recovery(ctrl, rec.dev_id, deadline, sleep)
                fd = open_dev(rec.dev_id, deadline, sleep)
                try:
                    dev = attach(rec, infos[rec.dev_id], fd)
                except BaseException:
                    os.close(fd)
                    raise
                taken.append(dev)
                ctrl.end_user_recovery(rec.dev_id, os.getpid())
                log.info("device %d adopted", rec.dev_id)
        except BaseException:
            for dev in reversed(taken):
                dev.release()
            raise
        finally:
            if owner is not None:
                owner.close()
        adopted = state.with_owner(ProcessIdentity.current())
        write_state(state_path, adopted)
        return Adopted(adopted, taken)
