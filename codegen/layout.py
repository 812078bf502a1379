"""Record layouts: what gcc does on x86-64, what ctypes will do, and refusing the difference.

:func:`gcc_layout` is the System V x86-64 psABI algorithm as gcc implements it: natural
alignment; a bit-field goes at the next free bit unless it would span more alignment units
of its type than the type has (then at the next unit); unnamed and zero-width bit-fields
align nothing; ``packed`` drops alignment (and that rule); ``aligned(N)`` raises it;
``#pragma pack(N)`` caps it.

:func:`plan` is the ``_fields_`` the renderer writes: the members, plus padding the
generator adds where C has none in the class (an unnamed bit-field's bits, what a
zero-width bit-field skips, a zero-length ``c_uintN * 0`` that carries an ``aligned(N)``).

:func:`ctypes_layout` is what ctypes makes of that plan on every Python the bindings
support: 3.9 to 3.13 lay bit-fields out with the old ``cfield.c`` rules, 3.14+ like gcc
(``_pack_`` with MSVC's).  Where those could differ (a bit-field continuing a storage unit of
another size) it refuses, so a plan it accepts means the same bytes everywhere.

:func:`verify` compares the two and refuses a record, at its file:line and naming the
construct, whose gcc layout ctypes would not reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from . import cint
from .diagnostics import GenError
from .model import Array, Field, Record, RecordRef, Scalar, TypeRef

PAD_PREFIX = "_ublk_pad"
ALIGN_PREFIX = "_ublk_align"
_UNSIGNED_OF_SIZE = {1: cint.UCHAR, 2: cint.USHORT, 4: cint.UINT, 8: cint.ULLONG}


@dataclass(frozen=True)
class Layout:
    """Size and alignment in bytes; each member's (bit offset, bits) by its index."""

    size: int
    align: int
    members: dict[int, tuple[int, int]]


@dataclass(frozen=True)
class Slot:
    """One entry of ``_fields_``; ``field`` is the member's index (None for added padding)."""

    name: str
    type: TypeRef
    bits: int | None
    field: int | None
    padding: bool = False  # a generated private name (an unnamed bit-field is both)


class Unportable(Exception):
    """ctypes versions would lay this plan out differently."""


Sizes = Callable[[str], Layout]


def size_align(t: TypeRef, records: Sizes) -> tuple[int, int]:
    """sizeof and _Alignof of a member type, in bytes."""
    if isinstance(t, Scalar):
        return t.cint.bits // 8, t.cint.bits // 8
    if isinstance(t, RecordRef):
        layout = records(t.name)
        return layout.size, layout.align
    size, align = size_align(t.element, records)
    return size * t.length, align


def _up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def gcc_layout(record: Record, records: Sizes) -> Layout:
    """The layout gcc gives ``record`` on x86-64 (SysV psABI, PCC_BITFIELD_TYPE_MATTERS)."""
    struct = record.kind == "struct"
    bit = end = 0
    align = 1
    placed: dict[int, tuple[int, int]] = {}
    for index, f in enumerate(record.fields):
        size, natural = size_align(f.type, records)
        packed = record.packed or f.packed
        wanted = 1 if packed else natural
        if f.aligned:
            wanted = max(wanted, f.aligned)
        if record.pack:
            wanted = min(wanted, record.pack)
        if f.bits is None:
            offset = _up(bit, wanted * 8) if struct else 0
            placed[index] = (offset, size * 8)
            align = max(align, wanted)
            bit = offset + size * 8 if struct else bit
            end = max(end, offset + size * 8)
            continue
        if f.bits == 0:  # aligns what follows to its type, even when packed; aligns nothing
            bit = _up(bit, natural * 8) if struct else bit
            continue
        if struct and not packed:
            unit = wanted * 8
            if (bit + f.bits + unit - 1) // unit - bit // unit > size * 8 // unit:
                bit = _up(bit, unit)
        offset = bit if struct else 0
        placed[index] = (offset, f.bits)
        bit = offset + f.bits if struct else bit
        end = max(end, offset + f.bits)
        if f.name:  # an unnamed bit-field does not align its record
            align = max(align, wanted)
    if record.aligned:
        align = max(align, record.aligned)
    return Layout(_up(-(-max(bit, end) // 8), align), align, placed)


def plan(record: Record, records: Sizes) -> list[Slot]:
    """The ``_fields_`` entries for ``record``, padding included (see the module doc).

    An ``aligned(N)`` gets its zero-length carrier only where N is more than ctypes gives
    anyway (``__aligned_u64`` on a ``__u64`` needs none).
    """
    pack = ctypes_pack(record)

    def natural(t: TypeRef) -> int:
        align = size_align(t, records)[1]
        return min(align, pack) if pack else align

    slots: list[Slot] = []
    if record.aligned and record.aligned > max((natural(f.type) for f in record.fields),
                                               default=1):
        slots.append(_align_slot(record.aligned, len(slots)))
    unit: tuple[int, int] | None = None  # (bits of the open bit-field unit, bits used)
    for index, f in enumerate(record.fields):
        if f.aligned and f.bits is None and f.aligned > natural(f.type):
            slots.append(_align_slot(f.aligned, len(slots)))
        if f.bits is None:
            slots.append(Slot(f.python_name, f.type, None, index))
            unit = None
            continue
        assert isinstance(f.type, Scalar)
        width = f.type.cint.bits
        if f.bits == 0:
            if unit is not None and unit[1] < unit[0]:
                filler = Scalar(_UNSIGNED_OF_SIZE[unit[0] // 8], "padding")
                slots.append(Slot(f"{PAD_PREFIX}{len(slots)}", filler, unit[0] - unit[1], None,
                                  True))
            unit = None
            continue
        if unit is not None and unit[0] == width and unit[1] + f.bits <= width:
            unit = (width, unit[1] + f.bits)
        else:
            unit = (width, f.bits)
        if f.name:
            slots.append(Slot(f.python_name, f.type, f.bits, index))
        else:
            slots.append(Slot(f"{PAD_PREFIX}{len(slots)}", f.type, f.bits, index, True))
    return slots


def _align_slot(value: int, position: int) -> Slot:
    return Slot(f"{ALIGN_PREFIX}{position}", Array(Scalar(_UNSIGNED_OF_SIZE[value], "padding"),
                                                   0), None, None, True)


def ctypes_pack(record: Record) -> int | None:
    """The ``_pack_`` the class is rendered with."""
    return 1 if record.packed else record.pack


def ctypes_layout(record: Record, slots: list[Slot], records: Sizes) -> Layout:
    """What ctypes (3.9+) makes of ``slots``; :class:`Unportable` where versions differ."""
    struct = record.kind == "struct"
    pack = ctypes_pack(record)
    offset = size = 0
    align = 1
    unit: tuple[int, int, int] | None = None  # (start byte, bits, bits used)
    placed: dict[int, tuple[int, int]] = {}
    previous: Slot | None = None
    for slot in slots:
        if not struct and slot.bits is not None and previous is not None and (
                previous.bits is not None):
            raise Unportable(slot.name)  # 3.9-3.13 give a union's 2nd bit-field offset -N
        previous = slot
        length, natural = size_align(slot.type, records)
        wanted = min(natural, pack) if pack else natural
        align = max(align, wanted)
        if slot.bits is None:
            start = _up(offset, wanted) if struct else 0
            where = (start * 8, length * 8)
            offset = start + length if struct else offset
            size = max(size, start + length)
            unit = None
        else:
            bits = length * 8
            if struct and unit is not None and unit[1] == bits and unit[2] + slot.bits <= bits:
                where = (unit[0] * 8 + unit[2], slot.bits)
                unit = (unit[0], bits, unit[2] + slot.bits)
            else:
                if struct and unit is not None and unit[2] + slot.bits <= max(bits, unit[1]):
                    raise Unportable(slot.name)  # 3.9-3.12 would widen or reuse the unit
                start = _up(offset, wanted) if struct else 0
                where = (start * 8, slot.bits)
                unit = (start, bits, slot.bits) if struct else None
                offset = start + length if struct else offset
                size = max(size, start + length)
        if slot.field is not None:
            placed[slot.field] = where
    return Layout(_up(max(offset, size), align), align, placed)


def gcc_layouts(records: list[Record]) -> dict[str, Layout]:
    """Every record's gcc layout by class name (records in definition order)."""
    layouts: dict[str, Layout] = {}
    for record in records:
        layouts[record.name] = gcc_layout(record, layouts.__getitem__)
    return layouts


def verify(records: list[Record]) -> Iterator[GenError]:
    """A :class:`GenError` for each record whose gcc layout ctypes would not reproduce."""
    layouts: dict[str, Layout] = {}
    for record in records:
        layout = gcc_layout(record, layouts.__getitem__)
        layouts[record.name] = layout
        try:
            rendered = ctypes_layout(record, plan(record, layouts.__getitem__),
                                     layouts.__getitem__)
        except Unportable as e:
            name = str(e)
            member = next((f for f in record.fields if f.python_name == name), None)
            yield GenError(member.location if member else record.location,
                           f"{_what(record)}: {_member(member)} would be laid out differently "
                           f"by different Python versions' ctypes ({_constructs(record)})")
            continue
        mismatch = _first_difference(record, layout, rendered)
        if mismatch is not None:
            yield mismatch


def _first_difference(record: Record, gcc: Layout, rendered: Layout) -> GenError | None:
    for index, f in enumerate(record.fields):
        if index in gcc.members and gcc.members[index] != rendered.members.get(index):
            bit, bits = gcc.members[index]
            return GenError(f.location, f"{_what(record)}: gcc puts {_member(f)} at byte "
                                        f"{bit // 8} bit {bit % 8} ({bits} bits), which ctypes "
                                        f"cannot reproduce ({_constructs(record)})")
    if (gcc.size, gcc.align) != (rendered.size, rendered.align):
        return GenError(record.location, f"{_what(record)}: gcc gives it size {gcc.size} and "
                                         f"alignment {gcc.align}, which ctypes cannot reproduce "
                                         f"({_constructs(record)})")
    return None


def _what(record: Record) -> str:
    return f"{record.kind} {record.tag or record.name}"


def _member(f: Field | None) -> str:
    if f is None:
        return "a member"
    if f.bits is not None:
        kind = f.type.spelling if isinstance(f.type, Scalar) else "?"
        return f"bit-field '{kind} {f.name}:{f.bits}'" if f.name else f"'{kind} :{f.bits}'"
    return f"member '{f.name}'"


def _constructs(record: Record) -> str:
    """The unusual constructs of ``record``, to name in a refusal."""
    bitfields = [f for f in record.fields if f.bits is not None]
    kinds = {f.type.cint.bits for f in bitfields if isinstance(f.type, Scalar)}
    found = []
    if len(kinds) > 1:
        found.append("bit-fields of mixed sizes")
    elif bitfields:
        found.append("bit-fields")
    if any(not f.name for f in bitfields):
        found.append("unnamed bit-fields")
    if record.packed:
        found.append("__attribute__((packed))")
    if any(f.packed for f in record.fields):
        found.append("a packed member")
    if record.pack:
        found.append(f"#pragma pack({record.pack})")
    if record.aligned or any(f.aligned for f in record.fields):
        found.append("aligned(N)")
    return ", ".join(found) or "a layout the generator does not model"

