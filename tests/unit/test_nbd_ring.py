"""The nbd target's queue I/O (``gadget_ref.targets.nbd_ring``) against a real NBD server.

No ublk here: the host's real io_uring and a real nbdkit (Debian's ``nbdkit``, file plugin,
on a unix socket) stand on either side of ``NbdRingIO``; a small loop plays the queue (its
ring, its tag buffers, the commits).  What the kernel makes of it is proven in the VM
(``tests/kernel/test_nbd.py``); here, the protocol and the reconnect logic: depth on the wire,
the data round trip, resending after the server restarts, EIO after the window.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ublk_bindings import (
    UBLK_IO_F_FUA,
    UBLK_IO_OP_DISCARD,
    UBLK_IO_OP_FLUSH,
    UBLK_IO_OP_READ,
    UBLK_IO_OP_WRITE,
    UBLK_IO_OP_WRITE_ZEROES,
    liburing,
)
from ublk_bindings.errors import UblkTimeout
from ublk_bindings.queue import Queue
from ublk_bindings.ring import Ring
from ublk_bindings.user_data import SUB_MASK, SUB_SHIFT, TAG_MASK
from ublk_gadget import libnbd
from ublk_gadget.spec import parse_spec
from ublk_gadget.targets import TargetError, open_target
from ublk_gadget.targets.nbd import NbdTarget
from ublk_gadget.targets.nbd_ring import NbdRingIO

NBDKIT = shutil.which("nbdkit")
DEPTH = 16
BUF = 128 << 10
SIZE = 8 << 20

pytestmark = pytest.mark.skipif(NBDKIT is None, reason="nbdkit is not installed (apt install nbdkit)")


@pytest.fixture(scope="module", autouse=True)
def _libraries() -> None:
    try:
        liburing.load()
        libnbd.load()
    except OSError as e:
        pytest.skip(f"liburing-ffi or libnbd unavailable: {e}")


class Server:
    """nbdkit's file plugin on a unix socket, in the foreground, so it can be killed."""

    def __init__(self, tmp: Path) -> None:
        self.socket = tmp / "nbd.sock"
        self.file = tmp / "export.img"
        with open(self.file, "wb") as f:
            f.truncate(SIZE)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"nbd+unix:///?socket={self.socket}"

    def start(self) -> None:
        self.proc = subprocess.Popen([NBDKIT or "nbdkit", "-f", "--exit-with-parent", "-U",
                                      str(self.socket), "file", str(self.file)])
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert time.monotonic() < deadline, "nbdkit did not create its socket"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    s.start()
    yield s
    s.kill()


class LoopQueue:
    """What NbdRingIO uses of a Queue, on a real ring, with the queue loop's dispatch."""

    io_data = staticmethod(Queue.io_data)

    def __init__(self) -> None:
        self.ring = Ring(2 * DEPTH + 1)
        self._map = mmap.mmap(-1, DEPTH * BUF)
        self.buffers = [memoryview(self._map)[t * BUF:(t + 1) * BUF] for t in range(DEPTH)]
        self._base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self.results: dict[int, int] = {}

    def buffer_address(self, tag: int) -> int:
        return self._base + tag * BUF

    def start(self, io: NbdRingIO, tag: int, op: int, offset: int, length: int,
              op_flags: int = 0) -> None:
        result = io.start(self, tag, op, op_flags, offset, length)  # type: ignore[arg-type]
        if result is not None:
            self.results[tag] = result
        self._take(io)

    def _take(self, io: NbdRingIO) -> None:
        for tag, result in io.finished:
            assert tag not in self.results, f"tag {tag} completed twice"
            self.results[tag] = result
        io.finished.clear()

    def run_until(self, io: NbdRingIO, tags: set[int], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not tags <= self.results.keys():
            assert time.monotonic() < deadline, f"tags {tags - self.results.keys()} never completed"
            self._serve(io)

    def run_for(self, io: NbdRingIO, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._serve(io)

    def _serve(self, io: NbdRingIO) -> None:
        self._submit_wait()
        user_data, res, _ = self.ring.reap()
        for u, r in zip(user_data, res):
            io.done(self, u & TAG_MASK, u >> SUB_SHIFT & SUB_MASK, r)  # type: ignore[arg-type]
            self._take(io)

    def _submit_wait(self) -> None:
        try:
            self.ring.submit(1, timeout=0.2)
        except UblkTimeout:
            pass

    def close(self) -> None:
        self.ring.close()
        for b in self.buffers:
            b.release()
        self._map.close()


@pytest.fixture
def queue() -> Iterator[LoopQueue]:
    q = LoopQueue()
    yield q
    q.close()


def _target(server: Server, extra: str = "") -> NbdTarget:
    target = open_target(parse_spec(f"nbd,uri={server.uri}{extra}"))
    assert isinstance(target, NbdTarget)
    return target


def test_a_full_depth_of_writes_then_reads_round_trips(server: Server, queue: LoopQueue) -> None:
    target = _target(server)
    io = target.ring_io(DEPTH)
    assert isinstance(io, NbdRingIO)
    for tag in range(DEPTH):
        queue.buffers[tag][:] = bytes([tag + 1]) * BUF
        queue.start(io, tag, UBLK_IO_OP_WRITE, tag * BUF, BUF, UBLK_IO_F_FUA if tag % 2 else 0)
    assert len(io._tag_of) == DEPTH, "every write is on the wire at once"
    queue.run_until(io, set(range(DEPTH)))
    assert queue.results == {tag: BUF for tag in range(DEPTH)}
    with open(server.file, "rb") as f:
        for tag in range(DEPTH):
            assert f.read(BUF) == bytes([tag + 1]) * BUF
    queue.results.clear()
    for tag in range(DEPTH):
        queue.buffers[tag][:] = b"\0" * BUF
        queue.start(io, tag, UBLK_IO_OP_READ, (DEPTH - 1 - tag) * BUF, BUF)
    queue.run_until(io, set(range(DEPTH)))
    assert all(bytes(queue.buffers[t]) == bytes([DEPTH - t]) * BUF for t in range(DEPTH))
    target.close()


def test_flush_trim_and_zeroes_reach_the_server(server: Server, queue: LoopQueue) -> None:
    with open(server.file, "r+b") as f:
        f.write(b"\xff" * (2 * BUF))
    target = _target(server)
    assert target.volatile_cache and target.can_discard
    io = target.ring_io(DEPTH)
    queue.start(io, 0, UBLK_IO_OP_WRITE_ZEROES, 0, BUF)
    queue.start(io, 1, UBLK_IO_OP_DISCARD, BUF, BUF)
    queue.start(io, 2, UBLK_IO_OP_FLUSH, 0, 0)
    queue.run_until(io, {0, 1, 2})
    assert queue.results == {0: 0, 1: 0, 2: 0}
    with open(server.file, "rb") as f:
        assert f.read(BUF) == b"\0" * BUF
    target.close()


def test_requests_wait_for_a_restarted_server_and_lose_nothing(server: Server,
                                                               queue: LoopQueue) -> None:
    target = _target(server)
    io = target.ring_io(DEPTH)
    server.kill()
    for tag in range(DEPTH):  # sent to a dead server, or waiting for the next connection
        queue.buffers[tag][:] = bytes([0x40 + tag]) * BUF
        queue.start(io, tag, UBLK_IO_OP_WRITE, tag * BUF, BUF)
    queue.run_for(io, 1.5)  # a few failed connection attempts
    assert not queue.results, "nothing completes while the server is away"
    server.start()
    queue.run_until(io, set(range(DEPTH)), timeout=10)
    assert queue.results == {tag: BUF for tag in range(DEPTH)}
    with open(server.file, "rb") as f:
        assert all(f.read(BUF) == bytes([0x40 + tag]) * BUF for tag in range(DEPTH))
    target.close()


def test_past_the_window_requests_fail_with_eio_and_recover_later(server: Server,
                                                                  queue: LoopQueue) -> None:
    target = _target(server, ",reconnect=2")
    io = target.ring_io(DEPTH)
    server.kill()
    began = time.monotonic()
    queue.start(io, 0, UBLK_IO_OP_READ, 0, BUF)
    queue.run_until(io, {0}, timeout=10)
    waited = time.monotonic() - began
    assert queue.results[0] == -errno.EIO
    assert 2 <= waited < 4.5, f"failed after {waited:.1f} s, the window is 2 s"
    queue.start(io, 1, UBLK_IO_OP_READ, 0, BUF)
    assert queue.results[1] == -errno.EIO, "after the window: at once, no wait"
    server.start()
    time.sleep(0.1)
    queue.run_for(io, 1.5)  # the next attempt finds it
    queue.start(io, 2, UBLK_IO_OP_READ, 0, BUF)
    queue.run_until(io, {2}, timeout=5)
    assert queue.results[2] == BUF
    target.close()


def test_start_up_errors_name_the_problem(tmp_path: Path, server: Server) -> None:
    with pytest.raises(TargetError, match=r"nbd target: connecting to nbd\+unix:.*nope.sock"):
        open_target(parse_spec(f"nbd,uri=nbd+unix:///?socket={tmp_path}/nope.sock"))
    with pytest.raises(TargetError, match="size=16777216 asked"):
        _target(server, ",size=16M")
    one = _target(server, ",size=1M")
    assert one.size == 1 << 20
    one.close()


@pytest.mark.skipif(shutil.which("qemu-nbd") is None, reason="qemu-nbd is not installed")
def test_a_server_busy_with_its_one_client_is_a_timeout_that_says_so(tmp_path: Path) -> None:
    """qemu-nbd's default --shared=1: a second client is accepted and never answered."""
    sock, image = tmp_path / "q.sock", tmp_path / "q.img"
    image.write_bytes(b"\0" * SIZE)
    proc = subprocess.Popen(["qemu-nbd", "-f", "raw", "-x", "disk", "-k", str(sock), str(image)])
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "qemu-nbd did not create its socket"
            time.sleep(0.02)
        uri = f"nbd+unix:///disk?socket={sock}"
        first = open_target(parse_spec(f"nbd,uri={uri}"))
        began = time.monotonic()
        with pytest.raises(TargetError, match=r"no answer in 1 s .*qemu-nbd without --shared"):
            open_target(parse_spec(f"nbd,uri={uri},reconnect=1"))
        assert time.monotonic() - began < 3
        first.close()
    finally:
        proc.kill()
        proc.wait()
