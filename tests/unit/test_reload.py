"""``ublk-gadget reload`` without the driver: how the successor is started and waited for, and
what the daemon tells its supervisors, in which order.

The successor here is a stand-in script; the real one, under fio, is
tests/kernel/test_service.py.  This process makes itself a child subreaper, as systemd is, so
that "adopted by the service manager" is something the tests can see.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ublk_gadget.cli import build_parser
from ublk_gadget.notify import Listener, Notifier
from ublk_gadget.reload import start_detached, successor_argv
from ublk_gadget.supervisor import Supervisor


# A successor that says hello on stdout, writes its ready line to the fd it was given, then
# serves (sleeps) until killed.
SERVES = (
    "import os, sys, time\n"
    "print('hello from the successor', flush=True)\n"
    "fd = int(sys.argv[1])\n"
    "os.write(fd, b'{\"event\": \"ready\", \"devices\": []}\\n'); os.close(fd)\n"
    "time.sleep(600)\n"
)
FAILS = "import sys; print('successor: cannot adopt', file=sys.stderr); sys.exit(3)\n"


def field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split()[1]
    raise AssertionError(f"no {name} for {pid}")


def test_the_successor_is_orphaned_into_its_own_session_and_reports_ready(
    subreaper: None, capfd: pytest.CaptureFixture[str]
) -> None:
    started = start_detached(lambda fd: [sys.executable, "-c", SERVES, str(fd)])
    try:
        assert started.ready_line == '{"event": "ready", "devices": []}'
        # Its parent is the subreaper (us, as systemd would be), not the intermediate process:
        # the manager supervises a child of its own once the successor says MAINPID=.
        assert int(field(started.pid, "PPid")) == os.getpid()
        assert os.getsid(started.pid) == started.pid  # no terminal's SIGHUP reaches it
        assert os.getpgid(started.pid) != os.getpgid(0)
    finally:
        os.kill(started.pid, signal.SIGKILL)
        _, status = os.waitpid(started.pid, 0)  # ours to reap, as the manager's
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    assert "hello from the successor" in capfd.readouterr().out  # its output is ours


def test_a_successor_that_exits_before_ready_is_reported(
    subreaper: None, capfd: pytest.CaptureFixture[str]
) -> None:
    started = start_detached(lambda fd: [sys.executable, "-c", FAILS])
    assert started.ready_line is None
    _, status = os.waitpid(started.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert "successor: cannot adopt" in capfd.readouterr().err


def test_a_successor_that_cannot_be_started_is_an_error(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(OSError, match="could not start /nonexistent/python"):
        start_detached(lambda fd: ["/nonexistent/python"])
    assert "reload: cannot start /nonexistent/python" in capfd.readouterr().err


def test_the_successor_s_command_line_is_the_gadget_s_own(tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        argv = successor_argv(str(tmp_path / "state"), 30.0, w, verbose=True)
        assert argv[:3] == [sys.executable, "-m", "ublk_gadget"]
        args = build_parser().parse_args(argv[3:])
    finally:
        os.close(r)
        os.close(w)
    assert (args.command, args.adopt, args.standby) == ("serve", True, False)
    assert (args.state_file, args.adopt_deadline, args.ready_fd) == (str(tmp_path / "state"),
                                                                     30.0, w)
    assert args.verbose


class OrderCheckingNotifier(Notifier):
    """Records each message, and whether the ready pipe had anything in it at that moment."""

    def __init__(self, ready_r: int) -> None:
        super().__init__(None)
        self.ready_r = ready_r
        self.sent: list[tuple[dict[str, object], bool]] = []

    def send(self, **fields: object) -> bool:
        readable, _, _ = select.select([self.ready_r], [], [], 0)
        self.sent.append((fields, bool(readable)))
        return True


def test_the_manager_hears_of_the_new_main_process_before_reload_does() -> None:
    """ExecReload= must not exit before systemd knows the successor is the main process."""
    r, w = os.pipe()
    notifier = OrderCheckingNotifier(r)
    try:
        Supervisor(notifier, ready_fd=w).serving('{"event": "ready"}', ["/dev/ublkb0"])
        [(fields, pipe_had_data)] = notifier.sent
        assert fields == {"MAINPID": os.getpid(), "READY": 1, "STATUS": "serving /dev/ublkb0"}
        assert not pipe_had_data
        assert os.read(r, 100) == b'{"event": "ready"}\n'
        assert os.read(r, 100) == b""  # and the fd was closed: reload sees EOF after the line
    finally:
        os.close(r)


def test_a_handover_is_never_announced_as_stopping(tmp_path: Path) -> None:
    """STOPPING=1 makes systemd stop the unit and ignore the successor's READY=1."""
    with Listener(str(tmp_path / "notify")) as listener:
        supervisor = Supervisor(Notifier(listener.address))
        supervisor.handing_over(["/dev/ublkb0", "/dev/ublkb1"])
        supervisor.stopping("stopping: deleting /dev/ublkb0")
        handing_over, stopping = listener.receive(5), listener.receive(5)
    assert handing_over is not None and stopping is not None
    assert handing_over.fields == {"STATUS": "handing /dev/ublkb0, /dev/ublkb1 over to a successor"}
    assert stopping.fields == {"STOPPING": "1", "STATUS": "stopping: deleting /dev/ublkb0"}
