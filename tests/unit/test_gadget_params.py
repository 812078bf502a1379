"""The parameters each target advertises, against the rules the kernel's SET_PARAMS enforces."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest

from ublk_bindings import (
    UBLK_ATTR_FUA,
    UBLK_ATTR_READ_ONLY,
    UBLK_ATTR_VOLATILE_CACHE,
    UBLK_PARAM_TYPE_BASIC,
    UBLK_PARAM_TYPE_DISCARD,
    ublk_params,
)
from ublk_gadget.params import device_params
from ublk_gadget.spec import parse_spec
from ublk_gadget.targets import Target, open_target

PAGE_SHIFT = mmap.PAGESIZE.bit_length() - 1
MAX_IO = 512 << 10


def params_for(spec: str, tmp_path: Path) -> ublk_params:
    if spec.startswith("file"):
        img = tmp_path / "disk.img"
        img.write_bytes(bytes(1 << 20))
        spec = spec.replace("file", f"file,path={img}", 1)
    target: Target = open_target(parse_spec(spec))
    try:
        return device_params(target, MAX_IO)
    finally:
        target.close()


def assert_kernel_accepts(p: ublk_params) -> None:
    """The checks of ublk_validate_params() in drivers/block/ublk_drv.c."""
    b = p.basic
    assert p.types & UBLK_PARAM_TYPE_BASIC
    assert 9 <= b.logical_bs_shift <= PAGE_SHIFT
    assert b.logical_bs_shift <= b.physical_bs_shift
    assert b.max_sectors <= MAX_IO >> 9
    if p.types & UBLK_PARAM_TYPE_DISCARD:
        assert p.discard.discard_granularity != 0
        assert p.discard.max_discard_segments == 1


@pytest.mark.parametrize("spec", ["null,size=1M", "mem,size=1M", "mem,size=1M,block_size=4096",
                                  "file", "file,read_only=1", "null,size=1M,read_only=1"])
def test_every_target_advertises_parameters_the_kernel_accepts(spec: str, tmp_path: Path) -> None:
    assert_kernel_accepts(params_for(spec, tmp_path))


def test_geometry_follows_the_spec(tmp_path: Path) -> None:
    b = params_for("mem,size=1M,block_size=4096", tmp_path).basic
    assert (b.logical_bs_shift, b.dev_sectors, b.max_sectors) == (12, (1 << 20) // 512, MAX_IO // 512)
    b = params_for("mem,size=1M", tmp_path).basic
    assert b.logical_bs_shift == 9
    assert b.physical_bs_shift == PAGE_SHIFT  # so mkfs aligns to pages


def test_the_file_target_has_a_volatile_cache_and_honours_fua(tmp_path: Path) -> None:
    attrs = params_for("file", tmp_path).basic.attrs
    assert attrs & UBLK_ATTR_VOLATILE_CACHE and attrs & UBLK_ATTR_FUA


@pytest.mark.parametrize("spec", ["null,size=1M", "mem,size=1M"])
def test_ram_and_null_have_no_cache_to_flush(spec: str, tmp_path: Path) -> None:
    assert params_for(spec, tmp_path).basic.attrs & (UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA) == 0


@pytest.mark.parametrize("spec", ["null,size=1M", "mem,size=1M", "file"])
def test_writable_targets_take_discard_and_write_zeroes(spec: str, tmp_path: Path) -> None:
    p = params_for(spec, tmp_path)
    assert p.types & UBLK_PARAM_TYPE_DISCARD
    assert p.discard.max_discard_sectors > 0 and p.discard.max_write_zeroes_sectors > 0
    assert p.discard.max_discard_sectors <= p.basic.dev_sectors


@pytest.mark.parametrize("spec", ["file,read_only=1", "mem,size=1M,read_only=1"])
def test_read_only_targets_say_so_and_take_no_discard(spec: str, tmp_path: Path) -> None:
    p = params_for(spec, tmp_path)
    assert p.basic.attrs & UBLK_ATTR_READ_ONLY
    assert not p.types & UBLK_PARAM_TYPE_DISCARD
    assert not p.basic.attrs & UBLK_ATTR_VOLATILE_CACHE
