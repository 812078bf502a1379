"""``python -m bench.engine``: the queue engine's CPU per request on each completion path.

No ublk driver is needed: the queue's prepared FETCH and COMMIT_AND_FETCH SQEs are turned
into NOPs on a real io_uring, so each NOP's completion (res 0, ``user_data`` = the tag) is,
to ``Queue.run``, a new request for that tag, and each commit brings the next one.  What is
measured is then exactly the engine and the target path around it, per request, with the
kernel's ublk work left out (the VM bench adds it back: ``make bench``).

Paths: the synchronous handler adapter; a target whose every request is one SQE on the
queue's own ring (a NOP standing in for a backing read), completed in ``io_done``; a
target completed from another thread (``Queue.complete`` across threads: eventfd wake-up);
and the asyncio adapter.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
import threading
import time

from ublk_bindings import UBLK_IO_OP_READ, ublksrv_ctrl_dev_info, ublksrv_io_desc
from ublk_bindings.aio import AsyncioTarget, LoopThread
from ublk_bindings.io_uring import IORING_OP_NOP
from ublk_bindings.queue import Queue, Served, SyncHandler, TargetOps

DEPTH = 64


class _Counted:
    """Counts requests and kicks the queue once ``n`` have been served."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0

    def tick(self, queue: Queue) -> None:
        self.seen += 1
        if self.seen == self.n:
            queue.kick()


class _RingTarget:
    """One NOP per request on the queue's ring, completed when its CQE comes back."""

    def __init__(self, n: int) -> None:
        self.count = _Counted(n)

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> None:
        queue.ring.prep(IORING_OP_NOP, -1, 0, 0, 0, queue.io_data(tag))

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> None:
        self.count.tick(queue)
        queue.complete(tag, 4096)


class _ThreadTarget:
    """Every request completed by a worker thread."""

    def __init__(self, n: int, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self.count = _Counted(n)
        self.pool = pool
        self.lock = threading.Lock()

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> None:
        self.pool.submit(self._work, queue, tag)

    def _work(self, queue: Queue, tag: int) -> None:
        with self.lock:
            self.count.tick(queue)
        queue.complete(tag, 4096)

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> None:
        raise AssertionError("no SQEs")


class _CountingOps:
    """A gadget target wrapped to count its requests and stop the queue after ``n``."""

    def __init__(self, inner: TargetOps, n: int) -> None:
        self.inner = inner
        self.count = _Counted(n)

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> int | None:
        self.count.tick(queue)
        return self.inner.queue_io(queue, tag, desc)

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> int | None:
        return self.inner.io_done(queue, tag, sub, res, flags)


def _gadget(name: str, n: int, backing: str) -> Served:
    """The gadget's own per-queue targets: null and file served at once, file on the ring."""
    from ublk_gadget.handler import RequestHandler, RingRequests
    from ublk_gadget.spec import DeviceSpec
    from ublk_gadget.targets import FileTarget, NullTarget

    if name == "gadget null":
        inner: Served = RequestHandler(NullTarget(1 << 30, 512, False))
    else:
        target = FileTarget(DeviceSpec("file", path=backing))
        ring_io = target.ring_io(DEPTH)  # copy mode: the tag's buffer
        assert ring_io is not None
        inner = (RingRequests(ring_io, target) if name == "gadget file, ring"
                 else RequestHandler(target))
    return _CountingOps(inner if isinstance(inner, TargetOps) else SyncHandler(inner), n)


def run_path(name: str, n: int, backing: str = "") -> tuple[float, float]:
    """Serve ``n`` NOP requests on path ``name``; (CPU us per request, wall us per request)."""
    info = ublksrv_ctrl_dev_info(queue_depth=DEPTH, max_io_buf_bytes=4096, nr_hw_queues=1)
    descs = [ublksrv_io_desc(op_flags=UBLK_IO_OP_READ, nr_sectors=8, start_sector=8 * t)
             for t in range(DEPTH)]
    q_of: list[Queue] = []
    count = _Counted(n)

    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        count.tick(q_of[0])
        return 4096

    async def async_handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        count.tick(q_of[0])
        return 4096

    with concurrent.futures.ThreadPoolExecutor(2) as pool, LoopThread() as loop:
        target: Served
        if name == "sync handler":
            target = handler
        elif name == "ring target I/O":
            target = _RingTarget(n)
        elif name == "complete from a thread":
            target = _ThreadTarget(n, pool)
        elif name == "asyncio":
            target = AsyncioTarget(async_handler, loop)
        else:
            target = _gadget(name, n, backing)
        queue = Queue(-1, info, 0, target, descs=descs)
        q_of.append(queue)
        with queue:
            for image in queue._images:  # every ublk command a NOP: each completion a request
                image.opcode = IORING_OP_NOP
            cpu0, wall0 = time.process_time(), time.perf_counter()
            queue.run()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / n * 1e6, wall / n * 1e6


PATHS = ("sync handler", "ring target I/O", "complete from a thread", "asyncio")
GADGET_PATHS = ("gadget null", "gadget file, at once", "gadget file, ring")
"""The gadget's targets, reading a 4 KiB block of a tmpfs file per request."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200_000)
    a = p.parse_args(argv)
    print(f"queue engine, {DEPTH} tags, NOP ublk commands, {a.requests} requests per path, "
          f"Python {sys.version.split()[0]}")
    print(f"{'path':<26}{'CPU us/req':>12}{'wall us/req':>13}")
    for name in PATHS:
        n = a.requests if name in PATHS[:2] else a.requests // 4
        cpu, wall = run_path(name, n)
        print(f"{name:<26}{cpu:>12.2f}{wall:>13.2f}")
    with tempfile.NamedTemporaryFile(dir="/dev/shm", prefix="bench-engine.") as f:
        f.truncate(DEPTH * 4096)
        for name in GADGET_PATHS:
            cpu, wall = run_path(name, a.requests // 2, f.name)
            print(f"{name:<26}{cpu:>12.2f}{wall:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
