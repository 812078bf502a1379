"""Every control command against the real driver: its success path and its typical errors.

Expected errnos are the ones the driver's source returns (drivers/block/ublk_drv.c, cited per
test). Where a command or a flag is newer than the running kernel, the test decides from
GET_FEATURES, never from the kernel version, and asserts the kernel's real answer.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Iterator

import pytest

from ublk_bindings.ctrl import NEW_DEV_ID, Control, block_dev_path, char_dev_path
from ublk_bindings.errors import UblkError, UblkTimeout
from ublk_bindings.io import Device, Handler
from ublk_bindings.ublk_cmd import (
    UBLK_F_CMD_IOCTL_ENCODE,
    UBLK_F_QUIESCE,
    UBLK_F_SAFE_STOP_DEV,
    UBLK_F_UPDATE_SIZE,
    UBLK_F_USER_RECOVERY,
    UBLK_MAX_QUEUE_DEPTH,
    UBLK_PARAM_TYPE_BASIC,
    UBLK_PARAM_TYPE_DEVT,
    UBLK_S_DEV_DEAD,
    UBLK_S_DEV_LIVE,
    UblkF,
    ublk_params,
    ublksrv_ctrl_dev_info,
    ublksrv_io_desc,
)

pytestmark = pytest.mark.ublk

TIMEOUT = 60.0  # seconds for any one control command: a hung test must not hang the VM
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "headers"
MiB = 1 << 20


def dev_info(*, flags: int = 0, depth: int = 16, queues: int = 1,
             dev_id: int = NEW_DEV_ID, max_io: int = 256 * 1024) -> ublksrv_ctrl_dev_info:
    info = ublksrv_ctrl_dev_info()
    info.nr_hw_queues, info.queue_depth, info.max_io_buf_bytes = queues, depth, max_io
    info.dev_id, info.flags = dev_id, flags
    return info


def basic_params(size: int = 16 * MiB, max_io: int = 256 * 1024) -> ublk_params:
    p = ublk_params()
    p.types = UBLK_PARAM_TYPE_BASIC
    p.basic.logical_bs_shift = p.basic.physical_bs_shift = 9
    p.basic.io_min_shift, p.basic.io_opt_shift = 9, 12
    p.basic.max_sectors = max_io >> 9
    p.basic.dev_sectors = size >> 9
    return p


def zero_reader(q_id: int) -> Handler:
    """A null target: reads return zeros, writes are dropped."""

    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        n = desc.nr_sectors << 9
        if desc.op_flags & 0xFF == 0:  # UBLK_IO_OP_READ
            buf[:n] = bytes(n)
        return n

    return handler


@pytest.fixture
def ctrl() -> Iterator[Control]:
    with Control(timeout=TIMEOUT) as c:
        yield c


def remove(ctrl: Control, dev_id: int) -> None:
    try:
        ctrl.del_dev(dev_id)
    except UblkError as e:
        if e.errno != errno.ENODEV:
            raise


@pytest.fixture
def added(ctrl: Control) -> Iterator[ublksrv_ctrl_dev_info]:
    """A device that exists (ADD_DEV) but was never started."""
    info = ctrl.add_dev(dev_info())
    try:
        yield info
    finally:
        remove(ctrl, info.dev_id)


@pytest.fixture
def started(ctrl: Control) -> Iterator[Device]:
    """A live one-queue null device served by this process."""
    with Device(ctrl, zero_reader).create(dev_info(), basic_params()) as dev:
        yield dev


def a_free_dev_id(ctrl: Control) -> int:
    for dev_id in range(4000, 4096):
        if not os.path.exists(char_dev_path(dev_id)):
            return dev_id
    raise AssertionError("no free dev_id")


def kernel_header(release: str) -> Path | None:
    """The ublk_cmd.h of kernel ``release`` (major.minor): headers/ if that is the bundled
    one (its PROVENANCE's ``kernel:`` line), else a fixture of an older kernel, if we have it."""
    bundled = FIXTURES.parents[2] / "headers"
    kernel = re.search(r"^kernel:\s*(\d+\.\d+)", (bundled / "PROVENANCE").read_text(), re.M)
    if kernel and kernel.group(1) == release:
        return bundled / "ublk_cmd.h"
    fixture = FIXTURES / release / "ublk_cmd.h"
    return fixture if fixture.exists() else None


def kernel_header_flags() -> dict[str, int] | None:
    """UBLK_F_* of the running kernel's own ublk_cmd.h, if we bundle it."""
    header = kernel_header(".".join(os.uname().release.split(".")[:2]))
    if header is None:
        return None
    return {name: 1 << int(bit) for name, bit in re.findall(
        r"#define\s+(UBLK_F_\w+)\s+\(1U?L*\s*<<\s*(\d+)\)", header.read_text())}


# -- GET_FEATURES -----------------------------------------------------------------------------


def test_get_features_is_every_flag_of_the_kernels_own_header(ctrl: Control) -> None:
    features = ctrl.get_features()
    assert features == ctrl.features
    assert features & UBLK_F_CMD_IOCTL_ENCODE, "GET_FEATURES exists only ioctl-encoded"
    assert ctrl.ioctl_encode
    flags = kernel_header_flags()
    if flags is None:
        pytest.skip(f"no bundled ublk_cmd.h for {os.uname().release} to compare against")
    # GET_FEATURES returns the driver's UBLK_F_ALL: every flag its header defines ("All
    # UBLK_F_* have to be included into UBLK_F_ALL"), except UBLK_F_INTEGRITY without
    # CONFIG_BLK_DEV_INTEGRITY, and UBLK_F_SUPPORT_ZERO_COPY, which headers reserve from 6.0
    # but drivers before 6.15 leave out of UBLK_F_ALL as unimplemented.
    defined = sum(flags.values())
    may_lack = flags.get("UBLK_F_INTEGRITY", 0) | flags["UBLK_F_SUPPORT_ZERO_COPY"]
    assert not features & ~defined, f"{features:#x} has flags its header lacks {defined:#x}"
    assert not defined & ~features & ~may_lack, (
        f"{features:#x} lacks {defined & ~features:#x} of {sorted(flags)}")


def test_features_decode_to_names(ctrl: Control) -> None:
    features = ctrl.features
    assert isinstance(features, UblkF)
    print(f"{os.uname().release}: GET_FEATURES {features!r}")
    named = [f for f in UblkF if f & features == f]
    assert UblkF.CMD_IOCTL_ENCODE in named and UblkF.USER_RECOVERY in named
    assert sum(named) == features, "every bit the kernel reports has a name in our header"


# -- ADD_DEV / DEL_DEV / GET_DEV_INFO(2) --------------------------------------------------------


def test_add_dev_writes_back_the_negotiated_info(ctrl: Control) -> None:
    asked = dev_info(flags=UBLK_F_USER_RECOVERY | UBLK_F_QUIESCE | (1 << 63),
                     max_io=256 * 1024 + 100)
    info = ctrl.add_dev(asked)
    try:
        assert asked.dev_id == NEW_DEV_ID and asked.max_io_buf_bytes == 256 * 1024 + 100, (
            "the caller's struct is not modified")
        assert info.dev_id != NEW_DEV_ID
        assert info.max_io_buf_bytes == 256 * 1024  # round_down(, PAGE_SIZE)
        assert info.state == UBLK_S_DEV_DEAD
        assert info.owner_uid == os.getuid() and info.owner_gid == os.getgid()
        assert features_of(ctrl) & UBLK_F_CMD_IOCTL_ENCODE & info.flags  # always set by ADD_DEV
        assert not info.flags & (1 << 63), "an unknown flag is cleared (flags &= UBLK_F_ALL)"
        # what the kernel supports is kept, what it does not is dropped: 6.12 has no QUIESCE
        assert info.flags & UBLK_F_QUIESCE == features_of(ctrl) & UBLK_F_QUIESCE
        assert stat.S_ISCHR(os.stat(char_dev_path(info.dev_id)).st_mode)
        again = ctrl.get_dev_info(info.dev_id)
        assert bytes(again) == bytes(info)
    finally:
        ctrl.del_dev(info.dev_id)
    assert not os.path.exists(char_dev_path(info.dev_id))
    with pytest.raises(UblkError) as e:
        ctrl.get_dev_info(info.dev_id)
    assert e.value.errno == errno.ENODEV


def features_of(ctrl: Control) -> int:
    assert ctrl.features is not None
    return ctrl.features


def test_add_dev_with_a_chosen_id_and_eexist_when_taken(ctrl: Control) -> None:
    dev_id = a_free_dev_id(ctrl)
    info = ctrl.add_dev(dev_info(dev_id=dev_id))
    try:
        assert info.dev_id == dev_id
        with pytest.raises(UblkError) as e:
            ctrl.add_dev(dev_info(dev_id=dev_id))
        assert e.value.errno == errno.EEXIST  # ublk_alloc_dev_number: -ENOSPC -> -EEXIST
        assert str(e.value) == "ADD_DEV failed: EEXIST (File exists)"
    finally:
        ctrl.del_dev(dev_id)


@pytest.mark.parametrize("depth,queues", [(0, 1), (UBLK_MAX_QUEUE_DEPTH + 1, 1), (16, 0)])
def test_add_dev_rejects_impossible_geometry(ctrl: Control, depth: int, queues: int) -> None:
    with pytest.raises(UblkError) as e:
        ctrl.add_dev(dev_info(depth=depth, queues=queues))
    assert e.value.errno == errno.EINVAL
    assert str(e.value) == "ADD_DEV failed: EINVAL (Invalid argument)"


def test_get_dev_info2_sends_the_char_device_path(ctrl: Control,
                                                  added: ublksrv_ctrl_dev_info) -> None:
    assert bytes(ctrl.get_dev_info2(added.dev_id)) == bytes(ctrl.get_dev_info(added.dev_id))


def test_del_dev_async(ctrl: Control) -> None:
    info = ctrl.add_dev(dev_info())
    ctrl.del_dev_async(info.dev_id)
    with pytest.raises(UblkError) as e:
        ctrl.get_dev_info(info.dev_id)
    assert e.value.errno == errno.ENODEV


@pytest.mark.parametrize("command", [
    "get_dev_info", "get_dev_info2", "get_params", "del_dev", "del_dev_async", "stop_dev",
    "try_stop_dev", "start_user_recovery", "update_size", "quiesce_dev", "start_dev",
])
def test_a_dev_id_that_does_not_exist_is_enodev(ctrl: Control, command: str) -> None:
    # ublk_ctrl_uring_cmd: every command but ADD_DEV looks the device up first -> -ENODEV
    dev_id = a_free_dev_id(ctrl)
    args: tuple[int, ...] = (dev_id, 1) if command in ("update_size", "quiesce_dev") else (dev_id,)
    with pytest.raises(UblkError) as e:
        getattr(ctrl, command)(*args)
    assert e.value.errno == errno.ENODEV, str(e.value)
    assert str(e.value).startswith(command.upper() + " failed: ENODEV")


def test_set_params_on_a_missing_device_is_enodev(ctrl: Control) -> None:
    with pytest.raises(UblkError, match="^SET_PARAMS failed: ENODEV"):
        ctrl.set_params(a_free_dev_id(ctrl), basic_params())


# -- SET_PARAMS / GET_PARAMS ------------------------------------------------------------------


def test_params_round_trip_with_the_kernels_devt(ctrl: Control,
                                                 added: ublksrv_ctrl_dev_info) -> None:
    ctrl.set_params(added.dev_id, basic_params(size=32 * MiB))
    got = ctrl.get_params(added.dev_id)
    assert got.types == UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DEVT
    assert got.basic.dev_sectors == 32 * MiB >> 9
    assert got.basic.max_sectors == 256 * 1024 >> 9
    rdev = os.stat(char_dev_path(added.dev_id)).st_rdev
    assert (got.devt.char_major, got.devt.char_minor) == (os.major(rdev), os.minor(rdev))
    assert (got.devt.disk_major, got.devt.disk_minor) == (0, 0)  # not started: no disk


def test_set_params_validates(ctrl: Control, added: ublksrv_ctrl_dev_info) -> None:
    # ublk_validate_params: logical block smaller than 512 bytes; devt is read-only
    bad = basic_params()
    bad.basic.logical_bs_shift = 8
    with pytest.raises(UblkError) as e:
        ctrl.set_params(added.dev_id, bad)
    assert e.value.errno == errno.EINVAL
    devt = basic_params()
    devt.types |= UBLK_PARAM_TYPE_DEVT
    with pytest.raises(UblkError) as e:
        ctrl.set_params(added.dev_id, devt)
    assert e.value.errno == errno.EINVAL


def test_set_params_after_start_is_eacces(ctrl: Control, started: Device) -> None:
    # ublk_ctrl_set_params: "Parameters can only be changed when device hasn't been started"
    with pytest.raises(UblkError) as e:
        ctrl.set_params(started.dev_id, basic_params())
    assert e.value.errno == errno.EACCES
    assert str(e.value) == "SET_PARAMS failed: EACCES (Permission denied)"


# -- START_DEV / STOP_DEV / TRY_STOP_DEV ------------------------------------------------------


def test_start_dev_creates_the_disk_and_stop_removes_it(ctrl: Control) -> None:
    dev = Device(ctrl, zero_reader).create(dev_info(), basic_params(size=8 * MiB))
    dev_id = dev.dev_id
    try:
        info = ctrl.get_dev_info(dev_id)
        assert info.state == UBLK_S_DEV_LIVE
        assert info.ublksrv_pid == os.getpid()
        assert Path(f"/sys/block/ublkb{dev_id}/size").read_text().strip() == str(8 * MiB >> 9)
        got = ctrl.get_params(dev_id)
        rdev = os.stat(block_dev_path(dev_id)).st_rdev
        assert (got.devt.disk_major, got.devt.disk_minor) == (os.major(rdev), os.minor(rdev))
        ctrl.stop_dev(dev_id)
        assert ctrl.get_dev_info(dev_id).state == UBLK_S_DEV_DEAD
        assert not os.path.exists(block_dev_path(dev_id))
    finally:
        dev.stop()
    assert not os.path.exists(char_dev_path(dev_id))


def test_start_dev_needs_a_daemon_pid(ctrl: Control, added: ublksrv_ctrl_dev_info) -> None:
    # ublk_ctrl_start_dev: "if (ublksrv_pid <= 0) return -EINVAL", before any waiting
    with pytest.raises(UblkError) as e:
        ctrl.start_dev(added.dev_id, daemon_pid=0)
    assert e.value.errno == errno.EINVAL


def test_stop_dev_of_a_device_never_started_succeeds(ctrl: Control,
                                                     added: ublksrv_ctrl_dev_info) -> None:
    ctrl.stop_dev(added.dev_id)
    assert ctrl.get_dev_info(added.dev_id).state == UBLK_S_DEV_DEAD


def test_try_stop_dev(ctrl: Control, started: Device) -> None:
    if not features_of(ctrl) & UBLK_F_SAFE_STOP_DEV:
        # no TRY_STOP_DEV before UBLK_F_SAFE_STOP_DEV: the switch's default case
        with pytest.raises(UblkError) as e:
            ctrl.try_stop_dev(started.dev_id)
        assert e.value.errno == errno.EOPNOTSUPP
        return
    fd = os.open(started.block_path, os.O_RDONLY)
    try:
        with pytest.raises(UblkError) as e:
            ctrl.try_stop_dev(started.dev_id)
        assert e.value.errno == errno.EBUSY  # ublk_ctrl_try_stop_dev: disk_openers() > 0
        assert ctrl.get_dev_info(started.dev_id).state == UBLK_S_DEV_LIVE
    finally:
        os.close(fd)
    ctrl.try_stop_dev(started.dev_id)
    assert ctrl.get_dev_info(started.dev_id).state == UBLK_S_DEV_DEAD


def test_try_stop_dev_of_a_device_never_started(ctrl: Control,
                                                added: ublksrv_ctrl_dev_info) -> None:
    expected = errno.ENODEV if features_of(ctrl) & UBLK_F_SAFE_STOP_DEV else errno.EOPNOTSUPP
    with pytest.raises(UblkError) as e:  # 7.2: no disk yet -> -ENODEV
        ctrl.try_stop_dev(added.dev_id)
    assert e.value.errno == expected


# -- GET_QUEUE_AFFINITY -----------------------------------------------------------------------


def possible_cpus() -> frozenset[int]:
    cpus: set[int] = set()
    for part in Path("/sys/devices/system/cpu/possible").read_text().strip().split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def test_queue_affinity_covers_the_cpus(ctrl: Control) -> None:
    cpus = possible_cpus()
    queues = min(2, os.cpu_count() or 1)
    info = ctrl.add_dev(dev_info(queues=queues))
    try:
        masks = [ctrl.get_queue_affinity(info.dev_id, q) for q in range(info.nr_hw_queues)]
        assert all(masks), masks
        assert frozenset().union(*masks) == frozenset(cpus)
        for a in range(len(masks)):
            for b in range(a):
                assert not masks[a] & masks[b], "a CPU maps to one queue"
        with pytest.raises(UblkError) as e:
            ctrl.get_queue_affinity(info.dev_id, info.nr_hw_queues)
        assert e.value.errno == errno.EINVAL  # queue >= nr_hw_queues
    finally:
        ctrl.del_dev(info.dev_id)


# -- UPDATE_SIZE ------------------------------------------------------------------------------


def test_update_size(ctrl: Control, started: Device) -> None:
    size_file = Path(f"/sys/block/ublkb{started.dev_id}/size")
    if not features_of(ctrl) & UBLK_F_UPDATE_SIZE:
        with pytest.raises(UblkError) as e:
            ctrl.update_size(started.dev_id, 4 * MiB >> 9)
        assert e.value.errno == errno.EOPNOTSUPP
        return
    ctrl.update_size(started.dev_id, 4 * MiB >> 9)
    assert size_file.read_text().strip() == str(4 * MiB >> 9)
    assert ctrl.get_params(started.dev_id).basic.dev_sectors == 4 * MiB >> 9
    fd = os.open(started.block_path, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_END) == 4 * MiB
    finally:
        os.close(fd)


def test_update_size_of_a_device_never_started(ctrl: Control,
                                               added: ublksrv_ctrl_dev_info) -> None:
    expected = errno.ENODEV if features_of(ctrl) & UBLK_F_UPDATE_SIZE else errno.EOPNOTSUPP
    with pytest.raises(UblkError) as e:  # ublk_ctrl_set_size: no ub_disk -> -ENODEV
        ctrl.update_size(added.dev_id, 8)
    assert e.value.errno == expected


# -- QUIESCE_DEV and user recovery ------------------------------------------------------------


def test_quiesce_dev_without_the_flag_is_eopnotsupp(ctrl: Control, started: Device) -> None:
    # 7.2: ublk_ctrl_quiesce_dev checks the device's UBLK_F_QUIESCE; 6.12 has no such command
    assert started.info is not None and not started.info.flags & UBLK_F_QUIESCE
    with pytest.raises(UblkError) as e:
        ctrl.quiesce_dev(started.dev_id, 100)
    assert e.value.errno == errno.EOPNOTSUPP
    assert str(e.value) == "QUIESCE_DEV failed: EOPNOTSUPP (Operation not supported)"


def test_start_user_recovery_without_the_flag_is_einval(ctrl: Control,
                                                        started: Device) -> None:
    # ublk_ctrl_start_recovery: ublk_nosrv_should_stop_dev() -> -EINVAL
    with pytest.raises(UblkError) as e:
        ctrl.start_user_recovery(started.dev_id)
    assert e.value.errno == errno.EINVAL


def test_start_user_recovery_while_the_server_is_alive_is_ebusy(ctrl: Control) -> None:
    with Device(ctrl, zero_reader).create(dev_info(flags=UBLK_F_USER_RECOVERY),
                                          basic_params()) as dev:
        with pytest.raises(UblkError) as e:  # UB_STATE_OPEN: the char device is still open
            ctrl.start_user_recovery(dev.dev_id)
        assert e.value.errno == errno.EBUSY


def test_end_user_recovery_of_a_live_device(ctrl: Control, started: Device) -> None:
    # ublk_ctrl_end_recovery: a device without UBLK_F_USER_RECOVERY -> -EINVAL
    with pytest.raises(UblkError) as e:
        ctrl.end_user_recovery(started.dev_id)
    assert e.value.errno == errno.EINVAL
    with Device(ctrl, zero_reader).create(dev_info(flags=UBLK_F_USER_RECOVERY),
                                          basic_params()) as dev:
        with pytest.raises(UblkError) as e:  # not in a recoverable state: it is LIVE
            ctrl.end_user_recovery(dev.dev_id)
        assert e.value.errno == errno.EBUSY


# -- legacy opcodes ---------------------------------------------------------------------------


def test_a_device_life_cycle_on_legacy_opcodes() -> None:
    # Linux 6.1 has no ioctl-encoded commands and no GET_FEATURES; its drive path is the
    # legacy UBLK_CMD_* numbers, which later kernels still accept (Debian builds them with
    # CONFIG_BLKDEV_UBLK_LEGACY_OPCODES=y), so it is proven here.
    with Control(timeout=TIMEOUT, ioctl_encode=False) as legacy:
        assert not legacy.ioctl_encode
        with Device(legacy, zero_reader).create(dev_info(), basic_params(size=4 * MiB)) as dev:
            assert legacy.get_dev_info(dev.dev_id).state == UBLK_S_DEV_LIVE
            assert legacy.get_params(dev.dev_id).basic.dev_sectors == 4 * MiB >> 9
            assert bytes(legacy.get_dev_info2(dev.dev_id)) == bytes(
                legacy.get_dev_info(dev.dev_id))
            assert legacy.get_queue_affinity(dev.dev_id, 0)
            with open(dev.block_path, "rb", buffering=0) as disk:
                assert disk.read(4096) == bytes(4096)
            dev_id = dev.dev_id
        with pytest.raises(UblkError) as e:
            legacy.get_dev_info(dev_id)
        assert e.value.errno == errno.ENODEV


# -- commands that do not complete ------------------------------------------------------------


def test_a_command_that_does_not_complete_times_out_and_is_cancelled_by_close(
        ctrl: Control, added: ublksrv_ctrl_dev_info) -> None:
    # START_DEV waits until every tag has a FETCH; nobody fetches here
    ctrl.set_params(added.dev_id, basic_params())
    impatient = Control(timeout=0.5)
    try:
        with pytest.raises(UblkTimeout) as e:
            impatient.start_dev(added.dev_id)
        assert e.value.command == "START_DEV"
        assert str(e.value) == "START_DEV: no completion within 0.5 s (still in flight)"
    finally:
        impatient.close()  # tearing the ring down interrupts the waiting command
    assert ctrl.get_dev_info(added.dev_id).state == UBLK_S_DEV_DEAD
    ctrl.del_dev(added.dev_id)  # the device is not held by the cancelled START_DEV
