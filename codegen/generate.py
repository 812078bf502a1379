"""The whole pipeline for one header: preprocess, parse, evaluate, translate, render."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from pycparser import c_ast

from . import __version__, families, layout, macros
from .diagnostics import GenError, GenErrors, Location
from .model import Function, Module
from .parse import Parsed, parse
from .preprocess import preprocess
from .render import render
from .translate import FunctionTranslator, Needs, Value, constant
from .model import TypeRef
from .typetable import location


def generate(header: Path, output: Path | None = None, *, kernel: str | None = None,
             include_dirs: tuple[Path, ...] = ()) -> str:
    """Python source for ``header``; ``output`` only decides the recorded relative path."""
    return render(*build(header, output, kernel=kernel, include_dirs=include_dirs))


def build(header: Path, output: Path | None = None, *, kernel: str | None = None,
          include_dirs: tuple[Path, ...] = ()) -> tuple[Module, set[str]]:
    """The model of ``header`` and the module-level helpers its Python code calls."""
    pre = preprocess(header, include_dirs)
    parsed = parse(pre)
    needs = Needs()
    errors: list[GenError] = list(layout.verify(parsed.records))
    try:
        constants = macros.evaluate(pre.defines, parsed, needs)
    except GenErrors as e:
        errors.extend(e.errors)
        constants = []
    functions = _functions(parsed, needs, errors)
    if errors:
        raise GenErrors(errors)
    if not (parsed.records or parsed.enums or parsed.typedefs or constants or functions):
        raise GenError(Location(str(header)), "no definitions (no struct, union, enum, "
                                              "typedef, integer macro or inline helper)")
    base = output.resolve().parent if output is not None else Path.cwd()
    module = Module(
        header_name=header.name,
        header_path=Path(os.path.relpath(header.resolve(), base)).as_posix(),
        sha256=hashlib.sha256(header.read_bytes()).hexdigest(),
        kernel=kernel if kernel is not None else kernel_version(header),
        generator_version=__version__,
        typedefs=parsed.typedefs, records=parsed.records, enums=parsed.enums,
        constants=constants, families=families.infer(constants), functions=functions)
    _check_names(module)
    return module, needs.helpers


def kernel_version(header: Path) -> str | None:
    """The ``kernel: X.Y.Z`` line of a PROVENANCE file next to the header, if any."""
    provenance = header.parent / "PROVENANCE"
    if not provenance.is_file():
        return None
    match = re.search(r"^kernel:\s*(\S+)", provenance.read_text(), re.M)
    return match.group(1) if match else None


def _functions(parsed: Parsed, needs: Needs, errors: list[GenError]) -> list[Function]:
    calls: dict[str, TypeRef | None] = {}

    def lookup(name: str, node: c_ast.Node) -> Value:
        if name in parsed.enumerators:
            value, t = parsed.enumerators[name]
            return constant(value, t, name)
        raise GenError(location(node), f"unknown identifier '{name}'")

    functions = []
    for node in parsed.functions:
        try:
            function = FunctionTranslator(parsed.types, calls, lookup, needs).translate(node)
        except GenError as e:
            errors.append(GenError(e.location, f"static inline {node.decl.name}(): {e.message}"))
            continue
        comments = parsed.comments_of(function.location)
        function.doc = (comments.above(function.location.line)
                        or comments.above(function.location.line - 1))
        functions.append(function)
    return functions


def _check_names(module: Module) -> None:
    seen: dict[str, tuple[str, Location | None]] = {}
    groups: list[tuple[str, list[tuple[str, Location | None]]]] = [
        ("macro", [(c.name, c.location) for c in module.constants]),
        ("enumerator", [(e.name, e.location) for en in module.enums for e in en.enumerators]),
        ("enum", [(e.tag, e.location) for e in module.enums if e.tag]),
        ("typedef", [(t.name, t.location) for t in module.typedefs]),
        ("record", [(r.name, r.location) for r in module.records]),
        ("family", [(f.name, None) for f in module.families]),
        ("function", [(f.name, f.location) for f in module.functions])]
    for kind, names in groups:
        for name, where in names:
            if name in seen:
                other, other_where = seen[name]
                at = f" at {other_where}" if other_where else ""
                raise GenError(where or other_where,
                               f"{kind} {name} clashes with the {other} of that name{at}")
            seen[name] = kind, where
