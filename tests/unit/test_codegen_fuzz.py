"""Mutated copies of the bundled ublk_cmd.h: a module that matches gcc, or a file:line error.

Hypothesis truncates the header, flips bytes and inserts constructs at line boundaries
(bit-fields, attributes, pragmas, typedefs, enums, reserved names, stray tokens).  For each
mutant the generator must either produce a module, which is imported (and, for a sample,
checked against gcc record by record), or raise its own error carrying a file:line; any
other exception is a bug.  About 20 s on one core (run it with more examples and
without ``derandomize`` to hunt: 1,000 random mutants passed when it was written).
"""

from __future__ import annotations

import tempfile
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegen_support import BUNDLED, layout_mismatches, requires_gcc
from ublk_bindings_codegen.diagnostics import GenError, GenErrors
from ublk_bindings_codegen.generate import generate

ORIGINAL = BUNDLED["ublk_cmd.h"].read_bytes()
LINE_STARTS = [0] + [i + 1 for i, byte in enumerate(ORIGINAL) if byte == ord("\n")]

CONSTRUCTS = [
    b"struct fz_bits { __u32 a : 3; __u32 : 0; __u32 b : 2; __u32 : 3; __u8 c; };\n",
    b"struct fz_mixed { __u8 a : 3; __u32 b : 20; __u64 c : 40; };\n",
    b"struct fz_packed { __u8 a; __u64 b; } __attribute__((packed));\n",
    b"struct __attribute__((packed)) fz_kw { __u8 a : 3, b : 5; __u16 c; };\n",
    b"#pragma pack(push, 1)\nstruct fz_pragma { __u8 a; __u32 b; };\n#pragma pack(pop)\n",
    b"#pragma pack(2)\n",
    b"struct fz_aligned { __u8 a; __u32 b __attribute__((aligned(8))); } "
    b"__attribute__((aligned(8)));\n",
    b"typedef struct { __u16 x; } fz_t;\n",
    b"struct fz_names { __u32 _fields_, _pack_, _anonymous_, from, class; };\n",
    b"enum fz_enum { FZ_A = -1, FZ_B = 0xffffffffffffffff };\n",
    b"enum fz_ok { FZ_C = 1, FZ_D };\n",
    b"union fz_union { __u32 a : 3; __u64 b; };\n",
    b"#define FZ_MACRO (1U << 31)\n",
    b"__attribute__((weird)) ",
    b"struct ", b"{", b"}", b";", b"\xff\xfe", b"\x00", b"/*", b"#if 0\n", b"#endif\n",
]


@st.composite
def mutants(draw: st.DrawFn) -> tuple[str, bytes]:
    data = bytearray(ORIGINAL)
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "insert"]))
    if kind == "truncate":
        return kind, bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return kind, bytes(data)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(LINE_STARTS))
        data[at:at] = draw(st.sampled_from(CONSTRUCTS))
    return kind, bytes(data)


@requires_gcc
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutant=mutants(), compile_check=st.integers(0, 5))
def test_a_mutated_header_gives_a_module_gcc_agrees_with_or_a_file_line_error(
        mutant: tuple[str, bytes], compile_check: int) -> None:
    kind, text = mutant
    with tempfile.TemporaryDirectory() as scratch:
        header = Path(scratch) / "ublk_cmd.h"
        header.write_bytes(text)
        try:
            source = generate(header, Path(scratch) / "out.py")
        except (GenError, GenErrors) as e:
            errors = e.errors if isinstance(e, GenErrors) else [e]
            assert all(error.location is not None and error.location.file for error in errors)
            return
        module = types.ModuleType("fuzzed")
        exec(compile(source, "fuzzed.py", "exec"), module.__dict__)  # it imports
        if compile_check == 0 and kind == "insert":
            assert layout_mismatches(header, Path(scratch)) == []
