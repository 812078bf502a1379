"""GCC ``__attribute__((...))`` on records and members, carried through pycparser.

pycparser knows no GCC attributes, so ``preprocess`` rewrites the two that change a layout,
``packed`` and ``aligned(N)``, into C it does parse, by where they stand:

``} __attribute__((packed)) x;``
    after a struct/union body: marker declarators, ``} __ublk_attr_packed, x;``; ``parse``
    gives the attribute to the record the declarators share and drops the markers;
``__u32 a __attribute__((aligned(8)));``
    after a member's declarator: ``__u32 a, __ublk_attr_aligned_8;`` (the member before the
    marker gets it);
``__u64 __attribute__((aligned(8))) a;``
    between the type and the declarator (``__aligned_u64``): ``_Alignas(8)``, which
    pycparser parses as a member's alignment;
``struct __attribute__((packed)) s {``
    after the keyword: removed, and kept by (file, line) for ``parse`` to apply to the record
    whose tag is on that line.

Anything else (another attribute, an attribute elsewhere) is refused with its file:line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .diagnostics import GenError, Location

MARKER_PREFIX = "__ublk_attr_"
# ctypes can raise a record's alignment only with a member that has it: c_uint64 is the
# widest integer whose alignment is 8 on every 64-bit ABI.
MAX_ALIGNED = 8


@dataclass(frozen=True)
class Attribute:
    kind: Literal["packed", "aligned"]
    value: int = 0  # aligned(N): N bytes

    @property
    def marker(self) -> str:
        return f"{MARKER_PREFIX}{self.kind}" + (f"_{self.value}" if self.kind == "aligned" else "")

    def __str__(self) -> str:
        return f"__attribute__(({self.kind}" + (f"({self.value})))" if self.kind == "aligned"
                                                  else "))")


_ALIGNED = re.compile(r"^(?:aligned|__aligned__)\((0[xX][0-9a-fA-F]+|\d+)[uUlL]*\)$")


def parse_list(text: str, here: Location) -> list[Attribute]:
    """The attributes of one ``__attribute__((text))``; refuse those that are not supported."""
    attributes = []
    for item in _split(re.sub(r"\s+", "", text)):
        if item in ("packed", "__packed__"):
            attributes.append(Attribute("packed"))
            continue
        aligned = _ALIGNED.match(item)
        if aligned is None:
            raise GenError(here, f"unsupported attribute __attribute__(({item}))")
        value = int(aligned.group(1), 0)
        if value <= 0 or value & (value - 1):
            raise GenError(here, f"__attribute__(({item})): alignment {value} is not a power "
                                 "of 2 (gcc rejects it)")
        if value > MAX_ALIGNED:
            raise GenError(here, f"unsupported attribute __attribute__(({item})): ctypes can "
                                 f"portably align to at most {MAX_ALIGNED} bytes")
        attributes.append(Attribute("aligned", value))
    return attributes


def _split(text: str) -> list[str]:
    """Split at the commas that are not inside parentheses."""
    items, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:index])
            start = index + 1
    items.append(text[start:])
    return [item for item in items if item]


def from_marker(name: str | None) -> Attribute | None:
    """The attribute a marker declarator stands for; None for a real name."""
    if name is None or not name.startswith(MARKER_PREFIX):
        return None
    kind, _, value = name[len(MARKER_PREFIX):].partition("_")
    if kind == "packed":
        return Attribute("packed")
    return Attribute("aligned", int(value))
