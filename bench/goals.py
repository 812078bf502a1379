"""The data plane's goals, each checked against figures measured in the same run.

From the asynchronous-data-plane issue: the file target on a real disk keeps up with kublk's
loop target and gains as much from queue depth; the null and mem targets keep up with kublk's
null target; on a shared CPU the gadget gets at least 0.7x kublk-null's IOPS for at most 1.5x
its CPU per request; a live handover stalls I/O for less than 0.5 s.
"""

from __future__ import annotations

from typing import Any

from . import disk, report, shared
from .report import Results

MAX_STALL_S = 0.5


def _check(goal: str, value: float | None, met: bool | None) -> dict[str, Any]:
    return {"goal": goal, "value": value, "met": met}


def _at_least(goal: str, value: float | None, minimum: float) -> dict[str, Any]:
    return _check(goal, value, None if value is None else value >= minimum)


def checks(main: Results, disk_results: Results, shared_results: Results,
           stall_s: float | None) -> list[dict[str, Any]]:
    """Each goal with its measured value and whether it is met (None: not measured)."""
    out = [
        _at_least(f"gadget-{t} 4k-randread-qd32 >= 1.0x kublk-null",
                  report.ratio(main, f"gadget-{t}", "kublk-null", "4k-randread-qd32"), 1.0)
        for t in ("null", "mem")
    ]
    file_ratio = report.ratio_of(disk_results.get(disk.GADGET, {}).get("4k-randread-qd32"),
                                 disk_results.get(disk.KUBLK, {}).get("4k-randread-qd32"))
    out.append(_at_least("disk: gadget-file 4k-randread-qd32 >= 1.0x kublk-loop", file_ratio, 1.0))
    gains = disk.gains(disk_results, (disk.GADGET, disk.KUBLK))
    g, k = gains[disk.GADGET].get("4k-randread"), gains[disk.KUBLK].get("4k-randread")
    out.append(_check("disk: gadget-file QD32/QD1 gain >= kublk-loop's (4k-randread)",
                      None if g is None or k is None else g / k,
                      None if g is None or k is None else g >= k))
    for pair in shared.pairs(shared_results):
        q = pair["queues"]
        out.append(_at_least(f"shared CPU, {q} queue(s): gadget-null >= 0.7x kublk-null",
                             pair["iops_ratio"], 0.7))
        cpu = pair["cpu_ratio"]
        out.append(_check(f"shared CPU, {q} queue(s): gadget-null CPU/IO <= 1.5x kublk-null's",
                          cpu, None if cpu is None else cpu <= 1.5))
    out.append(_check(f"handover stall < {MAX_STALL_S} s", stall_s,
                      None if stall_s is None else stall_s < MAX_STALL_S))
    return out
