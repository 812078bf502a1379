"""A kernel refusal reaches the caller of Control as a named UblkError, on the host.

A regular file stands in for /dev/ublk-control: io_uring hands it every URING_CMD and the
kernel answers EOPNOTSUPP (it has no ->uring_cmd), the way a kernel without a command does.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from ublk_bindings import liburing
from ublk_bindings.ctrl import Control
from ublk_bindings.errors import LiburingUnavailable, UblkError


@pytest.fixture
def not_a_driver(tmp_path: Path) -> Path:
    try:
        liburing.load()
    except LiburingUnavailable as e:
        pytest.skip(f"liburing-ffi unavailable: {e}")
    path = tmp_path / "ublk-control"
    path.write_bytes(b"")
    return path


def test_without_get_features_control_falls_back_to_legacy_opcodes(not_a_driver: Path) -> None:
    with Control(str(not_a_driver), timeout=5) as ctrl:
        assert ctrl.features is None
        assert isinstance(ctrl.features_error, UblkError)
        assert str(ctrl.features_error) == (
            "GET_FEATURES failed: EOPNOTSUPP (Operation not supported)")
        assert not ctrl.ioctl_encode


def test_a_refused_command_is_named(not_a_driver: Path) -> None:
    with Control(str(not_a_driver), timeout=5) as ctrl:
        with pytest.raises(UblkError) as e:
            ctrl.get_dev_info(0)
        assert e.value.errno == errno.EOPNOTSUPP
        assert str(e.value) == "GET_DEV_INFO failed: EOPNOTSUPP (Operation not supported)"
        with pytest.raises(UblkError, match="^GET_DEV_INFO2 failed: EOPNOTSUPP"):
            ctrl.get_dev_info2(0)  # the buffer with the dev path prefix is built and sent


def test_a_closed_control_says_so(not_a_driver: Path) -> None:
    ctrl = Control(str(not_a_driver), ioctl_encode=True)
    assert ctrl.ioctl_encode  # forced, whatever GET_FEATURES said
    ctrl.close()
    ctrl.close()
    with pytest.raises(ValueError, match="closed"):
        ctrl.stop_dev(0)


def test_a_missing_control_node_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Control(str(tmp_path / "nothing"))
