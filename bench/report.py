"""Turn measurements into ratios, a table for people and JSON for the record.

Absolute numbers under TCG emulation mean little; what carries over is how the gadget fares
against peers measured minutes apart in the same VM, round by round.  Each gadget figure is divided by the
same workload on null_blk (the in-kernel limit), the kernel loop driver over the same file,
and the kublk target that does the same job (null for null and mem, loop for file).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .fio import Result, Workload

#: The kublk peer that does the same job as each gadget target.
KUBLK_PEER = {"gadget-null": "kublk-null", "gadget-mem": "kublk-null", "gadget-file": "kublk-loop"}
REFERENCES = ("null_blk", "loop", "kublk")

#: Measurements: peer name -> workload name -> Result, or the error that stopped the peer.
Results = Mapping[str, Mapping[str, "Result | str"]]


@dataclass(frozen=True)
class Target:
    """One of the issue's goals: ``gadget`` / ``peer`` on ``workload`` must reach ``minimum``."""

    gadget: str
    peer: str
    workload: str
    minimum: float


TARGETS = (
    Target("gadget-null", "kublk-null", "4k-randread-qd32", 0.9),
    Target("gadget-file", "kublk-loop", "128k-read-qd32", 0.9),
)
MAX_STALL_S = 0.5


def reference_name(gadget: str, reference: str) -> str:
    return KUBLK_PEER[gadget] if reference == "kublk" else reference


def ratio(results: Results, peer: str, other: str, workload: str) -> float | None:
    """IOPS of ``peer`` over ``other`` on ``workload`` (same block size, so also bandwidth)."""
    return ratio_of(results.get(peer, {}).get(workload), results.get(other, {}).get(workload))


def ratio_of(a: Result | str | None, b: Result | str | None) -> float | None:
    """IOPS of ``a`` over ``b``, None unless both were measured.

    With rounds on both sides, the median of the per-round ratios: round i of both ran within
    a minute of each other, so a load that came and went on the host divides out.
    """
    if not isinstance(a, Result) or not isinstance(b, Result):
        return None
    if len(a.rounds_iops) == len(b.rounds_iops) > 1 and all(b.rounds_iops):
        return statistics.median(x / y for x, y in zip(a.rounds_iops, b.rounds_iops))
    return a.iops / b.iops if b.iops else None


def cpu_ratio(a: Result | str | None, b: Result | str | None) -> float | None:
    """Server CPU per request of ``a`` over ``b`` (their median rounds' figures)."""
    if not isinstance(a, Result) or not isinstance(b, Result):
        return None
    if a.server_cpu_us_per_io is None or not b.server_cpu_us_per_io:
        return None
    return a.server_cpu_us_per_io / b.server_cpu_us_per_io


def ratios(results: Results, workloads: tuple[Workload, ...]) -> dict[str, dict[str, dict[str, float | None]]]:
    """gadget -> workload -> reference -> ratio, for every gadget peer that was measured."""
    return {
        g: {
            w.name: {ref: ratio(results, g, reference_name(g, ref), w.name) for ref in REFERENCES}
            for w in workloads
        }
        for g in KUBLK_PEER
        if g in results
    }


def target_checks(results: Results, stall_s: float | None) -> list[dict[str, Any]]:
    """Each goal with its measured value and whether it is met (None: not measured)."""
    checks: list[dict[str, Any]] = []
    for t in TARGETS:
        r = ratio(results, t.gadget, t.peer, t.workload)
        checks.append(
            {
                "goal": f"{t.gadget} {t.workload} >= {t.minimum}x {t.peer}",
                "value": r,
                "met": None if r is None else r >= t.minimum,
            }
        )
    checks.append(
        {
            "goal": f"handover stall < {MAX_STALL_S} s",
            "value": stall_s,
            "met": None if stall_s is None else stall_s < MAX_STALL_S,
        }
    )
    return checks


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def table(results: Results, workloads: tuple[Workload, ...], peers: list[str]) -> str:
    """One block per workload, one row per peer; gadget rows carry their ratios.  ``cpu us/IO``
    is the userspace server's CPU per request (bench.cpu), the figure a busy host spares."""
    head = f"{'':<14}{'IOPS':>9}{'MiB/s':>9}{'p50 us':>9}{'p99 us':>9}{'cpu us/IO':>11}  " + "".join(
        f"{'x' + ref:>11}" for ref in REFERENCES
    )
    lines: list[str] = []
    for w in workloads:
        lines += ["", f"{w.name}", head]
        for peer in peers:
            r = results.get(peer, {}).get(w.name)
            if r is None:
                continue
            if isinstance(r, str):
                lines.append(f"  {peer:<12}  failed: {r.splitlines()[0][:90]}")
                continue
            cpu = "-" if r.server_cpu_us_per_io is None else f"{r.server_cpu_us_per_io:.0f}"
            row = (
                f"  {peer:<12}{r.iops:>9.0f}{r.bw_bytes / (1 << 20):>9.1f}"
                f"{r.lat_p50_ns / 1000:>9.0f}{r.lat_p99_ns / 1000:>9.0f}{cpu:>11}  "
            )
            if peer in KUBLK_PEER:
                row += "".join(
                    f"{fmt_ratio(ratio(results, peer, reference_name(peer, ref), w.name)):>11}"
                    for ref in REFERENCES
                )
            lines.append(row.rstrip())
    return "\n".join(lines[1:])


def format_checks(checks: list[dict[str, Any]]) -> str:
    lines = []
    for c in checks:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[c["met"]]
        value = c["value"]
        shown = "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        lines.append(f"  {c['goal']:<52} {shown:>8}  {verdict}")
    return "\n".join(lines)


def format_stall(stall: Mapping[str, Any]) -> str:
    """The handover stall block: each window's longest spanning I/O next to steady p99."""
    lines = [f"handover stall ({stall['workload']}, {stall['ios']} I/Os logged, steady-state p99 "
             f"{stall['steady_p99_ms']:.2f} ms):"]  # fmt: skip
    for i, w in enumerate(stall["windows"], 1):
        lines.append(
            f"  {i}. {w['kind']:<9} window {w['window_ms']:7.0f} ms   longest spanning I/O "
            f"{w['longest_spanning_io_ms']:8.1f} ms ({w['spanning_ios']} I/Os spanned it)"
        )
        moments = w.get("moments_ms", {})
        if moments:
            lines.append("       " + ", ".join(f"{what} {ms:+.0f} ms" for what, ms in moments.items()))
    lines.append(f"  picture: {stall['picture']}")
    lines += [f"  note: {note}" for note in stall.get("notes", [])]
    return "\n".join(lines)
