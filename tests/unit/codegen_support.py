"""Shared machinery of the generator tests: generate-and-import, gcc, a naive C oracle.

The compiler checks compile C against the *same* include path the generator preprocesses
with (the header's directory plus the generator's stand-in ``include/``, ``-nostdinc``), so
what gcc measures is exactly what was parsed, never the machine's /usr/include/linux.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest

from ublk_bindings_codegen.generate import build, generate
from ublk_bindings_codegen.model import Module
from ublk_bindings_codegen.preprocess import INCLUDE_DIR

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "headers"
UBLK_HEADERS = {version: FIXTURES / version / "ublk_cmd.h" for version in ("6.1", "6.12", "7.2")}
BUNDLED = {"ublk_cmd.h": REPO / "headers" / "ublk_cmd.h", "io_uring.h": REPO / "headers" / "io_uring.h"}
ALL_HEADERS = {**{f"ublk_cmd.h@{v}": p for v, p in UBLK_HEADERS.items()},
               "io_uring.h@7.2": BUNDLED["io_uring.h"]}

requires_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


def load_generated(header: Path, directory: Path, name: str = "generated") -> ModuleType:
    """Generate a module for ``header`` into ``directory`` and import it from there."""
    target = directory / f"{name}.py"
    target.write_text(generate(header, target), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"_codegen_test_{name}", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_of(header: Path) -> Module:
    return build(header)[0]


def run_c(header: Path, body: str, directory: Path, prelude: str = "") -> list[str]:
    """Compile ``main``'s body against ``header`` in isolation, run it, return its lines."""
    source = directory / "check.c"
    source.write_text(
        "int printf(const char *, ...);\n"
        "#include <linux/ioctl.h>\n#include <linux/errno.h>\n"
        f'#include "{header.name}"\n{prelude}\n'
        "#define PRINT_INT(x) ((x) < 0 ? printf(\"%lld\\n\", (long long)(x)) "
        ": printf(\"%llu\\n\", (unsigned long long)(x)))\n"
        f"int main(void) {{\n{body}\nreturn 0;\n}}\n", encoding="utf-8")
    binary = directory / "check"
    compile_ = subprocess.run(
        ["gcc", "-std=gnu11", "-nostdinc", "-w", f"-I{header.parent}", f"-I{INCLUDE_DIR}",
         str(source), "-o", str(binary)], capture_output=True, text=True)
    assert compile_.returncode == 0, compile_.stderr
    run = subprocess.run([str(binary)], capture_output=True, text=True, check=True)
    return run.stdout.splitlines()


def strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


def defined_records(header: Path) -> set[str]:
    """Struct/union tags a C reader sees defined (a naive regex, not the generator's parse)."""
    code = strip_comments(_with_includes(header))
    return set(re.findall(r"\b(?:struct|union)\s+(\w+)\s*\{", code))


def defined_macros(header: Path) -> set[str]:
    """Object-like macros with a body (include guards have none)."""
    code = strip_comments(_with_includes(header)).replace("\\\n", " ")
    return set(re.findall(r"^\s*#\s*define\s+(\w+)[ \t]+\S", code, flags=re.M))


def defined_enumerators(header: Path) -> set[str]:
    code = strip_comments(_with_includes(header))
    names: set[str] = set()
    for body in re.findall(r"\benum\s*\w*\s*\{(.*?)\}", code, flags=re.S):
        names.update(re.findall(r"(?:^|,)\s*(\w+)\s*(?==|,|$)", body.strip()))
    return names


def _with_includes(header: Path) -> str:
    """The header plus the headers it includes from its own tree (not the stand-ins)."""
    text = header.read_text(encoding="utf-8")
    for include in re.findall(r'#include\s*<([^>]+)>', text):
        path = header.parent / include
        if path.is_file():
            text += "\n" + _with_includes(path)
    return text


def scalar_members(cls: type, prefix: str = "") -> Iterator[tuple[str, type]]:
    """(C member path, ctypes type) of every integer member, anonymous ones flattened."""
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for name, ctype, *_ in cls._fields_:  # type: ignore[attr-defined]
        if name in anonymous:
            yield from scalar_members(ctype, prefix)
        elif issubclass(ctype, (ctypes.Structure, ctypes.Union)):
            yield from scalar_members(ctype, f"{prefix}{name}.")
        elif not issubclass(ctype, ctypes.Array):
            yield prefix + name, ctype


def members(cls: type) -> Iterator[str]:
    """Every member name C can use in offsetof, anonymous members' members included."""
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for name, ctype, *_ in cls._fields_:  # type: ignore[attr-defined]
        if name in anonymous:
            yield from members(ctype)
        else:
            yield name
