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
import threading
import time

from ublk_bindings import UBLK_IO_OP_READ, ublksrv_ctrl_dev_info, ublksrv_io_desc
from ublk_bindings.aio import AsyncioTarget, LoopThread
from ublk_bindings.io_uring import IORING_OP_NOP
from ublk_bindings.queue import Queue, Served

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


def run_path(name: str, n: int) -> tuple[float, float]:
    """Serve ``n`` NOP requests on path ``name``; (CPU us per request, wall us per request)."""
    info = ublksrv_ctrl_dev_info(queue_depth=DEPTH, max_io_buf_bytes=4096, nr_hw_queues=1)
    descs = [ublksrv_io_desc(op_flags=UBLK_IO_OP_READ, nr_sectors=8) for _ in range(DEPTH)]
    q_of: list[Queue] = []
    count = _Counted(n)

    def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        count.tick(q_of[0])
        return 4096

    async def async_handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        count.tick(q_of[0])
        return 4096

    with concurrent.futures.ThreadPoolExecutor(2) as pool, LoopThread() as loop:
        target: Served = {
            "sync handler": lambda: handler,
            "ring target I/O": lambda: _RingTarget(n),
            "complete from a thread": lambda: _ThreadTarget(n, pool),
            "asyncio": lambda: AsyncioTarget(async_handler, loop),
        }[name]()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
