"""Where a request's user-space time goes in the gadget's queue loop, measured on the host.

In the VM, kublk spends about 6 us of user CPU per 4k request and the gadget over 100 times
that (``cpu us/IO`` in the benchmark, user/sys split in ``.out/bench/cpu``).  The queue loop's
Python steps need no driver, so each is timed here, natively: next to the alternative the
issue suggests for it (ratio > 1: the alternative is faster), and the whole loop body of a
null read against an empty loop over the same tags.

    python -m bench.hotpath
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import timeit
from collections.abc import Callable

from ublk_bindings import UBLK_IO_OP_READ, ublksrv_io_cmd, ublksrv_io_desc
from ublk_bindings.io import QUEUE_RING_FLAGS
from ublk_bindings.io_uring import IORING_OP_NOP, io_uring_sqe
from ublk_bindings.ring import SQE_CMD_OFFSET, Ring

DEPTH = 64


def per_call_ns(fn: Callable[[], object], calls_per_fn: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` nanoseconds per call (best: the least disturbed by neighbours)."""
    timer = timeit.Timer(fn)
    n, _ = timer.autorange()
    return min(timer.repeat(repeat, n)) / (n * calls_per_fn) * 1e9


def main() -> int:
    # The driver's descriptor array, as the queue sees it (here: plain memory, same layout).
    raw = mmap.mmap(-1, mmap.PAGESIZE * 2)
    base = ctypes.addressof(ctypes.c_char.from_buffer(raw))
    descs = [ublksrv_io_desc.from_address(base + t * ctypes.sizeof(ublksrv_io_desc)) for t in range(DEPTH)]
    for t, d in enumerate(descs):
        d.op_flags, d.nr_sectors, d.start_sector = UBLK_IO_OP_READ, 8, t * 8
    words32 = memoryview(raw).cast("I")
    words64 = memoryview(raw).cast("Q")
    stride32, stride64 = ctypes.sizeof(ublksrv_io_desc) // 4, ctypes.sizeof(ublksrv_io_desc) // 8

    def desc_ctypes() -> None:
        for d in descs:
            d.op_flags, d.nr_sectors, d.start_sector

    def desc_memoryview() -> None:
        for t in range(DEPTH):
            words32[t * stride32], words32[t * stride32 + 1], words64[t * stride64 + 1]

    # COMMIT_AND_FETCH's result, written into a prepared SQE image per tag.
    images = (io_uring_sqe * DEPTH)()
    payloads = [ublksrv_io_cmd.from_address(ctypes.addressof(images[t]) + SQE_CMD_OFFSET) for t in range(DEPTH)]
    image_words = memoryview(images).cast("B").cast("i")
    result_offset = int(getattr(ublksrv_io_cmd, "result").offset)  # the class attribute is the field
    result_at = [(ctypes.sizeof(io_uring_sqe) * t + SQE_CMD_OFFSET + result_offset) // 4
                 for t in range(DEPTH)]  # fmt: skip

    def result_ctypes() -> None:
        for p in payloads:
            p.result = 4096

    def result_memoryview() -> None:
        for i in result_at:
            image_words[i] = 4096

    # Queueing the SQE: Ring.put_many, slice copies into the mapped SQ (no FFI), against what it
    # replaced: liburing's io_uring_get_sqe plus memmove, two FFI calls. Both with the ring
    # round trip of a queue ring, so that only the per-SQE part differs.
    ring = Ring(DEPTH, flags=QUEUE_RING_FLAGS)
    for img in images:
        img.opcode = IORING_OP_NOP
    size = ctypes.sizeof(io_uring_sqe)
    image_bytes = memoryview(images).cast("B")
    views = [image_bytes[t * size : (t + 1) * size] for t in range(DEPTH)]
    addrs = [ctypes.addressof(img) for img in images]
    put_many = ring.put_many
    get_sqe, lib_ring = ring._lib.io_uring_get_sqe, ring._ring
    memmove = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
        ("memmove", ctypes.PyDLL(None))
    )

    def put_slice() -> None:
        put_many(views)  # as Queue.run queues a batch's commits
        ring.submit(DEPTH)
        ring.reap()

    def put_ffi() -> None:
        for a in addrs:
            memmove(get_sqe(lib_ring), a, size)
        ring.submit(DEPTH)
        ring.reap()

    # The whole loop body for a null-target read, as Queue.run runs it, NOP SQEs standing in
    # for COMMIT_AND_FETCH; against an empty loop over the same batch.
    from ublk_gadget.handler import RequestHandler
    from ublk_gadget.targets import NullTarget

    handler = RequestHandler(NullTarget(1 << 30, 512, False))
    buf_map = mmap.mmap(-1, DEPTH * 4096)
    buffers = [memoryview(buf_map)[t * 4096 : (t + 1) * 4096] for t in range(DEPTH)]
    tags, results = list(range(DEPTH)), [0] * DEPTH

    def loop_body() -> None:
        ready = []
        for tag, res in zip(tags, results):
            if res == 0:
                payloads[tag].result = handler(tag, descs[tag], buffers[tag])
                ready.append(views[tag])
        put_many(ready)
        ring.submit(DEPTH)
        ring.reap()

    def empty_loop() -> None:
        for tag, res in zip(tags, results):
            if res == 0:
                pass

    rows = [
        ("read a descriptor (3 fields)", desc_ctypes, "ctypes struct", desc_memoryview, "memoryview.cast"),
        ("set the commit's result", result_ctypes, "ctypes field", result_memoryview, "memoryview.cast"),
        ("queue one SQE (+ ring trip / 64)", put_slice, "Ring.put_many", put_ffi, "get_sqe+memmove"),
        ("a null 4k read, whole loop body", loop_body, "Queue.run's body", empty_loop, "empty loop"),
    ]
    print(f"per request, best of 5, Python {sys.version.split()[0]}, {DEPTH} requests per batch")
    print(f"{'step':<34}{'now':>22}{'ns':>8}   {'instead':<18}{'ns':>8}   ratio")
    for step, now, now_name, alt, alt_name in rows:
        a, b = per_call_ns(now, DEPTH), per_call_ns(alt, DEPTH)
        print(f"{step:<34}{now_name:>22}{a:>8.0f}   {alt_name:<18}{b:>8.0f}   {a / b:5.2f}x")
    ring.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
