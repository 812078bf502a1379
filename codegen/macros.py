"""The macro pass: object-like ``#define``s -> integer constants with C semantics.

Each body is parsed on its own by pycparser (as the initializer of a dummy variable, with a
linemarker so errors point at the ``#define``) and evaluated by the translator.  Names in
a body are other macros (evaluated on demand, cycles reported), enumerators, or errno
names (``-ENODEV``).  ``_IOR('u', nr, struct T)`` takes a type, which no C expression can,
so its last argument is wrapped in ``sizeof`` first, as the kernel's own ``_IOR`` does.

A body that needs the running machine (``sizeof`` of a ctypes class, the ioctl encoding,
an errno value) stays a Python expression evaluated at import; everything else is folded
to its value here.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

from pycparser import c_ast, c_parser

from . import cint
from .diagnostics import GenError, GenErrors
from .model import Constant
from .parse import Parsed
from .preprocess import Define
from .translate import ExprTranslator, IntExpr, Needs, Value, constant, reduce

_IOCTL_WITH_TYPE = re.compile(r"\b(_IOR|_IOW|_IOWR)\s*\(")
_ERRNO_NAMES = frozenset(errno.errorcode.values())


def evaluate(defines: list[Define], parsed: Parsed, needs: Needs) -> list[Constant]:
    """Constants for every integer macro; all failures at once.

    Source order, except that an import-time constant follows every constant its body
    names (C allows a macro to use one defined further down).
    """
    evaluator = _Evaluator(defines, parsed, needs)
    errors: list[GenError] = []
    for define in defines:
        try:
            evaluator.constant(define.name)
        except GenError as e:
            errors.append(e)
        except _Skip:
            pass
    if errors:
        raise GenErrors(errors)
    rank = {name: index for index, name in enumerate(evaluator.order)}
    ordered = [evaluator.done[d.name] for d in defines if d.name in evaluator.done]
    runtime = sorted((c for c in ordered if c.value is None), key=lambda c: rank[c.name])
    slots = iter(runtime)
    return [c if c.value is not None else next(slots) for c in ordered]


class _Skip(Exception):
    """An include guard: a macro with no value that exists only to be tested."""


class _Evaluator:
    def __init__(self, defines: list[Define], parsed: Parsed, needs: Needs) -> None:
        self.defines = {d.name: d for d in defines}
        self.parsed = parsed
        self.needs = needs
        self.done: dict[str, Constant] = {}
        self.exprs: dict[str, IntExpr] = {}
        self.active: list[str] = []
        self.order: list[str] = []  # completion order: dependencies first
        self.typedefs = set(parsed.types.typedefs)
        self.parser = c_parser.CParser()  # reused: building one costs more than a parse
        self.parsed_bodies = self._parse_all(defines)

    def constant(self, name: str) -> IntExpr:
        if name in self.exprs:
            return self.exprs[name]
        define = self.defines[name]
        if name in self.active:
            cycle = " -> ".join(self.active[self.active.index(name):] + [name])
            raise GenError(define.location, f"macro {name} refers to itself ({cycle})")
        if define.params is not None:
            raise GenError(define.location, f"function-like macro {name}"
                                            f"({', '.join(define.params)}) is not translated")
        if not define.body:
            if self._is_include_guard(define):
                raise _Skip()
            raise GenError(define.location, f"macro {name} has no value")
        self.active.append(name)
        try:
            value = reduce(ExprTranslator(self.parsed.types, self._lookup,
                                          needs=self.needs).integer(self._parse(define)))
        except GenError as e:
            if e.message.startswith("macro "):
                raise
            raise GenError(define.location, f"macro {name}: {e.message}") from None
        finally:
            self.active.pop()
        comments = self.parsed.comments_of(define.location)
        self.done[name] = Constant(
            name, define.body, value.cint, define.location, value.value,
            None if value.value is not None else value.src,
            comments.for_line(define.location.line), comments.above(define.location.line))
        self.order.append(name)
        self.exprs[name] = (constant(value.value, value.cint, name) if value.value is not None
                            else IntExpr(name, value.cint, value=None, nonneg=value.nonneg,
                                         bits=value.bits, runtime=True))
        return self.exprs[name]

    def _lookup(self, name: str, node: c_ast.Node) -> Value:
        if name in self.defines:
            return self.constant(name)
        if name in self.parsed.enumerators:
            value, t = self.parsed.enumerators[name]
            return constant(value, t, name)
        if name in _ERRNO_NAMES:
            self.needs.helpers.add("errno")
            # errno values differ between architectures (above 34): read them at import.
            return IntExpr(f"errno.{name}", cint.INT, value=None, nonneg=True, bits=12,
                           runtime=True)
        define = self.defines[self.active[-1]]
        raise GenError(define.location, f"macro {define.name}: unknown identifier '{name}'")

    def _parse_all(self, defines: list[Define]) -> dict[str, c_ast.Node]:
        """Every body in one parse (fast); on any syntax error, each alone (precise)."""
        candidates = [d for d in defines if d.params is None and d.body]
        text = "".join(f"typedef int {name};\n" for name in sorted(self.typedefs)) + "".join(
            f"# {d.location.line} \"{d.location.file}\"\n"
            f"int __ublk_codegen_{d.name} = ({_sizeof_ioctl_types(d.body)});\n"
            for d in candidates)
        try:
            ast = self.parser.parse(text, "<macros>")
        except c_parser.ParseError:
            return {}
        declarations = ast.ext[len(self.typedefs):]
        return {d.name: decl.init for d, decl in zip(candidates, declarations)}

    def _parse(self, define: Define) -> c_ast.Node:
        if define.name in self.parsed_bodies:
            return self.parsed_bodies[define.name]
        body = _sizeof_ioctl_types(define.body)
        loc = define.location
        # The parser must know which names are types (for casts); declare only those used.
        used = sorted(self.typedefs.intersection(re.findall(r"\w+", body)))
        prelude = "".join(f"typedef int {name};\n" for name in used)
        text = (f"{prelude}# {loc.line} \"{loc.file}\"\n"
                f"int __ublk_codegen_macro = ({body});\n")
        try:
            ast = self.parser.parse(text, loc.file)
        except c_parser.ParseError as e:
            raise GenError(loc, f"macro {define.name}: body '{define.body}' is not an "
                                f"integer expression ({e})") from None
        init: c_ast.Node = ast.ext[-1].init
        return init

    def _is_include_guard(self, define: Define) -> bool:
        source = Path(define.location.file).read_text(encoding="utf-8", errors="replace")
        return re.search(rf"#\s*ifndef\s+{re.escape(define.name)}\s*\n\s*#\s*define\s+"
                         rf"{re.escape(define.name)}\s*\n", source) is not None


def _sizeof_ioctl_types(body: str) -> str:
    """``_IOR(t, nr, struct T)`` -> ``_IOR(t, nr, sizeof(struct T))``."""
    out, pos = [], 0
    for match in _IOCTL_WITH_TYPE.finditer(body):
        if match.start() < pos:
            continue
        args, end = _split_args(body, match.end())
        if len(args) == 3 and not args[2].strip().startswith("sizeof"):
            args[2] = f"sizeof({args[2].strip()})"
        out.append(body[pos:match.end()] + ", ".join(a.strip() for a in args) + ")")
        pos = end
    out.append(body[pos:])
    return "".join(out)


def _split_args(text: str, start: int) -> tuple[list[str], int]:
    """Top-level comma-separated arguments from ``start`` up to the matching ')'."""
    depth, args, current = 0, [], []  # type: tuple[int, list[str], list[str]]
    for index in range(start, len(text)):
        char = text[index]
        if char == ")" and depth == 0:
            args.append("".join(current))
            return args, index + 1
        if char == "," and depth == 0:
            args.append("".join(current))
            current = []
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current.append(char)
    return [text[start:]], len(text)
