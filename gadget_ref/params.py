"""The ``ublk_params`` a target advertises: what the block layer above may send it.

The kernel rejects SET_PARAMS unless: logical_bs_shift is within 9..PAGE_SHIFT and not above
physical_bs_shift, max_sectors fits in the device's max_io_buf_bytes, and a DISCARD block has
a non-zero granularity and exactly one segment.  These limits follow from the target: a
volatile cache only where FLUSH does something (file), discard wherever holes can be punched.
"""

from __future__ import annotations

import ctypes
import mmap

from ublk_bindings import (
    UBLK_ATTR_FUA,
    UBLK_ATTR_READ_ONLY,
    UBLK_ATTR_VOLATILE_CACHE,
    UBLK_PARAM_TYPE_BASIC,
    UBLK_PARAM_TYPE_DISCARD,
    ublk_params,
)

from .targets import Target

SECTOR_SHIFT = 9
PAGE_SHIFT = mmap.PAGESIZE.bit_length() - 1

#: The largest request, also each tag's buffer size (copy mode): 512 KiB.
DEFAULT_MAX_IO_BYTES = 512 << 10
#: One DISCARD or WRITE_ZEROES at most: 1 GiB, so a fallback that writes zeroes still ends.
MAX_DISCARD_BYTES = 1 << 30


def device_params(target: Target, max_io_bytes: int = DEFAULT_MAX_IO_BYTES) -> ublk_params:
    """The SET_PARAMS payload for a device serving ``target``."""
    p = ublk_params()
    p.len = ctypes.sizeof(ublk_params)
    p.types = UBLK_PARAM_TYPE_BASIC

    b = p.basic
    logical_shift = target.block_size.bit_length() - 1
    b.logical_bs_shift = logical_shift
    b.physical_bs_shift = max(logical_shift, PAGE_SHIFT)
    b.io_min_shift = logical_shift
    b.io_opt_shift = max(logical_shift, PAGE_SHIFT)
    b.max_sectors = max_io_bytes >> SECTOR_SHIFT
    b.dev_sectors = target.size >> SECTOR_SHIFT
    b.attrs = 0
    if target.read_only:
        b.attrs |= UBLK_ATTR_READ_ONLY
    if target.volatile_cache and not target.read_only:
        b.attrs |= UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA

    if target.can_discard and not target.read_only:
        p.types |= UBLK_PARAM_TYPE_DISCARD
        d = p.discard
        d.discard_alignment = 0
        d.discard_granularity = max(target.block_size, mmap.PAGESIZE)
        limit = min(MAX_DISCARD_BYTES, target.size) >> SECTOR_SHIFT
        d.max_discard_sectors = limit
        d.max_write_zeroes_sectors = limit
        d.max_discard_segments = 1
    return p
