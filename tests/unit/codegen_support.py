"""Shared machinery of the generator tests: generate-and-import, gcc, a naive C oracle.

The compiler checks compile C against the *same* include path the generator preprocesses
with (the header's directory plus the generator's stand-in ``include/``, ``-nostdinc``), so
what gcc measures is exactly what was parsed, never the machine's /usr/include/linux.
"""

from __future__ import annotations

import ctypes
import importlib.util
import random
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

from ublk_bindings_codegen.generate import build, generate
from ublk_bindings_codegen.model import Module, Record, RecordRef, Scalar
from ublk_bindings_codegen.parse import GENERATED_PREFIX
from ublk_bindings_codegen.preprocess import INCLUDE_DIR

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "headers"
BUNDLED = {name: REPO / "headers" / name for name in ("ublk_cmd.h", "io_uring.h")}
# Older kernels' headers are fixtures; the newest (7.2 today) is the bundled one itself, so the
# compiler checks cover whatever headers/ublk_cmd.h is regenerated from.
UBLK_HEADERS = {**{version: FIXTURES / version / "ublk_cmd.h" for version in ("6.1", "6.12")},
                "bundled": BUNDLED["ublk_cmd.h"]}
ALL_HEADERS = {**{f"ublk_cmd.h@{v}": p for v, p in UBLK_HEADERS.items()},
               "io_uring.h@bundled": BUNDLED["io_uring.h"]}

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
        if name.startswith(GENERATED_PREFIX):
            continue
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
        elif not name.startswith(GENERATED_PREFIX):  # the generator's padding
            yield name


def helpers_against_gcc(header: Path, directory: Path, cases: int = 200,
                        seed: int = 2) -> tuple[int, list[str]]:
    """Call every translated helper of ``header`` on random inputs in C and in Python.

    Integer arguments are random 64-bit patterns (so C's conversion to the parameter type
    is exercised too) plus edge values; struct arguments are random bytes.  Returns the
    number of comparisons and a description of each mismatch.
    """
    module = load_generated(header, directory)
    functions = model_of(header).functions
    rng = random.Random(seed)
    c_lines: list[str] = []
    expected: list[tuple[str, int]] = []
    for fn in functions:
        python_fn = getattr(module, fn.name)
        for case in range(cases):
            c_args, py_args = [], []
            for index, param in enumerate(fn.params):
                if param.annotation == "int":
                    value = _edge_or_random(rng, case)
                    c_args.append(f"(unsigned long long){value:#x}ULL")
                    py_args.append(value)
                    continue
                cls = getattr(module, param.annotation)
                raw = bytes(rng.getrandbits(8) for _ in range(ctypes.sizeof(cls)))
                var = f"v_{fn.name}_{case}_{index}"
                kind = "union" if issubclass(cls, ctypes.Union) else "struct"
                literal = "".join(f"\\x{b:02x}" for b in raw)
                c_lines.append(f'{kind} {param.annotation} {var}; '
                               f'__builtin_memcpy(&{var}, "{literal}", sizeof {var});')
                c_args.append(f"&{var}" if "*" in param.c_decl else var)
                py_args.append(cls.from_buffer_copy(raw))
            call = f"{fn.name}({', '.join(c_args)})"
            result = python_fn(*py_args)
            label = f"{fn.name}{tuple(a if isinstance(a, int) else '<struct>' for a in py_args)}"
            if fn.returns == "int":
                c_lines.append(f"PRINT_INT({call});")
                expected.append((label, result))
            else:
                cls = getattr(module, fn.returns)
                c_lines.append(f"{{ {fn.c_returns} r = {call};")
                for path, _ in scalar_members(cls):
                    c_lines.append(f"PRINT_INT(r.{path});")
                    value = result
                    for part in path.split("."):
                        value = getattr(value, part)
                    expected.append((f"{label}.{path}", value))
                c_lines.append("}")
    measured = run_c(header, "\n".join(c_lines), directory)
    assert len(measured) == len(expected)
    mismatches = [f"{label}: C {c}, Python {py}" for (label, py), c in zip(expected, measured)
                  if int(c) != py]
    return len(expected), mismatches


def _edge_or_random(rng: random.Random, case: int) -> int:
    edges = [0, 1, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
             0x100000000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF]
    if case < len(edges):
        return edges[case]
    return rng.getrandbits(rng.choice((8, 16, 32, 64)))


def layout_mismatches(header: Path, directory: Path, name: str = "generated") -> list[str]:
    """Every record of ``header``, generated and imported, against gcc on the same header.

    For each struct/union (tagged or typedef'd): sizeof and alignment; for each member
    reachable from it (anonymous members flattened, nested records followed): offset and
    size, and for each integer member and bit-field the bytes it occupies: the record is
    zeroed, the member set to all ones (-1), and the record's bytes compared.
    """
    module = load_generated(header, directory, name)
    records = {r.name: r for r in model_of(header).records}
    checks: list[tuple[str, str]] = []  # (C statement printing one line, Python's line)
    for record in records.values():
        if not (record.tag or record.typedef):
            continue
        c_type = f"{record.kind} {record.tag}" if record.tag else record.name
        cls = getattr(module, record.name)
        checks.append((f'printf("%zu %zu\\n", sizeof({c_type}), _Alignof({c_type}));',
                       f"{ctypes.sizeof(cls)} {ctypes.alignment(cls)}"))
        for c_path, py_path, kind in _member_paths(record, records):
            if kind == "scalar":
                checks.append((f"{{ {c_type} v; __builtin_memset(&v, 0, sizeof v); "
                               f"v.{c_path} = -1; DUMP(v); }}", _all_ones(cls, py_path)))
            else:
                offset, size = _offset_and_size(cls, py_path)
                c_size = f"sizeof((({c_type} *)0)->{c_path})" if size else "0"
                checks.append((f'printf("%zu %zu\\n", __builtin_offsetof({c_type}, {c_path}), '
                               f"(size_t){c_size});", f"{offset} {size}"))
    prelude = ("typedef unsigned long size_t;\n"
               "#define DUMP(v) do { for (size_t i = 0; i < sizeof(v); i++) "
               "printf(\"%02x\", ((unsigned char *)&(v))[i]); printf(\"\\n\"); } while (0)")
    measured = run_c(header, "\n".join(c for c, _ in checks), directory, prelude)
    assert len(measured) == len(checks)
    return [f"{c}: gcc {got!r}, Python {expected!r}"
            for (c, expected), got in zip(checks, measured) if got != expected]


def _member_paths(record: Record, records: dict[str, Record], c_prefix: str = "",
                  py_prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(C path, Python path, "scalar" or "object") of every named member, recursively."""
    for f in record.fields:
        if f.anonymous:
            assert isinstance(f.type, RecordRef)
            yield from _member_paths(records[f.type.name], records, c_prefix, py_prefix)
            continue
        if not f.name:
            continue
        c_path, py_path = c_prefix + f.name, py_prefix + f.python_name
        if isinstance(f.type, Scalar):
            yield c_path, py_path, "scalar"
            continue
        yield c_path, py_path, "object"
        if isinstance(f.type, RecordRef):
            yield from _member_paths(records[f.type.name], records, c_path + ".", py_path + ".")


def _all_ones(cls: Any, py_path: str) -> str:
    """The bytes of a zeroed ``cls`` with the member at ``py_path`` set to -1, as hex."""
    obj = cls()
    *parents, last = py_path.split(".")
    target = obj
    for part in parents:
        target = getattr(target, part)
    ctype = _ctype_of(type(target), last)
    value: object
    if issubclass(ctype, ctypes.c_bool):
        value = True
    elif issubclass(ctype, ctypes.c_char):
        value = b"\xff"
    elif ctype(-1).value == -1:
        value = -1
    else:
        value = (1 << (8 * ctypes.sizeof(ctype))) - 1
    setattr(target, last, value)
    return bytes(obj).hex()


def _ctype_of(cls: Any, name: str) -> Any:
    """The ctypes type of member ``name`` of ``cls``, looking into anonymous members."""
    fields = {field[0]: field[1] for field in cls._fields_}
    if name in fields:
        return fields[name]
    for anonymous in getattr(cls, "_anonymous_", ()):
        inner = _ctype_of(fields[anonymous], name)
        if inner is not None:
            return inner
    return None


def _offset_and_size(cls: Any, py_path: str) -> tuple[int, int]:
    """Offset from the start of ``cls`` and size of the member at ``py_path``."""
    offset, size, current = 0, 0, cls
    for part in py_path.split("."):
        descriptor = getattr(current, part)
        offset, size = offset + descriptor.offset, descriptor.size
        current = _ctype_of(current, part)
    return offset, size
