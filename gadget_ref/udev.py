"""The udev rule that lets users without root serve devices, and the helper it runs.

Neither devtmpfs nor the driver gives a node to anyone but root: ``/dev/ublk-control`` and a
new device's ``/dev/ublkcN`` and ``/dev/ublkbN`` appear as root's, mode 0600.  The kernel
records who added an unprivileged device (``owner_uid``/``owner_gid`` of the dev info, the
caller's at ADD_DEV) and checks every later command against the caller's access to
``/dev/ublkcN``; handing the nodes to that owner is udev's job.  The shipped rule
(``gadget_ref/udev/``) asks :func:`owner` through ``ublk-gadget udev-owner %k``, the same
thing ublksrv's ``ublk_user_id`` does for its rule.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from typing import Protocol

from ublk_bindings import UBLK_F_UNPRIVILEGED_DEV, ublksrv_ctrl_dev_info

RULES = "70-ublk-gadget.rules"
SHIPPED_PROGRAM = 'PROGRAM="/usr/bin/ublk-gadget '
"""How the shipped rule names the gadget; :func:`render` puts this installation there."""

_NODE = re.compile(r"(?:/dev/)?ublk[bc]([0-9]+)(?:p[0-9]+)?")
_PLAIN = re.compile(r"[A-Za-z0-9_+=:,./@-]+")


class InfoControl(Protocol):
    def get_dev_info2(self, dev_id: int) -> ublksrv_ctrl_dev_info: ...


class NotUnprivileged(LookupError):
    """The node is not an unprivileged device's: its ownership is left alone."""


def text() -> str:
    """The shipped rule file (installed as package data)."""
    return resources.files("ublk_gadget").joinpath("udev", RULES).read_text(encoding="utf-8")


def _quote(word: str) -> str:
    """A word as udev splits a PROGRAM value (single quotes group; ``%`` is a specifier)."""
    if _PLAIN.fullmatch(word):
        return word
    if "'" in word or '"' in word:
        raise ValueError(f"{word!r}: a udev rule cannot name a path with quotes in it")
    return "'" + word.replace("%", "%%") + "'"


def render(rules: str, executable: str = sys.executable) -> str:
    """``rules`` with its PROGRAM= naming this installation (interpreter ``-m ublk_gadget``),
    a virtual environment included: udev runs no command from $PATH."""
    ours = f'PROGRAM="{_quote(executable)} -m ublk_gadget '
    return rules.replace(SHIPPED_PROGRAM, ours)


def dev_id_of(node: str) -> int:
    """The device number in a node's kernel name (``ublkc3``, ``ublkb3``, ``/dev/ublkb3p1``)."""
    m = _NODE.fullmatch(node)
    if not m:
        raise ValueError(f"{node!r} is not a ublk device node (ublkcN or ublkbN)")
    return int(m.group(1))


def owner(ctrl: InfoControl, node: str) -> tuple[int, int]:
    """The uid and gid that ADD_DEV recorded for the device of ``node`` (GET_DEV_INFO2);
    NotUnprivileged for a privileged device, whose nodes stay root's."""
    dev_id = dev_id_of(node)
    info = ctrl.get_dev_info2(dev_id)
    if not info.flags & UBLK_F_UNPRIVILEGED_DEV:
        raise NotUnprivileged(f"{node}: device {dev_id} is privileged (no "
                              "UBLK_F_UNPRIVILEGED_DEV): its nodes stay root's")
    return int(info.owner_uid), int(info.owner_gid)
