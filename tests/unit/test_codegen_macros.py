"""The macro pass: C integer semantics of #define bodies, and what it refuses.

Expected values are C's (C11 6.3.1 conversions, 6.4.4.1 literal types, 6.5 operators on
LP64), worked out by hand; the compiler checks repeat the exercise with gcc on real headers.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from codegen_support import load_generated, model_of
from ublk_bindings_codegen.diagnostics import GenErrors

SEMANTICS = [
    ("(1U << 31)", 0x80000000),  # unsigned int holds bit 31
    ("(~0U)", 0xFFFFFFFF),
    ("(~0ULL)", 2**64 - 1),
    ("(~0)", -1),
    ("(-1 < 0U)", 0),  # -1 converts to UINT_MAX first
    ("(-1 < 0L)", 1),
    ("(-1L < 0U)", 1),  # long holds every unsigned int: compared as long
    ("(0xffffffff + 1)", 0),  # hex literal that fits unsigned int: wraps there
    ("(4294967295 + 1)", 4294967296),  # decimal literal too big for int is long
    ("(0x7fffffff + 1U)", 0x80000000),
    ("((__u8)0x1ff)", 0xFF),
    ("((__s8)0xff)", -1),
    ("((__u16)-1)", 0xFFFF),
    ("((__u32)1 << 31)", 0x80000000),
    ("(10 / -3)", -3),  # truncates toward zero
    ("(-7 % 3)", -1),
    ("(-1 >> 1)", -1),  # arithmetic shift of a negative int (GCC)
    ("((1ULL << 63) >> 63)", 1),
    ("'u'", 117),
    ("'\\n'", 10),
    ("(-1 ? -1 : 0U)", 0xFFFFFFFF),  # both arms convert to unsigned int
    ("((3 && 0) | (3 || 0) << 1)", 2),
    ("!5", 0),
    ("0777", 0o777),
    ("0x04", 4),
    ("((2 * 3 + 4 - 1) == 9)", 1),
    ("(1 ? 2 : 3)", 2),
    ("(~(((__u64)1 << 48) - 1))", 0xFFFF000000000000),
    ("(-ENODEV)", -19),
]


@pytest.fixture(scope="module")
def semantics(tmp_path_factory: pytest.TempPathFactory) -> object:
    tmp_path = tmp_path_factory.mktemp("semantics")
    header = tmp_path / "semantics.h"
    header.write_text("#include <linux/types.h>\n" + "".join(
        f"#define CASE_{index} {body}\n" for index, (body, _) in enumerate(SEMANTICS)))
    return load_generated(header, tmp_path)


@pytest.mark.parametrize("index", range(len(SEMANTICS)),
                         ids=[body for body, _ in SEMANTICS])
def test_c_integer_semantics(semantics: object, index: int) -> None:
    assert getattr(semantics, f"CASE_{index}") == SEMANTICS[index][1]


def test_macros_see_other_macros_defined_later_enums_and_sizeof(tmp_path: Path) -> None:
    header = tmp_path / "refs.h"
    header.write_text(
        "#include <linux/types.h>\n"
        "#define USES_LATER (LATER + 1)\n"
        "#define LATER 41\n"
        "enum colour { RED, GREEN = 5, BLUE };\n"
        "#define FROM_ENUM (BLUE << 4)\n"
        "struct s { __u64 a; __u8 b; };\n"
        "#define SIZE_OP _IOWR('x', USES_LATER, struct s)\n"
        "#define SIZE_PLUS (SIZE_OP + 1)\n"
        "#define ALIAS SIZE_PLUS\n")
    module = load_generated(header, tmp_path)
    assert (module.USES_LATER, module.FROM_ENUM) == (42, 6 << 4)
    size = ctypes.sizeof(module.s)
    assert size == 16
    assert module.SIZE_OP == (3 << 30) | (size << 16) | (ord("x") << 8) | 42
    assert module.ALIAS == module.SIZE_PLUS == module.SIZE_OP + 1
    assert (module.RED, module.GREEN, module.BLUE) == (0, 5, 6)
    assert repr(module.colour(6)) == "<colour.BLUE: 6>"


def test_defines_inside_struct_bodies_are_kept(tmp_path: Path) -> None:
    header = tmp_path / "inner.h"
    header.write_text("#include <linux/types.h>\nstruct p {\n#define P_ONE (1 << 0)\n"
                      "\t__u32 flags;\n#define P_TWO (1 << 1)\n};\n")
    module = load_generated(header, tmp_path)
    assert (module.P_ONE, module.P_TWO) == (1, 2)


def test_include_guards_are_not_constants(tmp_path: Path) -> None:
    header = tmp_path / "guard.h"
    header.write_text("#ifndef GUARD_H\n#define GUARD_H\n#define REAL 1\n#endif\n")
    assert [c.name for c in model_of(header).constants] == ["REAL"]


def test_every_bad_macro_is_reported_with_its_line(tmp_path: Path) -> None:
    header = tmp_path / "bad.h"
    header.write_text(
        "#define GOOD 1\n"
        "#define UNKNOWN (NOT_DEFINED_ANYWHERE + 1)\n"
        "#define LOOP_A (LOOP_B)\n"
        "#define LOOP_B (LOOP_A)\n"
        "#define FUNCTION_LIKE(x) ((x) + 1)\n"
        "#define EMPTY\n"
        "#define TEXT \"not a number\"\n"
        "#define TOO_FAR (1U << 32)\n")
    with pytest.raises(GenErrors) as caught:
        model_of(header)
    lines = str(caught.value).splitlines()
    assert f"{header}:2: macro UNKNOWN: unknown identifier 'NOT_DEFINED_ANYWHERE'" in lines
    assert any(line.startswith(f"{header}:3: macro LOOP_A refers to itself") for line in lines)
    assert f"{header}:5: function-like macro FUNCTION_LIKE(x) is not translated" in lines
    assert f"{header}:6: macro EMPTY has no value" in lines
    assert f"{header}:7: macro TEXT: cannot translate string constant \"not a number\"" in lines
    assert f"{header}:8: macro TOO_FAR: shift count 32 is out of range for unsigned int" in lines
    assert not any("GOOD" in line for line in lines)
