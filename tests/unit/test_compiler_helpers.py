"""The translated inline helpers compute what the C helpers compute, on random inputs.

For each supported ublk_cmd.h the C helpers are compiled with gcc and called with the
same random arguments (64-bit patterns, so C's argument conversion is exercised) and
random struct contents as the generated Python functions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen_support import UBLK_HEADERS, helpers_against_gcc, model_of, requires_gcc

pytestmark = requires_gcc


@pytest.mark.parametrize("header", UBLK_HEADERS.values(), ids=UBLK_HEADERS.keys())
def test_helpers_agree_with_gcc(header: Path, tmp_path: Path) -> None:
    compared, mismatches = helpers_against_gcc(header, tmp_path)
    assert compared >= 200
    assert not mismatches[:20]


def test_all_seven_helpers_of_7_2_are_translated() -> None:
    names = [f.name for f in model_of(UBLK_HEADERS["bundled"]).functions]
    assert names == ["ublksrv_get_op", "ublksrv_get_flags", "ublk_sqe_addr_to_auto_buf_reg",
                     "ublk_auto_buf_reg_to_sqe_addr", "ublk_shmem_zc_addr",
                     "ublk_shmem_zc_index", "ublk_shmem_zc_offset"]


def test_struct_pointer_parameters_take_the_generated_class() -> None:
    import ublk_bindings as u

    desc = u.ublksrv_io_desc(op_flags=(u.UBLK_IO_F_FUA << 0) | u.UBLK_IO_OP_WRITE)
    assert u.ublksrv_get_op(desc) == u.UBLK_IO_OP_WRITE
    assert u.ublksrv_get_flags(desc) << 8 == u.UBLK_IO_F_FUA
    reg = u.ublk_sqe_addr_to_auto_buf_reg(0x1122334455667788)
    assert isinstance(reg, u.ublk_auto_buf_reg)
    assert u.ublk_auto_buf_reg_to_sqe_addr(reg) == 0x1122334455667788
