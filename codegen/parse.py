"""pycparser AST of the preprocessed header -> model records, enums, typedefs, helpers.

One walk over the translation unit in declaration order (C defines before use, so the
ctypes classes come out in an order Python can execute).  Definitions from our stand-in
headers are resolved but only emitted when a header record embeds them
(``struct __kernel_timespec``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pycparser import c_ast, c_parser

from . import cint
from .cint import CInt
from .comments import Comments
from .diagnostics import GenError, Location
from .model import Array, Enum, Enumerator, Field, Record, RecordRef, Scalar, TypeRef, Typedef
from .preprocess import PACKED_MARKER, Preprocessed, is_stand_in
from .translate import ExprTranslator, Needs, Value, constant
from .typetable import TypeTable, location


@dataclass
class Parsed:
    """The header's types and the bodies of its inline helpers, still as C AST."""

    types: TypeTable
    records: list[Record] = field(default_factory=list)
    enums: list[Enum] = field(default_factory=list)
    typedefs: list[Typedef] = field(default_factory=list)
    enumerators: dict[str, tuple[int, CInt]] = field(default_factory=dict)
    functions: list[c_ast.FuncDef] = field(default_factory=list)
    comments: dict[str, Comments] = field(default_factory=dict)

    def comments_of(self, loc: Location) -> Comments:
        if loc.file not in self.comments:
            self.comments[loc.file] = Comments.of_file(loc.file)
        return self.comments[loc.file]

    def doc(self, loc: Location | None) -> str | None:
        return self.comments_of(loc).for_line(loc.line) if loc else None


def parse(pre: Preprocessed) -> Parsed:
    """Parse the preprocessed text; raise :class:`GenError` at the first unsupported type."""
    try:
        ast = c_parser.CParser().parse(pre.text, "<cpp output>")
    except c_parser.ParseError as e:
        where = re.match(r"^(.*?):(\d+):(?:\d+:)? ?(.*)$", str(e))
        if where is None:
            raise GenError(None, f"C syntax error: {e}") from None
        raise GenError(Location(where.group(1), int(where.group(2))),
                       f"C syntax error (pycparser): {where.group(3)}") from None
    walker = _Walker(Parsed(TypeTable()))
    for node in ast.ext:
        walker.top_level(node)
    return walker.finish()


class _Walker:
    def __init__(self, parsed: Parsed) -> None:
        self.p = parsed
        self.types = parsed.types
        self.emitted: list[Record] = []
        self.source_records: set[str] = set()

    def finish(self) -> Parsed:
        # Records from stand-in headers are emitted only when a header record embeds them.
        wanted = set(self.source_records)
        for record in reversed(self.emitted):
            if record.name in wanted:
                wanted.update(_embedded(record))
        for typedef in self.p.typedefs:
            wanted.update(_refs(typedef.type))
        self.p.records = [r for r in self.emitted if r.name in wanted]
        return self.p

    def top_level(self, node: c_ast.Node) -> None:
        loc = location(node)
        source = loc is not None and not is_stand_in(loc.file)
        if isinstance(node, c_ast.FuncDef):
            if source:
                self.p.functions.append(node)
            return
        if isinstance(node, c_ast.Typedef):
            self._typedef(node, source)
            return
        if isinstance(node, c_ast.Decl):
            self._declaration(node, source)
            return
        if isinstance(node, c_ast.Pragma):
            return
        raise GenError(loc, f"unsupported top-level construct {type(node).__name__}")

    def _typedef(self, node: c_ast.Typedef, source: bool) -> None:
        t = self._member_type(node.type, str(node.name), public=True)
        self.types.typedefs[str(node.name)] = t
        if source:
            loc = location(node)
            assert loc is not None
            self.p.typedefs.append(Typedef(str(node.name), t, loc))

    def _declaration(self, node: c_ast.Decl, source: bool) -> None:
        t = _unmark(node)
        if isinstance(t, (c_ast.Struct, c_ast.Union)) and node.name in (None, PACKED_MARKER):
            if t.decls is None:
                return  # a forward declaration
            record = self._record(t, t.name, public=True)
            record.packed = node.name == PACKED_MARKER
            if source:
                self.source_records.add(record.name)
            return
        if isinstance(t, c_ast.Enum) and node.name is None:
            self._enum(t, source)
            return
        what = "function prototype" if isinstance(t, c_ast.FuncDecl) else "object declaration"
        raise GenError(location(node), f"unsupported {what} '{node.name}' (only types, "
                                       "macros and static inline helpers are bound)")

    # records

    def _record(self, node: c_ast.Struct | c_ast.Union, name: str, public: bool) -> Record:
        kind: Literal["struct", "union"] = (
            "struct" if isinstance(node, c_ast.Struct) else "union")
        loc = location(node)
        assert loc is not None
        if node.name and node.name in self.types.tags:
            raise GenError(loc, f"{kind} {node.name} is defined twice")
        record = Record(kind, name, node.name, loc, doc=self.p.doc(loc))
        if node.name:
            self.types.tags[node.name] = name
        for index, member in enumerate(node.decls or []):
            record.fields.extend(self._members(record, member, index))
        self.types.records[name] = record
        self.emitted.append(record)
        return record

    def _members(self, parent: Record, decl: c_ast.Node, index: int) -> list[Field]:
        loc = location(decl)
        assert loc is not None
        if not isinstance(decl, c_ast.Decl):
            raise GenError(loc, f"unsupported member construct {type(decl).__name__}")
        t = _unmark(decl)
        if isinstance(t, (c_ast.Struct, c_ast.Union)) and decl.name in (None, PACKED_MARKER):
            if t.name:  # "struct tag { ... };" inside a struct declares only the tag
                if t.decls is not None:
                    self._record(t, t.name, public=True)
                    return []
                raise GenError(loc, f"declaration of {t.name} inside {parent.name} "
                                    "declares no member")
            inner = self._record(t, f"_{parent.name.lstrip('_')}_anon{index}", public=False)
            inner.packed = decl.name == PACKED_MARKER
            return [Field(f"_anon{index}", RecordRef(inner.name), loc, inner.doc,
                          anonymous=True)]
        if decl.name is None:
            raise GenError(loc, f"unnamed member in {parent.name}")
        name = str(decl.name)
        member = Field(name, self._member_type(t, f"_{parent.name.lstrip('_')}_{name}",
                                               public=False), loc, self.p.doc(loc))
        if decl.bitsize is not None:
            member.bits = self._constant(decl.bitsize)
            if not isinstance(member.type, Scalar):
                raise GenError(loc, f"bit-field {name} is not an integer")
        return [member]

    def _member_type(self, t: c_ast.Node, inline_name: str, public: bool) -> TypeRef:
        if isinstance(t, c_ast.ArrayDecl):
            element = self._member_type(t.type, inline_name, public)
            length = 0 if t.dim is None else self._constant(t.dim)
            if length < 0:
                raise GenError(location(t), "negative array length")
            return Array(element, length)
        if isinstance(t, c_ast.TypeDecl):
            inner = t.type
            if isinstance(inner, (c_ast.Struct, c_ast.Union)) and inner.decls is not None:
                record = self._record(inner, inner.name or inline_name, public)
                return RecordRef(record.name)
            if isinstance(inner, c_ast.Enum) and inner.values is not None:
                where = location(t)
                self._enum(inner, source=where is not None and not is_stand_in(where.file))
            return self.types.resolve(inner)
        return self.types.resolve(t)

    def _constant(self, node: c_ast.Node) -> int:
        value = ExprTranslator(self.types, self._enumerator, needs=Needs()).integer(node)
        if value.value is None:
            raise GenError(location(node), "array length or bit width is not a constant")
        return value.value

    def _enumerator(self, name: str, node: c_ast.Node) -> Value:
        if name in self.p.enumerators:
            value, t = self.p.enumerators[name]
            return constant(value, t, name)
        raise GenError(location(node), f"unknown identifier '{name}'")

    # enums

    def _enum(self, node: c_ast.Enum, source: bool) -> None:
        loc = location(node)
        assert loc is not None
        members: list[Enumerator] = []
        following = 0
        for item in node.values.enumerators:
            value = self._constant(item.value) if item.value is not None else following
            item_loc = location(item) or loc
            members.append(Enumerator(str(item.name), value, item_loc, self.p.doc(item_loc)))
            # An enumerator is an int; GCC gives one that does not fit the enum's type.
            self.p.enumerators[str(item.name)] = (value, cint.INT if cint.INT.contains(value)
                                                  else _enum_type([value]))
            following = value + 1
        underlying = _enum_type([m.value for m in members])
        if node.name:
            self.types.enum_types[str(node.name)] = underlying
        if source:
            self.p.enums.append(Enum(node.name, underlying, members, loc, self.p.doc(loc)))


def _unmark(decl: c_ast.Decl) -> c_ast.Node:
    """The declared type; for ``} __ublk_codegen_packed__;`` the record under the marker."""
    declared: c_ast.Node = decl.type
    if decl.name == PACKED_MARKER and isinstance(declared, c_ast.TypeDecl):
        inner: c_ast.Node = declared.type
        return inner
    return declared


def _enum_type(values: list[int]) -> CInt:
    """GCC's choice of an enum's integer type: unsigned int unless a value is negative."""
    candidates = ([cint.UINT, cint.ULONG] if min(values, default=0) >= 0
                  else [cint.INT, cint.LONG])
    for t in candidates:
        if all(t.contains(v) for v in values):
            return t
    raise ValueError(f"enum values {values} fit no integer type")


def _refs(t: TypeRef) -> set[str]:
    if isinstance(t, RecordRef):
        return {t.name}
    if isinstance(t, Array):
        return _refs(t.element)
    return set()


def _embedded(record: Record) -> set[str]:
    names: set[str] = set()
    for f in record.fields:
        names |= _refs(f.type)
    return names
