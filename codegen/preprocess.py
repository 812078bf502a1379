"""Run the system C preprocessor, isolated from the machine's kernel headers.

``cpp -nostdinc -undef`` sees only the header's own directory, any ``--include-dir`` and
our minimal ``include/`` (linux/types.h and friends), so the result never depends on the
``linux-libc-dev`` of the build machine.  ``-dD`` keeps every ``#define`` in place, after
conditionals were applied, with the linemarkers that give each one its file:line: that is
the macro pass, and ``#define`` lines inside struct bodies come out like any other.

pycparser does not know GCC attributes.  The only ones UAPI structs use are rewritten here:
``} __attribute__((packed))`` becomes the marker identifier :data:`PACKED_MARKER` that
``parse`` turns back into a packed record, and ``aligned(8)`` (``__aligned_u64``) is dropped,
which is exact on every 64-bit architecture.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .diagnostics import GenError, Location

INCLUDE_DIR = Path(__file__).resolve().parent / "include"
PACKED_MARKER = "__ublk_codegen_packed__"

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
    if not header.is_file():
        raise GenError(None, f"{header}: no such header")
    proc = subprocess.run(cpp_command(header, include_dirs), capture_output=True, text=True)
    if proc.returncode != 0:
        hint = ""
        if "No such file or directory" in proc.stderr:
            stand_ins = ", ".join(sorted(f"linux/{p.name}"
                                         for p in (INCLUDE_DIR / "linux").iterdir()))
            hint = (f"\n(the generator brings only {stand_ins}; "
                    "pass -I DIR for the header's other includes)")
        raise GenError(None, f"cpp failed on {header}:\n{proc.stderr.strip()}{hint}")
    return split_cpp_output(proc.stdout)


def split_cpp_output(output: str) -> Preprocessed:
    """Separate cpp -dD output into C text (defines blanked) and the source-file defines."""
    result = Preprocessed(text="")
    lines = output.split("\n")
    current, lineno = "<built-in>", 0
    defines: dict[str, Define] = {}
    for index, line in enumerate(lines):
        marker = _LINEMARKER.match(line)
        if marker:
            current, lineno = marker.group(2), int(marker.group(1))
            if _is_source(current) and current not in result.sources:
                result.sources.append(current)
            continue
        here = Location(current, lineno)
        lineno += 1
        if line.startswith("#define ") or line.startswith("#undef "):
            lines[index] = ""
            if _is_source(current):
                _record_define(line, here, defines)
            continue
        if "__attribute__" in line:
            lines[index] = _rewrite_attributes(line, here)
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


def _rewrite_attributes(line: str, here: Location) -> str:
    def replace(match: re.Match[str]) -> str:
        attribute = re.sub(r"\s+", "", match.group(1))
        if attribute in ("packed", "__packed__"):
            if not line[: match.start()].rstrip().endswith("}"):
                raise GenError(here, "__attribute__((packed)) is supported only right after "
                                     "a struct or union body")
            return PACKED_MARKER
        if attribute in ("aligned(8)", "__aligned__(8)"):
            return ""
        raise GenError(here, f"unsupported attribute __attribute__(({attribute}))")

    rewritten = _ATTRIBUTE.sub(replace, line)
    if "__attribute__" in rewritten:
        raise GenError(here, "cannot read this __attribute__ (nested or split over lines)")
    return rewritten
