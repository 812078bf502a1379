"""Unprivileged devices (``UBLK_F_UNPRIVILEGED_DEV``): when the gadget makes them, and what the
kernel refuses them.

The kernel decides by ``CAP_SYS_ADMIN``, not by uid: ADD_DEV from a caller that has it clears
``UBLK_F_UNPRIVILEGED_DEV`` (the device is privileged whatever was asked), and ADD_DEV from one
that lacks it is EPERM unless the flag is set.  So the gadget asks for the flag exactly when
it lacks the capability: a normal user gets unprivileged devices with no option to remember,
root gets the devices it always got, and root without the capability (a container) is
treated as the kernel treats it.

For such a device the kernel (``ublk_ctrl_add_dev``, Linux 6.5 to 7.2):

* refuses ``UBLK_F_USER_COPY``, ``UBLK_F_SUPPORT_ZERO_COPY`` and ``UBLK_F_AUTO_BUF_REG`` with
  EINVAL (a server that does not fill a request's buffer would leak kernel memory), so only
  ``buffers=copy`` is served;
* silently clears ``UBLK_F_USER_RECOVERY`` and ``UBLK_F_USER_RECOVERY_REISSUE``: when the
  server's char device closes, the device is stopped, so no successor can adopt it and there
  is no live handover;
* checks every later command against the access the caller has to ``/dev/ublkcN`` (read for
  GET_*, read and write for the rest): the node's owner and mode, which udev sets from the
  owner_uid/owner_gid ADD_DEV recorded (``udev.py``), are the device's access control;
* allows 64 unprivileged devices on the host at most (EACCES past that) and never scans
  their partitions.
"""

from __future__ import annotations

from ublk_bindings import UBLK_F_UNPRIVILEGED_DEV, UBLK_F_USER_RECOVERY
from ublk_bindings.buffers import BufferMode

CAP_SYS_ADMIN = 21
"""The capability's bit in /proc/PID/status ``CapEff`` (linux/capability.h)."""

RECOVERY_REFUSED = (
    "the kernel gives unprivileged devices (UBLK_F_UNPRIVILEGED_DEV) no user recovery: ADD_DEV "
    "cleared UBLK_F_USER_RECOVERY, so the device stops when its server lets go and no "
    "successor could adopt it")


def has_cap_sys_admin(status_path: str = "/proc/self/status") -> bool:
    """Whether this process has CAP_SYS_ADMIN in its effective set (what the driver checks)."""
    with open(status_path, encoding="ascii") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    raise OSError(f"{status_path}: no CapEff line")


def unprivileged_flags(privileged: bool) -> int:
    """The flag ADD_DEV needs from a caller that is (not) privileged."""
    return 0 if privileged else UBLK_F_UNPRIVILEGED_DEV


def refused_buffer_mode(mode: BufferMode) -> str | None:
    """Why the kernel refuses ``mode`` for an unprivileged device, or None if it serves it."""
    if mode is BufferMode.COPY:
        return None
    return (f"buffers={mode.value} is not available to an unprivileged server: the kernel "
            "refuses UBLK_F_USER_COPY, UBLK_F_SUPPORT_ZERO_COPY and UBLK_F_AUTO_BUF_REG for "
            "UBLK_F_UNPRIVILEGED_DEV (EINVAL), as a server that does not fill a request's "
            "buffer would leak kernel memory; use buffers=copy, or run with CAP_SYS_ADMIN")


def unrecoverable(flags: int) -> bool:
    """An unprivileged device the kernel will not recover (every kernel so far)."""
    return bool(flags & UBLK_F_UNPRIVILEGED_DEV) and not flags & UBLK_F_USER_RECOVERY
