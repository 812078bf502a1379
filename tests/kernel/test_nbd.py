"""The nbd target on the real driver, against real NBD servers in the VM.

The servers are Debian's, from the host's root: ``nbdkit`` 1.32 (memory and file plugins)
and ``qemu-nbd`` (qemu-utils), over TCP on the guest's loopback and over unix sockets; the
client is libnbd 1.14 in the gadget.  fio crc32c verify, ext4 + fsck, a live handover and a
crash adoption under fio, the server killed and restarted mid-I/O (nothing lost), killed for
good (EIO after the window, no hang), and the start-up errors a user meets first.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_gadget import (
    Gadget,
    assert_verified,
    backing_file,
    ext4_round_trip,
    fio_verify,
    gadget_cli,
    run,
)
from test_handover import (
    SIZE,
    Fio,
    Owner,
    Standby,
    Successor,
    finish,
    fio_throughout,
    hand_over,
    no_gadget_left_running,
    state_file,
)

pytestmark = pytest.mark.ublk

__all__ = ["no_gadget_left_running", "state_file"]  # fixtures, used by name

MiB = 1 << 20
NBDKIT = shutil.which("nbdkit") or "nbdkit"
QEMU_NBD = shutil.which("qemu-nbd") or "qemu-nbd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout:g} s"
        time.sleep(0.05)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Server:
    """An NBD server process in the foreground, so that a test can kill and restart it."""

    def __init__(self, argv: list[str], uri: str, ready: object) -> None:
        self.argv, self.uri, self._ready = argv, uri, ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        wait_for(lambda: self.proc is not None and (self.proc.poll() is not None
                                                     or self._ready()),  # type: ignore[operator]
                 f"{self.argv[0]} listening")
        assert self.proc.poll() is None, f"{self.argv} exited {self.proc.returncode}"
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def nbdkit_tcp(plugin: str, *args: str) -> Server:
    port = free_port()
    return Server([NBDKIT, "-f", "-i", "127.0.0.1", "-p", str(port), plugin, *args],
                  f"nbd://127.0.0.1:{port}/", lambda: listening(port))


def nbdkit_unix(tmp_path: Path, plugin: str, *args: str) -> Server:
    sock = tmp_path / "nbdkit.sock"

    def ready() -> bool:
        return sock.exists()

    def start_clean() -> None:
        sock.unlink(missing_ok=True)

    server = Server([NBDKIT, "-f", "-U", str(sock), plugin, *args],
                    f"nbd+unix:///?socket={sock}", ready)
    start_clean()
    return server


def qemu_nbd_unix(tmp_path: Path, image: Path, export: str = "disk") -> Server:
    sock = tmp_path / "qemu-nbd.sock"
    return Server([QEMU_NBD, "-f", "raw", "-x", export, "-k", str(sock), "--cache=none",
                   "--persistent", str(image)],
                  f"nbd+unix:///{export}?socket={sock}", sock.exists)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.kill()


def started(servers: list[Server], server: Server) -> Server:
    servers.append(server.start())
    return server


# --- data ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bs", ["4k", "128k"])
def test_fio_verify_on_nbdkit_memory_over_tcp(servers: list[Server], bs: str) -> None:
    nbd = started(servers, nbdkit_tcp("memory", "64M"))
    with Gadget(f"nbd,uri={nbd.uri},queues=2,depth=64") as g:
        assert g.devices[0]["multi_conn"] is True
        assert_verified(fio_verify(g.dev(), size=32 * MiB, bs=bs, iodepth=32, jobs=2), 32 * MiB)


def test_fio_verify_on_qemu_nbd_over_a_unix_socket(tmp_path: Path, servers: list[Server]) -> None:
    image = backing_file(tmp_path, 64 * MiB)
    nbd = started(servers, qemu_nbd_unix(tmp_path, image))
    with Gadget(f"nbd,uri={nbd.uri},queues=1,depth=64") as g:
        assert_verified(fio_verify(g.dev(), size=16 * MiB, bs="128k", iodepth=16, jobs=1),
                        16 * MiB)


def test_ext4_and_fsck_on_an_nbd_file_export(tmp_path: Path, servers: list[Server]) -> None:
    image = backing_file(tmp_path, 64 * MiB)
    nbd = started(servers, nbdkit_unix(tmp_path, "file", str(image)))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with Gadget(f"nbd,uri={nbd.uri},queues=2") as g:
        sums = ext4_round_trip(g.dev(), mnt)
    run("fsck.ext4", "-fn", str(image))  # the data is on the server's side, consistent
    with Gadget(f"nbd,uri={nbd.uri},queues=1") as g:
        ext4_round_trip(g.dev(), mnt, sums)


def test_read_only_and_a_size_below_the_exports(servers: list[Server]) -> None:
    nbd = started(servers, nbdkit_tcp("memory", "64M"))
    with Gadget(f"nbd,uri={nbd.uri},size=16M,read_only=1") as g:
        dev = g.dev()
        assert int(run("blockdev", "--getsize64", dev).stdout) == 16 * MiB
        assert run("blockdev", "--getro", dev).stdout.strip() == "1"
        wrote = run("dd", "if=/dev/zero", f"of={dev}", "bs=4k", "count=1", "oflag=direct",
                    check=False)
        assert wrote.returncode != 0


# --- handover and crash ----------------------------------------------------------------------

def test_a_live_handover_a_crash_adoption_and_a_standby_lose_nothing(
    tmp_path: Path, servers: list[Server], state_file: str
) -> None:
    image = backing_file(tmp_path, SIZE)
    nbd = started(servers, nbdkit_unix(tmp_path, "file", str(image)))
    owner: Gadget = Owner(f"nbd,uri={nbd.uri},queues=2,depth=64",
                          state_file=state_file).__enter__()
    devs = owner.all_devs()
    with fio_throughout(owner, tmp_path):
        time.sleep(2)
        owner = hand_over(owner, state_file)
        time.sleep(2)
        owner.proc.kill()
        assert owner.stop() == -signal.SIGKILL
        owner = Successor(state_file).__enter__()
        assert owner.all_devs() == devs
        time.sleep(2)
        standby = Standby(state_file)  # connected while it stands by
        standby.standing_by()
        owner.proc.kill()
        standby.next_event("ready")
        assert owner.stop() == -signal.SIGKILL
        owner = standby
        assert owner.all_devs() == devs
        time.sleep(2)
    finish(owner, state_file)


def test_a_successor_that_cannot_connect_leaves_the_owner_serving(
    tmp_path: Path, servers: list[Server], state_file: str
) -> None:
    """qemu-nbd without --shared serves one client at a time: a second one waits forever for
    its handshake.  A successor gives up after reconnect= seconds, before touching the owner."""
    image = backing_file(tmp_path, 16 * MiB)
    nbd = started(servers, qemu_nbd_unix(tmp_path, image))
    owner = Owner(f"nbd,uri={nbd.uri},reconnect=3", state_file=state_file).__enter__()
    began = time.monotonic()
    successor = gadget_cli("serve", "--adopt", "--state-file", state_file)
    assert successor.returncode == 2, successor.stderr
    assert "no answer in 3 s" in successor.stderr and "--shared" in successor.stderr
    assert time.monotonic() - began < 30
    assert_verified(fio_verify(owner.dev(), size=4 * MiB, bs="4k", iodepth=8, jobs=1), 4 * MiB)
    finish(owner, state_file)


# --- the server goes away --------------------------------------------------------------------

def test_a_server_restarted_mid_io_loses_nothing(
    tmp_path: Path, servers: list[Server], capsys: pytest.CaptureFixture[str]
) -> None:
    image = backing_file(tmp_path, SIZE)
    nbd = started(servers, nbdkit_unix(tmp_path, "file", str(image)))
    g = Owner(f"nbd,uri={nbd.uri},queues=2,depth=64").__enter__()
    fio = Fio(g.all_devs(), tmp_path)
    try:
        nbd.kill()  # SIGKILL: nothing it acknowledged is lost (the page cache keeps it)
        (tmp_path / "nbdkit.sock").unlink(missing_ok=True)
        time.sleep(3)
        fio.still_running()
        nbd.start()
        fio.finish()
    finally:
        fio.kill()
    assert g.stop() == 0, g.stderr
    assert g.stderr.count("lost:") == 2, g.stderr  # one loss and one reconnect per queue
    assert g.stderr.count("reconnected") == 2, g.stderr


def test_a_server_gone_for_good_fails_requests_with_eio_and_never_hangs(
    servers: list[Server],
) -> None:
    nbd = started(servers, nbdkit_tcp("memory", "64M"))
    g = Owner(f"nbd,uri={nbd.uri},reconnect=3").__enter__()
    dev = g.dev()
    nbd.kill()
    began = time.monotonic()
    read = subprocess.run(["dd", f"if={dev}", "of=/dev/null", "bs=4k", "count=1",
                           "iflag=direct"], capture_output=True, text=True, timeout=60)
    waited = time.monotonic() - began
    assert read.returncode != 0 and "Input/output error" in read.stderr, read.stderr
    assert 3 <= waited < 15, waited
    began = time.monotonic()
    again = subprocess.run(["dd", f"if={dev}", "of=/dev/null", "bs=4k", "count=1", "skip=99",
                            "iflag=direct"], capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and time.monotonic() - began < 3, "past the window: at once"
    assert g.stop() == 0, g.stderr  # and the device goes away cleanly
    assert "unreachable for 3 s" in g.stderr, g.stderr


# --- start-up errors -------------------------------------------------------------------------

def test_bad_uris_exit_2_with_the_reason_and_create_nothing(
    tmp_path: Path, servers: list[Server]
) -> None:
    image = backing_file(tmp_path, 16 * MiB)
    nbd = started(servers, qemu_nbd_unix(tmp_path, image, export="disk"))
    cases = [
        ("nbd://no-such-host.invalid/", "getaddrinfo"),
        (f"nbd://127.0.0.1:{free_port()}/", "Connection refused"),
        (nbd.uri.replace("/disk?", "/wrong?"), "no export named 'wrong'"),
    ]
    for uri, cause in cases:
        result = gadget_cli("serve", "--device", f"nbd,uri={uri}")
        assert result.returncode == 2, (uri, result.stderr)
        assert "nbd target" in result.stderr and cause in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not list(Path("/dev").glob("ublkb*"))
    two = gadget_cli("serve", "--device", f"nbd,uri={nbd.uri},queues=2")
    assert two.returncode == 2 and "multi-conn" in two.stderr, two.stderr
