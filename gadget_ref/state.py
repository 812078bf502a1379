"""The state file (``--state-file``): which devices this daemon owns, for a successor to adopt.

It is replaced atomically (write a temporary file, fsync, rename, fsync the directory), so a
reader sees the old state or the new one, never half of either.  The owner is named by pid
and by the pid's start time from /proc/<pid>/stat, so a recycled pid is not taken for the
owner.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

STATE_VERSION = 1


def process_start_time(pid: int | str = "self") -> int:
    """Field 22 of /proc/<pid>/stat: start time in clock ticks since boot."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # comm (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    after_comm = stat[stat.rindex(")") + 2 :].split()
    return int(after_comm[22 - 3])


@dataclass(frozen=True)
class DeviceState:
    dev_id: int
    spec: str
    queues: int
    depth: int
    block_size: int
    size: int
    flags: int


@dataclass(frozen=True)
class DaemonState:
    owner_pid: int
    owner_start_time: int
    devices: list[DeviceState] = field(default_factory=list)
    version: int = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "owner": {"pid": self.owner_pid, "start_time": self.owner_start_time},
            "devices": [vars(d) for d in self.devices],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DaemonState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r}, expected {STATE_VERSION}")
        return cls(
            owner_pid=int(data["owner"]["pid"]),
            owner_start_time=int(data["owner"]["start_time"]),
            devices=[DeviceState(**d) for d in data["devices"]],
        )


def write_state(path: str, state: DaemonState) -> None:
    """Replace ``path`` with ``state`` atomically and durably."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_state(path: str) -> DaemonState:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    try:
        return DaemonState.from_json(data)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a ublk-gadget state file: {e}") from None


def remove_state(path: str) -> None:
    """Forget the state once every device it names is deleted."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
