"""C integer types and the conversions of C11 6.3.1, on the LP64 data model.

Both translators (macro bodies and inline helpers) type every subexpression with a
:class:`CInt` so that Python's unbounded integers give the value C gives: unsigned results
wrap, casts truncate, and ``-1 < 0U`` is false.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CInt:
    """An integer type: its C spelling, width, signedness and conversion rank."""

    name: str
    bits: int
    signed: bool
    rank: int
    ctype: str  # the ctypes class a struct member of this type becomes

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else self.mask

    def contains(self, value: int) -> bool:
        return self.min <= value <= self.max

    def wrap(self, value: int) -> int:
        """The value C stores when ``value`` is converted to this type (GCC: modulo 2**N)."""
        value &= self.mask
        if self.signed and value > self.max:
            value -= 1 << self.bits
        return value

    def unsigned(self) -> CInt:
        return _UNSIGNED_OF.get(self, self)


BOOL = CInt("_Bool", 8, False, 0, "ctypes.c_bool")
CHAR = CInt("char", 8, True, 1, "ctypes.c_char")  # signed on x86; UAPI uses __u8/__s8
SCHAR = CInt("signed char", 8, True, 1, "ctypes.c_int8")
UCHAR = CInt("unsigned char", 8, False, 1, "ctypes.c_uint8")
SHORT = CInt("short", 16, True, 2, "ctypes.c_int16")
USHORT = CInt("unsigned short", 16, False, 2, "ctypes.c_uint16")
INT = CInt("int", 32, True, 3, "ctypes.c_int32")
UINT = CInt("unsigned int", 32, False, 3, "ctypes.c_uint32")
LONG = CInt("long", 64, True, 4, "ctypes.c_long")
ULONG = CInt("unsigned long", 64, False, 4, "ctypes.c_ulong")
LLONG = CInt("long long", 64, True, 5, "ctypes.c_int64")
ULLONG = CInt("unsigned long long", 64, False, 5, "ctypes.c_uint64")

SIZE_T = ULONG

_UNSIGNED_OF = {CHAR: UCHAR, SCHAR: UCHAR, SHORT: USHORT, INT: UINT, LONG: ULONG,
                LLONG: ULLONG}

# Type specifier multisets (sorted) -> type, as C11 6.7.2 lists them.
_SPECIFIERS: dict[tuple[str, ...], CInt] = {}


def _spell(t: CInt, *spellings: str) -> None:
    for spelling in spellings:
        _SPECIFIERS[tuple(sorted(spelling.split()))] = t


_spell(BOOL, "_Bool")
_spell(CHAR, "char")
_spell(SCHAR, "signed char")
_spell(UCHAR, "unsigned char")
_spell(SHORT, "short", "signed short", "short int", "signed short int")
_spell(USHORT, "unsigned short", "unsigned short int")
_spell(INT, "int", "signed", "signed int")
_spell(UINT, "unsigned", "unsigned int")
_spell(LONG, "long", "signed long", "long int", "signed long int")
_spell(ULONG, "unsigned long", "unsigned long int")
_spell(LLONG, "long long", "signed long long", "long long int", "signed long long int")
_spell(ULLONG, "unsigned long long", "unsigned long long int")


def from_specifiers(names: list[str]) -> CInt | None:
    """The type named by specifiers such as ``['unsigned', 'long', 'long']``, or None."""
    return _SPECIFIERS.get(tuple(sorted(names)))


def promote(t: CInt) -> CInt:
    """Integer promotion: everything narrower than int computes as int."""
    return INT if t.rank < INT.rank else t


def common(a: CInt, b: CInt) -> CInt:
    """The usual arithmetic conversions for two integer operands."""
    a, b = promote(a), promote(b)
    if a == b:
        return a
    if a.signed == b.signed:
        return a if a.rank > b.rank else b
    u, s = (a, b) if not a.signed else (b, a)
    if u.rank >= s.rank:
        return u
    if s.bits > u.bits:
        return s
    return s.unsigned()


def literal_type(digits: str, suffix: str) -> tuple[int, CInt]:
    """Value and type of an integer constant (C11 6.4.4.1), e.g. ``('0x80000000', '')``."""
    text = digits.lower()
    if text.startswith("0x"):
        value, decimal = int(text[2:], 16), False
    elif text.startswith("0b"):
        value, decimal = int(text[2:], 2), False
    elif len(text) > 1 and text.startswith("0"):
        value, decimal = int(text[1:], 8), False
    else:
        value, decimal = int(text), True
    suffix = suffix.lower()
    unsigned = "u" in suffix
    longs = suffix.count("l")
    if longs == 0:
        candidates = [INT, UINT, LONG, ULONG, LLONG, ULLONG]
    elif longs == 1:
        candidates = [LONG, ULONG, LLONG, ULLONG]
    else:
        candidates = [LLONG, ULLONG]
    if unsigned:
        candidates = [c for c in candidates if not c.signed]
    elif decimal:
        candidates = [c for c in candidates if c.signed]
    for t in candidates:
        if t.contains(value):
            return value, t
    raise ValueError(f"integer constant {digits}{suffix} does not fit any C type")
