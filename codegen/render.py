"""The model -> Python source, through ``templates/module.py.j2``.

This module only shapes strings (annotations, ctypes expressions, docstrings); the
template decides the layout.  Output depends on nothing but the model: no timestamps,
no absolute paths, no dict-order surprises.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .cint import BOOL, CHAR, SCHAR, UCHAR
from .layout import Layout, ctypes_pack, gcc_layouts, plan
from .model import (Array, Constant, Function, Module, Record, RecordRef, Scalar,
                    TypeRef)
from .translate import class_ref, ctype_of, mangled, python_literal
from .typetable import describe

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass
class _Member:
    """One entry of ``_fields_`` plus how a type checker should see it."""

    name: str
    ctype: str
    bits: int | None
    c_type: str


@dataclass
class _Class:
    record: Record
    base: str
    members: list[_Member]
    anonymous: list[str]
    annotations: list[tuple[str, str, str | None]]  # (name, annotation, doc)
    summary: str = ""
    pack: int | None = None


def render(module: Module, helpers: set[str]) -> str:
    """The generated module's source text."""
    records = {r.name: r for r in module.records}
    layouts = gcc_layouts(module.records)
    classes = [_class(r, records, layouts) for r in module.records]
    exported = (
        [c.name for c in module.constants]
        + [e.name for enum in module.enums for e in enum.enumerators]
        + [enum.tag for enum in module.enums if enum.tag]
        + [t.name for t in module.typedefs]
        + [r.name for r in module.records if r.tag or r.typedef]
        + [f.name for f in module.families]
        + [f.name for f in module.functions])
    return _template().render(
        m=module, classes=classes, helpers=helpers, exported=exported,
        enum_classes=_enum_classes(module),
        static=[c for c in module.constants if c.value is not None],
        dynamic=[c for c in module.constants if c.value is None],
        ctype_of=ctype_of, class_ref=class_ref)


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    """Compiled once per process: compiling costs more than rendering."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["docstring"] = docstring
    env.filters["comment"] = comment
    env.filters["literal"] = constant_literal
    env.filters["trailing"] = trailing_comment
    env.filters["function_doc"] = function_doc
    return env.get_template("module.py.j2")


@dataclass
class _EnumClass:
    """A C enum or a family, as the class type checkers see and the lazy table builds."""

    name: str
    kind: str
    doc: str
    prefix: str  # member name + prefix = the module constant
    members: list[tuple[str, str]]  # (member, module constant)

    @property
    def member_lines(self) -> list[str]:
        """The member names as a tuple body, wrapped at 96 columns."""
        lines, line = [], ""
        for member, _ in self.members:
            item = f'"{member}",'
            if line and len(line) + len(item) + 17 > 96:
                lines.append(line)
                line = ""
            line = f"{line} {item}" if line else item
        return [*lines, line] if line else lines


def _enum_classes(module: Module) -> list[_EnumClass]:
    classes = [_EnumClass(e.tag, "IntEnum", f"C ``enum {e.tag}``.", "",
                          [(i.name, i.name) for i in e.enumerators])
               for e in module.enums if e.tag]
    for f in module.families:
        what = "flags" if f.kind == "IntFlag" else "an enumeration"
        classes.append(_EnumClass(f.name, f.kind,
                                  f"``{f.prefix}*`` as {what}: a value's repr names its members.",
                                  f.prefix, f.members))
    return classes


def _class(record: Record, records: dict[str, Record], layouts: dict[str, Layout]) -> _Class:
    members = [_Member(slot.name, _bitfield_ctype(slot.type) if slot.bits else
                       ctype_of(slot.type), slot.bits,
                       "padding" if slot.padding else
                       "" if _is_record(slot.type) else describe(slot.type))
               for slot in plan(record, layouts.__getitem__)]
    summary = (f"C ``{record.kind} {record.tag}``." if record.tag else
               f"C ``typedef {record.kind} {{...}} {record.name}``." if record.typedef else
               f"An anonymous {record.kind} member of {_owner(record, records)}.")
    return _Class(record, "ctypes.Structure" if record.kind == "struct" else "ctypes.Union",
                  members, [f.python_name for f in record.fields if f.anonymous],
                  list(_annotations(record, records)), summary, ctypes_pack(record))


def _bitfield_ctype(t: TypeRef) -> str:
    """ctypes refuses bit-fields of c_char (a char bit-field is the signed byte it is on
    x86), and its c_bool bit-fields write bit 0 whatever their offset: an unsigned byte."""
    if isinstance(t, Scalar) and t.cint == CHAR:
        return SCHAR.ctype
    if isinstance(t, Scalar) and t.cint == BOOL:
        return UCHAR.ctype
    return ctype_of(t)


def _owner(record: Record, records: dict[str, Record]) -> str:
    for parent in records.values():
        if any(f.type == RecordRef(record.name) for f in parent.fields):
            return parent.tag or _owner(parent, records)
    return "(unknown)"


def _annotations(record: Record, records: dict[str, Record]):  # type: ignore[no-untyped-def]
    """Every member reachable as an attribute, anonymous members flattened as in C."""
    for f in record.fields:
        if f.anonymous:
            assert isinstance(f.type, RecordRef)
            yield from _annotations(records[f.type.name], records)
        elif f.name and not mangled(f.python_name):
            yield f.python_name, "int" if f.bits is not None else annotation(f.type), f.doc


def _is_record(t: TypeRef) -> bool:
    return isinstance(t, RecordRef) or (isinstance(t, Array) and _is_record(t.element))


def annotation(t: TypeRef) -> str:
    """What reading the member gives in Python, as ctypes converts it."""
    if isinstance(t, Scalar):
        return "bytes" if t.cint == CHAR else "int"
    if isinstance(t, RecordRef):
        return class_ref(t.name)
    if isinstance(t.element, Scalar) and t.element.cint == CHAR:
        return "bytes"
    return f"ctypes.Array[{ctype_of(t.element)}]"


def docstring(text: str | None, indent: int = 4) -> str:
    """A docstring literal for C comment text (quotes and backslashes made harmless)."""
    if not text:
        return ""
    body = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    pad = " " * indent
    lines = body.split("\n")
    if len(lines) == 1 and len(body) + indent + 6 <= 96:
        return f'{pad}"""{body}"""'
    inner = "\n".join(f"{pad}{line}" if line.strip() else "" for line in lines)
    return f'{pad}"""\n{inner}\n{pad}"""'


def comment(text: str | None, indent: int = 0, marker: str = "#") -> str:
    """C comment text as Python ``#`` lines."""
    if not text:
        return ""
    pad = " " * indent
    return "\n".join(f"{pad}{marker} {line}".rstrip() for line in text.split("\n"))


def trailing_comment(c: Constant) -> str:
    """``  # <C body>`` unless the body is the literal itself, then the one-line C doc."""
    parts = [] if python_literal(c.c_body) is not None else [c.c_body]
    if c.doc and c.doc != c.heading and "\n" not in c.doc:
        parts.append(c.doc)
    return "  # " + ": ".join(parts) if parts else ""


def function_doc(fn: Function) -> str:
    """The helper's C comment and its C signature (how to read it against the header)."""
    text = (f"{fn.doc}\n\nC: ``{fn.c_signature}``" if fn.doc
            else f"C: ``{fn.c_signature}``")
    return docstring(text)


def constant_literal(c: Constant) -> str:
    """The C spelling of a plain number; else hex for bit patterns, decimal otherwise."""
    assert c.value is not None
    plain = python_literal(c.c_body)
    if plain is not None:
        return plain
    patterned = any(token in c.c_body for token in ("0x", "0X", "<<", "~", "|"))
    if patterned and c.value >= 0:
        return f"{c.value:#x}"
    return str(c.value)
