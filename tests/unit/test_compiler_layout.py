"""Every struct and union of every supported header has the layout gcc gives it.

For the ublk_cmd.h of Linux 6.1, 6.12 and 7.2 and for io_uring.h: sizeof and alignment of
each record, offset and size of each member (members of anonymous unions and structs too),
measured by gcc on the same include path the generator parsed, against the generated
module imported from a temporary file.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from codegen_support import (ALL_HEADERS, defined_records, load_generated, members,
                             requires_gcc, run_c)

pytestmark = requires_gcc


@pytest.mark.parametrize("header", ALL_HEADERS.values(), ids=ALL_HEADERS.keys())
def test_every_record_defined_in_the_header_is_generated(header: Path, tmp_path: Path) -> None:
    module = load_generated(header, tmp_path)
    missing = {tag for tag in defined_records(header) if not hasattr(module, tag)}
    assert not missing


@pytest.mark.parametrize("header", ALL_HEADERS.values(), ids=ALL_HEADERS.keys())
def test_record_sizes_alignments_and_member_offsets_match_gcc(header: Path,
                                                              tmp_path: Path) -> None:
    module = load_generated(header, tmp_path)
    checks: list[tuple[str, int]] = []
    lines: list[str] = []
    for tag in sorted(defined_records(header)):
        cls = getattr(module, tag)
        kind = "union" if issubclass(cls, ctypes.Union) else "struct"
        checks += [(f"sizeof({kind} {tag})", ctypes.sizeof(cls)),
                   (f"_Alignof({kind} {tag})", ctypes.alignment(cls))]
        for member in members(cls):
            field = getattr(cls, member)
            checks.append((f"__builtin_offsetof({kind} {tag}, {member})", field.offset))
            if field.size:  # C has no sizeof for a flexible array member ("[]")
                checks.append((f"sizeof((({kind} {tag} *)0)->{member})", field.size))
    lines = [f"PRINT_INT({expression});" for expression, _ in checks]
    measured = run_c(header, "\n".join(lines), tmp_path)
    mismatches = [(expression, int(c), python) for (expression, python), c
                  in zip(checks, measured) if int(c) != python]
    assert len(measured) == len(checks)
    assert not mismatches


def test_anonymous_members_are_reachable_as_in_c(tmp_path: Path) -> None:
    from ublk_bindings import io_uring, ublk_cmd

    cmd = ublk_cmd.ublksrv_io_cmd(addr=0x1234)
    assert cmd.zone_append_lba == 0x1234  # the same union slot
    desc = ublk_cmd.ublksrv_io_desc(nr_sectors=8)
    assert desc.nr_zones == 8
    sqe = io_uring.io_uring_sqe(cmd_op=0xC0207504, buf_index=3, addr3=1)
    assert (sqe.off & 0xFFFFFFFF, sqe.buf_group, sqe.attr_ptr) == (0xC0207504, 3, 1)


def test_structs_keep_the_c_abi_holes_no_packing() -> None:
    from ublk_bindings import ublk_cmd

    # seg is 8-aligned: gcc leaves 4 bytes after dma (ends at 116); clang2py's _pack_=1 does not.
    assert ublk_cmd.ublk_params.dma.offset + ublk_cmd.ublk_params.dma.size == 116
    assert ublk_cmd.ublk_params.seg.offset == 120
