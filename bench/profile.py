"""Where a gadget's time goes: summarize py-spy's collapsed stacks (``--format raw``).

Each line of the file is ``frame;frame;...;frame COUNT``, outermost first, a frame being
``function (file:line)``.  *Self* samples are those where a function is the innermost frame;
*total* samples those where it is anywhere on the stack (counted once per stack).  Sampled
with ``--idle``, a queue thread blocked in ``io_uring_enter`` shows as its Python caller, so
"self" of the submit call is time spent waiting for the kernel, the rest is Python's cost.

    python -m bench.profile .out/bench/profile-gadget-null.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE_NO = re.compile(r":\d+\)$")


def _function(frame: str) -> str:
    """``run (ublk_bindings/io.py:243)`` -> ``run (ublk_bindings/io.py)``: lines of one function merge."""
    return _LINE_NO.sub(")", frame.strip())


def summarize(path: Path, thread: str = "") -> tuple[int, Counter[str], Counter[str]]:
    """(samples, self samples per function, total samples per function) of the threads whose
    name contains ``thread`` (py-spy's first frame is ``thread (TID): NAME``)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            raise ValueError(f"{path}:{number}: not 'stack count': {line[:80]!r}")
        n = int(count)
        frames = [_function(f) for f in stack.split(";")]
        if thread not in frames[0].partition(": ")[2]:
            continue
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    return samples, own, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--thread", default="", help="only threads whose name contains this (ublk: queue threads)")
    a = p.parse_args(argv)
    samples, own, total = summarize(a.profile, a.thread)
    if not samples:
        print(f"{a.profile}: no samples of threads matching {a.thread!r}")
        return 1
    print(f"{a.profile}: {samples} samples of threads matching {a.thread!r}")
    for title, counter in (("self", own), ("total", total)):
        print(f"\n{title:>6}  function")
        for name, n in counter.most_common(a.top):
            print(f"{100 * n / samples:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
