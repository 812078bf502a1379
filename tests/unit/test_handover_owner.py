"""The owner's identity: a successor signals the recorded owner, never whoever has its pid now."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ublk_gadget.owner import Owner, OwnerMismatch, ProcessIdentity, start_time

# A child that reports each SIGHUP on stdout, so a test sees whether a signal reached it.
HUP_REPORTER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGHUP, lambda *a: print('HUP', flush=True))\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)


class Child:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout
        assert self.stdout.readline() == "ready\n"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> str:
        """Stop the child and return what it printed after 'ready'."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return out


@pytest.fixture
def child() -> Iterator[Child]:
    c = Child([sys.executable, "-c", HUP_REPORTER])
    yield c
    if c.proc.poll() is None:
        c.stop()


def test_identity_names_the_process_by_pid_start_time_boot_exe_and_argv(child: Child) -> None:
    ident = ProcessIdentity.of(child.pid)
    assert ident.pid == child.pid
    assert ident.exe == os.path.realpath(sys.executable)
    assert ident.cmdline == (sys.executable, "-c", HUP_REPORTER)
    assert ident.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert ident.start_time >= ProcessIdentity.current().start_time  # started after this test
    assert ProcessIdentity.of(child.pid) == ident  # stable while the process lives


def test_the_start_time_survives_a_command_name_with_spaces_and_parens() -> None:
    rename = (
        "import sys, time; sys.stdin.readline();"
        "open('/proc/self/comm', 'w').write(') 1 2 (3'); print('ready', flush=True); time.sleep(9)"
    )
    proc = subprocess.Popen([sys.executable, "-c", rename], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        plain = start_time(proc.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "ready\n"
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == ") 1 2 (3"
        assert start_time(proc.pid) == plain
    finally:
        proc.kill()
        proc.wait()


def test_an_owner_whose_interpreter_was_replaced_on_disk_keeps_its_identity(
    tmp_path: Path,
) -> None:
    interpreter = tmp_path / "python3"
    shutil.copy2(os.path.realpath(sys.executable), interpreter)
    c = Child([str(interpreter), "-c", HUP_REPORTER])
    try:
        recorded = ProcessIdentity.of(c.pid)
        interpreter.unlink()  # an upgrade replaces the file the owner runs
        assert os.readlink(f"/proc/{c.pid}/exe").endswith(" (deleted)")
        assert ProcessIdentity.of(c.pid) == recorded
    finally:
        c.stop()


def test_the_verified_owner_is_signalled_through_its_pidfd(child: Child) -> None:
    with Owner.verify(ProcessIdentity.of(child.pid)) as owner:
        owner.signal(signal.SIGHUP)
        assert child.stdout.readline() == "HUP\n"


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("start_time", 1, "start_time"),
        ("exe", "/usr/sbin/sshd", "exe"),
        ("cmdline", ("/usr/sbin/sshd", "-D"), "recorded '/usr/sbin/sshd -D'"),
        ("boot_id", "another-boot", "boot_id"),
    ],
)
def test_a_process_that_differs_from_the_record_is_never_signalled(
    child: Child, field: str, value: object, named: str
) -> None:
    recorded = dataclasses.replace(ProcessIdentity.of(child.pid), **{field: value})
    with pytest.raises(OwnerMismatch, match=f"pid {child.pid} is not the recorded owner"):
        Owner.verify(recorded)
    with pytest.raises(OwnerMismatch, match=re.escape(named)):
        Owner.verify(recorded)
    assert child.stop() == ""  # no SIGHUP arrived


def test_a_reused_pid_is_not_taken_for_the_owner() -> None:
    """The real thing: the owner exits and an unrelated process is given its pid."""
    owner = Child([sys.executable, "-c", HUP_REPORTER])
    recorded = ProcessIdentity.of(owner.pid)
    owner.stop()
    reuser = _spawn_with_pid(recorded.pid)
    try:
        assert ProcessIdentity.of(recorded.pid).cmdline == recorded.cmdline  # same argv, even
        with pytest.raises(OwnerMismatch, match="start_time"):
            Owner.verify(recorded)
    finally:
        assert reuser.stop() == ""


def _spawn_with_pid(pid: int) -> Child:
    """Start HUP_REPORTER as ``pid`` by steering the kernel's next pid (needs root)."""
    last_pid = Path("/proc/sys/kernel/ns_last_pid")
    if not os.access(last_pid, os.W_OK):
        pytest.skip("steering pids needs root (write access to /proc/sys/kernel/ns_last_pid)")
    for _ in range(20):  # another process on the host may take the pid first: try again
        last_pid.write_text(str(pid - 1))
        c = Child([sys.executable, "-c", HUP_REPORTER])
        if c.pid == pid:
            return c
        c.stop()
    pytest.skip(f"pid {pid} was taken by other processes 20 times")


def test_a_gone_owner_is_reported_as_gone() -> None:
    owner = Child([sys.executable, "-c", HUP_REPORTER])
    recorded = ProcessIdentity.of(owner.pid)
    owner.stop()
    with pytest.raises(ProcessLookupError):
        Owner.verify(recorded)


def test_the_pidfd_tells_when_the_owner_has_exited(child: Child) -> None:
    with Owner.verify(ProcessIdentity.of(child.pid)) as owner:
        assert not owner.wait_exit(0.05)
        child.proc.kill()
        assert owner.wait_exit(10)
        child.proc.wait()
