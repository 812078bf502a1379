"""The shared-CPU table: fio and the server left to the scheduler, together on both vCPUs.

The main table pins fio to one vCPU and the server to the other: it measures what a server
can do when it has a CPU to itself.  A server that shares the machine with its application
is the other case: every cycle it spends per request is one the application does not get,
so CPU per request shows up in IOPS.  Here fio runs two jobs of QD32 4k random reads,
nothing pinned, against kublk null and gadget null with 1 queue and with 2 queues (depth 64
each: the 64 requests the two jobs keep in flight), both in copy mode (bench.modes).  The
team tracks whether the gadget stays within 1.5x of kublk; that is reported, not judged as
a goal.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import modes, peers, report
from .fio import Workload
from .report import Results

WORKLOAD = Workload("4k-randread-2x32", "randread", 4096, 32, numjobs=2)
QUEUES = (1, 2)
GADGET, KUBLK = "gadget-null", "kublk-null"
TRACKED = 1.5  # "within 1.5x of kublk": IOPS at least 1/1.5 of kublk's, CPU at most 1.5x


def name(server: str, queues: int) -> str:
    """The peer's name in the record: the server and its queue count."""
    return f"{server}-q{queues}"


PEER_ORDER = tuple(name(s, q) for q in QUEUES for s in (KUBLK, GADGET))


def all_peers(kublk: str, log_dir: Path) -> dict[str, peers.Peer]:
    made: dict[str, peers.Peer] = {}
    for q in QUEUES:
        made[name(KUBLK, q)] = peers.with_queues(peers.kublk_null(kublk, modes.COPY), q)
        made[name(GADGET, q)] = peers.with_queues(peers.gadget("null", log_dir, modes.COPY, name(GADGET, q)), q)
    return made


def _within(r: float | None, at_least: bool) -> bool | None:
    if r is None:
        return None
    return r >= 1 / TRACKED if at_least else r <= TRACKED


def pairs(results: Results) -> list[dict[str, Any]]:
    """Per queue count: gadget over kublk in IOPS and in CPU per request, and whether each is
    within the tracked 1.5x."""
    out = []
    for q in QUEUES:
        g = results.get(name(GADGET, q), {}).get(WORKLOAD.name)
        k = results.get(name(KUBLK, q), {}).get(WORKLOAD.name)
        iops, cpu = report.ratio_of(g, k), report.cpu_ratio(g, k)
        out.append({
            "queues": q, "gadget": name(GADGET, q), "kublk": name(KUBLK, q),
            "iops_ratio": iops, "cpu_ratio": cpu,
            "iops_within_tracked": _within(iops, at_least=True), "cpu_within_tracked": _within(cpu, at_least=False),
        })  # fmt: skip
    return out


def _yes(v: bool | None) -> str:
    return {True: "yes", False: "no", None: "not measured"}[v]


def table(results: Results, order: Sequence[str]) -> str:
    """One row per server and queue count; gadget rows carry their ratios to kublk."""
    head = f"{'':<15}{'queues':>7}{'IOPS':>9}{'p99 us':>9}{'cpu us/IO':>11}{'xkublk':>9}{'cpu xkublk':>12}"
    lines = [
        f"shared CPU: {WORKLOAD.name} (fio {WORKLOAD.numjobs} jobs x QD{WORKLOAD.iodepth} 4k random reads, "
        "unpinned: fio and the server share both vCPUs)",
        head,
    ]
    by_name = {p["gadget"]: p for p in pairs(results)}
    for peer in order:
        server, q = peer.rsplit("-q", 1)
        r = results.get(peer, {}).get(WORKLOAD.name)
        if r is None:
            continue
        if isinstance(r, str):
            lines.append(f"  {server:<13}{q:>7}  failed: {r.splitlines()[0][:90]}")
            continue
        cpu = "-" if r.server_cpu_us_per_io is None else f"{r.server_cpu_us_per_io:.0f}"
        row = f"  {server:<13}{q:>7}{r.iops:>9.0f}{r.lat_p99_ns / 1000:>9.0f}{cpu:>11}"
        if peer in by_name:
            p = by_name[peer]
            row += f"{report.fmt_ratio(p['iops_ratio']):>9}{report.fmt_ratio(p['cpu_ratio']):>12}"
        lines.append(row)
    verdicts = "; ".join(
        f"{p['queues']} queue(s): IOPS {_yes(p['iops_within_tracked'])}, cpu {_yes(p['cpu_within_tracked'])}"
        for p in by_name.values()
    )
    lines.append(f"  within {TRACKED:g}x of kublk (tracked, not a goal): {verdicts}")
    return "\n".join(lines)
