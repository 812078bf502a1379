"""``ublk-bindings-gen``: write a module from a header, or check one is up to date."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from typing import Callable

from . import __version__
from .diagnostics import GenError, GenErrors

_RECORDED_HEADER = re.compile(r"^where <header> is (\S+) relative to this file", re.M)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ublk-bindings-gen",
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
    try:
        from .generate import generate
    except ImportError as e:  # the runtime package installs without the generator's deps
        print(f"ublk-bindings-gen: {e.name} is missing: pip install 'ublk-bindings[codegen]'",
              file=sys.stderr)
        return 1
    try:
        if args.check is not None:
            return _check(generate, args.check, args.header, args.kernel,
                          tuple(args.include_dir))
        if args.header is None:
            parser.error("--output needs --header")
        source = generate(args.header, args.output, kernel=args.kernel,
                          include_dirs=tuple(args.include_dir))
    except (GenError, GenErrors) as e:
        for error in e.errors if isinstance(e, GenErrors) else [e]:
            where = f"{error.location}: " if error.location else "ublk-bindings-gen: "
            print(f"{where}error: {error.message}", file=sys.stderr)
        return 1
    args.output.write_text(source, encoding="utf-8")
    return 0


def _check(generate: Callable[..., str], module: Path, header: Path | None,
           kernel: str | None, include_dirs: tuple[Path, ...]) -> int:
    """Regenerate next to ``module`` and compare; print the diff and the fix if it drifted."""
    if not module.is_file():
        print(f"ublk-bindings-gen: {module}: no such file", file=sys.stderr)
        return 1
    current = module.read_text(encoding="utf-8")
    if header is None:
        recorded = _RECORDED_HEADER.search(current)
        if recorded is None:
            print(f"ublk-bindings-gen: {module} names no header; pass --header",
                  file=sys.stderr)
            return 1
        header = module.parent / recorded.group(1)
    expected = generate(header, module, kernel=kernel, include_dirs=include_dirs)
    if current == expected:
        return 0
    diff = difflib.unified_diff(current.splitlines(keepends=True),
                                expected.splitlines(keepends=True),
                                f"{module} (checked in)", f"{module} (generated from {header})")
    sys.stderr.writelines(diff)
    print(f"ublk-bindings-gen: {module} is out of date; regenerate with\n"
          f"  ublk-bindings-gen --header {header} --output {module}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
