"""The shipped systemd unit run as systemd runs it, on the real driver, under fio verify.

The test-bed VM has no systemd (its init is a shell script), so :class:`Manager` stands in
for it, and this test says so rather than pretend: it reads ExecStart= and ExecReload= from
the shipped unit file (so it cannot drift from it), substitutes ``%i``, ``%t``, ``%E`` and
``$DEVICES`` as systemd would, makes itself a child subreaper as the service manager is, and
listens on a notification socket bound as systemd binds its own (SO_PASSCRED, abstract
address), keeping the main pid as systemd does: the process it started, until a MAINPID=
from a process of the service names another.  What systemd itself does with those messages
(service.c: a main process that exits during a reload is waited out while ExecReload= runs;
MAINPID= is taken in the reload state; STOPPING=1 stops the unit) is in docs/DESIGN.md.

One unit, file and mem devices with 2 queues each, fio crc32c verify throughout: three
``systemctl reload``s (each: MAINPID= moves to the new process, which sent READY=1, no
STOPPING=1, the old one exits 0), a SIGKILL of the main process then ExecStart= again (the
restart adopts), then ``systemctl stop`` (SIGTERM: STOPPING=1, devices deleted, state file
and memory files removed).
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from test_gadget import backing_file
from test_handover import Fio, io_errors, kernel_log, memory_files

from ublk_gadget import unitfile
from ublk_gadget.notify import SOCKET_ENV, Listener, Notification
from ublk_gadget.state import read_state

pytestmark = pytest.mark.ublk

MiB = 1 << 20
SIZE = 64 * MiB
INSTANCE = "disk0"
TIMEOUT = 120.0


def unit_commands() -> dict[str, str]:
    """Exec*= lines of the shipped unit, as written there."""
    commands = {}
    for line in unitfile.text(unitfile.UNIT).splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("Exec"):
            commands[key] = value
    return commands


class Manager:
    """What systemd does for ``ublk-gadget@disk0.service``, as far as the gadget can tell."""

    def __init__(self, tmp_path: Path, devices: str) -> None:
        self.runtime = tmp_path / "run"  # %t
        self.config = tmp_path / "etc"  # %E
        self.journal_path = tmp_path / "journal.log"
        self.journal: IO[str] = open(self.journal_path, "a")
        self.specifiers = {"%i": INSTANCE, "%t": str(self.runtime), "%E": str(self.config)}
        self.state_file = self.runtime / "ublk-gadget" / INSTANCE / "state"
        self.state_file.parent.mkdir(parents=True)  # RuntimeDirectory=ublk-gadget/%i
        (self.config / "ublk-gadget").mkdir(parents=True)  # EnvironmentFile=
        self.listener = Listener(f"@ublk-gadget-test-{uuid.uuid4().hex}")
        self.env = {**os.environ, SOCKET_ENV: self.listener.address, "DEVICES": devices}
        self.main_pid = 0
        self.status = ""
        self.heard: list[Notification] = []
        self._started: dict[int, subprocess.Popen[bytes]] = {}

    def command(self, key: str) -> list[str]:
        """The unit's ``key`` command line as systemd would run it here."""
        words = shlex.split(unit_commands()[key])
        assert words[0] == unitfile.SHIPPED_COMMAND, words
        argv = [sys.executable, "-m", "ublk_gadget"]
        for word in words[1:]:
            if word == "$DEVICES":
                argv += self.env["DEVICES"].split()
                continue
            for spec, value in self.specifiers.items():
                word = word.replace(spec, value)
            assert "%" not in word and "$" not in word, f"unhandled in {key}: {word}"
            argv.append(word)
        return argv

    def spawn(self, key: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.command(key), stdin=subprocess.DEVNULL, stdout=self.journal,
                                stderr=self.journal, env=self.env)
        self._started[proc.pid] = proc
        return proc

    def hear(self, timeout: float) -> Notification | None:
        """The next notification, applied as systemd applies it."""
        message = self.listener.receive(timeout)
        if message is None:
            return None
        self.heard.append(message)
        fields = message.fields
        if "MAINPID" in fields:
            # NotifyAccess=all takes it from any process of the unit; a new main process
            # names itself, and the kernel says who sent it.
            assert int(fields["MAINPID"]) == message.pid, message
            self.main_pid = message.pid
        self.status = fields.get("STATUS", self.status)
        return message

    def hear_until(self, predicate: str, proc: subprocess.Popen[bytes] | None = None,
                   timeout: float = TIMEOUT) -> Notification:
        """Notifications until one has ``predicate`` (a field: ``READY``, ``STOPPING``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.hear(1.0)
            if message is not None and message.fields.get(predicate) == "1":
                return message
            if proc is not None and proc.poll() is not None and message is None:
                break
        raise AssertionError(f"no {predicate}=1 (heard {[m.fields for m in self.heard]}); "
                             f"journal:\n{self.journal_path.read_text()}")

    def start(self) -> Notification:
        """ExecStart=; the unit is started once its main process sent READY=1."""
        proc = self.spawn("ExecStart")
        self.main_pid = proc.pid
        ready = self.hear_until("READY", proc)
        assert ready.pid == proc.pid == self.main_pid
        return ready

    def reload(self) -> tuple[int, int]:
        """ExecReload=, waited for as systemd waits for it; (old main pid, new main pid)."""
        old = self.main_pid
        first = len(self.heard)
        reload = self.spawn("ExecReload")
        deadline = time.monotonic() + TIMEOUT
        while reload.poll() is None and time.monotonic() < deadline:
            self.hear(0.2)
        while self.hear(0.2) is not None:  # systemd reads what was sent before the SIGCHLD
            pass
        assert reload.wait(timeout=10) == 0, self.journal_path.read_text()
        self._started.pop(reload.pid)
        during = [m.fields for m in self.heard[first:]]
        assert not any("STOPPING" in f for f in during), during
        assert self.main_pid != old, during
        assert any(m.pid == self.main_pid and m.fields.get("READY") == "1"
                   for m in self.heard[first:]), during
        assert self.exit_status(old) == 0  # the old owner let go and exited cleanly
        return old, self.main_pid

    def exit_status(self, pid: int, timeout: float = TIMEOUT) -> int:
        """Reap ``pid``: a process this manager started, or one orphaned to it (subreaper)."""
        if pid in self._started:
            return self._started.pop(pid).wait(timeout=timeout)
        pidfd = os.pidfd_open(pid)
        try:
            readable, _, _ = select.select([pidfd], [], [], timeout)
            assert readable, f"pid {pid} did not exit"
        finally:
            os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def block_devices(self) -> list[str]:
        assert self.status.startswith("serving "), self.status
        return self.status.removeprefix("serving ").split(", ")

    def close(self) -> None:
        """A failed test leaves nothing running: SIGTERM what is left (devices deleted)."""
        if self.main_pid and os.path.exists(f"/proc/{self.main_pid}"):
            os.kill(self.main_pid, signal.SIGCONT)
            os.kill(self.main_pid, signal.SIGTERM)
            self.exit_status(self.main_pid)
        for proc in self._started.values():
            proc.kill()
            proc.wait()
        self.listener.close()
        self.journal.close()


@pytest.fixture
def manager(tmp_path: Path, subreaper: None) -> Iterator[Manager]:
    devices = (f"--device file,path={backing_file(tmp_path, SIZE)},queues=2 "
               f"--device mem,size={SIZE},queues=2")
    m = Manager(tmp_path, devices)
    try:
        yield m
    finally:
        m.close()


def ppid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def test_reloads_a_crash_and_a_stop_run_as_the_unit_says(
    manager: Manager, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manager.start()
    devs = manager.block_devices()
    assert len(devs) == 2
    assert read_state(str(manager.state_file)).owner.pid == manager.main_pid
    dmesg = kernel_log()
    fio = Fio(devs, tmp_path)
    try:
        pids = [manager.main_pid]
        for _ in range(3):
            old, new = manager.reload()
            pids.append(new)
            assert ppid(new) == os.getpid()  # the manager's own child, not an alien process
            assert manager.block_devices() == devs
            assert read_state(str(manager.state_file)).owner.pid == new
            fio.still_running()
        assert len(set(pids)) == len(pids)

        # A crash: Restart=on-failure runs ExecStart= again, which adopts.
        crashed = manager.main_pid
        os.kill(crashed, signal.SIGKILL)
        assert manager.exit_status(crashed) == -signal.SIGKILL
        manager.start()
        assert manager.main_pid != crashed
        assert manager.block_devices() == devs
        assert "exists: adopting its devices" in manager.journal_path.read_text()
        fio.still_running()
        fio.finish()
    finally:
        fio.kill()
    assert io_errors(dmesg, devs) == []

    # systemctl stop: SIGTERM to the main process.
    main = manager.main_pid
    os.kill(main, signal.SIGTERM)
    stopping = manager.hear_until("STOPPING")
    assert stopping.pid == main
    assert manager.exit_status(main) == 0
    manager.main_pid = 0
    assert not manager.state_file.exists()
    assert memory_files() == []
    assert not [d for d in devs if os.path.exists(d)]
    journal = manager.journal_path.read_text()
    assert "Traceback" not in journal, journal
    with capsys.disabled():
        print(f"\n  unit: 3 reloads (pids {' -> '.join(map(str, pids))}), a crash adopted by "
              f"ExecStart=, a stop; fio verified throughout")
