"""``ublk-bindings-gen``: write a module from a header, or check one is up to date.

Every failure is one ``ublk-bindings-gen: FILE:LINE: error: ...`` line per problem (or
argparse's usage error) and exit status 1 (2 for usage); a module is written to a temporary
file next to ``--output`` and renamed over it, so a failed or interrupted run leaves the old
module or none, never half of one.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Callable

from . import __version__
from .diagnostics import GenError, GenErrors, Location

_RECORDED_HEADER = re.compile(r"^where <header> is (.+?) relative to this file", re.M)
PROG = "ublk-bindings-gen"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate ctypes bindings (structs, constants, inline helpers) from a "
                    "Linux UAPI header, or --check that a generated module is current.")
    parser.add_argument("--header", type=Path, help="the C header, e.g. headers/ublk_cmd.h")
    parser.add_argument("--output", type=Path, help="the Python module to write")
    parser.add_argument("--check", type=Path, metavar="FILE",
                        help="fail if FILE differs from what the generator produces now")
    parser.add_argument("--kernel", help="kernel version to record (default: the "
                                         "'kernel:' line of PROVENANCE next to the header)")
    parser.add_argument("-I", "--include-dir", type=Path, action="append", default=[],
                        help="extra include directory, searched before the bundled stand-ins")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    if (args.check is None) == (args.output is None):
        parser.error("give either --output (with --header) or --check")
    if args.output is not None and args.header is None:
        parser.error("--output needs --header")
    try:
        from .generate import generate
    except ImportError as e:  # the runtime package installs without the generator's deps
        print(f"{PROG}: {e.name} is missing: pip install 'ublk-bindings[codegen]'",
              file=sys.stderr)
        return 1
    try:
        if args.check is not None:
            return _check(generate, args.check, args.header, args.kernel,
                          tuple(args.include_dir))
        _writable(args.output)
        source = _generate(generate, args.header, args.output, args.kernel,
                           tuple(args.include_dir))
        write_atomically(args.output, source)
    except (GenError, GenErrors) as e:
        report(e)
        return 1
    return 0


def report(e: GenError | GenErrors) -> None:
    """One ``ublk-bindings-gen: FILE:LINE: error: message`` line per problem."""
    for error in e.errors if isinstance(e, GenErrors) else [e]:
        where = f" {error.location}:" if error.location else ""
        print(f"{PROG}:{where} error: {error.message}", file=sys.stderr)


def _generate(generate: Callable[..., str], header: Path, output: Path, kernel: str | None,
              include_dirs: tuple[Path, ...]) -> str:
    """``generate``, with anything it did not foresee still reported as one line."""
    try:
        return generate(header, output, kernel=kernel, include_dirs=include_dirs)
    except (GenError, GenErrors):
        raise
    except Exception as e:  # a generator bug must still not end in a traceback
        raise GenError(Location(str(header)), "internal error, please report it with the "
                                             f"header: {type(e).__name__}: {e}") from e


def _writable(output: Path) -> None:
    """Refuse, before any work, an --output that cannot be written as a file."""
    if output.is_dir():
        raise GenError(Location(str(output)), "--output is a directory")
    if not output.parent.is_dir():
        raise GenError(Location(str(output)), f"directory {output.parent} does not exist")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file in ``path``'s directory and rename it over ``path``."""
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise GenError(Location(str(path)), f"cannot write: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except OSError as e:
        os.unlink(temporary)
        raise GenError(Location(str(path)), f"cannot write: {e.strerror}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check(generate: Callable[..., str], module: Path, header: Path | None,
           kernel: str | None, include_dirs: tuple[Path, ...]) -> int:
    """Regenerate next to ``module`` and compare; print the diff and the fix if it drifted."""
    if module.is_dir():
        raise GenError(Location(str(module)), "is a directory, not a generated module")
    if not module.is_file():
        raise GenError(Location(str(module)), "no such file")
    try:
        current = module.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = module.read_bytes()[: e.start].count(b"\n") + 1
        raise GenError(Location(str(module), line),
                       "not a generated module (bytes that are not UTF-8)") from None
    if header is None:
        recorded = _RECORDED_HEADER.search(current)
        if recorded is None:
            raise GenError(Location(str(module)), "names no header; pass --header")
        header = module.parent / recorded.group(1)
    expected = _generate(generate, header, module, kernel, include_dirs)
    if current == expected:
        return 0
    diff = difflib.unified_diff(current.splitlines(keepends=True),
                                expected.splitlines(keepends=True),
                                f"{module} (checked in)", f"{module} (generated from {header})")
    sys.stderr.writelines(diff)
    print(f"{PROG}: {module} is out of date; regenerate with\n"
          f"  {PROG} --header {_quoted(header)} --output {_quoted(module)}", file=sys.stderr)
    return 1


def _quoted(path: Path) -> str:
    """A path as a shell word (the fix is meant to be pasted)."""
    return shlex.quote(str(path))


if __name__ == "__main__":
    sys.exit(main())
