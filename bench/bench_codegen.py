"""Import cost of the generated bindings and generation time, against references of this run.

    python -m bench.bench_codegen [--runs N]

Import: each sample is a fresh interpreter timing one ``import`` statement from inside
(``perf_counter`` around it), so interpreter start-up is excluded.  The reference is
``import ctypes``, which every ctypes binding pays; the figure that matters is what
``ublk_bindings`` adds on top (target: < 30 ms).  The generated modules are also timed alone,
loaded from their files, so a heavier runtime in ``ublk_bindings/__init__`` shows up apart.

Generation: in-process ``generate()`` of the bundled headers (target: < 2 s), against the
system ``cpp`` on the same header, the floor every run pays.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
HEADERS = [REPO / "headers" / "ublk_cmd.h", REPO / "headers" / "io_uring.h"]

_TIMED_IMPORT = """\
import time
t = time.perf_counter()
{statement}
print(time.perf_counter() - t)
"""
_LOAD_FILE = ("import importlib.util as u; s = u.spec_from_file_location('m', {path!r}); "
              "m = u.module_from_spec(s); s.loader.exec_module(m)")


def import_seconds(statement: str, runs: int) -> float:
    """Median over fresh interpreters of the time one import statement takes.

    Bytecode caching is forced on and warmed first: an installed wheel ships .pyc files,
    and compiling the source on every start (PYTHONDONTWRITEBYTECODE) is not its cost.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    samples = []
    for run in range(runs + 1):
        out = subprocess.run([sys.executable, "-c", _TIMED_IMPORT.format(statement=statement)],
                             capture_output=True, text=True, check=True, cwd=REPO, env=env)
        if run:
            samples.append(float(out.stdout))
    return statistics.median(samples)


def call_seconds(function: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_codegen",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="samples per figure (median)")
    args = parser.parse_args(argv)

    from ublk_bindings_codegen.generate import generate
    from ublk_bindings_codegen.preprocess import cpp_command

    ctypes_s = import_seconds("import ctypes", args.runs)
    rows = [("import ctypes (reference)", ctypes_s)]
    for label, statement in [
        ("import ublk_bindings", "import ublk_bindings"),
        ("ublk_cmd.py alone", _LOAD_FILE.format(path=str(REPO / "ublk_bindings/ublk_cmd.py"))),
        ("io_uring.py alone", _LOAD_FILE.format(path=str(REPO / "ublk_bindings/io_uring.py"))),
    ]:
        rows.append((label, import_seconds(statement, args.runs)))
    print(f"import time, median of {args.runs} fresh interpreters:")
    print(f"  {'':30} {'ms':>8} {'x ctypes':>9} {'added ms':>9}")
    for label, seconds in rows:
        print(f"  {label:30} {seconds * 1e3:8.2f} {seconds / ctypes_s:9.2f} "
              f"{(seconds - ctypes_s) * 1e3:9.2f}")
    added = rows[1][1] - ctypes_s
    print(f"  import ublk_bindings adds {added * 1e3:.1f} ms over import ctypes "
          f"(target < 30 ms): {'ok' if added < 0.030 else 'MISSED'}")

    print(f"\ngeneration time, median of {args.runs} runs in one process:")
    print(f"  {'':30} {'ms':>8} {'cpp ms':>8} {'x cpp':>7}")
    worst = 0.0
    for header in HEADERS:
        command = cpp_command(header)
        cpp_s = call_seconds(functools.partial(subprocess.run, command, capture_output=True,
                                               check=True), args.runs)
        gen_s = call_seconds(functools.partial(generate, header), args.runs)
        worst = max(worst, gen_s)
        print(f"  {header.name:30} {gen_s * 1e3:8.1f} {cpp_s * 1e3:8.1f} {gen_s / cpp_s:7.1f}")
    print(f"  slowest generation {worst:.2f} s (target < 2 s): "
          f"{'ok' if worst < 2 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
