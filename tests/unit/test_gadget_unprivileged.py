"""Unprivileged devices on the host: the mode decision, the flags, the udev rule and its helper.

The kernel's side (EACCES for another user, no recovery, no user copy) is
``tests/kernel/test_unprivileged.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ublk_bindings import (
    UBLK_F_QUIESCE,
    UBLK_F_UNPRIVILEGED_DEV,
    UBLK_F_USER_COPY,
    UBLK_F_USER_RECOVERY,
    UBLK_F_USER_RECOVERY_REISSUE,
    ublksrv_ctrl_dev_info,
)
from ublk_bindings.buffers import BufferMode
from ublk_gadget import privilege, udev
from ublk_gadget.daemon import UsageError, buffer_mode_for, device_flags
from ublk_gadget.spec import parse_spec

RECOVERY = UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE | UBLK_F_QUIESCE


def status_file(tmp_path: Path, cap_eff: int) -> str:
    path = tmp_path / "status"
    path.write_text(f"Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff:016x}\n")
    return str(path)


def test_the_mode_follows_cap_sys_admin_not_the_uid(tmp_path: Path) -> None:
    assert privilege.has_cap_sys_admin(status_file(tmp_path, 0x000001ffffffffff))
    assert not privilege.has_cap_sys_admin(status_file(tmp_path, 0))
    assert not privilege.has_cap_sys_admin(status_file(tmp_path, 0x1fffffffff & ~(1 << 21)))


def test_an_unprivileged_device_asks_for_the_flag_and_still_for_recovery() -> None:
    features = RECOVERY | UBLK_F_USER_COPY | UBLK_F_UNPRIVILEGED_DEV
    assert device_flags(features) == RECOVERY
    assert device_flags(features, privileged=False) == RECOVERY | UBLK_F_UNPRIVILEGED_DEV
    assert device_flags(None, privileged=False) == UBLK_F_UNPRIVILEGED_DEV


def test_an_unprivileged_device_is_served_by_copy_and_nothing_else() -> None:
    everything = BufferMode.USER_COPY.flags | BufferMode.AUTO_BUF_REG.flags
    assert buffer_mode_for(parse_spec("null,size=1M"), everything, privileged=False) \
        is BufferMode.COPY
    assert buffer_mode_for(parse_spec("null,size=1M,buffers=copy"), everything,
                           privileged=False) is BufferMode.COPY
    with pytest.raises(UsageError, match="buffers=user-copy is not available to an "
                       "unprivileged server.*EINVAL"):
        buffer_mode_for(parse_spec("mem,size=1M,buffers=user-copy"), everything,
                        privileged=False)


def test_only_an_unprivileged_device_without_recovery_is_unrecoverable() -> None:
    assert privilege.unrecoverable(UBLK_F_UNPRIVILEGED_DEV | UBLK_F_QUIESCE)
    assert not privilege.unrecoverable(UBLK_F_UNPRIVILEGED_DEV | UBLK_F_USER_RECOVERY)
    assert not privilege.unrecoverable(0)  # root's, on a kernel without recovery: as before


def test_the_rule_names_this_installation_in_every_program() -> None:
    shipped = udev.text()
    assert shipped.count(udev.SHIPPED_PROGRAM) == 2  # ublkcN and ublkbN
    rendered = udev.render(shipped, "/opt/venv/bin/python")
    assert udev.SHIPPED_PROGRAM not in rendered
    assert rendered.count('PROGRAM="/opt/venv/bin/python -m ublk_gadget udev-owner %k"') == 2
    assert 'KERNEL=="ublk-control", SUBSYSTEM=="misc", GROUP="ublk", MODE="0660"' in rendered
    quoted = udev.render(shipped, "/opt/my venv/100%/python")
    assert "PROGRAM=\"'/opt/my venv/100%%/python' -m ublk_gadget" in quoted
    with pytest.raises(ValueError, match="quotes"):
        udev.render(shipped, "/opt/it's/python")


@pytest.mark.parametrize("node, dev_id", [("ublkc0", 0), ("ublkb12", 12), ("/dev/ublkb3", 3),
                                          ("ublkb3p1", 3)])
def test_a_node_names_its_device(node: str, dev_id: int) -> None:
    assert udev.dev_id_of(node) == dev_id


@pytest.mark.parametrize("node", ["ublk-control", "sda", "ublkc", "ublkx1", "ublkc1x"])
def test_anything_else_is_refused(node: str) -> None:
    with pytest.raises(ValueError, match="not a ublk device node"):
        udev.dev_id_of(node)


class FakeControl:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.asked: list[int] = []

    def get_dev_info2(self, dev_id: int) -> ublksrv_ctrl_dev_info:
        self.asked.append(dev_id)
        info = ublksrv_ctrl_dev_info()
        info.dev_id, info.flags, info.owner_uid, info.owner_gid = dev_id, self.flags, 1000, 100
        return info


def test_udev_owner_prints_the_recorded_owner_of_an_unprivileged_device_only() -> None:
    ctrl = FakeControl(UBLK_F_UNPRIVILEGED_DEV)
    assert udev.owner(ctrl, "ublkb7") == (1000, 100)
    assert ctrl.asked == [7]
    with pytest.raises(udev.NotUnprivileged, match="stay root's"):
        udev.owner(FakeControl(0), "ublkc7")
