"""Handover and adoption logic, against a fake of the control commands it issues.

The fake answers as drivers/block/ublk_drv.c does where it matters: QUIESCE_DEV with 0 means
"wait forever" (a handover must never ask for it) and EBUSY when its timeout passed first;
GET_DEV_INFO2 says which pid serves a device and in what state.  The per-device recovery
commands are the runtime's (``ublk_bindings.io.Device.adopt``); here the device lifecycle is
faked, and the real driver is exercised by tests/kernel/test_handover.py.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_handover_owner import HUP_REPORTER, Child  # the owner stand-in, shared

from ublk_bindings import (
    UBLK_F_BATCH_IO,
    UBLK_F_QUIESCE,
    UBLK_F_USER_RECOVERY,
    UBLK_F_USER_RECOVERY_REISSUE,
    UBLK_S_DEV_DEAD,
    UBLK_S_DEV_LIVE,
    UBLK_S_DEV_QUIESCED,
    ublksrv_ctrl_dev_info,
)
from ublk_bindings.errors import UblkError
from ublk_gadget import handover
from ublk_gadget.handover import Deadline, hand_over, parse_duration, quiesce
from ublk_gadget.adopt import AdoptError, Adoption
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
    write_state,
)

RECOVERY = UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE


class Clock:
    """Monotonic time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeKernel:
    """The control commands a handover issues, answered by the driver's recovery rules."""

    clock: Clock
    devices: dict[int, ublksrv_ctrl_dev_info] = field(default_factory=dict)
    quiesce_busy: int = 0  # QUIESCE_DEV answers EBUSY this many times first
    calls: list[tuple[str, int, int]] = field(default_factory=list)

    def add(self, dev_id: int, *, state: int = UBLK_S_DEV_QUIESCED, pid: int = -1,
            flags: int = RECOVERY, queues: int = 2, depth: int = 64) -> None:
        info = ublksrv_ctrl_dev_info()
        info.dev_id, info.state, info.ublksrv_pid, info.flags = dev_id, state, pid, flags
        info.nr_hw_queues, info.queue_depth = queues, depth
        self.devices[dev_id] = info

    def get_dev_info2(self, dev_id: int) -> ublksrv_ctrl_dev_info:
        self.calls.append(("GET_DEV_INFO2", dev_id, 0))
        if dev_id not in self.devices:
            raise UblkError(errno.ENODEV, "GET_DEV_INFO2")
        return ublksrv_ctrl_dev_info.from_buffer_copy(self.devices[dev_id])

    def quiesce_dev(self, dev_id: int, timeout_ms: int = 0) -> None:
        self.calls.append(("QUIESCE_DEV", dev_id, timeout_ms))
        if timeout_ms == 0:
            raise AssertionError("QUIESCE_DEV with timeout 0 waits forever")
        if self.quiesce_busy:
            self.quiesce_busy -= 1
            self.clock.sleep(timeout_ms / 1000)  # the kernel waited that long
            raise UblkError(errno.EBUSY, "QUIESCE_DEV")

    def named(self, command: str) -> list[tuple[int, int]]:
        return [(dev, arg) for name, dev, arg in self.calls if name == command]


@dataclass
class ServedDevice:
    """What the daemon's device lifecycle returns; records what happened to it."""

    dev_id: int
    flags: int
    fd: int = -1
    journal: list[str] | None = None

    def release(self) -> None:
        if self.journal is not None:
            self.journal.append(f"release {self.dev_id}")
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --- the owner's half ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"),
                         [("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0),
                          ("1.5h", 5400.0), (" 10 s ", 10.0)])
def test_durations_read_like_a_person_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5s", "0", "0ms", "5 days"])
def test_a_duration_that_is_not_positive_and_finite_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_quiesce_retries_ebusy_with_bounded_calls_never_zero() -> None:
    clock = Clock()
    kernel = FakeKernel(clock, quiesce_busy=3)
    assert quiesce(kernel, 5, Deadline(10, clock), clock.sleep) is True
    timeouts = [ms for _, ms in kernel.named("QUIESCE_DEV")]
    assert len(timeouts) == 4
    assert all(0 < ms <= handover.QUIESCE_SLICE_MS for ms in timeouts)


def test_quiesce_gives_up_at_its_deadline_instead_of_waiting_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    kernel = FakeKernel(clock, quiesce_busy=10**6)
    assert quiesce(kernel, 5, Deadline(2.0, clock), clock.sleep) is False
    assert 2.0 <= clock.now < 2.0 + handover.QUIESCE_SLICE_MS / 1000 + 0.1
    assert "still EBUSY" in caplog.text


def test_hand_over_quiesces_then_releases_device_by_device() -> None:
    journal: list[str] = []

    class Recording(FakeKernel):
        def quiesce_dev(self, dev_id: int, timeout_ms: int = 0) -> None:
            journal.append(f"quiesce {dev_id}")
            super().quiesce_dev(dev_id, timeout_ms)

    devices = [ServedDevice(1, RECOVERY | UBLK_F_QUIESCE, journal=journal),
               ServedDevice(2, RECOVERY | UBLK_F_QUIESCE, journal=journal)]
    assert hand_over(Recording(Clock()), devices) == []  # nothing left for the exit
    assert journal == ["quiesce 1", "release 1", "quiesce 2", "release 2"]


def test_without_quiesce_support_the_device_is_left_for_the_exit_and_it_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    kernel = FakeKernel(Clock())
    journal: list[str] = []
    device = ServedDevice(4, RECOVERY, journal=journal)
    assert hand_over(kernel, [device]) == [device]
    assert kernel.named("QUIESCE_DEV") == []
    assert journal == []  # not closed by hand: exit_releasing lets go of it
    assert "device 4: no UBLK_F_QUIESCE on this kernel: handing over by drain-and-release" in (
        caplog.text)


def test_a_batch_device_is_handed_over_by_drain_and_release_never_quiesced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """QUIESCE_DEV on a batch device sets its queues' force_abort (7.x driver): EIO until the
    successor is ready.  So it is left for the exit, which requeues everything."""
    caplog.set_level(logging.INFO)
    kernel = FakeKernel(Clock())
    journal: list[str] = []
    batch = ServedDevice(5, RECOVERY | UBLK_F_QUIESCE | UBLK_F_BATCH_IO, journal=journal)
    assert hand_over(kernel, [batch]) == [batch]
    assert kernel.named("QUIESCE_DEV") == [] and journal == []
    assert "device 5: a batch device" in caplog.text


def test_a_quiesce_the_kernel_refuses_falls_back_to_drain_and_release() -> None:
    class RefusingFour(FakeKernel):
        def quiesce_dev(self, dev_id: int, timeout_ms: int = 0) -> None:
            if dev_id == 4:
                raise UblkError(errno.ENODEV, "QUIESCE_DEV")

    journal: list[str] = []
    quiescing = ServedDevice(3, RECOVERY | UBLK_F_QUIESCE, journal=journal)
    refused = ServedDevice(4, RECOVERY | UBLK_F_QUIESCE, journal=journal)
    assert hand_over(RefusingFour(Clock()), [quiescing, refused]) == [refused]
    assert journal == ["release 3"]


def test_exit_releasing_exits_0_at_once_leaving_cleanup_undone(tmp_path: Path) -> None:
    """The drained devices go with the process, as after a crash: no finally block runs."""
    script = (
        "import logging, sys\n"
        "from types import SimpleNamespace\n"
        "from ublk_gadget.handover import exit_releasing\n"
        "logging.basicConfig(stream=sys.stderr, level=logging.INFO)\n"
        "try:\n"
        "    exit_releasing([SimpleNamespace(dev_id=7, flags=0)])\n"
        "finally:\n"
        "    print('cleanup ran')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"event": "released", "dev_id": 7, "how": "drain"}\n'  # no cleanup
    assert "device 7 released (drained: exiting with its queues open" in done.stderr


# --- the successor's half ---------------------------------------------------------------------

SPEC = "mem,size=1048576,queues=2,depth=64"


def write_example_state(path: Path, owner: ProcessIdentity, dev_ids: tuple[int, ...]) -> str:
    def memory(d: int) -> Backing:
        return Backing(f"/dev/shm/ublk-gadget-mem.{d}", dev=0x2A, ino=100 + d)

    devices = tuple(DeviceState.of(d, parse_spec(SPEC), RECOVERY, memory(d)) for d in dev_ids)
    write_state(str(path), DaemonState(owner=owner, devices=devices))
    return str(path)


def dead_owner() -> ProcessIdentity:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    ident = ProcessIdentity.of(proc.pid)
    proc.wait()
    return ident


class Successor:
    """Adopts a state file through a fake device lifecycle that records what it was asked."""

    def __init__(self, kernel: FakeKernel, state_path: str) -> None:
        self.kernel = kernel
        self.path = state_path
        self.journal: list[str] = []
        self.fails: dict[int, BaseException] = {}

    def take_one(self, rec: DeviceState, info: ublksrv_ctrl_dev_info,
                 deadline: Deadline) -> ServedDevice:
        assert (info.dev_id, info.nr_hw_queues) == (rec.dev_id, rec.queues)
        if rec.dev_id in self.fails:
            self.journal.append(f"failed {rec.dev_id}")
            raise self.fails[rec.dev_id]
        self.journal.append(f"take {rec.dev_id}")
        return ServedDevice(rec.dev_id, int(info.flags), journal=self.journal)

    def run(self, seconds: float = 30.0) -> list[int]:
        with Adoption(self.kernel, self.path) as adoption:
            deadline = Deadline(seconds, self.kernel.clock)
            return [dev.dev_id for dev in adoption.take(self.take_one, deadline)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_crashed_owner_s_devices_are_adopted_in_order(tmp_path: Path, clock: Clock) -> None:
    path = write_example_state(tmp_path / "state.json", dead_owner(), (3, 0))
    kernel = FakeKernel(clock)
    kernel.add(0)
    kernel.add(3)
    successor = Successor(kernel, path)
    assert successor.run() == [0, 3]
    assert successor.journal == ["take 0", "take 3"]
    rewritten = read_state(path)
    assert rewritten.owner == ProcessIdentity.current()
    assert [d.dev_id for d in rewritten.devices] == [0, 3]


def test_a_failure_releases_the_devices_taken_before_it_and_keeps_the_state(
    tmp_path: Path, clock: Clock
) -> None:
    path = write_example_state(tmp_path / "state.json", dead_owner(), (0, 1, 2))
    before = Path(path).read_bytes()
    kernel = FakeKernel(clock)
    for dev in (0, 1, 2):
        kernel.add(dev)
    successor = Successor(kernel, path)
    successor.fails[2] = OSError(errno.ENOMEM, "no memory for the queue buffers")
    with pytest.raises(OSError, match="no memory"):
        successor.run()
    assert successor.journal == ["take 0", "take 1", "failed 2", "release 1", "release 0"]
    assert Path(path).read_bytes() == before


def test_the_daemon_chooses_how_the_devices_taken_are_let_go(
    tmp_path: Path, clock: Clock
) -> None:
    path = write_example_state(tmp_path / "state.json", dead_owner(), (0, 1))
    kernel = FakeKernel(clock)
    kernel.add(0)
    kernel.add(1)
    successor = Successor(kernel, path)
    successor.fails[1] = UblkError(errno.EBUSY, "START_USER_RECOVERY")
    handed: list[tuple[list[int], str]] = []

    def let_go(taken: list[ServedDevice], error: BaseException) -> None:
        handed.append(([d.dev_id for d in taken], str(error)))

    with pytest.raises(AdoptError):
        with Adoption(kernel, path) as adoption:
            adoption.take(successor.take_one, Deadline(1, clock), let_go=let_go)
    assert handed == [([0], "device 1 was not released within 1 s (kernel server pid -1, "
                            "state 2)")]
    assert successor.journal == ["take 0", "failed 1"]  # nothing released behind its back


def test_a_device_never_let_go_is_reported_with_its_server(tmp_path: Path, clock: Clock) -> None:
    path = write_example_state(tmp_path / "state.json", dead_owner(), (0,))
    kernel = FakeKernel(clock)
    kernel.add(0, state=UBLK_S_DEV_LIVE, pid=999_999)
    successor = Successor(kernel, path)
    successor.fails[0] = UblkError(errno.EBUSY, "START_USER_RECOVERY")
    with pytest.raises(AdoptError, match=r"device 0 was not released within 5 s .*pid 999999"):
        successor.run(seconds=5)


def test_einval_from_start_is_explained(tmp_path: Path, clock: Clock) -> None:
    path = write_example_state(tmp_path / "state.json", dead_owner(), (0,))
    kernel = FakeKernel(clock)
    kernel.add(0)
    successor = Successor(kernel, path)
    successor.fails[0] = UblkError(errno.EINVAL, "START_USER_RECOVERY")
    with pytest.raises(AdoptError, match="EINVAL.*earlier successor died"):
        successor.run()


def test_other_kernel_refusals_name_the_device_and_command(tmp_path: Path, clock: Clock) -> None:
    path = write_example_state(tmp_path / "state.json", dead_owner(), (4,))
    kernel = FakeKernel(clock)
    kernel.add(4)
    successor = Successor(kernel, path)
    successor.fails[4] = UblkError(errno.EINTR, "END_USER_RECOVERY")
    with pytest.raises(AdoptError, match="device 4: END_USER_RECOVERY failed: EINTR"):
        successor.run()


@pytest.fixture
def live_owner() -> Iterator[Child]:
    owner = Child([sys.executable, "-c", HUP_REPORTER])
    yield owner
    if owner.proc.poll() is None:
        owner.stop()


def hups_received(owner: Child) -> str:
    return owner.stop()


def test_a_live_owner_is_asked_to_hand_over(
    tmp_path: Path, clock: Clock, live_owner: Child
) -> None:
    path = write_example_state(tmp_path / "s.json", ProcessIdentity.of(live_owner.pid), (2,))
    kernel = FakeKernel(clock)
    kernel.add(2, state=UBLK_S_DEV_LIVE, pid=live_owner.pid)
    assert Successor(kernel, path).run() == [2]
    assert hups_received(live_owner) == "HUP\n"


def test_an_unrelated_process_with_the_owner_s_pid_is_not_signalled(
    tmp_path: Path, clock: Clock, live_owner: Child,
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = ProcessIdentity.of(live_owner.pid)
    recorded = dataclasses.replace(now, start_time=now.start_time - 1)  # an earlier holder
    path = write_example_state(tmp_path / "s.json", recorded, (2,))
    kernel = FakeKernel(clock)
    kernel.add(2, state=UBLK_S_DEV_LIVE, pid=live_owner.pid)  # 7.2 looks the number up
    assert Successor(kernel, path).run() == [2]
    assert hups_received(live_owner) == ""
    assert "is not the recorded owner" in caplog.text


def test_the_owner_is_not_signalled_when_the_kernel_names_another_server(
    tmp_path: Path, clock: Clock, live_owner: Child
) -> None:
    path = write_example_state(tmp_path / "s.json", ProcessIdentity.of(live_owner.pid), (2,))
    kernel = FakeKernel(clock)
    kernel.add(2, state=UBLK_S_DEV_LIVE, pid=1)
    Successor(kernel, path).run()
    assert hups_received(live_owner) == ""


def test_a_quiesced_device_s_stale_pid_is_not_signalled(
    tmp_path: Path, clock: Clock, live_owner: Child
) -> None:
    """6.12 keeps the dead server's pid in dev_info: only a LIVE device's pid means anything."""
    path = write_example_state(tmp_path / "s.json", ProcessIdentity.of(live_owner.pid), (2,))
    kernel = FakeKernel(clock)
    kernel.add(2, state=UBLK_S_DEV_QUIESCED, pid=live_owner.pid)
    Successor(kernel, path).run()
    assert hups_received(live_owner) == ""


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda k: None, "device 1 named in .* does not exist"),
        (lambda k: k.add(1, flags=0), "added without UBLK_F_USER_RECOVERY"),
        (lambda k: k.add(1, state=UBLK_S_DEV_DEAD), r"not started \(DEAD\)"),
        (lambda k: k.add(1, queues=1), "1 queues of depth 64, the state file says 2 of 64"),
    ],
)
def test_a_device_unlike_its_record_is_refused_before_anything_is_touched(
    tmp_path: Path, clock: Clock, setup: Callable[[FakeKernel], None], message: str
) -> None:
    path = write_example_state(tmp_path / "s.json", dead_owner(), (0, 1))
    kernel = FakeKernel(clock)
    kernel.add(0)
    setup(kernel)
    successor = Successor(kernel, path)
    with pytest.raises(AdoptError, match=message):
        successor.run()
    assert {name for name, _, _ in kernel.calls} == {"GET_DEV_INFO2"}
    assert successor.journal == []


def test_a_state_file_from_an_earlier_boot_is_refused(tmp_path: Path, clock: Clock) -> None:
    stale = dataclasses.replace(ProcessIdentity.current(), boot_id="an-earlier-boot")
    path = write_example_state(tmp_path / "s.json", stale, (0,))
    kernel = FakeKernel(clock)
    kernel.add(0)
    with pytest.raises(AdoptError, match="before this host last booted"):
        Successor(kernel, path).run()
    assert kernel.calls == []


def test_no_state_file_means_nothing_to_adopt(tmp_path: Path, clock: Clock) -> None:
    kernel = FakeKernel(clock)
    with pytest.raises(StateMissing):
        Successor(kernel, str(tmp_path / "absent.json")).run()
    assert kernel.calls == []


def test_a_second_successor_waits_its_turn(tmp_path: Path, clock: Clock) -> None:
    path = write_example_state(tmp_path / "s.json", dead_owner(), (0,))
    kernel = FakeKernel(clock)
    kernel.add(0)
    with adoption_lock(path):
        with pytest.raises(StateError, match="another ublk-gadget is adopting"):
            Successor(kernel, path).run()
    assert kernel.calls == []
