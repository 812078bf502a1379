"""C expressions and ``static inline`` bodies -> Python source with C integer semantics.

Every subexpression is typed (:class:`IntExpr`): its C type, a Python precedence, its value
when known at generation time, and a bound (non-negative, fewer than ``bits`` bits).  The
bound decides where C's wrap-around must be spelled out: ``(__u16)x`` becomes ``x & 0xffff``
unless ``x`` is already known to fit, so translated helpers read like the C they come from.

Unsigned wrap-around is reduced lazily: ``+ - * << ~ & | ^`` are exact modulo 2**N, so a
chain of them stays unmasked (``exact=False``) and is masked once, where its value is used
(a comparison, a right shift, a division, a return, an argument...): ``(a + b - c) &
0xffffffff`` rather than a mask around every step.

Constant subexpressions are folded here, which makes this module the macro evaluator too.
Anything outside the subset raises :class:`GenError` naming the construct and its file:line.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Union

from pycparser import c_ast, c_generator

from . import cint
from .cint import INT, SIZE_T, UINT, CInt
from .diagnostics import GenError
from .model import Array, Function, Param, RecordRef, Scalar, TypeRef
from .typetable import TypeTable, location

# Python operator precedence, loosest first (a child binds tighter than its parent or
# gets parentheses).
TERNARY, OR, AND, NOT, CMP, BOR, BXOR, BAND, SHIFT, ADD, MUL, UNARY, ATOM = range(1, 14)

_BINARY_PREC = {"|": BOR, "^": BXOR, "&": BAND, "<<": SHIFT, ">>": SHIFT, "+": ADD, "-": ADD,
                "*": MUL, "/": MUL, "%": MUL}
_COMPARE = {"<", ">", "<=", ">=", "==", "!="}
_IOCTL_MACROS = {"_IO": 2, "_IOR": 3, "_IOW": 3, "_IOWR": 3}
_UNBOUNDED = 1 << 20


@dataclass(frozen=True)
class IntExpr:
    """An integer-valued Python expression and what is known about it."""

    src: str
    cint: CInt
    prec: int = ATOM
    value: int | None = None  # known at generation time
    nonneg: bool = False
    bits: int = _UNBOUNDED  # when nonneg: 0 <= value < 2**bits
    runtime: bool = False  # depends on the running machine (sizeof, ioctl, errno)
    exact: bool = True  # False: only congruent to the C value modulo 2**cint.bits (unsigned)

    def fits(self, t: CInt) -> bool:
        """Converting to ``t`` leaves the value unchanged."""
        if self.value is not None:
            return t.contains(self.value)
        if self.nonneg:
            return self.bits <= (t.bits - 1 if t.signed else t.bits)
        return t.signed and self.cint.signed and self.cint.bits <= t.bits

    def paren(self, prec: int) -> str:
        return self.src if self.prec >= prec else f"({self.src})"


@dataclass(frozen=True)
class ObjExpr:
    """A struct, union or array object (C pointers to them are just the Python object)."""

    src: str
    type: TypeRef


Value = Union[IntExpr, ObjExpr]


def literal(value: int) -> str:
    """Python spelling of an integer: decimal when small, hex when it is a bit pattern."""
    if -256 < value < 256:
        return str(value)
    return f"-{-value:#x}" if value < 0 else f"{value:#x}"


_C_LITERAL = re.compile(r"^\(?\s*(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)[uUlL]*\s*\)?$")


def python_literal(c_text: str) -> str | None:
    """A plain C integer literal in Python spelling (``0x04U`` -> ``0x04``), else None."""
    match = _C_LITERAL.match(c_text.strip())
    if match is None:
        return None
    digits = match.group(1)
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX":
        return f"0o{digits[1:]}"
    return digits.lower() if digits[:2].lower() == "0x" else digits


def constant(value: int, t: CInt, src: str | None = None) -> IntExpr:
    prec = UNARY if value < 0 and src is None else ATOM
    return IntExpr(src or literal(value), t, prec, value, value >= 0, value.bit_length())


def typed_name(name: str, t: CInt) -> IntExpr:
    """A variable of type ``t`` (a parameter after conversion, a local, a member)."""
    return IntExpr(name, t, ATOM, None, not t.signed, t.bits)


def py_name(name: str) -> str:
    """A C identifier as a Python one (``from`` -> ``from_``)."""
    return name + "_" if keyword.iskeyword(name) or keyword.issoftkeyword(name) else name


@dataclass
class Needs:
    """Module-level helpers the translated code calls, so the renderer emits only those."""

    helpers: set[str] = field(default_factory=set)


def reduce(e: IntExpr) -> IntExpr:
    """The exact C value of ``e``: apply a wrap-around that was left pending."""
    if e.exact:
        return e
    return IntExpr(f"{_operand(e, BAND)} & {e.cint.mask:#x}", e.cint, BAND, None, True,
                   e.cint.bits, e.runtime)


def convert(e: IntExpr, t: CInt, needs: Needs) -> IntExpr:
    """C conversion of ``e`` to ``t`` (cast, assignment, argument, return).

    The result may be inexact (see :func:`reduce`): to an unsigned type the wrap-around is
    left pending.
    """
    if e.value is not None:
        wrapped = t.wrap(e.value)
        return constant(wrapped, t, e.src if wrapped == e.value and e.prec == ATOM else None)
    if not e.exact and not (not t.signed and t.bits <= e.cint.bits):
        e = reduce(e)  # only narrowing to unsigned keeps the pending wrap valid
    if e.exact and e.fits(t):
        return replace(e, cint=t)
    if not t.signed:
        return replace(e, cint=t, nonneg=False, bits=_UNBOUNDED, exact=False)
    needs.helpers.add("_signed")
    return IntExpr(f"_signed({e.src}, {t.bits})", t, ATOM, runtime=e.runtime)


def final(e: IntExpr, t: CInt, needs: Needs) -> str:
    """Source of ``e`` converted to ``t`` and reduced: a value that leaves the expression."""
    return reduce(convert(e, t, needs)).src


def _finish(src: str, prec: int, t: CInt, nonneg: bool, bits: int, runtime: bool,
            exact: bool = True) -> IntExpr:
    """An arithmetic result; unsigned wrap-around stays pending unless the bound excludes it."""
    if not t.signed and not (exact and nonneg and bits <= t.bits):
        return IntExpr(src, t, prec, None, False, _UNBOUNDED, runtime, exact=False)
    return IntExpr(src, t, prec, None, nonneg, bits if nonneg else _UNBOUNDED, runtime)


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


_FOLD: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": _c_div, "%": lambda a, b: a - b * _c_div(a, b),
    "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b,
    "<": lambda a, b: int(a < b), ">": lambda a, b: int(a > b),
    "<=": lambda a, b: int(a <= b), ">=": lambda a, b: int(a >= b),
    "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b),
}


class ExprTranslator:
    """Translates one C expression tree; identifiers and calls are resolved by the caller."""

    def __init__(self, types: TypeTable, lookup: Callable[[str, c_ast.Node], Value],
                 calls: dict[str, TypeRef | None] | None = None,
                 needs: Needs | None = None) -> None:
        self.types = types
        self.lookup = lookup
        self.calls = calls or {}
        self.needs = needs or Needs()

    def integer(self, node: c_ast.Node) -> IntExpr:
        value = self.value(node)
        if not isinstance(value, IntExpr):
            raise GenError(location(node), f"expected an integer, got {value.src}")
        return value

    def value(self, node: c_ast.Node) -> Value:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise GenError(location(node), f"cannot translate {_describe(node)}")
        result: Value = method(node)
        return result

    # leaves

    def _Constant(self, node: c_ast.Constant) -> IntExpr:
        text = str(node.value)
        if node.type == "char":
            return self._char(text, node)
        if node.type not in ("int", "unsigned int", "long int", "unsigned long int",
                             "long long int", "unsigned long long int"):
            raise GenError(location(node), f"cannot translate {node.type} constant {text}")
        digits = text.rstrip("uUlL")
        try:
            value, t = cint.literal_type(digits, text[len(digits):])
        except ValueError as e:
            raise GenError(location(node), str(e)) from None
        return constant(value, t, python_literal(text))

    def _char(self, text: str, node: c_ast.Node) -> IntExpr:
        try:
            char = bytes(text[1:-1], "ascii").decode("unicode_escape")
        except (UnicodeError, ValueError):
            char = ""
        if len(char) != 1:
            raise GenError(location(node), f"cannot translate character constant {text}")
        return constant(ord(char), INT, f"ord({char!r})")

    def _ID(self, node: c_ast.ID) -> Value:
        return self.lookup(str(node.name), node)

    # operators

    def _UnaryOp(self, node: c_ast.UnaryOp) -> IntExpr:
        op = node.op
        if op == "sizeof":
            return self._sizeof(node.expr)
        if op not in ("-", "+", "~", "!"):
            raise GenError(location(node), f"cannot translate unary '{op}'")
        a = self.integer(node.expr)
        if op == "!":
            a = reduce(a)
            if a.value is not None:
                return constant(int(not a.value), INT)
            return IntExpr(f"int(not {a.paren(NOT)})", INT, ATOM, None, True, 1, a.runtime)
        t = cint.promote(a.cint)
        a = convert(a, t, self.needs)
        if a.value is not None:
            folded = {"-": -a.value, "+": a.value, "~": ~a.value}[op]
            return constant(t.wrap(folded), t)
        if op == "+":
            return a
        # Python's -x and ~x are C's modulo 2**N: for unsigned types the wrap stays pending.
        return _finish(f"{op}{a.paren(UNARY)}", UNARY, t, False, 0, a.runtime, a.exact)

    def _sizeof(self, operand: c_ast.Node) -> IntExpr:
        if not isinstance(operand, c_ast.Typename):
            raise GenError(location(operand), "sizeof of an expression is not supported")
        resolved = self.types.resolve(operand)
        ctype = resolved.name if isinstance(resolved, RecordRef) else ctype_of(resolved)
        # Object sizes in UAPI are far below 4 GiB: the bound keeps _IOC's arithmetic exact.
        return IntExpr(f"ctypes.sizeof({ctype})", SIZE_T, ATOM, None, True, 32, True)

    def _BinaryOp(self, node: c_ast.BinaryOp) -> IntExpr:
        op = node.op
        a, b = self.integer(node.left), self.integer(node.right)
        try:
            return binary(op, a, b, self.needs)
        except _SubsetError as e:
            raise GenError(location(node), str(e)) from None

    def _TernaryOp(self, node: c_ast.TernaryOp) -> IntExpr:
        cond = reduce(self.integer(node.cond))
        a, b = self.integer(node.iftrue), self.integer(node.iffalse)
        t = cint.common(a.cint, b.cint)
        a, b = reduce(convert(a, t, self.needs)), reduce(convert(b, t, self.needs))
        if cond.value is not None:
            return a if cond.value else b
        src = f"{a.paren(OR)} if {cond.paren(OR)} else {b.paren(TERNARY)}"
        return IntExpr(src, t, TERNARY, None, a.nonneg and b.nonneg, max(a.bits, b.bits),
                       a.runtime or b.runtime or cond.runtime)

    def _Cast(self, node: c_ast.Cast) -> IntExpr:
        t = self.types.integer(node.to_type)
        return convert(self.integer(node.expr), t, self.needs)

    def _FuncCall(self, node: c_ast.FuncCall) -> Value:
        if not isinstance(node.name, c_ast.ID):
            raise GenError(location(node), "cannot translate a call through an expression")
        name = str(node.name.name)
        args = list(node.args.exprs) if node.args is not None else []
        if name in _IOCTL_MACROS:
            if len(args) != _IOCTL_MACROS[name]:
                raise GenError(location(node), f"{name} takes {_IOCTL_MACROS[name]} arguments")
            srcs = ", ".join(reduce(self.integer(arg)).src for arg in args)
            self.needs.helpers.add("ioctl")
            # _IOC_READ etc. are unsigned int: the opcode is a 32-bit unsigned value.
            return IntExpr(f"{name}({srcs})", UINT, ATOM, None, True, 32, True)
        if name not in self.calls:
            raise GenError(location(node), f"call to '{name}', which is not a translated helper")
        values = [self.value(arg) for arg in args]
        srcs = ", ".join(reduce(v).src if isinstance(v, IntExpr) else v.src for v in values)
        returns = self.calls[name]
        if isinstance(returns, Scalar):
            return typed_name(f"{name}({srcs})", returns.cint)
        if returns is None:
            raise GenError(location(node), f"'{name}' returns nothing")
        return ObjExpr(f"{name}({srcs})", returns)

    def _StructRef(self, node: c_ast.StructRef) -> Value:
        base = self.value(node.name)
        if not isinstance(base, ObjExpr) or not isinstance(base.type, RecordRef):
            raise GenError(location(node), f"'{node.type}' on something that is not a struct")
        member = self.types.field(base.type.name, str(node.field.name), node)
        attribute = member.python_name or py_name(member.name)
        return member_value(f"{base.src}.{attribute}", member.type, node)

    def _ArrayRef(self, node: c_ast.ArrayRef) -> Value:
        base = self.value(node.name)
        if not isinstance(base, ObjExpr) or not isinstance(base.type, Array):
            raise GenError(location(node), "subscript of something that is not an array member")
        index = reduce(self.integer(node.subscript))
        return member_value(f"{base.src}[{index.src}]", base.type.element, node)


class _SubsetError(Exception):
    pass


def member_value(src: str, t: TypeRef, node: c_ast.Node) -> Value:
    if isinstance(t, Scalar):
        if t.cint == cint.CHAR:
            raise GenError(location(node), "arithmetic on plain char members is not supported")
        return typed_name(src, t.cint)
    return ObjExpr(src, t)


def binary(op: str, a: IntExpr, b: IntExpr, needs: Needs) -> IntExpr:
    """``a op b`` with C's conversions; folded when both sides are known."""
    runtime = a.runtime or b.runtime
    if op in ("&&", "||"):
        a, b = reduce(a), reduce(b)
        if a.value is not None and b.value is not None:
            return constant(int(bool(a.value) and bool(b.value)) if op == "&&"
                            else int(bool(a.value) or bool(b.value)), INT)
        word, prec = ("and", AND) if op == "&&" else ("or", OR)
        src = f"int(bool({a.src}) {word} bool({b.src}))"
        return IntExpr(src, INT, ATOM, None, True, 1, runtime)
    if op in ("<<", ">>"):
        return _shift(op, a, b, needs)
    if op not in _BINARY_PREC and op not in _COMPARE:
        raise _SubsetError(f"cannot translate operator '{op}'")
    t = cint.common(a.cint, b.cint)
    a, b = convert(a, t, needs), convert(b, t, needs)
    if a.value is not None and b.value is not None:
        if op in ("/", "%") and b.value == 0:
            raise _SubsetError("division by zero")
        result = _FOLD[op](a.value, b.value)
        return constant(result if op in _COMPARE else t.wrap(result), INT if op in _COMPARE else t)
    if op in _COMPARE:
        a, b = reduce(a), reduce(b)  # a conversion to the common type may be pending
        src = f"int({a.paren(CMP + 1)} {op} {b.paren(CMP + 1)})"
        return IntExpr(src, INT, ATOM, None, True, 1, runtime)
    prec = _BINARY_PREC[op]
    py_op = "//" if op == "/" else op
    if op in ("/", "%"):
        a, b = reduce(a), reduce(b)
    if op in ("/", "%") and not (a.nonneg and b.nonneg):
        # C truncates toward zero where Python floors: call the module's C-style helper.
        helper = "_c_div" if op == "/" else "_c_mod"
        needs.helpers.add(helper)
        return _finish(f"{helper}({a.src}, {b.src})", ATOM, t, False, 0, runtime)
    src = f"{_operand(a, prec)} {py_op} {_operand(b, prec, right=True)}"
    if op == "&":
        # Masking with an exact non-negative operand that fits reduces the result too.
        bounds = [e.bits for e in (a, b) if e.nonneg and e.exact]
        return _finish(src, prec, t, bool(bounds), min(bounds, default=0), runtime,
                       bool(bounds) or (a.exact and b.exact))
    exact = a.exact and b.exact
    both = a.nonneg and b.nonneg
    bits = {"|": max(a.bits, b.bits), "^": max(a.bits, b.bits),
            "+": max(a.bits, b.bits) + 1, "*": a.bits + b.bits, "/": a.bits, "%": b.bits,
            "-": 0}[op]
    return _finish(src, prec, t, both and op != "-", bits, runtime, exact)


def _operand(e: IntExpr, prec: int, right: bool = False) -> str:
    """An operand of a binary operator of precedence ``prec``.

    Parenthesized unless atomic, unary, or the same operator's left operand: required where
    it binds looser, and for readers where it binds tighter (Python's ``&`` and ``<<`` do
    not rank as C's do; nobody should have to remember either).
    """
    if e.prec >= UNARY or (e.prec == prec and not right):
        return e.src
    return f"({e.src})"


def _shift(op: str, a: IntExpr, b: IntExpr, needs: Needs) -> IntExpr:
    t = cint.promote(a.cint)
    a = convert(a, t, needs)
    if op == ">>":
        a = reduce(a)
    b = reduce(convert(b, cint.promote(b.cint), needs))
    if b.value is not None and not 0 <= b.value < t.bits:
        raise _SubsetError(f"shift count {b.value} is out of range for {t.name}")
    if a.value is not None and b.value is not None:
        folded = a.value << b.value if op == "<<" else a.value >> b.value
        return constant(t.wrap(folded), t)
    src = f"{_operand(a, SHIFT)} {op} {_operand(b, SHIFT, right=True)}"
    runtime = a.runtime or b.runtime
    if op == "<<":
        bits = a.bits + b.value if b.value is not None else _UNBOUNDED
    else:
        bits = max(a.bits - b.value, 0) if b.value is not None else a.bits
    return _finish(src, SHIFT, t, a.nonneg, bits, runtime, a.exact)


def ctype_of(t: TypeRef) -> str:
    """The ctypes expression for a member type."""
    if isinstance(t, Scalar):
        return t.cint.ctype
    if isinstance(t, RecordRef):
        return class_ref(t.name)
    return f"{ctype_of(t.element)} * {t.length}"


def class_ref(name: str) -> str:
    """How a class body may name a record class: ``__kernel_timespec`` would be mangled
    there, so such classes also get an alias, ``_ref__kernel_timespec``."""
    return f"_ref{name}" if mangled(name) else name


def mangled(name: str) -> bool:
    return name.startswith("__") and not name.endswith("__")


def _describe(node: c_ast.Node) -> str:
    names = {"For": "a for loop", "While": "a while loop", "DoWhile": "a do-while loop",
             "Switch": "a switch", "Goto": "a goto", "Label": "a label",
             "UnaryOp": "this unary operator", "Assignment": "an assignment in an expression",
             "ExprList": "a comma expression", "CompoundLiteral": "a compound literal"}
    kind = type(node).__name__
    code = c_generator.CGenerator().visit(node).strip().replace("\n", " ")
    if len(code) > 60:
        code = code[:57] + "..."
    return f"{names.get(kind, kind)} ({code})"


class FunctionTranslator:
    """One ``static inline`` function -> a Python function with the same name and params."""

    def __init__(self, types: TypeTable, calls: dict[str, TypeRef | None],
                 lookup_global: Callable[[str, c_ast.Node], Value], needs: Needs) -> None:
        self.types = types
        self.calls = calls
        self.lookup_global = lookup_global
        self.needs = needs
        self.locals: dict[str, Value] = {}
        self.lines: list[str] = []
        self.returns: TypeRef | None = None
        self._depth = 1
        self.exprs = ExprTranslator(types, self._lookup, calls, needs)

    def translate(self, node: c_ast.FuncDef) -> Function:
        decl = node.decl
        func = decl.type
        self.returns = None if _is_void(func.type) else self._declared(func.type)
        params = self._params(func.args)
        self.calls[decl.name] = self.returns
        self._statement(node.body, 1)
        generator = c_generator.CGenerator()
        signature = generator.visit(decl).strip().replace("inline static ", "static inline ")
        where = location(node) or location(decl)
        assert where is not None
        return Function(str(decl.name), params, self._annotation(self.returns), self.lines,
                        where, signature, generator.visit(func.type).strip())

    def _lookup(self, name: str, node: c_ast.Node) -> Value:
        if name in self.locals:
            return self.locals[name]
        return self.lookup_global(name, node)

    def _declared(self, type_node: c_ast.Node) -> TypeRef:
        if isinstance(type_node, c_ast.PtrDecl):
            inner = self.types.resolve(type_node.type)
            if not isinstance(inner, RecordRef):
                raise GenError(location(type_node), "only pointers to structs are supported")
            return inner
        if isinstance(type_node, c_ast.ArrayDecl):
            raise GenError(location(type_node), "array parameters and locals are not supported")
        return self.types.resolve(type_node)

    def _annotation(self, t: TypeRef | None) -> str:
        if t is None:
            return "None"
        if isinstance(t, Scalar):
            return "int"
        if isinstance(t, RecordRef):
            return t.name
        raise AssertionError(t)

    def _params(self, args: c_ast.ParamList | None) -> list[Param]:
        params: list[Param] = []
        for p in (args.params if args is not None else []):
            if isinstance(p, c_ast.Typename) and _is_void(p.type):
                continue
            if not isinstance(p, c_ast.Decl) or not p.name:
                raise GenError(location(p), "unnamed parameters are not supported")
            t = self._declared(p.type)
            name = py_name(str(p.name))
            c_decl = c_generator.CGenerator().visit(p)
            params.append(Param(name, self._annotation(t), c_decl))
            if isinstance(t, Scalar):
                # Arguments convert to the parameter type, as in a call from C.
                self._emit(1, f"{name} = {self._param_conversion(name, t.cint)}")
                self.locals[str(p.name)] = typed_name(name, t.cint)
            else:
                if not isinstance(p.type, c_ast.PtrDecl) and isinstance(t, RecordRef):
                    # C passes a struct by value: the helper must not change the caller's.
                    self._emit(1, f"{name} = {t.name}.from_buffer_copy({name})")
                self.locals[str(p.name)] = ObjExpr(name, t)
        return params

    def _param_conversion(self, name: str, t: CInt) -> str:
        if t.signed:
            self.needs.helpers.add("_signed")
            return f"_signed({name}, {t.bits})"
        return f"{name} & {t.mask:#x}"

    def _emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def _statement(self, node: c_ast.Node, depth: int) -> None:
        if isinstance(node, c_ast.Compound):
            for item in node.block_items or []:
                self._statement(item, depth)
        elif isinstance(node, c_ast.Decl):
            self._local(node, depth)
        elif isinstance(node, c_ast.Return):
            self._return(node, depth)
        elif isinstance(node, c_ast.If):
            self._if(node, depth, "if")
        elif isinstance(node, c_ast.Assignment):
            self._assignment(node, depth)
        elif isinstance(node, c_ast.EmptyStatement):
            pass
        else:
            raise GenError(location(node), f"cannot translate {_describe(node)}")

    def _local(self, node: c_ast.Decl, depth: int) -> None:
        t = self._declared(node.type)
        name = py_name(str(node.name))
        if isinstance(t, Scalar):
            init = (final(self.exprs.integer(node.init), t.cint, self.needs)
                    if node.init is not None else "0")
            self._emit(depth, f"{name} = {init}")
            self.locals[str(node.name)] = typed_name(name, t.cint)
        elif isinstance(t, RecordRef):
            self._depth = depth
            self._emit(depth, f"{name} = {self._record_init(t, node.init)}")
            self.locals[str(node.name)] = ObjExpr(name, t)
        else:
            raise GenError(location(node), "array locals are not supported")

    def _record_init(self, t: RecordRef, init: c_ast.Node | None) -> str:
        if init is None:
            return f"{t.name}()"
        if not isinstance(init, c_ast.InitList):
            value = self.exprs.value(init)
            if not isinstance(value, ObjExpr) or value.type != t:
                raise GenError(location(init), f"initializer is not a {t.name}")
            return f"{t.name}.from_buffer_copy({value.src})"
        record = self.types.records[t.name]
        positional = [f for f in record.fields]
        args: list[str] = []
        for index, item in enumerate(init.exprs):
            if isinstance(item, c_ast.NamedInitializer):
                if len(item.name) != 1:
                    raise GenError(location(item), "nested designators are not supported")
                member = self.types.field(t.name, str(item.name[0].name), item)
                expr = item.expr
            else:
                if index >= len(positional) or positional[index].anonymous:
                    raise GenError(location(item), "positional initializer of an anonymous "
                                                   "member is not supported")
                member, expr = positional[index], item
            if not isinstance(member.type, Scalar):
                raise GenError(location(item), "only integer members can be initialized")
            src = final(self.exprs.integer(expr), member.type.cint, self.needs)
            args.append(f"{member.python_name or py_name(member.name)}={src}")
        one_line = f"{t.name}({', '.join(args)})"
        if len(one_line) <= 80:
            return one_line
        indent = "    " * (self._depth + 1)
        return f"{t.name}(\n" + "".join(f"{indent}{a},\n" for a in args) + \
            "    " * self._depth + ")"

    def _return(self, node: c_ast.Return, depth: int) -> None:
        if node.expr is None:
            self._emit(depth, "return None")
            return
        if isinstance(self.returns, Scalar):
            value = final(self.exprs.integer(node.expr), self.returns.cint, self.needs)
            self._emit(depth, f"return {value}")
            return
        obj = self.exprs.value(node.expr)
        if not isinstance(obj, ObjExpr) or obj.type != self.returns:
            raise GenError(location(node), "returned value does not have the function's type")
        self._emit(depth, f"return {obj.src}")

    def _if(self, node: c_ast.If, depth: int, keyword_: str) -> None:
        cond = reduce(self.exprs.integer(node.cond))
        self._emit(depth, f"{keyword_} {cond.src}:")
        start = len(self.lines)
        self._statement(node.iftrue, depth + 1)
        if len(self.lines) == start:
            self._emit(depth + 1, "pass")
        if isinstance(node.iffalse, c_ast.If):
            self._if(node.iffalse, depth, "elif")
        elif node.iffalse is not None:
            self._emit(depth, "else:")
            start = len(self.lines)
            self._statement(node.iffalse, depth + 1)
            if len(self.lines) == start:
                self._emit(depth + 1, "pass")

    def _assignment(self, node: c_ast.Assignment, depth: int) -> None:
        target = self.exprs.value(node.lvalue)
        if not isinstance(target, IntExpr):
            raise GenError(location(node), "only integer variables and members can be assigned")
        value = self.exprs.integer(node.rvalue)
        if node.op != "=":
            try:
                value = binary(node.op[:-1], target, value, self.needs)
            except _SubsetError as e:
                raise GenError(location(node), str(e)) from None
        self._emit(depth, f"{target.src} = {final(value, target.cint, self.needs)}")


def _is_void(node: c_ast.Node) -> bool:
    return (isinstance(node, c_ast.TypeDecl) and isinstance(node.type, c_ast.IdentifierType)
            and list(node.type.names) == ["void"])
