"""The sd_notify protocol against real AF_UNIX datagram sockets, bound as systemd binds its own
(SO_PASSCRED, so the sender's pid comes from the kernel), at a path and in the abstract
namespace; and the receiving end against systemd's own client, where it is installed."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ublk_gadget.notify import (
    SOCKET_ENV,
    Listener,
    Notifier,
    NotifyError,
    decode,
    encode,
    socket_address,
)

UCRED = struct.Struct("iII")


def abstract_name() -> str:
    return f"@ublk-gadget-test-{uuid.uuid4().hex}"


class RawReceiver:
    """A notification socket written here from the socket calls, not with ``Listener``, so the
    sender is checked against the protocol and not against our own reading of it."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(10)

    def receive(self) -> tuple[int, int, bytes]:
        """(sender pid, sender uid, the datagram)."""
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
        [(level, kind, creds)] = ancillary
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
        pid, uid, _ = UCRED.unpack(creds)
        return pid, uid, data

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
            return True
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(10)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RawReceiver]:
    address = str(tmp_path / "notify") if request.param == "path" else abstract_name()
    r = RawReceiver(address)
    yield r
    r.sock.close()


def test_ready_names_this_process_as_main_and_the_kernel_agrees(receiver: RawReceiver) -> None:
    assert Notifier(receiver.address).ready("serving /dev/ublkb0")
    pid, uid, data = receiver.receive()
    assert (pid, uid) == (os.getpid(), os.getuid())
    assert data == f"MAINPID={os.getpid()}\nREADY=1\nSTATUS=serving /dev/ublkb0".encode()


def test_stopping_and_status_are_one_datagram_each(receiver: RawReceiver) -> None:
    notifier = Notifier(receiver.address)
    assert notifier.status("handing /dev/ublkb0 over to a successor")
    assert notifier.stopping("stopping: deleting /dev/ublkb0")
    assert receiver.receive()[2] == b"STATUS=handing /dev/ublkb0 over to a successor"
    assert receiver.receive()[2] == b"STOPPING=1\nSTATUS=stopping: deleting /dev/ublkb0"
    assert not receiver.pending()


def test_a_child_s_mainpid_is_its_own_pid(receiver: RawReceiver) -> None:
    """What a reload's successor sends: MAINPID= is the pid the manager sees as the sender."""
    child = subprocess.run(
        [sys.executable, "-c", "from ublk_gadget.notify import Notifier;"
         "import os; print(os.getpid()); Notifier.from_environment().ready('x')"],
        env={**os.environ, SOCKET_ENV: receiver.address}, capture_output=True, text=True,
        timeout=60, check=True)
    pid, _, data = receiver.receive()
    assert pid == int(child.stdout) != os.getpid()
    assert decode(data)["MAINPID"] == str(pid)


def test_without_a_manager_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert not notifier.ready("serving")
    assert not notifier.stopping("stopping")


def test_a_manager_that_went_away_is_logged_once_and_serving_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING, logger="ublk_gadget.notify"):
        assert not notifier.ready("serving")
        assert not notifier.status("still serving")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cannot notify the service manager" in warnings[0]


def test_an_address_this_implementation_cannot_use_disables_it(
    caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ublk_gadget.notify"):
        notifier = Notifier.from_environment({SOCKET_ENV: "vsock:2:1234"})
    assert not notifier.enabled
    assert "not a socket path or @abstract name" in caplog.text


@pytest.mark.parametrize(("value", "address"), [
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@sd-notify", b"\0sd-notify"),
])
def test_addresses_are_paths_or_abstract_names(value: str, address: str | bytes) -> None:
    assert socket_address(value) == address


@pytest.mark.parametrize("value", ["", "@", "relative/path", "vsock:2:1"])
def test_other_addresses_are_refused(value: str) -> None:
    with pytest.raises(NotifyError):
        socket_address(value)


def test_a_value_cannot_smuggle_in_a_second_assignment() -> None:
    with pytest.raises(NotifyError, match="one line"):
        encode({"STATUS": "serving\nSTOPPING=1"})
    with pytest.raises(NotifyError, match="field name"):
        encode({"status": "x"})
    assert encode({"READY": 1, "STATUS": "a=b"}) == b"READY=1\nSTATUS=a=b"
    assert decode(b"READY=1\nSTATUS=a=b\nnonsense") == {"READY": "1", "STATUS": "a=b"}


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_the_listener_hears_the_notifier_with_the_sender_s_credentials(
    kind: str, tmp_path: Path
) -> None:
    address = str(tmp_path / "notify") if kind == "path" else abstract_name()
    with Listener(address) as listener:
        Notifier(address).ready("serving /dev/ublkb3")
        message = listener.receive(timeout=10)
        assert message is not None
        assert (message.pid, message.uid) == (os.getpid(), os.getuid())
        assert message.fields == {"MAINPID": str(os.getpid()), "READY": "1",
                                  "STATUS": "serving /dev/ublkb3"}
        assert listener.receive(timeout=0.05) is None
    assert not os.path.exists(address)  # a path listener removes its socket


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="no systemd-notify here")
def test_the_listener_hears_systemd_s_own_client(tmp_path: Path) -> None:
    """systemd-notify is sd_notify(3) itself: what it sends, the listener must read as systemd."""
    with Listener(abstract_name()) as listener:
        subprocess.run(["systemd-notify", "--no-block", "--status=serving /dev/ublkb0",
                        "READY=1"],
                       env={**os.environ, SOCKET_ENV: listener.address}, check=True, timeout=60)
        message = listener.receive(timeout=10)
    assert message is not None
    assert message.fields["READY"] == "1"
    assert message.fields["STATUS"] == "serving /dev/ublkb0"
    assert message.pid > 0 and message.uid == os.getuid()
