"""What ``features``, ``list`` and ``serve`` print on stdout."""

from __future__ import annotations

import json

from ublk_bindings import (
    UBLK_F_CMD_IOCTL_ENCODE,
    UBLK_F_USER_RECOVERY,
    UBLK_F_USER_RECOVERY_REISSUE,
    UBLK_S_DEV_LIVE,
    UBLK_S_DEV_QUIESCED,
    ublksrv_ctrl_dev_info,
)
from ublk_gadget.report import (
    device_row,
    feature_names,
    format_device_table,
    format_features,
    ready_line,
)


def test_features_are_named_by_their_uapi_macros_lowest_bit_first() -> None:
    mask = UBLK_F_CMD_IOCTL_ENCODE | UBLK_F_USER_RECOVERY
    assert feature_names(mask) == ["UBLK_F_USER_RECOVERY", "UBLK_F_CMD_IOCTL_ENCODE"]


def test_a_feature_bit_the_bundled_header_does_not_know_is_still_shown() -> None:
    assert feature_names(1 << 63) == ["bit 63"]
    assert format_features(1 << 63).splitlines() == [
        "features 0x8000000000000000",
        "  bit 63  (not in the bundled header)",
    ]


def test_features_print_the_mask_then_one_line_per_bit() -> None:
    lines = format_features(UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE).splitlines()
    assert lines == [
        "features 0x0000000000000018",
        "  bit  3  UBLK_F_USER_RECOVERY",
        "  bit  4  UBLK_F_USER_RECOVERY_REISSUE",
    ]


def dev_info(dev_id: int, state: int, pid: int, flags: int) -> ublksrv_ctrl_dev_info:
    info = ublksrv_ctrl_dev_info()
    info.dev_id, info.state, info.ublksrv_pid, info.flags = dev_id, state, pid, flags
    info.nr_hw_queues, info.queue_depth, info.max_io_buf_bytes = 2, 64, 512 << 10
    return info


def test_a_device_row_has_id_state_owner_queues_depth_and_flags() -> None:
    row = device_row(dev_info(3, UBLK_S_DEV_QUIESCED, 4242, UBLK_F_USER_RECOVERY))
    assert row == {"dev_id": 3, "state": "QUIESCED", "owner_pid": 4242, "queues": 2, "depth": 64,
                   "max_io_bytes": 512 << 10, "flags": ["UBLK_F_USER_RECOVERY"]}


def test_the_device_table_has_one_aligned_line_per_device() -> None:
    rows = [device_row(dev_info(0, UBLK_S_DEV_LIVE, 17, UBLK_F_USER_RECOVERY | UBLK_F_CMD_IOCTL_ENCODE)),
            device_row(dev_info(12, UBLK_S_DEV_QUIESCED, 123456, 0))]
    header, first, second = format_device_table(rows).splitlines()
    assert header.split() == ["ID", "STATE", "PID", "QUEUES", "DEPTH", "MAX_IO", "FLAGS"]
    assert first.split() == ["0", "LIVE", "17", "2", "64", "524288", "USER_RECOVERY|CMD_IOCTL_ENCODE"]
    assert second.split() == ["12", "QUIESCED", "123456", "2", "64", "524288", "-"]
    assert header.index("FLAGS") == first.index("USER") == second.index("-")


def test_no_devices_is_said_in_words() -> None:
    assert format_device_table([]) == "no ublk devices"


def test_the_ready_line_is_one_json_object_with_every_device() -> None:
    line = ready_line([{"dev_id": 0, "block_device": "/dev/ublkb0"},
                       {"dev_id": 1, "block_device": "/dev/ublkb1"}])
    assert "\n" not in line
    assert json.loads(line) == {"event": "ready", "devices": [
        {"dev_id": 0, "block_device": "/dev/ublkb0"}, {"dev_id": 1, "block_device": "/dev/ublkb1"}]}
