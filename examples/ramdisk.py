"""A RAM disk in one page: the smallest useful ublk server, on ublk_bindings alone.

    sudo python examples/ramdisk.py 64M      # prints /dev/ublkbN, serves it until Ctrl-C

One queue of 64 tags, copy mode: the driver copies a WRITE's data into the tag's buffer
before the handler runs, and a READ's data out of it when the handler's result is committed.
"""

from __future__ import annotations

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
    ublksrv_io_desc,
)
from ublk_bindings.ctrl import NEW_DEV_ID, Control
from ublk_bindings.io import Device, Handler

MAX_IO = 512 << 10  # the largest request, and each tag's buffer


def ram_disk(size: int) -> tuple[ublksrv_ctrl_dev_info, ublk_params, Handler]:
    """ADD_DEV's request, SET_PARAMS' payload and the handler of a ``size``-byte RAM disk."""
    info = ublksrv_ctrl_dev_info(dev_id=NEW_DEV_ID, nr_hw_queues=1, queue_depth=64,
                                 max_io_buf_bytes=MAX_IO)
    params = ublk_params(len=ctypes.sizeof(ublk_params), types=UBLK_PARAM_TYPE_BASIC)
    params.basic.logical_bs_shift = 9
    params.basic.physical_bs_shift = params.basic.io_opt_shift = 12
    params.basic.io_min_shift = 9
    params.basic.max_sectors = MAX_IO >> 9
    params.basic.dev_sectors = size >> 9
    ram = memoryview(mmap.mmap(-1, size))

    def handle(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
        op = desc.op_flags & 0xFF  # ublksrv_get_op(desc)
        start, length = desc.start_sector << 9, desc.nr_sectors << 9
        if op == UBLK_IO_OP_READ:
            buf[:length] = ram[start:start + length]
        elif op == UBLK_IO_OP_WRITE:
            ram[start:start + length] = buf[:length]
        elif op != UBLK_IO_OP_FLUSH:
            return -errno.EOPNOTSUPP
        return length

    return info, params, handle


def main(argv: list[str]) -> int:
    units = {"K": 10, "M": 20, "G": 30}
    text = argv[1] if len(argv) > 1 else "64M"
    size = int(text.rstrip("KMG")) << units.get(text[-1], 0)
    info, params, handle = ram_disk(size)
    with Control() as ctrl, Device(ctrl, lambda q_id: handle).create(info, params) as dev:
        print(dev.block_path, flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})  # queue threads serve meanwhile
    return 0  # leaving the with: STOP_DEV, queues joined, DEL_DEV


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main(sys.argv))
