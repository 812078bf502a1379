"""``python -m demo``: boot the test-bed VM and run the demo in it; the report prints at the end.

The guest writes ``.out/demo/demo.txt`` (the report), ``demo.json`` and ``demo-latency.png``
into the checkout's writable ``.out/``.  Exit status is the demo's: 0 only if every check held.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".out" / "demo"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    p.add_argument("--kernel", default="sid", help="test-bed kernel (sid: 7.2)")
    a = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    guest = [sys.executable, "-m", "demo.guest", "--out", str(OUT)]
    vm = [sys.executable, "-m", "testbed", "run", "--kernel", a.kernel, "--", *guest]
    code = subprocess.run(vm, cwd=REPO).returncode
    if code != 0:
        print(f"demo: FAILED (exit {code}); gadget logs in {OUT / 'logs'}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
