"""The data plane's goals, each checked against figures measured in the same run.

From the asynchronous-data-plane issue: the file target on a real disk keeps up with kublk's
loop target and gains as much from queue depth; the null and mem targets keep up with kublk's
null target; on a shared CPU the gadget gets at least 0.7x kublk-null's IOPS for at most 1.5x
its CPU per request; a live handover stalls I/O for less than 0.5 s.

The buffer-mode goals (main table, bench.modes): in zero copy the gadget's null target keeps
up with kublk's in zero copy, and its file target with kublk's loop target in whichever mode
kublk does best and with half the kernel loop driver, at 128k; and the gadget's null target
in its best mode keeps up with kublk's null target in its best mode at 4k.  A goal that picks
among modes names the peers it compared (``against``).

The NBD goal (bench.nbd): the gadget's nbd target keeps up with the kernel's own NBD client
(nbd.ko) on the same server over TCP, in 4k random reads and writes at QD32.
"""

from __future__ import annotations

from typing import Any

from collections.abc import Sequence

from . import disk, modes, nbd, report, shared
from .fio import Result
from .report import Results

MAX_STALL_S = 0.5


def _check(goal: str, value: float | None, met: bool | None, against: str = "") -> dict[str, Any]:
    return {"goal": goal, "value": value, "met": met, **({"against": against} if against else {})}


def _at_least(goal: str, value: float | None, minimum: float, against: str = "") -> dict[str, Any]:
    return _check(goal, value, None if value is None else value >= minimum, against)


def best(results: Results, names: Sequence[str], workload: str) -> str | None:
    """The peer of ``names`` with the most IOPS on ``workload``, of those that have a figure."""
    measured = [(r.iops, n) for n in names if isinstance(r := results.get(n, {}).get(workload), Result)]
    return max(measured)[1] if measured else None


def _gadgets(target: str) -> list[str]:
    """The gadget peers of ``target`` in every mode the main table measures."""
    return [p.gadget for p in modes.MAIN_PAIRS if p.target == target]


def _kublks(target: str) -> list[str]:
    """The kublk peers of kublk's ``target`` (null, loop) in every mode the main table measures."""
    return list(dict.fromkeys(p.kublk for p in modes.MAIN_PAIRS if p.kublk_target == target))


def _best_over_best(results: Results, gadgets: Sequence[str], kublks: Sequence[str],
                    workload: str) -> tuple[float | None, str]:
    """The best of ``gadgets`` over the best of ``kublks`` on ``workload``, and which two."""
    g, k = best(results, gadgets, workload), best(results, kublks, workload)
    if g is None or k is None:
        return None, ""
    return report.ratio(results, g, k, workload), f"{g} over {k}"


def mode_checks(main: Results) -> list[dict[str, Any]]:
    """The buffer-mode goals, on the main table."""
    big = "128k-read-qd32"
    out = [_at_least(f"gadget-null-autozc {big} >= 1.0x kublk-null-autozc",
                     report.ratio(main, "gadget-null-autozc", "kublk-null-autozc", big), 1.0)]
    k = best(main, _kublks("loop"), big)
    out.append(_at_least(f"gadget-file-autozc {big} >= 1.0x kublk-loop (best mode measured)",
                         None if k is None else report.ratio(main, "gadget-file-autozc", k, big), 1.0,
                         f"gadget-file-autozc over {k}" if k else ""))
    out.append(_at_least(f"gadget-file-autozc {big} >= 0.5x loop",
                         report.ratio(main, "gadget-file-autozc", "loop", big), 0.5))
    value, against = _best_over_best(main, _gadgets("null"), _kublks("null"), "4k-randread-qd32")
    out.append(_at_least("gadget-null 4k-randread-qd32 (best gadget mode) >= 1.0x kublk-null (best mode)",
                         value, 1.0, against))
    return out


def nbd_checks(nbd_results: Results) -> list[dict[str, Any]]:
    """The NBD goal, on the nbd table's TCP pair."""
    return [_at_least(f"nbd: {nbd.GADGET} {w} >= 1.0x {nbd.KERNEL}",
                      report.ratio(nbd_results, nbd.GADGET, nbd.KERNEL, w), 1.0)
            for w in nbd.GOAL_WORKLOADS]  # fmt: skip


def checks(main: Results, disk_results: Results, shared_results: Results,
           stall_s: float | None, nbd_results: Results | None = None) -> list[dict[str, Any]]:
    """Each goal with its measured value and whether it is met (None: not measured)."""
    out = [
        _at_least(f"gadget-{t} 4k-randread-qd32 >= 1.0x kublk-null",
                  report.ratio(main, f"gadget-{t}", "kublk-null", "4k-randread-qd32"), 1.0)
        for t in ("null", "mem")
    ]
    out += mode_checks(main)
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
    out += nbd_checks(nbd_results or {})
    out.append(_check(f"handover stall < {MAX_STALL_S} s", stall_s,
                      None if stall_s is None else stall_s < MAX_STALL_S))
    return out
