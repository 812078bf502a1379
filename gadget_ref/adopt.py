"""The successor's half of a handover (``serve --adopt``): take the devices named by the state file.

Whether the owner is alive (live upgrade) or dead (SIGKILL, OOM), the steps are the same:
read and check the state, ask a *verified* live owner to let go (SIGHUP through a pidfd),
then per device, through the runtime's ``Device.adopt``: START_USER_RECOVERY, open
/dev/ublkcN, FETCH every tag, END_USER_RECOVERY.
The kernel says when a device is adoptable: START_USER_RECOVERY answers EBUSY until the
previous server has closed /dev/ublkcN and the device is QUIESCED, so the same retry loop
waits for a draining owner and for the kernel's cleanup after a crash.

Each device is started and then fully fetched before the next one is touched, and never
started twice: on Linux 6.12 a second START_USER_RECOVERY on a started device is EINVAL.
(The runtime resumes a recovery that a successor started and died in before it mapped the
queues; see ``ublk_bindings.device.Device.adopt``.)
The deadline (``--adopt-deadline``) bounds how long the successor waits for the devices to
be let go and for its queues to be ready.  If it passes, or anything else fails, the
successor exits with status 1 and the devices it had taken go back to QUIESCED as after a
crash (their I/O waits in the kernel); the state file is left as it was, so a later
``--adopt`` starts over from the same place.

A standby (``--standby``) enters an :class:`Adoption` (the lock is then held: no other
successor can adopt meanwhile), opens the targets, and waits on the owner's pidfd
(:func:`watch_owner`) before :meth:`Adoption.take`: after a crash nothing is left to load, so
the devices are back as soon as the kernel lets go of them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from ublk_bindings import (
    UBLK_F_USER_RECOVERY,
    UBLK_S_DEV_DEAD,
    UBLK_S_DEV_LIVE,
    ublksrv_ctrl_dev_info,
)
from ublk_bindings.errors import UblkError

from . import events, privilege
from .backing import Backing
from .handover import Deadline, Releasable
from .owner import Owner, OwnerMismatch, ProcessIdentity, boot_id
from .state import DaemonState, DeviceState, adoption_lock, read_state, write_state

log = logging.getLogger("ublk_gadget.adopt")

DEFAULT_DEADLINE_S = 60.0


class AdoptError(RuntimeError):
    """Adoption did not happen; the message says why and what was left as it was."""


class RecoveryControl(Protocol):
    def get_dev_info2(self, dev_id: int) -> ublksrv_ctrl_dev_info: ...


R = TypeVar("R", bound=Releasable)

TakeOne = Callable[[DeviceState, ublksrv_ctrl_dev_info, Deadline], R]
"""The device lifecycle's recovery of one device (``ublk_bindings.device.Device.adopt``):
START_USER_RECOVERY retried while EBUSY (once it succeeded, never again), open /dev/ublkcN,
a thread per queue FETCHing every tag, END_USER_RECOVERY; all within the deadline, and
nothing of it left behind if it fails."""


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
        if privilege.unrecoverable(info.flags):
            problems.append(privilege.RECOVERY_REFUSED)
        elif not info.flags & UBLK_F_USER_RECOVERY:
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


def watch_owner(recorded: ProcessIdentity) -> Owner | None:
    """The recorded owner, verified, for a standby to wait on; None if it is already gone
    (or its pid now names another process, which is never waited for or signalled)."""
    try:
        return Owner.verify(recorded)
    except ProcessLookupError:
        log.info("owner pid %d is gone: adopting now", recorded.pid)
    except OwnerMismatch as e:
        log.warning("%s: adopting now", e)
    return None


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
        log.info("owner pid %d serves none of the devices (gone, or already let go): "
                 "adopting without a handover signal", recorded.pid)
        return None
    try:
        owner = Owner.verify(recorded)
    except ProcessLookupError:
        log.info("owner pid %d is gone: adopting without a handover signal", recorded.pid)
        return None
    except OwnerMismatch as e:
        log.warning("%s: not signalling it; adopting without a handover signal once the "
                    "kernel lets go of the devices", e)
        return None
    # The pidfd now pins the verified process: if the kernel still names its pid as the
    # server, it is this process the kernel means.
    if ctrl.get_dev_info2(serving[0]).ublksrv_pid != recorded.pid:
        owner.close()
        log.info("owner pid %d let go meanwhile: no handover signal needed", recorded.pid)
        return None
    try:
        owner.signal(signal.SIGHUP)
    except ProcessLookupError:
        log.info("owner pid %d exited before the signal", recorded.pid)
    else:
        log.info("asked owner pid %d to hand over (SIGHUP)", recorded.pid)
    return owner


def _explain(rec: DeviceState, e: UblkError, ctrl: RecoveryControl, deadline: Deadline) -> str:
    if e.command == "START_USER_RECOVERY" and e.errno == errno.EBUSY:
        info = ctrl.get_dev_info2(rec.dev_id)
        return (f"device {rec.dev_id} was not released within {deadline.seconds:g} s "
                f"(kernel server pid {info.ublksrv_pid}, state {info.state})")
    if e.command == "START_USER_RECOVERY" and e.errno == errno.EINVAL:
        return (f"device {rec.dev_id}: {e}: the kernel will not recover it (on Linux 6.12 and "
                "older, after an earlier successor died between mapping its queues and the "
                "first one being ready); only deleting the device (DEL_DEV: the I/O it holds "
                "fails) and serving its backing store afresh helps")
    return f"device {rec.dev_id}: {e}"


def release_each(taken: Sequence[Releasable], error: BaseException) -> None:
    """Release the devices taken before ``error``, newest first."""
    for dev in reversed(taken):
        dev.release()


class Adoption:
    """One successor's adoption of a state file; holds the file's adoption lock throughout.

    Entering reads and checks the state and the devices (nothing is touched yet, so the
    caller can still open the targets and give up cleanly); :meth:`take` does the handover.
    """

    def __init__(self, ctrl: RecoveryControl, state_path: str) -> None:
        self.ctrl = ctrl
        self.path = state_path
        self._stack = contextlib.ExitStack()
        self.state: DaemonState
        self.infos: dict[int, ublksrv_ctrl_dev_info]

    def __enter__(self) -> Adoption:
        with contextlib.ExitStack() as stack:
            stack.enter_context(adoption_lock(self.path))
            self.state = read_state(self.path)
            self.infos = check_devices(self.ctrl, self.state, self.path)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def recheck(self) -> bool:
        """Read and check the state again (after standing by); False if the file is gone
        (its owner stopped cleanly and deleted the devices)."""
        if not os.path.lexists(self.path):
            return False
        self.state = read_state(self.path)
        self.infos = check_devices(self.ctrl, self.state, self.path)
        return True

    def take(self, take_one: TakeOne[R], deadline: Deadline,
             let_go: Callable[[list[R], BaseException], None] = release_each,
             backings: Mapping[int, Backing | None] | None = None) -> list[R]:
        """Ask the owner to let go, take every device in dev_id order, rewrite the state;
        ``deadline`` (counted from now, not from entering) bounds the whole of it.

        On any failure ``let_go`` gets the devices taken so far (the daemon exits, so that the
        kernel releases them as after a crash: see ``handover.exit_releasing``), the state
        file is left as it was, and the error (AdoptError for the kernel's refusals)
        propagates.  ``backings`` (the successor's opened targets) completes the records of a
        version 1 state file when it is rewritten.
        """
        owner = ask_owner_to_let_go(self.ctrl, self.state.owner, self.infos)
        events.emit("adopting", owner_pid=self.state.owner.pid, signalled=owner is not None,
                    dev_ids=[rec.dev_id for rec in self.state.devices])
        taken: list[R] = []
        try:
            for rec in self.state.devices:
                try:
                    taken.append(take_one(rec, self.infos[rec.dev_id], deadline))
                except UblkError as e:
                    raise AdoptError(_explain(rec, e, self.ctrl, deadline)) from e
                log.info("device %d adopted", rec.dev_id)
                events.emit("adopted", dev_id=rec.dev_id)
            write_state(self.path, self.state.with_owner(ProcessIdentity.current(), backings))
        except BaseException as e:
            if taken:
                let_go(taken, e)
            raise
        finally:
            if owner is not None:
                owner.close()
        return taken
