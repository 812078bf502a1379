"""Types from the header: what becomes a class, what is refused, what is documented."""

from __future__ import annotations

import ctypes
import inspect
from pathlib import Path

import pytest

from codegen_support import UBLK_HEADERS, load_generated, model_of
from ublk_bindings_codegen.diagnostics import GenError


def write(tmp_path: Path, text: str) -> Path:
    header = tmp_path / "t.h"
    header.write_text("#include <linux/types.h>\n" + text)
    return header


def test_a_struct_only_in_a_comment_is_not_a_definition() -> None:
    model = model_of(UBLK_HEADERS["bundled"])
    assert "struct ublk_elem_buffer {" in UBLK_HEADERS["bundled"].read_text()
    assert "ublk_elem_buffer" not in {r.name for r in model.records}


def test_packed_union_keeps_gcc_layout(tmp_path: Path) -> None:
    module = load_generated(write(tmp_path, (
        "struct outer {\n\t__u8 a;\n\tunion {\n\t\t__u32 x;\n\t\t__u16 y;\n"
        "\t} __attribute__((packed));\n\t__u8 b;\n};\n")), tmp_path)
    assert module.outer.x.offset == 1  # packed: alignment 1
    assert ctypes.sizeof(module.outer) == 6


def test_unsupported_attributes_are_refused_with_their_line(tmp_path: Path) -> None:
    header = write(tmp_path, "struct s {\n\t__u32 a __attribute__((aligned(64)));\n};\n")
    with pytest.raises(GenError, match=rf"{header}:3: unsupported attribute .*aligned\(64\)"):
        model_of(header)


def test_nested_named_and_inline_records_and_bitfields(tmp_path: Path) -> None:
    module = load_generated(write(tmp_path, (
        "struct outer {\n\tstruct inner { __u16 v; } first;\n\tstruct inner second[2];\n"
        "\tstruct { __u8 p, q; } pair;\n\t__u32 low : 3, high : 29;\n};\n"
        "typedef struct outer outer_t;\n")), tmp_path)
    assert module.outer.second.offset == 2 and module.outer.pair.offset == 6
    record = module.outer()
    record.low, record.high = 5, 7
    assert bytes(record)[8:12] == (5 | 7 << 3).to_bytes(4, "little")
    assert module.outer_t is module.outer


def test_flexible_and_zero_length_arrays_are_zero_sized(tmp_path: Path) -> None:
    module = load_generated(write(tmp_path, (
        "struct s {\n\t__u64 n;\n\t__u8 cmd[0];\n};\n"
        "struct t {\n\t__u32 n;\n\t__DECLARE_FLEX_ARRAY(struct s, items);\n};\n")), tmp_path)
    assert (module.s.cmd.offset, module.s.cmd.size) == (8, 0)
    assert (module.t.items.offset, ctypes.sizeof(module.t)) == (8, 8)


def test_declarations_that_are_not_types_are_refused(tmp_path: Path) -> None:
    header = write(tmp_path, "extern int some_variable;\n")
    with pytest.raises(GenError, match=rf"{header}:2: unsupported object declaration"):
        model_of(header)


def test_docstrings_come_from_the_c_comments() -> None:
    from ublk_bindings import ublk_cmd

    assert inspect.getdoc(ublk_cmd.ublksrv_ctrl_cmd) == "shipped via sqe->cmd of io_uring command"
    source = inspect.getsource(ublk_cmd.ublksrv_io_desc)
    assert "#: start sector for this io\n    start_sector: int" in source
    assert "bit16 ~ bit23: flags" in (inspect.getdoc(ublk_cmd.ublk_sqe_addr_to_auto_buf_reg)
                                      or "")


def test_header_typedefs_enums_and_stand_in_records_are_emitted() -> None:
    from ublk_bindings import io_uring

    # struct __kernel_timespec comes from our stand-in time_types.h, embedded by the header.
    assert io_uring.io_uring_reg_wait.ts.size == 16
    assert getattr(io_uring, "__kernel_timespec").tv_nsec.offset == 8
    assert io_uring.IORING_OP_URING_CMD == io_uring.io_uring_op.IORING_OP_URING_CMD == 46
    assert io_uring.IORING_REGISTER_USE_REGISTERED_RING == 1 << 31
