"""The ``--state-file``: what a successor needs to adopt the devices, and nothing it may misread."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ublk_gadget import state
from ublk_gadget.backing import Backing
from ublk_gadget.owner import ProcessIdentity
from ublk_gadget.spec import parse_spec
from ublk_gadget.state import (
    DaemonState,
    DeviceState,
    StateError,
    StateMissing,
    adoption_lock,
    read_state,
    refuse_existing,
    remove_state,
    write_state,
)

SPEC = "file,path=/srv/disk.img,size=1048576,queues=2,depth=64,block_size=512"
BACKING = Backing("/srv/disk.img", dev=0x803, ino=1234)


def example(pid: int = 4242) -> DaemonState:
    owner = ProcessIdentity(pid=pid, start_time=12345, boot_id="b0a7-1d", exe="/usr/bin/python3",
                            cmdline=("python3", "-m", "ublk_gadget", "serve"))
    device = DeviceState.of(3, parse_spec(SPEC), flags=0x1018, backing=BACKING)
    return DaemonState(owner=owner, devices=(device,))


def write_json(path: Path, data: Any) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_the_state_round_trips(tmp_path: Path) -> None:
    path = str(tmp_path / "gadget.json")
    write_state(path, example())
    assert read_state(path) == example()


def test_the_file_names_its_format_version_owner_and_devices(tmp_path: Path) -> None:
    path = tmp_path / "gadget.json"
    write_state(str(path), example())
    data = json.loads(path.read_text())
    assert data["format"] == "ublk-gadget-state"
    assert data["version"] == state.STATE_VERSION
    assert data["owner"] == {"pid": 4242, "start_time": 12345, "boot_id": "b0a7-1d",
                             "exe": "/usr/bin/python3",
                             "cmdline": ["python3", "-m", "ublk_gadget", "serve"]}
    assert data["devices"] == [{"dev_id": 3, "spec": SPEC, "queues": 2, "depth": 64,
                                "block_size": 512, "size": 1 << 20, "flags": 0x1018,
                                "backing": {"path": "/srv/disk.img", "dev": 0x803,
                                            "ino": 1234}}]


def test_a_device_record_needs_its_size_resolved() -> None:
    with pytest.raises(ValueError, match="size"):
        DeviceState.of(0, parse_spec("file,path=/srv/disk.img"), flags=0)


def test_a_handover_rewrites_only_the_owner(tmp_path: Path) -> None:
    path = str(tmp_path / "gadget.json")
    write_state(path, example())
    me = ProcessIdentity.current()
    write_state(path, read_state(path).with_owner(me))
    assert read_state(path) == DaemonState(owner=me, devices=example().devices)


def test_a_failed_write_leaves_the_old_state_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "gadget.json")
    write_state(path, example())

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_state(path, example(pid=1))
    assert read_state(path) == example()
    assert os.listdir(tmp_path) == ["gadget.json"]


def test_the_write_is_durable_file_then_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = tmp_path / "gadget.json"
    write_state(str(path), example())
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp_path and synced[0] != str(path)  # the temporary file
    assert synced[1] == str(tmp_path)  # then the directory holding the rename


def test_a_missing_file_is_reported_as_nothing_to_adopt(tmp_path: Path) -> None:
    with pytest.raises(StateMissing, match="no state file"):
        read_state(str(tmp_path / "absent.json"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"format": "ublk-gadget-state", "version": 1,', "corrupt state file, not JSON .line 1"),
        (b"\xff\xfe garbage", "not UTF-8"),
        (b"", "not JSON"),
    ],
)
def test_a_corrupt_file_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "gadget.json"
    path.write_bytes(content)
    with pytest.raises(StateError, match=message):
        read_state(str(path))


def test_another_program_s_json_is_not_taken_for_a_state_file(tmp_path: Path) -> None:
    path = write_json(tmp_path / "gadget.json", {"version": 1, "devices": []})
    with pytest.raises(StateError, match="not a ublk-gadget-state file"):
        read_state(path)


def test_a_newer_version_is_refused_naming_both_versions(tmp_path: Path) -> None:
    data = example().to_json() | {"version": 3}
    path = write_json(tmp_path / "gadget.json", data)
    with pytest.raises(StateError, match="version 3 is not supported.*reads 1 and 2"):
        read_state(path)


def version_1(devices: list[dict[str, Any]]) -> dict[str, Any]:
    """A state file as the previous release wrote it: no backing files recorded."""
    for d in devices:
        d.pop("backing")
    return example().to_json() | {"version": 1, "devices": devices}


def test_a_version_1_file_from_the_previous_release_is_read(tmp_path: Path) -> None:
    path = write_json(tmp_path / "gadget.json", version_1(example().to_json()["devices"]))
    (device,) = read_state(path).devices
    assert device.backing is None and device.spec == SPEC


def test_rewritten_by_a_successor_a_version_1_file_becomes_version_2(tmp_path: Path) -> None:
    path = write_json(tmp_path / "gadget.json", version_1(example().to_json()["devices"]))
    me = ProcessIdentity.current()
    write_state(path, read_state(path).with_owner(me, {3: BACKING}))
    assert read_state(path) == DaemonState(owner=me, devices=example().devices)
    assert json.loads(Path(path).read_text())["version"] == 2


def mutated(change: Any) -> dict[str, Any]:
    data = example().to_json()
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["owner"].pop("start_time"), r"owner\.start_time: missing"),
        (lambda d: d["owner"].update(pid="4242"), r"owner\.pid: expected a non-negative integer"),
        (lambda d: d["owner"].update(pid=True), r"owner\.pid: expected a non-negative integer"),
        (lambda d: d["owner"].update(cmdline="serve"), r"owner\.cmdline: expected a list"),
        (lambda d: d["devices"][0].update(depth=-1), r"devices\[0\]\.depth: expected a non-neg"),
        (lambda d: d["devices"][0].update(queues=4), r"devices\[0\]\.queues is 4 but the spec"),
        (lambda d: d["devices"][0].update(spec="tape,size=1M"), r"devices\[0\]\.spec: .*unknown"),
        (lambda d: d["devices"].append(dict(d["devices"][0])), "dev_id 3 listed twice"),
        (lambda d: d["devices"][0].update(colour="red"), r"devices\[0\]: unknown field 'colour'"),
        (lambda d: d.update(devices={}), "devices: expected a list"),
        (lambda d: d["devices"][0].pop("backing"), r"devices\[0\]\.backing: missing"),
        (lambda d: d["devices"][0].update(backing=None),
         r"devices\[0\]\.backing: a file device needs one"),
        (lambda d: d["devices"][0]["backing"].update(path="disk.img"),
         r"devices\[0\]\.backing\.path: 'disk.img' is not an absolute path"),
        (lambda d: d["devices"][0]["backing"].update(ino=-1),
         r"devices\[0\]\.backing\.ino: expected a non-negative integer"),
        (lambda d: d["devices"][0].update(spec="null,size=1048576,queues=2,depth=64"),
         r"devices\[0\]\.backing: a null device has no backing file"),
    ],
)
def test_an_inconsistent_file_is_refused_naming_the_field(
    tmp_path: Path, change: Any, message: str
) -> None:
    path = write_json(tmp_path / "gadget.json", mutated(change))
    with pytest.raises(StateError, match=message) as raised:
        read_state(path)
    assert str(raised.value).startswith(path)


def test_devices_come_back_in_dev_id_order(tmp_path: Path) -> None:
    first = DeviceState.of(7, parse_spec(SPEC), flags=0, backing=BACKING)
    second = DeviceState.of(2, parse_spec(SPEC), flags=0, backing=BACKING)
    path = str(tmp_path / "gadget.json")
    write_state(path, DaemonState(owner=example().owner, devices=(first, second)))
    assert [d.dev_id for d in read_state(path).devices] == [2, 7]


def test_remove_forgets_the_state_and_tolerates_its_absence(tmp_path: Path) -> None:
    path = str(tmp_path / "gadget.json")
    write_state(path, example())
    with adoption_lock(path):
        pass  # leaves gadget.json.lock
    remove_state(path)
    remove_state(path)
    assert os.listdir(tmp_path) == []


def test_a_fresh_serve_refuses_to_overwrite_a_state_file(tmp_path: Path) -> None:
    path = str(tmp_path / "gadget.json")
    refuse_existing(path)  # nothing there: fine
    write_state(path, example())
    with pytest.raises(StateError, match="already exists .*by pid 4242.*--adopt"):
        refuse_existing(path)
    assert read_state(path) == example()


def test_only_one_successor_adopts_at_a_time(tmp_path: Path) -> None:
    path = str(tmp_path / "gadget.json")
    with adoption_lock(path):
        with pytest.raises(StateError, match="another ublk-gadget is adopting"):
            with adoption_lock(path):
                pass
    with adoption_lock(path):  # released: the next successor may go
        pass


def test_a_new_state_names_this_process_as_owner() -> None:
    devices = (DeviceState.of(9, parse_spec(SPEC), 0), DeviceState.of(1, parse_spec(SPEC), 0))
    fresh = DaemonState.owned_by_this_process(devices)
    assert fresh.owner == ProcessIdentity.current()
    assert [d.dev_id for d in fresh.devices] == [1, 9]


# --- trust: a successor acts on this file, so nobody else may have written it ----------------

def test_a_symlinked_state_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    write_state(str(real), example())
    (tmp_path / "gadget.json").symlink_to(real)
    with pytest.raises(StateError, match="refusing the state file .*gadget.json: a symlink"):
        read_state(str(tmp_path / "gadget.json"))


@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_a_state_file_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "gadget.json"
    write_state(str(path), example())
    path.chmod(mode)
    with pytest.raises(StateError, match=f"writable by others .mode 0{mode:o}.; chmod go-w"):
        read_state(str(path))


def test_a_state_file_in_a_world_writable_directory_needs_the_sticky_bit(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    path = shared / "gadget.json"
    write_state(str(path), example())
    shared.chmod(0o777)
    with pytest.raises(StateError, match="world-writable without the sticky bit"):
        read_state(str(path))
    shared.chmod(0o1777)  # as /tmp: others cannot replace our file
    assert read_state(str(path)) == example()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_state_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gadget.json"
    write_state(str(path), example())
    os.chown(path, 4321, -1)
    with pytest.raises(StateError, match="owned by uid 4321, not by this user .0."):
        read_state(str(path))
