"""CPU time a userspace server spends per I/O: the cost that a busy host does not distort.

Wall-clock IOPS on a shared, emulated machine swing with the neighbours' load; the CPU a
server burns per request does not (it only accrues while the server runs).  fio snapshots,
right before and right after each job (``exec_prerun``/``exec_postrun``), the server's
``/proc/PID/stat`` (utime + stime of all its threads) and the device's ``/sys/block/DEV/stat``
(requests completed), so both counts cover exactly the same interval, ramp included.  fio
must run in a writable directory (``run_sequence(cwd=...)``): it keeps the commands' output,
and the snapshot directory must start empty.  A job of ``numjobs`` clones runs the commands
once per clone: the first clone's "before" and the last clone's "after" are kept (each written
aside, then linked or renamed into place, so two clones never mix their lines).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

from .fio import Workload

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def probes(pid: int, block_device: str, snapshots: Path) -> Callable[[Workload], list[str]]:
    """fio job options that snapshot the counters to ``snapshots/<job>.{pre,post}``."""
    disk = Path(block_device).name
    counters = f"cat /proc/{pid}/stat /sys/block/{disk}/stat"

    def options(w: Workload) -> list[str]:
        # fio runs each command with a shell; newer fio appends "> <job>.prerun.txt 2>&1",
        # which lands on the last command here.  $$: that shell's pid, one per clone.
        pre, post = (shlex.quote(f"{snapshots / w.name}.{end}") for end in ("pre", "post"))
        first = f"{counters} > {pre}.$$ && ln {pre}.$$ {pre} 2>/dev/null; rm -f {pre}.$$"
        last = f"{counters} > {post}.$$ && mv -f {post}.$$ {post}"
        return [f"--exec_prerun={first}", f"--exec_postrun={last}"]

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
