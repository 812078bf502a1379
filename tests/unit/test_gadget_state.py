"""The ``--state-file``: what a successor daemon needs to adopt our devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ublk_gadget import state
from ublk_gadget.state import DaemonState, DeviceState, process_start_time, read_state, write_state


def example() -> DaemonState:
    return DaemonState(
        owner_pid=os.getpid(),
        owner_start_time=process_start_time(),
        devices=[DeviceState(dev_id=3, spec="mem,size=1048576,queues=2,depth=64,block_size=512",
                             queues=2, depth=64, block_size=512, size=1 << 20, flags=0x18)],
    )


def test_the_state_round_trips(tmp_path: Path) -> None:
    path = str(tmp_path / "gadget.json")
    write_state(path, example())
    assert read_state(path) == example()


def test_the_state_file_is_versioned_json_naming_the_owner(tmp_path: Path) -> None:
    path = tmp_path / "gadget.json"
    write_state(str(path), example())
    data = json.loads(path.read_text())
    assert data["version"] == state.STATE_VERSION
    assert data["owner"] == {"pid": os.getpid(), "start_time": process_start_time()}
    assert data["devices"][0]["dev_id"] == 3


def test_the_start_time_survives_a_command_name_with_spaces_and_parens() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.stdin.readline();"
         "open('/proc/self/comm', 'w').write(') 1 2 (3'); print(flush=True); time.sleep(5)"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        plain = process_start_time(child.pid)
        child.stdin.write("\n")
        child.stdin.flush()
        child.stdout.readline()
        with open(f"/proc/{child.pid}/comm") as f:
            assert f.read().strip() == ") 1 2 (3"
        assert process_start_time(child.pid) == plain
    finally:
        child.kill()
        child.wait()


def test_a_failed_write_leaves_the_old_state_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "gadget.json")
    write_state(path, example())

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_state(path, DaemonState(owner_pid=1, owner_start_time=1))
    assert read_state(path) == example()
    assert os.listdir(tmp_path) == ["gadget.json"]


def test_something_else_is_not_taken_for_a_state_file(tmp_path: Path) -> None:
    path = tmp_path / "gadget.json"
    path.write_text('{"version": 1, "devices": []}')
    with pytest.raises(ValueError, match="not a ublk-gadget state file"):
        read_state(str(path))
