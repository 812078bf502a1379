"""``python -m bench``: build kublk on the host, boot the VM once, measure everything in it.

The guest writes ``.out/bench/results.json`` (the record), ``results.txt`` (the tables),
``handover-latency.png`` and ``nbd/handover-latency.png`` into the checkout's writable
``.out/``; this prints the tables.  The VM gets a real disk (``testbed run --disk``) for the
disk table.  One table alone: ``python -m bench --disk 0 -- --tables nbd --handovers 0``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from . import kublk, publish

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".out" / "bench"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--kernel", default="sid", help="test-bed kernel (sid: 7.2)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds for the whole VM run")
    p.add_argument("--quick", action="store_true", help="one 2 s run per cell, no ramp: proves the plumbing only")
    p.add_argument("--disk", default="512M", metavar="SIZE",
                   help="the real disk of the disk table (a cached host file; 0: no disk table)")
    p.add_argument("--publish", action="store_true",
                   help="then copy the record into bench/results/ and its table into the README")
    p.add_argument("guest_args", nargs=argparse.REMAINDER, help="passed to bench.guest (after --)")
    a = p.parse_args(argv)

    binary = kublk.build()
    guest = [sys.executable, "-m", "bench.guest", "--kublk", str(binary), "--out", str(OUT)]
    if a.quick:
        guest += ["--runtime", "2", "--ramp", "0", "--rounds", "1", "--handover-interval", "2"]
    guest += [x for x in a.guest_args if x != "--"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.txt").unlink(missing_ok=True)
    load_before = os.getloadavg()[0]
    disk = ["--disk", a.disk] if a.disk not in ("", "0") else []
    vm = [sys.executable, "-m", "testbed", "run", "--kernel", a.kernel, "--timeout", str(a.timeout), *disk,
          "--", *guest]  # fmt: skip
    code = subprocess.run(vm, cwd=REPO).returncode
    # The host's load says how far to trust wall-clock figures (cpu us/IO is spared by it).
    host = {"cpus": os.cpu_count(), "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0]}
    (OUT / "host.json").write_text(json.dumps(host) + "\n")
    if code != 0:
        partial = OUT / "results.txt"
        if partial.exists():  # the guest records before the stall run: show what was measured
            print(f"\nbench: what was recorded before the failure:\n{partial.read_text()}")
        print(f"bench: the VM run failed (exit {code}): {' '.join(vm)}", file=sys.stderr)
        return code
    print(f"\nrecorded in {OUT / 'results.json'}")
    if a.publish:
        if a.quick:
            print("bench: --quick runs are not published", file=sys.stderr)
            return 1
        publish.publish()
        print(f"published into {publish.RESULTS} and {publish.README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
