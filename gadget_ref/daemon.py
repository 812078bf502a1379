"""The daemon: several devices, the ready line, signals, and a clean end.

Order matters for "never leave a device behind": every SPEC and every target is checked
before ``/dev/ublk-control`` is opened; devices are created one by one and each one that got
created is stopped and deleted on any way out (a later device failing, a signal during setup,
a queue thread dying, SIGTERM/SIGINT while serving).  Signals are taken by the main thread
only: queue threads block them, so a signal always interrupts the thread that must act on it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from ublk_bindings import (
    UBLK_F_QUIESCE,
    UBLK_F_USER_RECOVERY,
    UBLK_F_USER_RECOVERY_REISSUE,
    ublksrv_ctrl_dev_info,
)
from ublk_bindings.buffers import BufferMode
from ublk_bindings.ctrl import CONTROL_PATH, Control
from ublk_bindings.errors import UblkError

from . import events, faults, handover, privilege, report
from .adopt import Adoption, watch_owner
from .backing import DEFAULT_MEMORY_DIR
from .device import DAEMON_SIGNALS, ServedDevice
from .handover import Deadline
from .spec import DeviceSpec
from .state import (
    DaemonState,
    DeviceState,
    StateMissing,
    refuse_existing,
    remove_state,
    write_state,
)
from .supervisor import Supervisor
from .targets import KINDS, Target, open_target, reopen_target

__all__ = ["CONTROL_PATH", "GadgetError", "UsageError", "serve", "adopt", "adopt_or_serve",
           "print_features", "print_devices", "device_flags"]

log = logging.getLogger("ublk_gadget")

# SIGTERM/SIGINT stop and delete; SIGHUP hands the devices over to a successor (handover.py)
# when the daemon keeps a state file and the devices can be recovered, and stops otherwise.
STOP_SIGNALS = tuple(sorted(DAEMON_SIGNALS))
HEALTH_CHECK_S = 1.0


class UsageError(ValueError):
    """The command line asks for something this host cannot give: exit status 2."""


class GadgetError(RuntimeError):
    """Serving failed after setup (a queue thread died): exit status 1."""


def device_flags(features: int | None, privileged: bool = True) -> int:
    """The ``UBLK_F_*`` to ask ADD_DEV for, chosen from GET_FEATURES and nothing else.

    User recovery (with REISSUE: requests in flight when the server goes are sent again to its
    successor) and QUIESCE are what a live handover needs; a kernel that does not offer them
    still gets a device, just not one that can be handed over.  Without CAP_SYS_ADMIN the
    device must be UBLK_F_UNPRIVILEGED_DEV (privilege.py); recovery is asked for all the same,
    and the flags ADD_DEV writes back say whether the kernel granted it.
    """
    unprivileged = privilege.unprivileged_flags(privileged)
    if features is None:  # no GET_FEATURES (Linux < 6.5): ask for nothing optional
        return unprivileged
    wanted = UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE | UBLK_F_QUIESCE
    flags = features & wanted | unprivileged
    if not flags & UBLK_F_USER_RECOVERY:
        flags &= ~UBLK_F_USER_RECOVERY_REISSUE
    return flags


def buffer_mode_for(spec: DeviceSpec, features: int | None,
                    privileged: bool = True) -> BufferMode:
    """The buffer mode ``spec`` asks for; for ``auto``, the fastest this kernel and target
    allow: zero copy where the target needs no data in userspace, else copy (user copy is
    never faster than copy: kublk measures 0.7x).  UsageError for a mode the kernel lacks,
    or refuses an unprivileged device (only copy is left to one)."""
    offered = features or 0
    if not privileged:
        if spec.buffers == "auto":
            return BufferMode.COPY
        refused = privilege.refused_buffer_mode(BufferMode(spec.buffers))
        if refused:
            raise UsageError(f"--device {spec}: {refused}")
        return BufferMode.COPY
    if spec.buffers == "auto":
        if KINDS[spec.target].zero_copy and offered & BufferMode.AUTO_BUF_REG.flags:
            return BufferMode.AUTO_BUF_REG
        return BufferMode.COPY
    mode = BufferMode(spec.buffers)
    if mode.flags & ~offered:
        raise UsageError(f"--device {spec}: buffers={mode.value} needs "
                         f"{report.feature_names(mode.flags & ~offered)[0]}, which this kernel "
                         "does not offer (ublk-gadget features)")
    return mode


class _StopRequest:
    """Set by a signal or by a queue thread that failed; the main thread waits on it.

    A self-pipe, not a threading.Event: a Python signal handler runs in the main thread
    between two bytecodes, possibly while that thread holds the Event's internal lock (inside
    ``Event.wait``), and ``Event.set`` from the handler would then wait for that lock
    forever.  Writing a byte to a pipe takes no lock.
    """

    def __init__(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.signal: int | None = None
        self.ignored: list[int] = []
        self.failure: BaseException | None = None

    def is_set(self) -> bool:
        return self.signal is not None or self.failure is not None

    def wait(self, timeout: float) -> bool:
        """Sleep until a stop is requested or ``timeout`` passes; whether one was requested."""
        if not self.is_set():
            self.wait_readable(-1, timeout)
        return self.is_set()

    def wait_readable(self, fd: int, timeout: float | None = None) -> bool:
        """Sleep until ``fd`` (if not -1) polls readable, a signal comes, or ``timeout``
        passes; whether ``fd`` is readable."""
        fds = [self._wake_r] + ([fd] if fd >= 0 else [])
        readable, _, _ = select.select(fds, [], [], timeout)
        try:
            os.read(self._wake_r, 64)
        except BlockingIOError:
            pass
        return fd in readable

    def take_signal(self) -> int | None:
        """The signal that came, now consumed (a standby acts on it and serves on)."""
        signum, self.signal = self.signal, None
        self.ignored.clear()
        return signum

    @property
    def wakeup_fd(self) -> int:
        """The pipe's write end, for ``signal.set_wakeup_fd`` (non-blocking, as it must be)."""
        return self._wake_w

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Record only: logging here could re-enter a stderr write the main thread was in
        (RuntimeError: reentrant call) and lose the signal; :meth:`log_signals` logs it."""
        if self.signal is None:
            self.signal = signum
        else:  # the first signal decides: a handover is never turned into a delete
            self.ignored.append(signum)
        self._wake()

    def log_signals(self) -> None:
        """Log, from the main thread, what the signals asked for."""
        if self.signal is None:
            return
        log.info("%s: %s", signal.Signals(self.signal).name,
                 "handing over" if self.signal == signal.SIGHUP else "stopping")
        for signum in self.ignored:
            log.info("%s ignored: %s already in progress", signal.Signals(signum).name,
                     "handover" if self.signal == signal.SIGHUP else "stop")

    def on_failure(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
        self._wake()


@contextmanager
def _signals_to(stop: _StopRequest) -> Iterator[None]:
    """Route the daemon's signals to ``stop``.

    The wake-up fd is what makes a wait reliable: Python runs a handler only between
    bytecodes, so a signal that lands just before ``select`` blocks would run its handler
    (and so its ``_wake``) only when the wait ends. The C-level handler writes to the
    wake-up fd at once, whatever the main thread is doing.
    """
    previous = {s: signal.signal(s, stop.on_signal) for s in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(stop.wakeup_fd, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop.close()


def _open_targets(open_one: Callable[[int], Target], count: int, fresh: bool) -> list[Target]:
    """``open_one(i)`` for each of ``count`` targets; on a failure, what was opened is closed
    (and, if ``fresh``, what was created for it removed: no device ever served it)."""
    opened: list[Target] = []
    try:
        for i in range(count):
            opened.append(open_one(i))
    except BaseException:
        if fresh:
            _remove_all(opened)
        _close_all(opened)
        raise
    return opened


def _remove_all(targets: Sequence[Target]) -> None:
    for target in targets:
        target.remove()


def _close_all(targets: Sequence[Target]) -> None:
    for target in targets:
        target.close()


def _state(devices: Sequence[ServedDevice]) -> DaemonState:
    return DaemonState.owned_by_this_process(
        DeviceState.of(d.dev_id, d.spec, d.flags, d.target.backing()) for d in devices
    )


def serve(specs: Sequence[DeviceSpec], state_file: str | None = None,
          memory_dir: str = DEFAULT_MEMORY_DIR, ready_fd: int | None = None) -> int:
    """``ublk-gadget serve``: returns the exit status once every device is gone or handed over.

    With a state file, a mem device's memory is a file under ``memory_dir`` (a tmpfs), so that
    it outlives this process for a successor; without one, a memfd.  ``ready_fd`` gets the
    ready line (see ``supervisor.py``).
    """
    supervisor = Supervisor.from_environment(ready_fd)
    if state_file is not None:
        refuse_existing(state_file)
    specs = [spec.absolute() for spec in specs]  # a successor may run elsewhere
    where = memory_dir if state_file is not None else None
    # Bad input fails here, before any device exists.
    targets = _open_targets(lambda i: open_target(specs[i], where), len(specs), fresh=True)
    stop = _StopRequest()
    devices: list[ServedDevice] = []
    unserved = list(targets)  # a target leaves this list once a device serves it
    privileged = privilege.has_cap_sys_admin()
    try:
        with _signals_to(stop), Control() as ctrl:
            flags = device_flags(ctrl.features, privileged)
            modes = [buffer_mode_for(spec, ctrl.features, privileged)  # before any ADD_DEV
                     for spec in specs]
            try:
                for spec, target, mode in zip(specs, targets, modes):
                    if stop.is_set():
                        break
                    devices.append(ServedDevice.create(ctrl, spec.with_size(target.size), target,
                                                       flags | mode.flags,
                                                       on_failure=stop.on_failure))
                    unserved.remove(target)
                    if state_file is not None:
                        _refuse_unrecoverable(devices[-1])
                if not stop.is_set() and state_file is not None:
                    write_state(state_file, _state(devices))
            except BaseException:
                _teardown(devices)
                raise
            _serve(ctrl, stop, devices, state_file, supervisor)
    finally:
        _remove_all(unserved)  # setup failed or was stopped before they were served
        _close_all(targets)
    if stop.failure is not None:
        raise GadgetError(f"serving stopped: {stop.failure}") from stop.failure
    return 0


def _refuse_unrecoverable(device: ServedDevice) -> None:
    """With a state file, a device the kernel will not recover is an error, not a surprise at
    the first reload: the caller deletes what it created."""
    if privilege.unrecoverable(device.flags):
        raise UsageError(f"--state-file: {device.block_device}: {privilege.RECOVERY_REFUSED}; "
                         "serve it without --state-file, or with CAP_SYS_ADMIN")


def adopt(state_file: str, deadline_s: float, standby: bool = False,
          ready_fd: int | None = None) -> int:
    """``ublk-gadget serve --adopt``: take over the devices of ``state_file``, then serve them.

    With ``standby``, first wait, fully loaded, until the owner exits (crash or stop) or
    this process gets SIGHUP (take over now: a live handover); SIGTERM/SIGINT end the wait
    and touch nothing.
    """
    supervisor = Supervisor.from_environment(ready_fd)
    stop = _StopRequest()
    with _signals_to(stop), Control() as ctrl:
        with Adoption(ctrl, state_file) as adoption:
            records = adoption.state.devices
            log.info("adopting %s (owner pid %d): devices %s", state_file,
                     adoption.state.owner.pid, ", ".join(str(r.dev_id) for r in records))
            targets = _open_targets(  # the same files and memory as before any signal
                lambda i: reopen_target(records[i].device_spec(), records[i].backing,
                                        f"device {records[i].dev_id}"), len(records), fresh=False)
            by_id = {r.dev_id: t for r, t in zip(records, targets)}
            try:
                if standby and not _stand_by(adoption, stop, supervisor):
                    supervisor.stopping("standby ended without adopting; nothing was touched")
                    _close_all(targets)
                    return 0
                devices = adoption.take(
                    lambda rec, info, deadline: ServedDevice.adopt(
                        ctrl, rec, by_id[rec.dev_id], deadline.remaining(),
                        on_failure=stop.on_failure),
                    Deadline(deadline_s), let_go=_exit_letting_go,
                    backings={r.dev_id: t.backing() for r, t in zip(records, targets)})
            except BaseException:
                _close_all(targets)
                raise
        try:
            _serve(ctrl, stop, devices, state_file, supervisor)
        finally:
            _close_all(targets)
    if stop.failure is not None:
        raise GadgetError(f"serving stopped: {stop.failure}") from stop.failure
    return 0


def adopt_or_serve(specs: Sequence[DeviceSpec], state_file: str, deadline_s: float,
                   memory_dir: str = DEFAULT_MEMORY_DIR, ready_fd: int | None = None) -> int:
    """``serve --adopt-or-create``, what a unit's ExecStart= runs: adopt the devices of
    ``state_file`` if it exists (a crash, or an owner still serving them), else create
    ``specs``.  So the same command starts the service and restarts it after a crash."""
    if os.path.lexists(state_file):
        log.info("%s exists: adopting its devices (--device is for when there is none)",
                 state_file)
        try:
            return adopt(state_file, deadline_s, ready_fd=ready_fd)
        except StateMissing:  # its owner stopped cleanly meanwhile: the devices are gone
            log.info("%s was removed meanwhile: creating the devices", state_file)
    return serve(specs, state_file=state_file, memory_dir=memory_dir, ready_fd=ready_fd)


def _stand_by(adoption: Adoption, stop: _StopRequest, supervisor: Supervisor) -> bool:
    """Wait for the owner to go; whether to adopt now (False: told to stop instead)."""
    owner = watch_owner(adoption.state.owner)
    if owner is None:
        return True
    with owner:
        dev_ids = [r.dev_id for r in adoption.state.devices]
        print(report.standby_line(owner.identity.pid, dev_ids), flush=True)
        supervisor.standing_by(owner.identity.pid, dev_ids)
        log.info("standing by: adopting when owner pid %d exits (SIGHUP: take over now)",
                 owner.identity.pid)
        while not stop.wait_readable(owner.pidfd):
            signum = stop.take_signal()
            if signum == signal.SIGHUP:
                log.info("SIGHUP: taking over from the live owner now")
                return True
            if signum is not None:
                log.info("%s: no longer standing by; nothing was touched",
                         signal.Signals(signum).name)
                return False
        if not adoption.recheck():
            log.info("owner pid %d stopped and removed %s: nothing to adopt",
                     owner.identity.pid, adoption.path)
            return False
        log.info("owner pid %d exited: adopting", owner.identity.pid)
        return True


def _exit_letting_go(taken: list[ServedDevice], error: BaseException) -> None:
    """A successor that failed half-way exits (status 1) with the devices it took still open:
    the kernel releases them as after a crash, ready for a later --adopt."""
    print(f"ublk-gadget: {error}", file=sys.stderr, flush=True)
    handover.exit_releasing(taken, status=1)


def _serve(ctrl: Control, stop: _StopRequest, devices: list[ServedDevice],
           state_file: str | None, supervisor: Supervisor) -> None:
    """Announce the devices, serve them until a signal, then hand them over or delete them."""
    handed_over = False
    names = [d.block_device for d in devices]
    try:
        if not stop.is_set():
            ready = report.ready_line(d.describe() for d in devices)
            print(ready, flush=True)
            supervisor.serving(ready, names)
            log.info("serving %s", ", ".join(names))
            _serve_until_stopped(stop, devices)
        for device in devices:  # what failed since the last health check, before letting go
            device.report_io_errors()
        stop.log_signals()
        if stop.signal == signal.SIGHUP and _can_hand_over(devices, state_file):
            supervisor.handing_over(names)
            events.emit("handing-over", dev_ids=[d.dev_id for d in devices])
            faults.reached(faults.AFTER_SIGHUP)
            left = handover.hand_over(ctrl, devices)
            if left:
                handover.exit_releasing(left)  # does not return; the state file stays
            faults.reached(faults.AFTER_RELEASE)
            devices.clear()
            handed_over = True
        else:
            supervisor.stopping(f"stopping: deleting {', '.join(names)}")
    finally:
        _teardown(devices)
        if state_file is not None and not handed_over:
            remove_state(state_file)


def _can_hand_over(devices: Sequence[ServedDevice], state_file: str | None) -> bool:
    """A successor can only find devices through a state file and recover USER_RECOVERY ones."""
    if state_file is None:
        log.warning("SIGHUP without --state-file: no successor could find the devices; stopping")
        return False
    unrecoverable = [d.block_device for d in devices if not d.flags & UBLK_F_USER_RECOVERY]
    if unrecoverable:
        log.warning("SIGHUP: %s lack UBLK_F_USER_RECOVERY (this kernel did not offer it); "
                    "stopping", ", ".join(unrecoverable))
        return False
    return True


def _serve_until_stopped(stop: _StopRequest, devices: Sequence[ServedDevice]) -> None:
    """Sleep until a signal comes or a queue stops serving (its device's ``on_failure``
    wakes us); meanwhile, once a second, report failed requests and take a disk's claim."""
    unclaimed = [d for d in devices if not d.target.claim()]
    if unclaimed:
        log.info("%s: the disk is still claimed by the previous owner; claiming it once that "
                 "has let go", ", ".join(d.block_device for d in unclaimed))
    while not stop.wait(HEALTH_CHECK_S):
        unclaimed = [d for d in unclaimed if not d.target.claim()]
        for device in devices:
            device.report_io_errors()


def _teardown(devices: list[ServedDevice]) -> None:
    """Stop and delete every device, newest first; one failing does not spare the others."""
    errors: list[BaseException] = []
    while devices:
        device = devices.pop()
        try:
            device.stop()
        except Exception as e:  # keep going: the remaining devices must go too
            log.error("%s: %s", device.block_device, e)
            errors.append(e)
    if errors:
        raise errors[0]


def print_features(as_json: bool = False) -> int:
    """``ublk-gadget features``."""
    with Control() as ctrl:
        if ctrl.features is None:
            raise GadgetError(f"this kernel has no GET_FEATURES ({ctrl.features_error})")
        if as_json:
            print(json.dumps({"features": ctrl.features,
                              "names": report.feature_names(ctrl.features)}))
        else:
            print(report.format_features(ctrl.features))
    return 0


def ublk_device_ids() -> list[int]:
    """The ids of the ublk devices on this host, from their char devices in sysfs."""
    ids = []
    for root in ("/sys/class/ublk-char", "/dev"):
        try:
            names = os.listdir(root)
        except FileNotFoundError:
            continue
        ids = [int(n[5:]) for n in names if n.startswith("ublkc") and n[5:].isdigit()]
        if root.startswith("/sys"):
            break
    return sorted(ids)


def _dev_info(ctrl: Control, dev_id: int) -> ublksrv_ctrl_dev_info:
    """GET_DEV_INFO2, which works for unprivileged devices too (they refuse a command without
    the char device path: EINVAL); else GET_DEV_INFO (Linux < 6.5 has no GET_DEV_INFO2, and
    a privileged device's node may be missing here), and the first error if both fail."""
    try:
        return ctrl.get_dev_info2(dev_id)
    except UblkError as first:
        if first.errno == errno.ENODEV:
            raise
        try:
            return ctrl.get_dev_info(dev_id)
        except UblkError:
            raise first from None


def print_devices(as_json: bool = False) -> int:
    """``ublk-gadget list``."""
    rows = []
    with Control() as ctrl:
        for dev_id in ublk_device_ids():
            try:
                rows.append(report.device_row(_dev_info(ctrl, dev_id)))
            except OSError as e:  # deleted between the listing and the query; not ours
                log.debug("ublkc%d: %s", dev_id, e)
    if as_json:
        print(json.dumps({"devices": rows}))
    else:
        print(report.format_device_table(rows))
    sys.stdout.flush()
    return 0
