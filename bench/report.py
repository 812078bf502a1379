"""Turn measurements into ratios, a table for people and JSON for the record.

Absolute numbers under TCG emulation mean little; what carries over is how the gadget fares
against peers measured minutes apart in the same VM, round by round.  Each gadget figure is divided by the
same workload on null_blk (the in-kernel limit), the kernel loop driver over the same file,
and the kublk target that does the same job (null for null and mem, loop for file) in the
same buffer mode (bench.modes: copy against copy, zero copy against zero copy).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from . import modes
from .fio import Result, Workload

#: The kublk peer that does the same job as each gadget peer, in the same buffer mode.
KUBLK_PEER = {p.gadget: p.kublk for p in modes.MAIN_PAIRS}
REFERENCES = ("null_blk", "loop", "kublk")

#: Measurements: peer name -> workload name -> Result, or the error that stopped the peer.
Results = Mapping[str, Mapping[str, "Result | str"]]


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
    """gadget -> workload -> reference -> ratio, for every gadget peer that was measured
    (and the workloads it ran)."""
    return {
        g: {
            w.name: {ref: ratio(results, g, reference_name(g, ref), w.name) for ref in REFERENCES}
            for w in workloads
            if w.name in results[g]
        }
        for g in KUBLK_PEER
        if g in results
    }


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


_PEER = 22  # the peer column: "gadget-null-usercopy"


def table(results: Results, workloads: tuple[Workload, ...], peers: list[str]) -> str:
    """One block per workload, one row per peer; gadget rows carry their ratios (``xkublk``:
    kublk in the same buffer mode).  ``cpu us/IO`` is the userspace server's CPU per request
    (bench.cpu), the figure a busy host spares."""
    head = f"{'':<{_PEER}}{'IOPS':>9}{'MiB/s':>9}{'p50 us':>9}{'p99 us':>9}{'cpu us/IO':>11}  " + "".join(
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
                lines.append(f"  {peer:<{_PEER - 2}}  failed: {r.splitlines()[0][:90]}")
                continue
            row = (
                f"  {peer:<{_PEER - 2}}{r.iops:>9.0f}{r.bw_bytes / (1 << 20):>9.1f}"
                f"{r.lat_p50_ns / 1000:>9.0f}{r.lat_p99_ns / 1000:>9.0f}{fmt_cpu(r):>11}  "
            )
            if peer in KUBLK_PEER:
                row += "".join(
                    f"{fmt_ratio(ratio(results, peer, reference_name(peer, ref), w.name)):>11}"
                    for ref in REFERENCES
                )
            lines.append(row.rstrip())
    return "\n".join(lines[1:])


def fmt_cpu(r: Result | str | None) -> str:
    """A cell of server CPU per request: ``-`` where not measured (an in-kernel peer)."""
    if isinstance(r, str):
        return "failed"
    return "-" if r is None or r.server_cpu_us_per_io is None else f"{r.server_cpu_us_per_io:.0f}"


def fmt_iops(r: Result | str | None) -> str:
    """A cell of IOPS: ``-`` where the peer did not run the workload."""
    if isinstance(r, str):
        return "failed"
    return "-" if r is None else f"{r.iops:.0f}"


def mode_groups(results: Results, workloads: tuple[Workload, ...]) -> list[tuple[str, str, list[modes.Pair]]]:
    """(gadget target, workload, its pairs) wherever the gadget or kublk has a figure in more
    than one buffer mode: where the modes can be compared."""
    groups = []
    targets = list(dict.fromkeys(p.target for p in modes.MAIN_PAIRS))
    for t in targets:
        for w in workloads:
            ran = [p for p in modes.MAIN_PAIRS if p.target == t
                   and (w.name in results.get(p.gadget, {}) or w.name in results.get(p.kublk, {}))]  # fmt: skip
            if len(ran) > 1:
                groups.append((t, w.name, sorted(ran, key=lambda p: modes.MODES.index(p.mode))))
    return groups


def buffer_modes(results: Results, workloads: tuple[Workload, ...]) -> dict[str, dict[str, dict[str, Any]]]:
    """target -> workload -> mode -> the gadget and kublk figures of that mode (IOPS, CPU per
    request) and gadget over kublk in both, for the record."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for t, w, pairs in mode_groups(results, workloads):
        by_mode = out.setdefault(t, {}).setdefault(w, {})
        for p in pairs:
            g, k = results.get(p.gadget, {}).get(w), results.get(p.kublk, {}).get(w)
            by_mode[p.mode] = {
                "gadget": p.gadget, "kublk": p.kublk,
                "gadget_iops": g.iops if isinstance(g, Result) else None,
                "kublk_iops": k.iops if isinstance(k, Result) else None,
                "iops_ratio": ratio_of(g, k),
                "gadget_cpu_us_per_io": g.server_cpu_us_per_io if isinstance(g, Result) else None,
                "kublk_cpu_us_per_io": k.server_cpu_us_per_io if isinstance(k, Result) else None,
                "cpu_ratio": cpu_ratio(g, k),
            }  # fmt: skip
    return out


def mode_table(results: Results, workloads: tuple[Workload, ...]) -> str:
    """Per gadget target and workload measured in several buffer modes: each mode's gadget
    and kublk IOPS and CPU per request side by side, gadget over kublk in both ("" when
    no workload was measured in more than one mode)."""
    groups = mode_groups(results, workloads)
    if not groups:
        return ""
    lines = ["buffer modes: each gadget mode against kublk in the same mode (IOPS; server cpu us/IO)",
             f"{'':<30}{'gadget':>9}{'kublk':>9}{'xkublk':>8}{'gadget':>9}{'kublk':>9}{'xkublk':>8}",
             f"{'':<30}{'IOPS':>9}{'IOPS':>9}{'':>8}{'cpu':>9}{'cpu':>9}{'cpu':>8}"]  # fmt: skip
    for t, w, pairs in groups:
        lines.append(f"  {t} {w}")
        for p in pairs:
            g, k = results.get(p.gadget, {}).get(w), results.get(p.kublk, {}).get(w)
            lines.append(f"    {p.mode:<26}{fmt_iops(g):>9}{fmt_iops(k):>9}{fmt_ratio(ratio_of(g, k)):>8}"
                         f"{fmt_cpu(g):>9}{fmt_cpu(k):>9}{fmt_ratio(cpu_ratio(g, k)):>8}")  # fmt: skip
    return "\n".join(lines)


def format_checks(checks: list[dict[str, Any]]) -> str:
    """One line per goal: its value and verdict (and, where a goal picks among peers, which
    ones it compared)."""
    width = max([52, *(len(c["goal"]) for c in checks)])
    lines = []
    for c in checks:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[c["met"]]
        value = c["value"]
        shown = "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        against = f"  ({c['against']})" if c.get("against") else ""
        lines.append(f"  {c['goal']:<{width}} {shown:>8}  {verdict}{against}")
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
