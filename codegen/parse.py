"""pycparser AST of the preprocessed header -> model records, enums, typedefs, helpers.

One walk over the translation unit in declaration order (C defines before use, so the
ctypes classes come out in an order Python can execute), keeping the ``#pragma pack`` in
force and the ``__attribute__`` markers of :mod:`.attributes`.  Definitions from our stand-in
headers are resolved but only emitted when a header record embeds them
(``struct __kernel_timespec``).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Literal, Union

from pycparser import c_ast, c_parser

from . import cint
from .attributes import Attribute, from_marker
from .cint import CInt
from .comments import Comments
from .diagnostics import GenError, Location
from .model import Array, Enum, Enumerator, Field, Record, RecordRef, Scalar, TypeRef, Typedef
from .preprocess import Preprocessed, is_stand_in
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
            message = ("the header ends inside a definition (truncated?)"
                       if "end of input" in str(e) else str(e))
            raise GenError(pre.end, f"C syntax error: {message}") from None
        raise GenError(Location(where.group(1), int(where.group(2))),
                       f"C syntax error (pycparser): {where.group(3)}") from None
    walker = _Walker(Parsed(TypeTable()), pre)
    walker.scan_markers(ast.ext)
    for node in ast.ext:
        walker.top_level(node)
    return walker.finish()


_RecordNode = Union[c_ast.Struct, c_ast.Union]
_PACK = re.compile(r"^\s*pack\s*\(\s*(push|pop)?\s*,?\s*(\d*)\s*\)\s*$")

# Names ctypes gives a meaning in a Structure/Union class (or its metaclass): a member of that
# name would be read as configuration, or would hide the method.
CTYPES_RESERVED = frozenset({
    "_fields_", "_anonymous_", "_pack_", "_layout_", "_align_", "_swappedbytes_", "_b_base_",
    "_b_needsfree_", "_objects", "_type_", "_length_", "from_buffer", "from_buffer_copy",
    "from_address", "from_param", "in_dll"})
GENERATED_PREFIX = "_ublk_"  # the generator's own padding members (see layout.plan)


def python_names(fields: list[Field]) -> None:
    """Give each member the attribute name it is rendered as.

    The C name, unless Python or ctypes reserves it: a keyword or soft keyword, a name in
    :data:`CTYPES_RESERVED`, a ``__dunder__`` or the generator's ``_ublk_`` prefix get a
    trailing underscore, and more until the name is taken by no other member.
    """
    taken = {f.name for f in fields}
    for f in fields:
        if not f.name:
            continue
        name = f.name
        if _reserved(name):
            name += "_"
            while name in taken or _reserved(name):
                name += "_"
            taken.add(name)
        f.python_name = name


def _reserved(name: str) -> bool:
    return (keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in CTYPES_RESERVED
            or re.fullmatch(r"__[^_]\w*[^_]__", name) is not None
            or name.startswith(GENERATED_PREFIX))


class _Walker:
    def __init__(self, parsed: Parsed, pre: Preprocessed) -> None:
        self.p = parsed
        self.types = parsed.types
        self.emitted: list[Record] = []
        self.source_records: set[str] = set()
        self.tag_attributes = dict(pre.tag_attributes)
        self.pack: int | None = None
        self.pack_stack: list[int | None] = []
        self.built: dict[int, Record] = {}  # by id() of the pycparser node: declarators share it
        self.record_attributes: dict[int, list[Attribute]] = {}
        self.declarators: dict[int, int] = {}  # real (not marker) declarators of a record node
        self.record_markers: set[int] = set()  # marker declarations that are record attributes

    def scan_markers(self, nodes: list[c_ast.Node], scanned: set[int] | None = None) -> None:
        """Find the attributes right after a record's ``}``: markers before any declarator."""
        scanned = set() if scanned is None else scanned
        for node in nodes:
            if not isinstance(node, (c_ast.Decl, c_ast.Typedef)):
                continue
            record = _record_node(node)
            if record is None:
                continue
            key = id(record)
            attribute = from_marker(node.name)
            if attribute is None:
                if node.name is not None:
                    self.declarators[key] = self.declarators.get(key, 0) + 1
            elif self.declarators.get(key, 0) == 0:
                self.record_attributes.setdefault(key, []).append(attribute)
                self.record_markers.add(id(node))
            if key not in scanned:
                scanned.add(key)
                self.scan_markers(list(record.decls or []), scanned)

    def finish(self) -> Parsed:
        if self.tag_attributes:
            (file, line), attributes = next(iter(self.tag_attributes.items()))
            raise GenError(Location(file, line), f"{attributes[0]} after struct/union applies "
                                                 "to no record defined on this line")
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
            if node.param_decls:
                raise GenError(location(node.param_decls[0]) or loc,
                               f"declarations between {node.decl.name}()'s parameter list "
                               "and its body (old-style parameters: gcc rejects them here)")
            if source:
                self.p.functions.append(node)
            return
        if isinstance(node, c_ast.Pragma):
            self._pragma(node, loc)
            return
        if isinstance(node, (c_ast.Typedef, c_ast.Decl)) and from_marker(node.name):
            record = _record_node(node)
            if record is None or id(node) not in self.record_markers:
                raise GenError(loc, f"{from_marker(node.name)} here is not supported (put it "
                                    "right after the '}' of a struct or union)")
            if isinstance(node, c_ast.Typedef) or self.declarators.get(id(record), 0):
                return  # the attribute of a record the other declarators define
        if isinstance(node, c_ast.Typedef):
            self._typedef(node, source)
            return
        if isinstance(node, c_ast.Decl):
            self._declaration(node, source)
            return
        raise GenError(loc, f"unsupported top-level construct {type(node).__name__}")

    def _pragma(self, node: c_ast.Pragma, loc: Location | None) -> None:
        """``#pragma pack``: kept for the records that follow; other pragmas change nothing."""
        text = str(node.string or "")
        if not re.match(r"^\s*pack\b", text):
            return
        match = _PACK.match(text)
        value = int(match.group(2)) if match and match.group(2) else None
        if match is None or (value is not None and value not in (1, 2, 4, 8, 16)):
            raise GenError(loc, f"unsupported #pragma {text.strip()} (the generator reads "
                                "pack(N), pack(push[, N]), pack(pop) and pack() with N a "
                                "power of 2 up to 16)")
        if match.group(1) == "push":
            self.pack_stack.append(self.pack)
            if value is not None:
                self.pack = value
        elif match.group(1) == "pop":
            if value is not None:
                raise GenError(loc, f"unsupported #pragma {text.strip()}")
            self.pack = self.pack_stack.pop() if self.pack_stack else None
        else:
            self.pack = value

    def _typedef(self, node: c_ast.Typedef, source: bool) -> None:
        name = str(node.name)
        t = self._member_type(node.type, name, public=True)
        self.types.typedefs[name] = t
        loc = location(node)
        assert loc is not None
        record = self.types.records.get(t.name) if isinstance(t, RecordRef) else None
        if record is not None and record.name == name:
            # typedef struct { ... } name;  the class is the typedef's name
            record.typedef = True
            if source:
                self.source_records.add(name)
            return
        if source:
            self.p.typedefs.append(Typedef(name, t, loc))

    def _declaration(self, node: c_ast.Decl, source: bool) -> None:
        t = _unmark(node)
        if isinstance(t, (c_ast.Struct, c_ast.Union)) and (
                node.name is None or from_marker(node.name)):
            if t.decls is None:
                return  # a forward declaration
            if not t.name:
                raise GenError(location(t), "a struct or union with neither a tag nor a "
                                            "name defines nothing")
            record = self._record(t, t.name, public=True)
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

    def _record(self, node: _RecordNode, name: str, public: bool) -> Record:
        if id(node) in self.built:
            return self.built[id(node)]
        kind: Literal["struct", "union"] = (
            "struct" if isinstance(node, c_ast.Struct) else "union")
        loc = location(node)
        assert loc is not None
        if node.name and node.name in self.types.tags:
            raise GenError(loc, f"{kind} {node.name} is defined twice")
        if name in self.types.records or name in self.types.typedefs:
            raise GenError(loc, f"{kind} {name} clashes with a type of that name")
        record = Record(kind, name, node.name, loc, doc=self.p.doc(loc), pack=self.pack)
        self.built[id(node)] = record
        for attribute in (self.record_attributes.get(id(node), [])
                          + self.tag_attributes.pop((loc.file, loc.line), [])):
            if attribute.kind == "packed":
                record.packed = True
            else:
                record.aligned = max(record.aligned or 1, attribute.value)
        if node.name:
            self.types.tags[node.name] = name
        for index, member in enumerate(node.decls or []):
            marker = from_marker(getattr(member, "name", None))
            shared = _record_node(member) if isinstance(member, c_ast.Decl) else None
            if marker is not None and id(member) not in self.record_markers:
                self._member_attribute(record, marker, location(member) or loc)
                continue
            if marker is not None and shared is not None and self.declarators.get(id(shared)):
                continue  # "struct {...} __attribute__((x)) name;": the record got it
            record.fields.extend(self._members(record, member, index))
        python_names(record.fields)
        self.types.records[name] = record
        self.emitted.append(record)
        return record

    def _member_attribute(self, record: Record, attribute: Attribute, loc: Location) -> None:
        """``type name __attribute__((x));``: the member just declared gets it."""
        if not record.fields or record.fields[-1].anonymous:
            raise GenError(loc, f"{attribute} applies to no member here")
        member = record.fields[-1]
        if attribute.kind == "packed":
            member.packed = True
        else:
            member.aligned = max(member.aligned or 1, attribute.value)

    def _members(self, parent: Record, decl: c_ast.Node, index: int) -> list[Field]:
        # pycparser gives an unnamed bit-field no coordinates; its width has them
        width = getattr(decl, "bitsize", None)
        loc = (location(decl) or (location(width) if width is not None else None)
               or (parent.fields[-1].location if parent.fields else parent.location))
        if isinstance(decl, c_ast.Pragma):
            raise GenError(loc, f"#pragma {decl.string} inside {parent.kind} {parent.name} is "
                                "not supported (put it before the definition)")
        if not isinstance(decl, c_ast.Decl):
            raise GenError(loc, f"unsupported member construct {type(decl).__name__}")
        t = _unmark(decl)
        if isinstance(t, (c_ast.Struct, c_ast.Union)) and (
                decl.name is None or from_marker(decl.name)):
            if t.name:  # "struct tag { ... };" inside a struct declares only the tag
                if t.decls is not None:
                    self._record(t, t.name, public=True)
                    return []
                raise GenError(loc, f"declaration of {t.name} inside {parent.name} "
                                    "declares no member")
            inner = self._record(t, f"_{parent.name.lstrip('_')}_anon{index}", public=False)
            return [Field(f"_anon{index}", RecordRef(inner.name), loc, inner.doc,
                          anonymous=True, python_name=f"_anon{index}")]
        if decl.name is None and decl.bitsize is None:
            raise GenError(loc, f"unnamed member in {parent.name}")
        name = str(decl.name or "")
        what = f"bit-field '{name}'" if name else "an unnamed bit-field"
        member = Field(name, self._member_type(t, f"_{parent.name.lstrip('_')}_{name}",
                                               public=False), loc, self.p.doc(loc))
        for align in decl.align or []:
            if not isinstance(align.alignment, c_ast.Constant):
                raise GenError(loc, "_Alignas of a type is not supported (give the number)")
            value = self._constant(align.alignment)
            if value <= 0 or value & (value - 1) or value > 8:
                raise GenError(loc, f"unsupported alignment _Alignas({value}) (a power of 2 "
                                    "up to 8)")
            member.aligned = max(member.aligned or 1, value)
        if decl.bitsize is not None:
            member.bits = self._constant(decl.bitsize)
            if not isinstance(member.type, Scalar):
                raise GenError(loc, f"{what} is not an integer")
            width = member.type.cint.bits if member.type.cint != cint.BOOL else 1
            if member.bits < 0:
                raise GenError(loc, f"negative width in {what} (gcc rejects it)")
            if member.bits > width:
                raise GenError(loc, f"width of {what} exceeds its type (gcc rejects it)")
            if member.bits == 0 and name:
                raise GenError(loc, f"zero width for {what} (gcc rejects it)")
            if member.aligned:
                raise GenError(loc, f"an alignment on {what} is not supported")
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
            kind = cint.INT if cint.INT.contains(value) else _enum_type([value])
            if kind is None:
                raise GenError(item_loc, f"enumerator {item.name} = {value} fits no integer "
                                         "type (gcc: overflow in enumeration values)")
            self.p.enumerators[str(item.name)] = (value, kind)
            following = value + 1
        underlying = _enum_type([m.value for m in members])
        if underlying is None:
            raise GenError(loc, f"the values of enum {node.name or '(anonymous)'} fit no one "
                                "integer type (gcc: enumeration values exceed range of "
                                "largest integer)")
        if node.name:
            self.types.enum_types[str(node.name)] = underlying
        if source:
            self.p.enums.append(Enum(node.name, underlying, members, loc, self.p.doc(loc)))


def _record_node(decl: c_ast.Decl | c_ast.Typedef) -> _RecordNode | None:
    """The struct/union a declaration defines (with a body), whatever its declarator."""
    t = decl.type
    if isinstance(t, c_ast.TypeDecl):
        t = t.type
    if isinstance(t, (c_ast.Struct, c_ast.Union)) and t.decls is not None:
        return t
    return None


def _unmark(decl: c_ast.Decl) -> c_ast.Node:
    """The declared type; for a marker declarator the record under it."""
    declared: c_ast.Node = decl.type
    if from_marker(decl.name) and isinstance(declared, c_ast.TypeDecl):
        inner: c_ast.Node = declared.type
        return inner
    return declared


def _enum_type(values: list[int]) -> CInt | None:
    """GCC's choice of an enum's integer type: unsigned int unless a value is negative."""
    candidates = ([cint.UINT, cint.ULONG] if min(values, default=0) >= 0
                  else [cint.INT, cint.LONG])
    for t in candidates:
        if all(t.contains(v) for v in values):
            return t
    return None


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
