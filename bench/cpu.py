"""CPU time a userspace server spends per I/O: the cost that a busy host does not distort.

Wall-clock IOPS on a shared, emulated machine swing with the neighbours' load; the CPU a
server burns per request does not (it only accrues while the server runs).  fio snapshots,
right before and right after each job (``exec_prerun``/``exec_postrun``), the server's
``/proc/PID/stat`` (utime + stime of all its threads) and the device's ``/sys/block/DEV/stat``
(requests completed), so both counts cover exactly the same interval, ramp included.  fio
must run in a writable directory (``run_sequence(cwd=...)``): it keeps the commands' output.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .fio import Workload

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def probes(pid: int, block_device: str, snapshots: Path) -> Callable[[Workload], list[str]]:
    """fio job options that snapshot the counters to ``snapshots/<job>.{pre,post}``."""
    disk = Path(block_device).name

    def options(w: Workload) -> list[str]:
        # Newer fio sends the command's stdout to <job>.prerun.txt in its working directory,
        # older fio to its own stdout: tee writes our file either way.
        cat = f"cat /proc/{pid}/stat /sys/block/{disk}/stat | tee"
        return [f"--exec_prerun={cat} {snapshots / w.name}.pre", f"--exec_postrun={cat} {snapshots / w.name}.post"]

    return options


def _counters(path: Path) -> tuple[int, int]:
    """(CPU ticks of the process, requests completed by the disk) from one snapshot."""
    proc, disk = path.read_text().splitlines()[:2]
    after_comm = proc[proc.rindex(")") + 2 :].split()  # comm may hold spaces and parentheses
    ticks = int(after_comm[14 - 3]) + int(after_comm[15 - 3])  # fields 14, 15: utime, stime
    d = [int(x) for x in disk.split()]
    # Documentation/block/stat.rst: reads 0, writes 4, discards 11, flushes 15 (when present).
    ios = d[0] + d[4] + (d[11] if len(d) > 11 else 0) + (d[15] if len(d) > 15 else 0)
    return ticks, ios


def cpu_us_per_io(snapshots: Path, w: Workload) -> float | None:
    """Server CPU microseconds per completed request during job ``w``, None if not probed."""
    pre, post = snapshots / f"{w.name}.pre", snapshots / f"{w.name}.post"
    if not (pre.exists() and post.exists()):
        return None
    (t0, n0), (t1, n1) = _counters(pre), _counters(post)
    if n1 <= n0:
        return None
    return (t1 - t0) / TICKS_PER_S * 1e6 / (n1 - n0)
