"""The state file (``--state-file``): which devices a gadget owns, for a successor to adopt.

It is the only thing a successor trusts besides the kernel, so it is replaced atomically
(temporary file, fsync, rename, fsync of the directory): a reader sees the old state or the
new one, never half of either, even across a power cut.  Reading is strict: a file that is
not JSON, not ours, of another version, or inconsistent is refused with a message naming the
file and the field, before any device is touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .backing import Backing, BackingError, open_trusted
from .owner import ProcessIdentity
from .spec import DeviceSpec, SpecError, parse_spec
from .targets import KINDS

STATE_FORMAT = "ublk-gadget-state"
STATE_VERSION = 2
"""2 records each device's backing file (path and identity); 1 (read still: a successor
adopts from an owner of the previous release) did not, and its mem devices are refused."""
READ_VERSIONS = (1, 2)


class StateError(ValueError):
    """The state file cannot be used; the message names the file and the problem."""


class StateMissing(StateError):
    """There is no state file: nothing was handed over to adopt."""


class StateForeign(ValueError):
    """Decoded JSON that is not a state file this gadget reads (another format or version)."""


@dataclass(frozen=True)
class DeviceState:
    """One device the owner serves: enough to recreate its queues in a successor."""

    dev_id: int
    spec: str  # canonical SPEC text (DeviceSpec.__str__, size resolved)
    queues: int
    depth: int
    block_size: int
    size: int
    flags: int  # UBLK_F_* the device was added with, as the kernel wrote them back
    backing: Backing | None = None  # the file or memory file served; None: no data (null)

    @classmethod
    def of(cls, dev_id: int, spec: DeviceSpec, flags: int,
           backing: Backing | None = None) -> DeviceState:
        if spec.size is None:
            raise ValueError(f"device {dev_id}: record the spec once its size is resolved")
        return cls(dev_id, str(spec), spec.queues, spec.depth, spec.block_size, spec.size, flags,
                   backing)

    def device_spec(self) -> DeviceSpec:
        """The SPEC the device was served with (already validated when the file was read)."""
        return parse_spec(self.spec)


def _dev_id(device: DeviceState) -> int:
    return device.dev_id


@dataclass(frozen=True)
class DaemonState:
    """The whole file: its owner and its devices, in dev_id order."""

    owner: ProcessIdentity
    devices: tuple[DeviceState, ...]
    version: int = STATE_VERSION

    @classmethod
    def owned_by_this_process(cls, devices: Iterable[DeviceState]) -> DaemonState:
        return cls(owner=ProcessIdentity.current(), devices=tuple(sorted(devices, key=_dev_id)))

    def with_owner(self, owner: ProcessIdentity,
                   backings: Mapping[int, Backing | None] | None = None) -> DaemonState:
        """This state as ``owner`` serves it, in this version's format; ``backings`` fills in
        what a version 1 file did not record (from the targets the new owner opened)."""
        devices = self.devices
        if backings:
            devices = tuple(replace(d, backing=d.backing or backings.get(d.dev_id))
                            for d in devices)
        return replace(self, owner=owner, devices=devices, version=STATE_VERSION)

    def to_json(self) -> dict[str, Any]:
        o = self.owner
        return {
            "format": STATE_FORMAT,
            "version": self.version,
            "owner": {
                "pid": o.pid,
                "start_time": o.start_time,
                "boot_id": o.boot_id,
                "exe": o.exe,
                "cmdline": list(o.cmdline),
            },
            "devices": [
                {
                    "dev_id": d.dev_id,
                    "spec": d.spec,
                    "queues": d.queues,
                    "depth": d.depth,
                    "block_size": d.block_size,
                    "size": d.size,
                    "flags": d.flags,
                    "backing": None if d.backing is None else {
                        "path": d.backing.path, "dev": d.backing.dev, "ino": d.backing.ino},
                }
                for d in self.devices
            ],
        }


# --- reading -------------------------------------------------------------------------------


class _Fields:
    """Typed access to one JSON object, naming the field (``devices[1].depth``) on error."""

    def __init__(self, data: object, where: str, keys: tuple[str, ...]) -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where or 'the file'}: expected an object, got {_kind(data)}")
        extra = sorted(set(data) - set(keys))
        if extra:
            raise ValueError(f"{where or 'the file'}: unknown field {extra[0]!r}")
        self.data = data
        self.where = where

    def _get(self, key: str) -> object:
        if key not in self.data:
            raise ValueError(f"{self._name(key)}: missing")
        return self.data[key]

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def uint(self, key: str) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"{self._name(key)}: expected a non-negative integer, got {_kind(value)}")
        return value

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(
                f"{self._name(key)}: expected a non-empty string, got {_kind(value)}")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(
                f"{self._name(key)}: expected a list of strings, got {_kind(value)}")
        return tuple(value)

    def optional(self, key: str) -> object:
        return self.data.get(key)

    def items(self, key: str) -> list[object]:
        value = self._get(key)
        if not isinstance(value, list):
            raise ValueError(f"{self._name(key)}: expected a list, got {_kind(value)}")
        return value


def _kind(value: object) -> str:
    """``value`` for a message: a container by its kind only (it may be huge, or nested too
    deeply for repr()), a scalar as it is."""
    if isinstance(value, Mapping):
        return "an object"
    return "a list" if isinstance(value, list) else repr(value)


_TOP = ("format", "version", "owner", "devices")
_OWNER = ("pid", "start_time", "boot_id", "exe", "cmdline")
_DEVICE = ("dev_id", "spec", "queues", "depth", "block_size", "size", "flags", "backing")
_BACKING = ("path", "dev", "ino")


def _backing(data: object, where: str) -> Backing | None:
    if data is None:
        return None
    f = _Fields(data, where, _BACKING)
    path = f.text("path")
    if not os.path.isabs(path):
        raise ValueError(f"{where}.path: {path!r} is not an absolute path")
    return Backing(path=path, dev=f.uint("dev"), ino=f.uint("ino"))


def _device(data: object, where: str, version: int) -> DeviceState:
    f = _Fields(data, where, _DEVICE)
    backing = _backing(f.optional("backing"), f"{where}.backing")
    if version >= 2 and "backing" not in f.data:
        raise ValueError(f"{where}.backing: missing")
    record = DeviceState(
        dev_id=f.uint("dev_id"),
        spec=f.text("spec"),
        queues=f.uint("queues"),
        depth=f.uint("depth"),
        block_size=f.uint("block_size"),
        size=f.uint("size"),
        flags=f.uint("flags"),
        backing=backing,
    )
    try:
        spec = parse_spec(record.spec)
    except SpecError as e:
        raise ValueError(f"{where}.spec: {e}") from None
    has_backing = KINDS[spec.target].has_backing
    if version >= 2 and (backing is not None) != has_backing:
        raise ValueError(f"{where}.backing: a {spec.target} device "
                         + ("needs one" if has_backing else "has no backing file"))
    for key, value in (("queues", spec.queues), ("depth", spec.depth),
                       ("block_size", spec.block_size), ("size", spec.size)):
        if getattr(record, key) != value:
            raise ValueError(f"{where}.{key} is {getattr(record, key)} but the spec says {value}")
    return record


def parse_state(data: object) -> DaemonState:
    """A DaemonState from decoded JSON; ValueError naming the first thing that is wrong."""
    if not isinstance(data, Mapping) or data.get("format") != STATE_FORMAT:
        raise StateForeign(f"not a {STATE_FORMAT} file (no \"format\": \"{STATE_FORMAT}\")")
    version = data.get("version")
    # An int, not a float or a bool that compares equal to one (1.0 in (1, 2) is True).
    if type(version) is not int or version not in READ_VERSIONS:
        raise StateForeign(
            f"state version {_kind(version)} is not supported (this ublk-gadget reads "
            f"{' and '.join(map(str, READ_VERSIONS))})"
        )
    assert isinstance(version, int)
    top = _Fields(data, "", _TOP)
    o = _Fields(top._get("owner"), "owner", _OWNER)
    owner = ProcessIdentity(
        pid=o.uint("pid"),
        start_time=o.uint("start_time"),
        boot_id=o.text("boot_id"),
        exe=o.text("exe"),
        cmdline=o.texts("cmdline"),
    )
    devices = [_device(d, f"devices[{i}]", version)
               for i, d in enumerate(top.items("devices"))]
    seen: set[int] = set()
    for d in devices:
        if d.dev_id in seen:
            raise ValueError(f"devices: dev_id {d.dev_id} listed twice")
        seen.add(d.dev_id)
    return DaemonState(owner=owner, devices=tuple(sorted(devices, key=_dev_id)))


def read_state(path: str) -> DaemonState:
    """Read and validate ``path``; StateMissing if absent, StateError for anything else wrong."""
    try:
        with os.fdopen(open_trusted(path, os.O_RDONLY, "state file"), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise StateMissing(f"{path}: no state file (nothing was handed over)") from None
    except BackingError as e:
        raise StateError(f"refusing the {e}") from None
    except OSError as e:
        raise StateError(f"{path}: cannot read the state file: {e.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise StateError(
            f"{path}: corrupt state file, not JSON (line {e.lineno} column {e.colno}: {e.msg})"
        ) from None
    except UnicodeDecodeError as e:
        raise StateError(f"{path}: corrupt state file, not UTF-8 text ({e.reason})") from None
    except RecursionError:
        raise StateError(f"{path}: corrupt state file, JSON nested too deeply") from None
    except ValueError:  # the only other: int() refuses a number of so many digits
        raise StateError(f"{path}: corrupt state file, a number with too many digits") from None
    try:
        return parse_state(data)
    except ValueError as e:
        raise StateError(f"{path}: {e}") from None


# --- writing -------------------------------------------------------------------------------


def _fsync_dir(directory: str) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_state(path: str, state: DaemonState) -> None:
    """Replace ``path`` with ``state`` atomically and durably."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    text = json.dumps(state.to_json(), indent=2) + "\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def remove_state(path: str) -> None:
    """Forget the state (clean stop: every device it named is deleted), and its lock file."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{path}.lock")
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def refuse_existing(path: str) -> None:
    """A fresh ``serve`` must not overwrite a state file: its devices may still be served."""
    if not os.path.lexists(path):
        return
    try:
        owner = f" by pid {read_state(path).owner.pid}"
    except StateError:
        owner = ""
    raise StateError(
        f"{path}: a state file already exists (devices handed over{owner}); "
        "adopt them with --adopt, or remove the file if those devices are gone"
    )


@contextlib.contextmanager
def adoption_lock(path: str) -> Iterator[None]:
    """Hold ``PATH.lock`` exclusively: two successors never adopt the same state at once."""
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except PermissionError as e:  # another user's directory: not ours to adopt
        raise StateError(f"{lock_path}: cannot take the adoption lock: {e.strerror} (only the "
                         "user who serves these devices, or root, can adopt them)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(f"{lock_path}: another ublk-gadget is adopting these devices") from None
        yield
    finally:
        os.close(fd)
