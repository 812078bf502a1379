"""C -> Python translation of inline helpers: tricky C semantics, checked against gcc.

Each helper below targets one trap of a naive port (unsigned wrap, signed/unsigned
comparison, truncating casts and assignments, arithmetic shift, C division, struct
results); gcc runs the C and the generated Python must agree on random inputs.
Constructs outside the subset must be refused with file:line, never mistranslated.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen_support import (UBLK_HEADERS, helpers_against_gcc, load_generated, model_of,
                             requires_gcc)
from ublk_bindings_codegen.diagnostics import GenErrors

TRICKY = """\
#include <linux/types.h>

struct pair {
	__u32 lo;
	__s16 hi;
	__u8 small[4];
};

static __inline__ __u32 unsigned_wrap(__u32 a, __u32 b)
{
	return a - b;
}

static __inline__ int signed_vs_unsigned(int a, unsigned int b)
{
	return a < b;
}

static __inline__ __u16 narrowing_assignment(__u64 x)
{
	__u16 y = x;

	y += 0xffff;
	y <<= 3;
	return y;
}

static __inline__ __s8 to_signed_char(__u32 x)
{
	return (__s8)x;
}

static __inline__ __u64 branches(__u64 x)
{
	if (x & 1)
		return x >> 1;
	else if (x & 2) {
		return ~x;
	}
	return -x;
}

static __inline__ __s64 arithmetic_shift(__s32 a)
{
	return (__s64)a * 8 + (a >> 31) + (a >> 4);
}

static __inline__ __u32 logic_and_chars(__u32 x)
{
	return (x == 'u') + !x + (x && (x > 7)) + (x > 3 ? 100 : -1);
}

static __inline__ __u32 division(__u32 a, __u32 b)
{
	return b ? a / b + a % b : 0;
}

static __inline__ __s32 signed_division(__u8 a, __u8 b)
{
	return b ? (a - 128) / (b | 1) + (a - 128) % (b | 1) : 7;
}

static __inline__ struct pair make_pair(__u64 x)
{
	struct pair p = { .lo = x, .hi = x >> 32 };

	return p;
}

static __inline__ __u32 read_pair(const struct pair *p)
{
	return p->lo + p->hi + p->small[2];
}

static __inline__ __u32 calls_another(__u32 a)
{
	return unsigned_wrap(a, 5) * 3;
}

static __inline__ __u32 no_parameters(void)
{
	return 42;
}

static __inline__ __u32 pending_wraps(__u32 a, __u32 b)
{
	return (a - b) * 3 + ~a - (b << 7);
}

static __inline__ __u64 widened_after_wrap(__u32 a, __u16 b)
{
	return (__u64)(a - 1) << 40 | (__u64)(__u16)(b * b) << 8 | (a - b) >> 28;
}

static __inline__ int compare_after_wrap(__u32 a, __u32 b)
{
	return a + b < a;
}

static __inline__ __u32 by_value(struct pair p, struct pair *out)
{
	p.lo += 1;
	out->lo = p.lo;
	out->hi = -p.hi;
	return p.lo;
}
"""


@pytest.fixture
def tricky(tmp_path: Path) -> Path:
    header = tmp_path / "tricky.h"
    header.write_text(TRICKY)
    return header


@requires_gcc
def test_tricky_helpers_agree_with_gcc(tricky: Path, tmp_path: Path) -> None:
    compared, mismatches = helpers_against_gcc(tricky, tmp_path, cases=150)
    assert compared > 1500
    assert not mismatches[:20]


def test_helpers_keep_names_and_parameters(tricky: Path, tmp_path: Path) -> None:
    module = load_generated(tricky, tmp_path)
    assert module.unsigned_wrap.__code__.co_varnames[:2] == ("a", "b")
    assert module.unsigned_wrap(0, 1) == 0xFFFFFFFF
    assert module.signed_vs_unsigned(-1, 0) == 0  # -1 converts to UINT_MAX
    assert module.to_signed_char(0xFF) == -1
    assert module.no_parameters() == 42
    pair = module.make_pair(0xFFFF_8000_0000_0001)
    assert (pair.lo, pair.hi) == (1, -0x8000)
    out = module.pair()
    assert module.by_value(pair, out) == 2
    assert (pair.lo, out.lo, out.hi) == (1, 2, 0x8000 - 0x10000)  # -(-0x8000) wraps in __s16


def test_masks_appear_only_where_c_truncates(tricky: Path) -> None:
    helpers = {f.name: f for f in model_of(tricky).functions}
    # Parameters convert once on entry, the narrowing initialisation truncates once.
    assert helpers["narrowing_assignment"].body[:2] == [
        "    x = x & 0xffffffffffffffff", "    y = x & 0xffff"]
    # A value already known to fit its type is not masked again.
    assert helpers["no_parameters"].body == ["    return 42"]
    # Wrap-around is applied once, where the value is used, not after every operator.
    assert helpers["read_pair"].body[-1] == \
        "    return (p.lo + p.hi + p.small[2]) & 0xffffffff"
    zc = {f.name: f for f in model_of(UBLK_HEADERS["bundled"]).functions}
    assert zc["ublk_shmem_zc_index"].body[-1] == "    return (addr >> 32) & 0xffff"
    assert zc["ublksrv_get_flags"].body == ["    return iod.op_flags >> 8"]


@pytest.mark.parametrize("body, construct", [
    ("__u32 s = 0; for (; n; n--) s += n; return s;", "a for loop"),
    ("while (n) n--; return n;", "a while loop"),
    ("return *(&n);", "unary '*'"),
    ("switch (n) { default: return 1; }", "a switch"),
    ("return undeclared(n);", "call to 'undeclared', which is not a translated helper"),
])
def test_unsupported_constructs_are_named_with_file_and_line(
        tmp_path: Path, body: str, construct: str) -> None:
    header = tmp_path / "bad.h"
    header.write_text("#include <linux/types.h>\n\n"
                      "static __inline__ __u32 bad(__u32 n)\n"
                      f"{{\n\t{body}\n}}\n")
    with pytest.raises(GenErrors) as caught:
        model_of(header)
    message = str(caught.value)
    assert message.startswith(f"{header}:5: static inline bad(): ")
    assert construct in message
