"""The guest is what the other kernel tests assume: the driver, the kernel asked for, the shares.

In the VM, ``python -m testbed run`` sets ``UBLK_TESTBED_KERNEL`` to the Debian version of the
kernel package it booted (``7.2.13-1``); on a host with its own driver it is unset and only the
kernel-version test is skipped.
"""

from __future__ import annotations

import os
import re
import stat
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.ublk

OUT = Path(__file__).resolve().parents[2] / ".out"
CONFIGFS = Path("/sys/kernel/config")


def in_testbed() -> str:
    version = os.environ.get("UBLK_TESTBED_KERNEL")
    if not version:
        pytest.skip("not in the test bed VM (UBLK_TESTBED_KERNEL unset)")
    return version


def test_control_node_is_the_ublk_misc_device() -> None:
    st = os.stat("/dev/ublk-control")
    assert stat.S_ISCHR(st.st_mode)
    misc = Path("/sys/class/misc/ublk-control/dev").read_text().strip()
    assert misc == f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def test_ublk_drv_is_loaded() -> None:
    assert Path("/sys/module/ublk_drv").is_dir()


def test_kernel_is_the_one_booted_for_the_suite() -> None:
    """uname and /proc/version agree with the Debian package the test bed chose."""
    version = in_testbed()  # e.g. "7.2.13-1": upstream "7.2.13", Debian revision "1"
    major_minor = ".".join(version.split(".")[:2])
    release = os.uname().release  # e.g. "7.2.13+deb14-amd64", bookworm: "6.1.0-50-amd64"
    assert re.match(rf"{re.escape(major_minor)}[.-]", release), (release, version)
    assert f"Debian {version} " in Path("/proc/version").read_text()


def test_out_share_is_writable_9p() -> None:
    in_testbed()
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    out = next(m for m in mounts if m[1] == str(OUT))
    assert out[2] == "9p" and "rw" in out[3].split(",")
    probe = OUT / f"testbed-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"from the guest\n")
        assert probe.read_bytes() == b"from the guest\n"
    finally:
        probe.unlink(missing_ok=True)


def test_root_is_read_only() -> None:
    """The host's / is shared read-only: a test cannot damage the host's checkout."""
    in_testbed()
    with pytest.raises(OSError, match="Read-only file system"):
        (OUT.parent / f"testbed-probe-{uuid.uuid4().hex}").touch()


def test_null_blk_is_loaded_without_devices() -> None:
    """nr_devices=0: the only nullb devices are those a test or benchmark makes in configfs."""
    assert Path("/sys/module/null_blk/parameters/nr_devices").read_text().strip() == "0"


def test_null_blk_makes_devices_through_configfs() -> None:
    """A configfs-made null_blk disk is named after its directory: /dev/<name>."""
    name = f"testbed{uuid.uuid4().hex[:8]}"
    dev = CONFIGFS / "nullb" / name
    dev.mkdir()
    try:
        (dev / "size").write_text("16")  # MiB
        (dev / "power").write_text("1")
        assert Path(f"/dev/{name}").is_block_device()
        assert int(Path(f"/sys/block/{name}/size").read_text()) == 16 * 2048
        (dev / "power").write_text("0")
        assert not Path(f"/dev/{name}").exists()
    finally:
        dev.rmdir()


def test_loop_is_available() -> None:
    assert Path("/dev/loop-control").is_char_device()
