"""Name resolution for C types: typedefs, struct/union/enum tags, members."""

from __future__ import annotations

from pycparser import c_ast

from . import cint
from .cint import CInt
from .diagnostics import GenError, Location
from .model import Field, Record, RecordRef, Scalar, TypeRef


def location(node: c_ast.Node) -> Location | None:
    """The file:line of a pycparser node (cpp linemarkers make it the header's own)."""
    coord = getattr(node, "coord", None)
    if coord is None:
        return None
    return Location(str(coord.file), int(coord.line))


class TypeTable:
    """Everything declared so far, in declaration order, as the parse walks the header."""

    def __init__(self) -> None:
        self.typedefs: dict[str, TypeRef] = {}
        self.records: dict[str, Record] = {}  # by Python class name
        self.tags: dict[str, str] = {}  # C tag -> Python class name
        self.enum_types: dict[str, CInt] = {}  # enum tag -> underlying integer type

    def scalar(self, names: list[str], node: c_ast.Node) -> TypeRef:
        """The type named by an IdentifierType: a typedef or base type specifiers."""
        if len(names) == 1 and names[0] in self.typedefs:
            resolved = self.typedefs[names[0]]
            if isinstance(resolved, Scalar):
                return Scalar(resolved.cint, names[0])
            return resolved
        base = cint.from_specifiers(names)
        if base is None:
            raise GenError(location(node), f"unknown type '{' '.join(names)}'")
        return Scalar(base, " ".join(names))

    def integer(self, node: c_ast.Node) -> CInt:
        """The integer type of a type name (a cast's or sizeof's operand)."""
        resolved = self.resolve(node)
        if not isinstance(resolved, Scalar):
            raise GenError(location(node), "expected an integer type")
        return resolved.cint

    def resolve(self, node: c_ast.Node) -> TypeRef:
        """A declared type without arrays or pointers: scalar, enum or complete record."""
        if isinstance(node, (c_ast.Typename, c_ast.TypeDecl)):
            return self.resolve(node.type)
        if isinstance(node, c_ast.IdentifierType):
            return self.scalar(list(node.names), node)
        if isinstance(node, c_ast.Enum):
            if node.name not in self.enum_types:
                raise GenError(location(node), f"enum {node.name} is not defined")
            return Scalar(self.enum_types[node.name], f"enum {node.name}")
        if isinstance(node, (c_ast.Struct, c_ast.Union)):
            kind = "struct" if isinstance(node, c_ast.Struct) else "union"
            name = self.tags.get(node.name or "")
            if name is None:
                raise GenError(location(node), f"{kind} {node.name} is not defined before use")
            return RecordRef(name)
        if isinstance(node, c_ast.PtrDecl):
            raise GenError(location(node), "pointer members are not supported (UAPI uses __u64)")
        raise GenError(location(node), f"unsupported type construct {type(node).__name__}")

    def field(self, record_name: str, member: str, node: c_ast.Node) -> Field:
        """Member lookup as C does it: anonymous members' members are members too."""
        found = self._find(self.records[record_name], member)
        if found is None:
            raise GenError(location(node), f"{record_name} has no member '{member}'")
        return found

    def _find(self, record: Record, member: str) -> Field | None:
        for f in record.fields:
            if f.anonymous:
                assert isinstance(f.type, RecordRef)
                inner = self._find(self.records[f.type.name], member)
                if inner is not None:
                    return inner
            elif f.name == member:
                return f
        return None


def describe(t: TypeRef) -> str:
    """C-ish spelling of a model type, for messages."""
    if isinstance(t, Scalar):
        return t.spelling
    if isinstance(t, RecordRef):
        return t.name
    return f"{describe(t.element)}[{t.length}]"
