"""Import cost of the generated bindings and generation time, against references of this run.

    python -m bench.bench_codegen [--runs N]

Import: each sample is a fresh interpreter timing one ``import`` statement from inside
(``perf_counter`` around it), so interpreter start-up is excluded.  The reference is
``import ctypes``, which every ctypes binding pays; the figure that matters is the CPU time
``import ublk_bindings`` adds on top, best of the runs (target: <= 10 ms; the runtime is
imported lazily, on first use of one of its names).  The generated modules are also timed
alone, loaded from their files, so a heavier ``ublk_bindings/__init__`` shows up apart.

Generation: in-process ``generate()`` of the bundled headers (target: < 1 s), against the
system ``cpp`` on the same header, the floor every run pays.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
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
t, c = time.perf_counter(), time.process_time()
{statement}
print(time.perf_counter() - t, time.process_time() - c)
"""
_LOAD_FILE = ("import importlib.util as u; s = u.spec_from_file_location('m', {path!r}); "
              "m = u.module_from_spec(s); s.loader.exec_module(m)")


def import_seconds(statement: str, runs: int) -> tuple[float, float, float]:
    """Medians over fresh interpreters of the wall and CPU time one import statement takes,
    and the best CPU time (the figure least disturbed by whatever else the machine runs).

    Bytecode caching is forced on and warmed first: an installed wheel ships .pyc files,
    and compiling the source on every start (PYTHONDONTWRITEBYTECODE) is not its cost.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    walls, cpus = [], []
    for run in range(runs + 1):
        out = subprocess.run([sys.executable, "-c", _TIMED_IMPORT.format(statement=statement)],
                             capture_output=True, text=True, check=True, cwd=REPO, env=env)
        if run:
            wall, cpu = map(float, out.stdout.split())
            walls.append(wall)
            cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus), min(cpus)


def call_seconds(function: Callable[[], object], runs: int) -> tuple[float, float]:
    """Medians of wall and CPU time (this process and its children, e.g. cpp) of a call."""
    walls, cpus = [], []
    for _ in range(runs):
        start, cpu = time.perf_counter(), _cpu()
        function()
        walls.append(time.perf_counter() - start)
        cpus.append(_cpu() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_codegen",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="samples per figure (median)")
    args = parser.parse_args(argv)

    from ublk_bindings_codegen.generate import generate
    from ublk_bindings_codegen.preprocess import cpp_command

    ctypes_s, ctypes_cpu, ctypes_best = import_seconds("import ctypes", args.runs)
    rows = [("import ctypes (reference)", ctypes_s, ctypes_cpu, ctypes_best)]
    for label, statement in [
        ("import ublk_bindings", "import ublk_bindings"),
        ("ublk_cmd.py alone", _LOAD_FILE.format(path=str(REPO / "ublk_bindings/ublk_cmd.py"))),
        ("io_uring.py alone", _LOAD_FILE.format(path=str(REPO / "ublk_bindings/io_uring.py"))),
    ]:
        rows.append((label, *import_seconds(statement, args.runs)))
    print(f"import time, median of {args.runs} fresh interpreters (CPU time is the figure a "
          "busy machine does not inflate):")
    print(f"  {'':30} {'ms':>8} {'x ctypes':>9} {'added ms':>9} {'CPU ms':>8} {'added':>7} "
          f"{'best CPU':>9} {'added':>7}")
    for label, seconds, cpu, best in rows:
        print(f"  {label:30} {seconds * 1e3:8.2f} {seconds / ctypes_s:9.2f} "
              f"{(seconds - ctypes_s) * 1e3:9.2f} {cpu * 1e3:8.2f} "
              f"{(cpu - ctypes_cpu) * 1e3:7.2f} {best * 1e3:9.2f} "
              f"{(best - ctypes_best) * 1e3:7.2f}")
    added, added_best = rows[1][1] - ctypes_s, rows[1][3] - ctypes_best
    print(f"  import ublk_bindings adds {added_best * 1e3:.1f} ms CPU over import ctypes, best "
          f"of {args.runs} (target <= 10 ms): {_verdict(added_best <= 0.010)}; "
          f"median wall {added * 1e3:.1f} ms")

    print(f"\ngeneration time, median of {args.runs} runs in one process (CPU includes cpp):")
    print(f"  {'':30} {'ms':>8} {'cpp ms':>8} {'x cpp':>7} {'CPU ms':>8} {'cpp CPU':>8}")
    worst = worst_cpu = 0.0
    for header in HEADERS:
        command = cpp_command(header)
        cpp_s, cpp_cpu = call_seconds(functools.partial(
            subprocess.run, command, capture_output=True, check=True), args.runs)
        gen_s, gen_cpu = call_seconds(functools.partial(generate, header), args.runs)
        worst, worst_cpu = max(worst, gen_s), max(worst_cpu, gen_cpu)
        print(f"  {header.name:30} {gen_s * 1e3:8.1f} {cpp_s * 1e3:8.1f} {gen_s / cpp_s:7.1f} "
              f"{gen_cpu * 1e3:8.1f} {cpp_cpu * 1e3:8.1f}")
    print(f"  slowest generation {worst:.2f} s wall, {worst_cpu:.2f} s CPU (target < 1 s): "
          f"wall {_verdict(worst < 1)}, CPU {_verdict(worst_cpu < 1)}")
    return 0


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


if __name__ == "__main__":
    sys.exit(main())
