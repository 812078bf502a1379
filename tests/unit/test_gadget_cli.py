"""The command-line contract: exit 2 for bad usage, 1 for runtime failures, one line each.

Everything here runs the real ``ublk-gadget`` in a subprocess; none of it needs the driver,
because bad input must be refused before ``/dev/ublk-control`` is touched.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ublk_bindings import (
    UBLK_F_QUIESCE,
    UBLK_F_USER_COPY,
    UBLK_F_USER_RECOVERY,
    UBLK_F_USER_RECOVERY_REISSUE,
)
from ublk_bindings.errors import LiburingUnavailable, UblkError
from ublk_gadget.cli import explain
from ublk_gadget.daemon import CONTROL_PATH, device_flags

HAVE_DRIVER = os.path.exists(CONTROL_PATH)


def gadget(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ublk_gadget", *args], capture_output=True,
                          text=True, timeout=60)


def assert_fails(result: subprocess.CompletedProcess[str], status: int, cause: str) -> None:
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert cause in lines[0]
    assert result.stdout == "", "no ready line when nothing is served"


@pytest.mark.parametrize(
    ("args", "cause"),
    [
        ((), "the following arguments are required: command"),
        (("serve",), "the following arguments are required: --device"),
        (("serve", "--device"), "expected one argument"),
        (("bogus",), "invalid choice: 'bogus'"),
        (("serve", "--device", "disk,size=1M"), "--device 'disk,size=1M': unknown target 'disk'"),
        (("serve", "--device", "mem,size=1M,colour=red"), "unknown key 'colour' for target mem"),
        (("serve", "--device", "mem,size=1000"), "size=1000 is not a multiple of the block size 512"),
        (("serve", "--device", "null,size=1M,depth=4097"), "depth=4097 is out of range 1..4096"),
        (("serve", "--device", "mem,size=1M", "--device", "mem"), "target mem needs size="),
        (("serve", "--device", "mem,size=1M", "--standby"), "--standby waits to adopt: it needs --adopt"),
    ],
)
def test_bad_usage_exits_2_with_one_line(args: tuple[str, ...], cause: str) -> None:
    assert_fails(gadget(*args), 2, cause)


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = gadget("serve", "--device", f"file,path={tmp_path}/nope.img")
    assert_fails(result, 2, "nope.img: no such file")


def test_a_file_too_small_exits_2(tmp_path: Path) -> None:
    img = tmp_path / "small.img"
    img.write_bytes(bytes(4096))
    assert_fails(gadget("serve", "--device", f"file,path={img},size=1M"), 2, "too small")


def test_a_bad_device_after_good_ones_exits_2_before_any_is_made(tmp_path: Path) -> None:
    result = gadget("serve", "--device", "mem,size=1M", "--device", f"file,path={tmp_path}/x")
    assert_fails(result, 2, "no such file")


def test_an_existing_state_file_is_not_overwritten(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{}")
    result = gadget("serve", "--device", "mem,size=1M", "--state-file", str(state))
    assert_fails(result, 2, "a state file already exists")
    assert state.read_text() == "{}"


@pytest.mark.skipif(HAVE_DRIVER, reason="this host has the ublk driver")
@pytest.mark.parametrize("args", [("serve", "--device", "mem,size=1M"), ("features",), ("list",)])
def test_without_the_driver_every_command_exits_1_naming_it(args: tuple[str, ...]) -> None:
    assert_fails(gadget(*args), 1, "ublk_drv is not loaded: /dev/ublk-control does not exist")


def test_runtime_failures_are_explained_in_one_line() -> None:
    assert explain(UblkError(errno.EPERM, "ADD_DEV")).startswith(
        "not permitted: ADD_DEV failed: EPERM")
    assert explain(UblkError(errno.EINVAL, "SET_PARAMS")) == (
        "SET_PARAMS failed: EINVAL (Invalid argument)")
    assert explain(LiburingUnavailable("liburing-ffi.so.2: cannot open")).startswith(
        "liburing-ffi missing: ")


def test_devices_ask_for_recovery_and_quiesce_only_when_the_kernel_offers_them() -> None:
    everything = (1 << 20) - 1
    assert device_flags(everything) == (
        UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE | UBLK_F_QUIESCE)
    assert device_flags(UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE) == (
        UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE)  # 6.12: no QUIESCE
    assert device_flags(UBLK_F_USER_RECOVERY_REISSUE | UBLK_F_USER_COPY) == 0
    assert device_flags(None) == 0  # no GET_FEATURES at all
