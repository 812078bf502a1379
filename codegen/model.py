"""What a header defines, as plain data: the contract between ``parse`` and ``render``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from .cint import CInt
from .diagnostics import Location


@dataclass(frozen=True)
class Scalar:
    """An integer member; ``spelling`` is the C name used (``__u32``), kept for readers."""

    cint: CInt
    spelling: str


@dataclass(frozen=True)
class RecordRef:
    """A struct or union by the Python class name it is rendered as."""

    name: str


@dataclass(frozen=True)
class Array:
    """``element[length]``; length 0 for flexible and GNU zero-length arrays."""

    element: TypeRef
    length: int


TypeRef = Union[Scalar, RecordRef, Array]


@dataclass
class Field:
    """A member; anonymous struct/union members get a private name and ``anonymous``.

    ``name`` is the C name ("" for an unnamed bit-field, which only takes up bits);
    ``python_name`` is the attribute it is rendered as (see :func:`.parse.python_names`).
    ``packed`` and ``aligned`` are the member's own ``__attribute__``s (``_Alignas`` too).
    """

    name: str
    type: TypeRef
    location: Location
    doc: str | None = None
    bits: int | None = None
    anonymous: bool = False
    packed: bool = False
    aligned: int | None = None
    python_name: str = ""


@dataclass
class Record:
    """A struct or union.  ``tag`` is the C tag; anonymous ones are named after their parent."""

    kind: Literal["struct", "union"]
    name: str
    tag: str | None
    location: Location
    fields: list[Field] = field(default_factory=list)
    packed: bool = False  # __attribute__((packed)) on the record
    aligned: int | None = None  # __attribute__((aligned(N))) on the record
    pack: int | None = None  # the #pragma pack(N) in force where it is defined
    typedef: bool = False  # typedef struct { ... } name;  (``name`` is the typedef's)
    doc: str | None = None


@dataclass
class Enumerator:
    name: str
    value: int
    location: Location
    doc: str | None = None


@dataclass
class Enum:
    """A C enum; every enumerator is also a module constant, a tagged enum an IntEnum."""

    tag: str | None
    cint: CInt
    enumerators: list[Enumerator]
    location: Location
    doc: str | None = None


@dataclass
class Constant:
    """An object-like integer macro.

    ``value`` is known when the body depends on nothing but other constants; otherwise
    ``expr`` is the Python expression the module evaluates at import (``sizeof`` of a
    ctypes class, the running architecture's ioctl encoding, ``errno``).
    """

    name: str
    c_body: str
    cint: CInt
    location: Location
    value: int | None = None
    expr: str | None = None
    doc: str | None = None
    heading: str | None = None  # a comment above a group of defines, rendered once


@dataclass
class Family:
    """An IntFlag or IntEnum over constants sharing a name prefix (``UBLK_F_``)."""

    name: str
    kind: Literal["IntFlag", "IntEnum"]
    prefix: str
    members: list[tuple[str, str]]  # (member name without prefix, constant name)


@dataclass
class Param:
    name: str
    annotation: str
    c_decl: str


@dataclass
class Function:
    """A ``static inline`` helper translated to Python statements."""

    name: str
    params: list[Param]
    returns: str
    body: list[str]
    location: Location
    c_signature: str
    c_returns: str
    doc: str | None = None


@dataclass
class Typedef:
    """A typedef the header itself declares, rendered as a ctypes alias."""

    name: str
    type: TypeRef
    location: Location


@dataclass
class Module:
    """Everything one generated module holds, in the order it is rendered."""

    header_name: str
    header_path: str  # relative to the output file's directory, for --check
    sha256: str
    kernel: str | None
    generator_version: str
    typedefs: list[Typedef] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    enums: list[Enum] = field(default_factory=list)
    constants: list[Constant] = field(default_factory=list)
    families: list[Family] = field(default_factory=list)
    functions: list[Function] = field(default_factory=list)
