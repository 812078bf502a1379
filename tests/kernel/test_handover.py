"""Live handover and crash adoption on the real driver, with fio write+verify running throughout.

The guarantees under test, for every way a device changes hands (SIGHUP to the owner, SIGKILL
of the owner, SIGKILL of a successor half-way): the dev_id and /dev/ublkbN stay, fio's
crc32c verification (with verify_backlog, so blocks are read back while the handovers
happen) finds nothing wrong, fio sees no I/O error, the kernel logs none for the device, and a
predecessor that was asked to hand over exits 0.  On a kernel with UBLK_F_QUIESCE (7.2) the
owner quiesces; without it (6.12) it drains and releases, and says so.

The daemon is driven through the gadget tests' rig (tests/kernel/test_gadget.py).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_gadget import READY_TIMEOUT, Gadget, backing_file, read_sums, run, write_files

pytestmark = pytest.mark.ublk

MiB = 1 << 20
SIZE = 64 * MiB


_running: list[Gadget] = []


@pytest.fixture(autouse=True)
def no_gadget_left_running() -> Iterator[None]:
    """A failed test stops (SIGTERM: devices deleted) whatever gadget it left running."""
    yield
    while _running:
        g = _running.pop()
        if g.proc.poll() is None:
            g.proc.send_signal(signal.SIGCONT)
            g.stop()


class Owner(Gadget):
    def start(self) -> subprocess.Popen[str]:
        proc = super().start()
        _running.append(self)
        return proc


class Successor(Owner):
    """``serve --adopt --state-file PATH``: ready once it has taken the devices over."""

    def __init__(self, state_file: str, *extra: str) -> None:
        super().__init__(state_file=state_file)
        self.args = [sys.executable, "-m", "ublk_gadget", "serve", "--adopt",
                     "--state-file", state_file, *extra]

    def wait_for_log(self, text: str, timeout: float = READY_TIMEOUT) -> None:
        """Read stderr until a line containing ``text`` (before the ready line)."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], 1.0)
            if ready:
                line = self.proc.stderr.readline()
                if not line:
                    break
                seen.append(line)
                if text in line:
                    return
        raise AssertionError(f"no {text!r} from the successor; it said:\n{''.join(seen)}")


def kernel_log() -> list[str]:
    return run("dmesg").stdout.splitlines()


def io_errors(before: list[str], devs: list[str]) -> list[str]:
    names = [os.path.basename(dev) for dev in devs]
    return [line for line in kernel_log()[len(before):]
            if any(name in line for name in names) and "error" in line.lower()]


def quiesce_supported(g: Gadget) -> bool:
    """Whether the owner hands over by QUIESCE_DEV (not for a batch device: gadget_ref.handover)."""
    flags = g.devices[0]["flags"]
    return "UBLK_F_QUIESCE" in flags and "UBLK_F_BATCH_IO" not in flags


@pytest.fixture
def state_file(tmp_path: Path) -> str:
    return str(tmp_path / "gadget.state")


class Fio:
    """fio random writes with crc32c verify_backlog on every device of ``devs``, until
    :meth:`finish`."""

    def __init__(self, devs: list[str], tmp_path: Path) -> None:
        self.report = tmp_path / "fio.json"
        jobs = [arg for dev in devs for arg in (f"--name={os.path.basename(dev)}",
                                                f"--filename={dev}")]
        self.proc = subprocess.Popen(
            ["fio", "--ioengine=libaio", "--direct=1",
             "--rw=randwrite", "--bs=4k", "--iodepth=16", "--numjobs=2",
             f"--size={SIZE // 2}", f"--offset_increment={SIZE // 2}",
             "--cpus_allowed=0-1", "--cpus_allowed_policy=split",
             "--verify=crc32c", "--verify_backlog=64", "--verify_fatal=1",
             "--time_based", "--runtime=3600", "--output-format=json",
             f"--output={self.report}", *jobs],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(3)  # let it get going
        self.still_running()

    def still_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"fio ended early ({self.proc.returncode}): "
                                 f"{self.proc.communicate()[1]}")

    def finish(self) -> dict[str, Any]:
        """Stop fio after a last stretch of I/O; assert it verified without error."""
        time.sleep(3)
        self.still_running()
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=300)
        assert self.proc.returncode == 128, err  # fio's status when a signal ended it
        text = self.report.read_text()  # warnings may come before the JSON
        jobs = json.loads(text[text.index("{"):])["jobs"]
        assert [job["error"] for job in jobs] == [0] * len(jobs), err
        assert all(job["write"]["io_bytes"] > 0 and job["read"]["io_bytes"] > 0 for job in jobs)
        return {"jobs": jobs}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def fio_throughout(served: Gadget, tmp_path: Path) -> Iterator[Fio]:
    """fio write+verify on every device of ``served`` while the block runs; then it must have
    verified without error, and the kernel must have logged no I/O error for the devices."""
    dmesg = kernel_log()
    fio = Fio(served.all_devs(), tmp_path)
    try:
        yield fio
        fio.still_running()
        fio.finish()
    finally:
        fio.kill()
    assert io_errors(dmesg, served.all_devs()) == []


def longest_write_ms(report: dict[str, Any]) -> float:
    return max(job["write"]["lat_ns"]["max"] for job in report["jobs"]) / 1e6


def say(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n  {text}")


def hand_over(owner: Gadget, state_file: str) -> Gadget:
    """Start a successor (it SIGHUPs the owner); the owner must exit 0 having quiesced or
    drained, the successor must announce the same devices."""
    successor = Successor(state_file).__enter__()
    assert owner.proc.wait(timeout=READY_TIMEOUT) == 0
    assert owner.stop() == 0, owner.stderr
    assert "Traceback" not in owner.stderr, owner.stderr
    how = "quiesce" if quiesce_supported(owner) else "drain"
    dev_ids = [d["dev_id"] for d in owner.devices]
    assert owner.said("handing-over") == [{"event": "handing-over", "dev_ids": dev_ids}]
    assert owner.said("released") == [{"event": "released", "dev_id": i, "how": how}
                                      for i in dev_ids], owner.events
    assert [e["dev_id"] for e in successor.said("adopted")] == dev_ids
    assert successor.said("adopting")[0]["signalled"] is True
    assert [d["dev_id"] for d in successor.devices] == dev_ids
    assert successor.all_devs() == owner.all_devs()
    return successor


@pytest.fixture
def served(tmp_path: Path, state_file: str) -> Iterator[Gadget]:
    """A device of each target with data (file, mem), 2 queues each, handed over with
    --state-file."""
    file = f"file,path={backing_file(tmp_path, SIZE)},queues=2"
    yield Owner(file, f"mem,size={SIZE},queues=2", state_file=state_file).__enter__()


def memory_files() -> list[Path]:
    return sorted(Path("/dev/shm").glob("ublk-gadget-mem.*"))


def finish(last: Gadget, state_file: str) -> None:
    """SIGTERM the last server: devices deleted, state file and memory files removed."""
    assert last.stop() == 0, last.stderr
    assert not os.path.exists(state_file)
    assert memory_files() == []


def write_marks(g: Gadget) -> dict[str, bytes]:
    """A MiB of random data written (and synced) at the start of every device."""
    marks = {dev: os.urandom(MiB) for dev in g.all_devs()}
    for dev, data in marks.items():
        with open(dev, "r+b", buffering=0) as f:
            f.write(data)
            os.fsync(f.fileno())
    return marks


def assert_marks(g: Gadget, marks: dict[str, bytes]) -> None:
    assert g.all_devs() == list(marks)
    for dev, data in marks.items():
        with open(dev, "rb", buffering=0) as f:
            assert f.read(MiB) == data, f"{dev} lost its data"


# --- handovers under fio -----------------------------------------------------------------------

def test_several_live_handovers_under_fio_lose_nothing(
    served: Gadget, state_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = served
    dmesg = kernel_log()
    fio = Fio(owner.all_devs(), tmp_path)
    try:
        for _ in range(3):
            time.sleep(2)
            owner = hand_over(owner, state_file)
            fio.still_running()
        report = fio.finish()
    finally:
        fio.kill()
        finish(owner, state_file)
    assert io_errors(dmesg, served.all_devs()) == []
    say(capsys, f"3 live handovers ({'quiesce' if quiesce_supported(served) else 'drain'}): "
                f"longest fio write {longest_write_ms(report):.0f} ms")


def test_a_crashed_owner_s_devices_are_adopted_under_fio(
    served: Gadget, state_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dmesg = kernel_log()
    fio = Fio(served.all_devs(), tmp_path)
    try:
        time.sleep(2)
        served.proc.kill()  # SIGKILL in the middle of I/O
        assert served.stop() == -signal.SIGKILL
        successor = Successor(state_file).__enter__()
        assert successor.all_devs() == served.all_devs()
        fio.still_running()
        report = fio.finish()
    finally:
        fio.kill()
    finish(successor, state_file)
    assert "without a handover signal" in successor.stderr
    assert io_errors(dmesg, served.all_devs()) == []
    say(capsys, f"crash adoption: longest fio write {longest_write_ms(report):.0f} ms")


def test_a_successor_killed_while_adopting_leaves_the_devices_adoptable(
    served: Gadget, state_file: str, tmp_path: Path
) -> None:
    dmesg = kernel_log()
    fio = Fio(served.all_devs(), tmp_path)
    try:
        served.proc.send_signal(signal.SIGSTOP)  # the owner cannot let go yet ...
        doomed = Successor(state_file)
        doomed.start()
        doomed.wait_for_log("to hand over (SIGHUP)")  # ... so the successor is mid-adoption
        doomed.proc.kill()
        assert doomed.stop() == -signal.SIGKILL
        served.proc.send_signal(signal.SIGCONT)  # the owner's SIGHUP is delivered now
        assert served.proc.wait(timeout=READY_TIMEOUT) == 0
        assert served.stop() == 0, served.stderr
        successor = Successor(state_file).__enter__()  # nobody serves: crash-style adoption
        assert successor.all_devs() == served.all_devs()
        fio.still_running()
        fio.finish()
    finally:
        fio.kill()
    finish(successor, state_file)
    assert io_errors(dmesg, served.all_devs()) == []


def test_past_its_deadline_a_successor_gives_up_and_a_later_one_adopts(
    served: Gadget, state_file: str, tmp_path: Path
) -> None:
    before = Path(state_file).read_bytes()
    fio = Fio(served.all_devs(), tmp_path)
    try:
        served.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        late = subprocess.run([sys.executable, "-m", "ublk_gadget", "serve", "--adopt",
                               "--state-file", state_file, "--adopt-deadline", "3s"],
                              capture_output=True, text=True, timeout=READY_TIMEOUT)
        assert late.returncode == 1, late.stderr
        assert "device 0 was not released within 3 s" in late.stderr.splitlines()[-1]
        assert time.monotonic() - started < 60
        said = [json.loads(line) for line in late.stdout.splitlines()]
        assert [e["event"] for e in said] == ["adopting"], said  # and never "adopted"
        assert Path(state_file).read_bytes() == before  # the state file is untouched
        served.proc.send_signal(signal.SIGCONT)  # the owner hands over to nobody, exits 0
        assert served.proc.wait(timeout=READY_TIMEOUT) == 0
        assert served.stop() == 0, served.stderr
        successor = Successor(state_file).__enter__()  # and the devices are still adoptable
        assert successor.all_devs() == served.all_devs()
        fio.still_running()
        fio.finish()
    finally:
        fio.kill()
        if served.proc.poll() is None:
            served.proc.send_signal(signal.SIGCONT)  # a failure above must not leave it stopped
    finish(successor, state_file)


# --- a standby successor ------------------------------------------------------------------------

class Standby(Successor):
    """``serve --adopt --standby``: announces {"event": "standby"}, adopts when told or when
    the owner goes."""

    def __init__(self, state_file: str) -> None:
        super().__init__(state_file, "--standby")

    def standing_by(self) -> dict[str, Any]:
        self.start()
        return self.next_event("standby")


def test_a_standby_adopts_the_moment_the_owner_crashes(
    served: Gadget, state_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dmesg = kernel_log()
    fio = Fio(served.all_devs(), tmp_path)
    try:
        standby = Standby(state_file)
        event = standby.standing_by()
        assert event["owner_pid"] == served.proc.pid
        assert event["dev_ids"] == [d["dev_id"] for d in served.devices]
        fio.still_running()  # standing by touched nothing: the owner still serves
        killed = time.monotonic()
        served.proc.kill()
        standby.next_event("ready")
        ready_after = time.monotonic() - killed
        assert served.stop() == -signal.SIGKILL
        assert standby.all_devs() == served.all_devs()
        fio.still_running()
        report = fio.finish()
    finally:
        fio.kill()
    finish(standby, state_file)
    assert f"owner pid {served.proc.pid} exited: adopting" in standby.stderr, standby.stderr
    assert io_errors(dmesg, served.all_devs()) == []
    say(capsys, f"standby crash adoption: ready {ready_after * 1e3:.0f} ms after SIGKILL, "
                f"longest fio write {longest_write_ms(report):.0f} ms")


def test_sighup_to_a_standby_is_a_live_handover(
    served: Gadget, state_file: str, tmp_path: Path
) -> None:
    dmesg = kernel_log()
    fio = Fio(served.all_devs(), tmp_path)
    try:
        standby = Standby(state_file)
        standby.standing_by()
        standby.proc.send_signal(signal.SIGHUP)
        standby.next_event("ready")
        assert served.proc.wait(timeout=READY_TIMEOUT) == 0
        assert served.stop() == 0, served.stderr
        assert standby.all_devs() == served.all_devs()
        fio.still_running()
        fio.finish()
    finally:
        fio.kill()
    finish(standby, state_file)
    assert "taking over from the live owner now" in standby.stderr, standby.stderr
    assert "to hand over (SIGHUP)" in standby.stderr, standby.stderr
    assert io_errors(dmesg, served.all_devs()) == []


def test_a_standby_told_to_stop_touches_nothing(served: Gadget, state_file: str) -> None:
    before = Path(state_file).read_bytes()
    standby = Standby(state_file)
    standby.standing_by()
    assert standby.stop() == 0, standby.stderr
    assert "SIGTERM: no longer standing by; nothing was touched" in standby.stderr
    assert Path(state_file).read_bytes() == before
    marks = write_marks(served)  # the owner still serves, and can still hand over
    successor = hand_over(served, state_file)
    assert_marks(successor, marks)
    finish(successor, state_file)


def test_a_standby_whose_owner_stops_cleanly_adopts_nothing(
    served: Gadget, state_file: str
) -> None:
    standby = Standby(state_file)
    standby.standing_by()
    assert served.stop() == 0, served.stderr  # SIGTERM: devices deleted, state file removed
    assert standby.proc.wait(timeout=READY_TIMEOUT) == 0
    assert standby.stop() == 0
    assert "nothing to adopt" in standby.stderr, standby.stderr
    assert not os.path.exists(state_file)


# --- signals and bad state ---------------------------------------------------------------------

def test_a_second_sighup_does_nothing_new(served: Gadget, state_file: str) -> None:
    marks = write_marks(served)
    served.proc.send_signal(signal.SIGHUP)
    served.proc.send_signal(signal.SIGHUP)
    assert served.proc.wait(timeout=READY_TIMEOUT) == 0
    assert served.stop() == 0
    assert served.stderr.count("SIGHUP: handing over") == 1, served.stderr
    for d in served.devices:
        assert served.stderr.count(f"device {d['dev_id']} released") == 1, served.stderr
    assert Path(state_file).exists()  # kept for the successor
    successor = Successor(state_file).__enter__()
    assert_marks(successor, marks)
    finish(successor, state_file)


def gadget_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ublk_gadget", *args], capture_output=True,
                          text=True, timeout=READY_TIMEOUT)


def test_adopt_with_no_owner_and_no_state_creates_nothing(tmp_path: Path) -> None:
    result = gadget_cli("serve", "--adopt", "--state-file", str(tmp_path / "none.state"))
    assert result.returncode == 2, result.stderr
    assert "no state file" in result.stderr and len(result.stderr.splitlines()) == 1
    assert result.stdout == ""
    assert not list(Path("/dev").glob("ublk[bc]*"))


def test_a_corrupt_state_file_is_refused_and_the_owner_keeps_serving(
    served: Gadget, state_file: str
) -> None:
    Path(state_file).write_text('{"format": "ublk-gadget-state", "version": 1, "owner": ')
    result = gadget_cli("serve", "--adopt", "--state-file", state_file)
    assert result.returncode == 2, result.stderr
    assert "corrupt state file" in result.stderr and len(result.stderr.splitlines()) == 1
    assert served.proc.poll() is None  # not signalled
    with open(served.dev(), "r+b", buffering=0) as f:  # still serving
        f.write(b"x" * 4096)
    assert served.stop() == 0


def test_a_pid_reused_by_an_unrelated_process_is_never_signalled(
    served: Gadget, state_file: str
) -> None:
    marks = write_marks(served)
    owner_pid = served.proc.pid
    served.proc.kill()
    assert served.stop() == -signal.SIGKILL
    impostor = spawn_with_pid(owner_pid)  # sleep: SIGHUP would end it
    try:
        successor = Successor(state_file).__enter__()
        assert_marks(successor, marks)
        finish(successor, state_file)
        assert impostor.poll() is None, "the unrelated process got a signal"
    finally:
        impostor.kill()
        impostor.wait()


def spawn_with_pid(pid: int) -> subprocess.Popen[bytes]:
    """An unrelated process given ``pid`` (the VM is quiet; the kernel's next pid is steered)."""
    for _ in range(20):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        proc = subprocess.Popen(["sleep", "600"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    raise AssertionError(f"could not get pid {pid} for the impostor")


# --- a file system across handovers ------------------------------------------------------------

def test_ext4_survives_a_handover_and_a_crash(state_file: str, tmp_path: Path) -> None:
    served = Owner(f"file,path={backing_file(tmp_path, 2 * SIZE)},queues=2",
                   state_file=state_file).__enter__()
    dev = served.dev()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mkfs.ext4", "-q", "-F", dev)
    run("mount", dev, str(mnt))
    try:
        (mnt / "before").mkdir()
        sums = {f"before/{k}": v for k, v in write_files(mnt / "before").items()}
        os.sync()
        owner = hand_over(served, state_file)  # live, mounted
        (mnt / "between").mkdir()
        sums |= {f"between/{k}": v for k, v in write_files(mnt / "between").items()}
        owner.proc.kill()  # crash, mounted, with dirty data in the page cache
        assert owner.stop() == -signal.SIGKILL
        owner = Successor(state_file).__enter__()
        (mnt / "after").mkdir()
        sums |= {f"after/{k}": v for k, v in write_files(mnt / "after").items()}
        assert read_sums(mnt, sums) == sums
    finally:
        run("umount", str(mnt))
    run("fsck.ext4", "-fn", dev)
    run("mount", dev, str(mnt))
    try:
        assert read_sums(mnt, sums) == sums
    finally:
        run("umount", str(mnt))
    finish(owner, state_file)


def test_a_live_server_that_is_not_the_recorded_owner_is_never_signalled(
    served: Gadget, state_file: str
) -> None:
    """The kernel names the pid of the state file as the server, but the process with that pid
    started at another time than the recorded owner: it is someone else, and is left alone."""
    state = json.loads(Path(state_file).read_text())
    state["owner"]["start_time"] -= 1  # the owner that had this pid before
    Path(state_file).write_text(json.dumps(state))
    result = gadget_cli("serve", "--adopt", "--state-file", state_file, "--adopt-deadline", "3s")
    assert result.returncode == 1, result.stderr
    assert f"pid {served.proc.pid} is not the recorded owner" in result.stderr
    assert "not released within 3 s" in result.stderr.splitlines()[-1]
    assert served.proc.poll() is None  # still serving: no SIGHUP reached it
    assert served.stop() == 0
    assert "SIGHUP" not in served.stderr
