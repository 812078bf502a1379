"""An asynchronous server in one page: a RAM disk behind a simulated network round trip.

    sudo python examples/remote_disk.py 64M 2ms    # prints /dev/ublkbN, serves until Ctrl-C

Every request is an ``async def`` that waits out the "network" (``asyncio.sleep``) before
it touches the data, as a client of a remote store would wait for its reply.  The queue
thread never waits: it hands each request to the event loop and serves the next, so 32
requests in flight finish in about one round trip, not 32 (``ublk_bindings.aio``).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import mmap
import signal
import sys

from ublk_bindings import (
    UBLK_IO_OP_FLUSH,
    UBLK_IO_OP_READ,
    UBLK_IO_OP_WRITE,
    UBLK_PARAM_TYPE_BASIC,
    ublk_params,
    ublksrv_ctrl_dev_info,
    ublksrv_get_op,
    ublksrv_io_desc,
)
from ublk_bindings.aio import AsyncHandler, AsyncioTarget, LoopThread
from ublk_bindings.ctrl import NEW_DEV_ID, Control
from ublk_bindings.device import Device

MAX_IO = 512 << 10


def remote_disk(size: int, rtt: float) -> tuple[ublksrv_ctrl_dev_info, ublk_params, AsyncHandler]:
    """ADD_DEV's request, SET_PARAMS' payload and the async handler of the disk."""
    info = ublksrv_ctrl_dev_info(dev_id=NEW_DEV_ID, nr_hw_queues=1, queue_depth=64,
                                 max_io_buf_bytes=MAX_IO)
    params = ublk_params(len=ctypes.sizeof(ublk_params), types=UBLK_PARAM_TYPE_BASIC)
    params.basic.logical_bs_shift = 9
    params.basic.physical_bs_shift = params.basic.io_opt_shift = 12
    params.basic.io_min_shift = 9
    params.basic.max_sectors = MAX_IO >> 9
    params.basic.dev_sectors = size >> 9
    store = memoryview(mmap.mmap(-1, size))

    async def handle(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        await asyncio.sleep(rtt)  # the request's trip to the store and back
        op = ublksrv_get_op(desc)
        start, length = desc.start_sector << 9, desc.nr_sectors << 9
        if op == UBLK_IO_OP_READ:
            buf[:length] = store[start:start + length]
        elif op == UBLK_IO_OP_WRITE:
            store[start:start + length] = buf[:length]
        elif op != UBLK_IO_OP_FLUSH:
            return -errno.EOPNOTSUPP
        return length

    return info, params, handle


def main(argv: list[str]) -> int:
    units = {"K": 10, "M": 20, "G": 30}
    text = argv[1] if len(argv) > 1 else "64M"
    size = int(text.rstrip("KMG")) << units.get(text[-1], 0)
    rtt = float(argv[2].removesuffix("ms")) / 1000 if len(argv) > 2 else 0.002
    info, params, handle = remote_disk(size, rtt)
    with LoopThread() as loop, Control() as ctrl, \
            Device(ctrl, lambda q_id: AsyncioTarget(handle, loop)).create(info, params) as dev:
        print(dev.block_path, flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main(sys.argv))
