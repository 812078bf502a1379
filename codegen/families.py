"""Typed families inferred from macro name prefixes: IntFlag and IntEnum.

No list of prefixes is kept here.  A prefix (cut at an underscore) forms a family when
every constant that starts with it fits one shape, and each constant joins the shortest
such prefix (``UBLK_F_``, not ``UBLK_`` which also holds opcodes, nor
``UBLK_F_USER_RECOVERY_``):

* flags: two or more, each written as a shift of 1 (``(1ULL << 8)``) or as an OR of other
  members, the shifted ones distinct bits;
* enumeration: three or more, each a plain integer literal, distinct and dense (all below
  twice their count), which keeps out groups of sizes, shifts and masks.

Because a family is the shortest clean prefix, families never overlap.
"""

from __future__ import annotations

import re
from typing import Literal

from .model import Constant, Family

_SHIFTED_ONE = re.compile(r"^\(*\s*(\(\s*\w+\s*\)\s*)?1[uUlL]*\s*<<\s*\w+\s*\)*$")
_OR_OF_NAMES = re.compile(r"^[\s()\w|]+$")
_LITERAL = re.compile(r"^\(?\s*(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\s*\)?$")


def infer(constants: list[Constant]) -> list[Family]:
    """Families over the constants known at generation time, in source order."""
    known = [c for c in constants if c.value is not None]
    chosen: dict[str, str] = {}  # constant name -> its family prefix
    for c in known:
        for prefix in _prefixes(c.name):
            members = [m for m in known if m.name.startswith(prefix)]
            if _kind(prefix, members) is not None:
                chosen[c.name] = prefix
                break
    families: dict[str, Family] = {}
    for c in known:
        if c.name not in chosen:
            continue
        prefix = chosen[c.name]
        if prefix not in families:
            members = [m for m in known if m.name.startswith(prefix)]
            kind = _kind(prefix, members)
            assert kind is not None
            # Name the family by all its members share: UBLK_S_ holds only UBLK_S_DEV_*.
            full = _common_prefix([m.name for m in members])
            families[prefix] = Family(class_name(full), kind, full, [])
        family = families[prefix]
        family.members.append((c.name[len(family.prefix):], c.name))
    return list(families.values())


def _common_prefix(names: list[str]) -> str:
    """The longest prefix ending in '_' that leaves every name a non-empty identifier."""
    parts = [name.split("_") for name in names]
    common: list[str] = []
    for column in zip(*(p[:-1] for p in parts)):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    while common:
        prefix = "_".join(common) + "_"
        if all(name[len(prefix):].isidentifier() for name in names):
            return prefix
        common.pop()
    raise AssertionError(names)


def class_name(prefix: str) -> str:
    """``UBLK_PARAM_TYPE_`` -> ``UblkParamType``."""
    return "".join(part.capitalize() for part in prefix.split("_") if part)


def _prefixes(name: str) -> list[str]:
    parts = name.split("_")
    return ["_".join(parts[:k]) + "_" for k in range(1, len(parts)) if parts[k - 1]]


def _kind(prefix: str, members: list[Constant]) -> Literal["IntFlag", "IntEnum"] | None:
    if any(not m.name[len(prefix):].isidentifier() for m in members):
        return None
    if _is_flags(members):
        return "IntFlag"
    if _is_enumeration(members):
        return "IntEnum"
    return None


def _is_flags(members: list[Constant]) -> bool:
    if len(members) < 2:
        return False
    names = {m.name for m in members}
    bits: set[int] = set()
    for m in members:
        assert m.value is not None
        if _SHIFTED_ONE.match(m.c_body) and m.value > 0 and m.value & (m.value - 1) == 0:
            if m.value in bits:
                return False
            bits.add(m.value)
        elif not (_OR_OF_NAMES.match(m.c_body)
                  and set(re.findall(r"\w+", m.c_body)) <= names):
            return False
    return bool(bits)


def _is_enumeration(members: list[Constant]) -> bool:
    if len(members) < 3 or not all(_LITERAL.match(m.c_body) for m in members):
        return False
    values = [m.value for m in members]
    return (len(set(values)) == len(values)
            and all(v is not None and 0 <= v < 2 * len(values) for v in values))
