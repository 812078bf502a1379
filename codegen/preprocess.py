"""Run the system C preprocessor, isolated from the machine's kernel headers.

``cpp -nostdinc -undef`` sees only the header's own directory, any ``--include-dir`` and
our minimal ``include/`` (linux/types.h and friends), so the result never depends on the
``linux-libc-dev`` of the build machine.  ``-dD`` keeps every ``#define`` in place, after
conditionals were applied, with the linemarkers that give each one its file:line: that is
the macro pass, and ``#define`` lines inside struct bodies come out like any other.

pycparser does not know GCC attributes: ``packed`` and ``aligned(N)`` are rewritten into C it
parses (see :mod:`.attributes`), any other is refused.  Bytes that are not UTF-8 outside
comments are refused at their file:line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .attributes import Attribute, parse_list
from .diagnostics import GenError, Location

INCLUDE_DIR = Path(__file__).resolve().parent / "include"

_LINEMARKER = re.compile(r'^# (\d+) "((?:[^"\\]|\\.)*)"')
_DEFINE = re.compile(r"^#define (\w+)(\(([^)]*)\))? ?(.*)$")
_UNDEF = re.compile(r"^#undef (\w+)")
_ATTRIBUTE = re.compile(r"__attribute__\s*\(\(\s*((?:[^()]|\([^()]*\))*?)\s*\)\)")

# Spellings pycparser does not know; only the parse sees these, not the compiler checks.
_PARSE_ONLY_DEFINES = ("-D__inline__=inline", "-D__signed__=signed", "-D__extension__=")


@dataclass(frozen=True)
class Define:
    """One ``#define`` from the header's own files; ``params`` is None for object-like."""

    name: str
    params: tuple[str, ...] | None
    body: str
    location: Location


@dataclass
class Preprocessed:
    """The header after cpp: C text for pycparser plus what cpp would have thrown away."""

    text: str
    defines: list[Define] = field(default_factory=list)
    # Files that belong to the header (not our stand-ins), in the order cpp entered them.
    sources: list[str] = field(default_factory=list)
    # ``struct __attribute__((...)) tag {``: the attributes by the (file, line) of the tag.
    tag_attributes: dict[tuple[str, int], list[Attribute]] = field(default_factory=dict)
    # The last line of C text, where a header that ends too early is reported.
    end: Location | None = None


def is_stand_in(path: str) -> bool:
    """True for our own minimal headers (their definitions are support, not output)."""
    try:
        Path(path).resolve().relative_to(INCLUDE_DIR)
    except ValueError:
        return False
    return True


def cpp_command(header: Path, include_dirs: tuple[Path, ...] = ()) -> list[str]:
    """The isolated preprocessor invocation (also used by the compiler checks' include path)."""
    cpp = shutil.which("cpp")
    if cpp is None:
        raise GenError(None, "the C preprocessor 'cpp' is not installed (apt-get install cpp)")
    dirs = [header.parent, *include_dirs, INCLUDE_DIR]
    return [cpp, "-nostdinc", "-undef", "-dD", *_PARSE_ONLY_DEFINES,
            *(f"-I{d}" for d in dirs), str(header)]


def preprocess(header: Path, include_dirs: tuple[Path, ...] = ()) -> Preprocessed:
    """Preprocess ``header``; raise :class:`GenError` with cpp's own message on failure."""
    if header.is_dir():
        raise GenError(Location(str(header)), "is a directory, not a header")
    if not header.is_file():
        raise GenError(Location(str(header)), "no such header")
    proc = subprocess.run(cpp_command(header, include_dirs), capture_output=True)
    stderr = proc.stderr.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        hint = ""
        if "No such file or directory" in stderr:
            stand_ins = ", ".join(sorted(f"linux/{p.name}"
                                         for p in (INCLUDE_DIR / "linux").iterdir()))
            hint = (f" (the generator brings only {stand_ins}; "
                    "pass -I DIR for the header's other includes)")
        where, message = _first_cpp_error(stderr, header)
        raise GenError(where, f"cpp: {message}{hint}")
    return split_cpp_output(proc.stdout.decode("utf-8", errors="surrogateescape"))


_CPP_ERROR = re.compile(r"^(.+?):(\d+):(?:\d+:)? (?:fatal )?error: (.*)$", re.M)


def _first_cpp_error(stderr: str, header: Path) -> tuple[Location, str]:
    """cpp's first ``file:line:col: error: message``, else its first line, at the header."""
    match = _CPP_ERROR.search(stderr)
    if match is not None:
        return Location(match.group(1), int(match.group(2))), match.group(3).strip()
    lines = [line for line in stderr.splitlines() if line.strip()]
    return Location(str(header)), lines[0].strip() if lines else "failed"


def split_cpp_output(output: str) -> Preprocessed:
    """Separate cpp -dD output into C text (defines blanked) and the source-file defines."""
    result = Preprocessed(text="")
    lines = output.split("\n")
    current, lineno = "<built-in>", 0
    defines: dict[str, Define] = {}
    previous = ""  # the last character of C code before this line
    for index, line in enumerate(lines):
        marker = _LINEMARKER.match(line)
        if marker:
            current, lineno = marker.group(2), int(marker.group(1))
            if _is_source(current) and current not in result.sources:
                result.sources.append(current)
            continue
        here = Location(current, lineno)
        lineno += 1
        if _NOT_UTF8.search(line):
            bad = _NOT_UTF8.search(line)
            assert bad is not None
            byte = ord(bad.group(0)) - 0xDC00
            raise GenError(here, f"byte {byte:#04x} is not UTF-8 (only comments may hold "
                                 "other encodings; is this a C header?)")
        if line.startswith("#define ") or line.startswith("#undef "):
            lines[index] = ""
            if _is_source(current):
                _record_define(line, here, defines)
            continue
        if "__attribute__" in line:
            line = lines[index] = _rewrite_attributes(line, here, previous, result)
        if line.strip() and not line.startswith("#"):
            previous = line.rstrip()[-1]
            result.end = here
    result.text = "\n".join(lines)
    result.defines = list(defines.values())
    return result


def _is_source(path: str) -> bool:
    return not path.startswith("<") and not is_stand_in(path)


def _record_define(line: str, here: Location, defines: dict[str, Define]) -> None:
    undef = _UNDEF.match(line)
    if undef:
        defines.pop(undef.group(1), None)
        return
    match = _DEFINE.match(line)
    if match is None:
        raise GenError(here, f"cannot read directive {line!r}")
    name, has_params, params, body = match.groups()
    param_names = tuple(p.strip() for p in params.split(",") if p.strip()) if has_params else None
    defines[name] = Define(name, param_names, body.strip(), here)


_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_IDENTIFIER_END = re.compile(r"[\w\])]$")
_RECORD_KEYWORD = re.compile(r"\b(struct|union|enum)$")


def _rewrite_attributes(line: str, here: Location, previous: str,
                        result: Preprocessed) -> str:
    """``packed``/``aligned(N)`` as C pycparser parses (see :mod:`.attributes`)."""
    out, rest = "", line
    while True:
        match = _ATTRIBUTE.search(rest)
        if match is None:
            break
        attributes = parse_list(match.group(1), here)
        before = (out + rest[: match.start()]).rstrip()
        after = rest[match.end():].lstrip()
        prev = before[-1] if before else previous
        nxt = after[:1]
        declarator_follows = bool(re.match(r"[A-Za-z_*(]", nxt))
        keyword = _RECORD_KEYWORD.search(before)
        markers = ", ".join(a.marker for a in attributes)
        if prev == "}":
            replacement = f" {markers}{', ' if declarator_follows else ''}"
        elif keyword is not None:
            if keyword.group(1) == "enum":
                raise GenError(here, "an __attribute__ on an enum (it changes the enum's "
                                     "size) is not supported")
            if "{" not in after:
                raise GenError(here, f"{keyword.group(1)} __attribute__((...)) is supported "
                                     "only with the tag and '{' on the same line")
            result.tag_attributes.setdefault((here.file, here.line), []).extend(attributes)
            replacement = " "
        elif _IDENTIFIER_END.search(prev) and declarator_follows:
            if any(a.kind == "packed" for a in attributes):
                raise GenError(here, "__attribute__((packed)) between a member's type and "
                                     "its name is not supported (put it after the name)")
            replacement = " " + " ".join(f"_Alignas({a.value})" for a in attributes) + " "
        elif _IDENTIFIER_END.search(prev) and nxt in (";", ",", ""):
            replacement = f", {markers}"
        else:
            raise GenError(here, "__attribute__ is supported only after a struct or union "
                                 "body, after the struct/union keyword, or on a member")
        out += rest[: match.start()] + replacement
        rest = rest[match.end():]
    rewritten = out + rest
    if "__attribute__" in rewritten:
        raise GenError(here, "cannot read this __attribute__ (nested or split over lines)")
    return rewritten
