"""The disk table: the file servers on a real disk, where every request waits on the device.

On the guest's tmpfs a read is a memory copy: queue depth buys a server nothing there, and a
synchronous server looks as good as an asynchronous one.  On ``/dev/vda`` (the test bed's
virtio-blk disk with the host disk's latency: ``python -m testbed run --disk SIZE``) a server
that keeps its requests in flight at the disk gains from QD32 over QD1 what the disk itself
gains.  Every peer works on that one disk: the disk itself, the kernel loop driver on it
(direct I/O), kublk's loop target and the gadget's file target in copy mode, and both again
in zero-copy mode (``--auto_zc``, ``buffers=auto-zc``: bench.modes), each with the same
queues and depth.  Each gadget row is divided by the kublk row of its own mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import fio, modes, peers, report
from .fio import Result, Workload
from .report import Results

WORKLOADS = tuple(
    w for w in fio.WORKLOADS
    if w.name in ("4k-randread-qd1", "4k-randread-qd32", "4k-randwrite-qd1", "4k-randwrite-qd32", "128k-read-qd32")
)  # fmt: skip
PEER_ORDER = ("disk", "loop", "kublk-loop", "gadget-file", "kublk-loop-autozc", "gadget-file-autozc")
USERSPACE = tuple(n for p in modes.DISK_PAIRS for n in (p.kublk, p.gadget))
GADGET, KUBLK = "gadget-file", "kublk-loop"  # the copy-mode pair (the goals' and the summary's)
#: (label, QD1 workload, QD32 workload): what queue depth buys each peer.
GAINS = (
    ("4k-randread", "4k-randread-qd1", "4k-randread-qd32"),
    ("4k-randwrite", "4k-randwrite-qd1", "4k-randwrite-qd32"),
)


def all_peers(kublk: str, log_dir: Path) -> dict[str, peers.Peer]:
    """The peers of this table; each takes the disk from the geometry's ``backing_file``."""
    made: dict[str, peers.Peer] = {"disk": peers.raw, "loop": peers.loop}
    for p in modes.DISK_PAIRS:
        made[p.kublk] = peers.kublk_loop(kublk, p.mode)
        made[p.gadget] = peers.gadget("file", log_dir, p.mode)
    return made


def wait_for(path: str, timeout_s: float = 5.0) -> bool:
    """Whether the block device ``path`` is there (udev-less devtmpfs: at once, or soon)."""
    sys_block = Path("/sys/block") / Path(path).name
    deadline = time.monotonic() + timeout_s
    while not (Path(path).exists() and sys_block.is_dir()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def geometry(path: str, queues: int, depth: int) -> peers.Geometry:
    """Every peer of the table gets the whole disk, ``queues`` x ``depth``."""
    sectors = int((Path("/sys/block") / Path(path).name / "size").read_text())
    return peers.Geometry(sectors * 512, queues, depth, path)


def gains(results: Results, order: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """peer -> label -> QD32 IOPS over QD1 IOPS (median of per-round ratios: one fio
    process ran both in each round)."""
    return {
        p: {label: report.ratio_of(results.get(p, {}).get(deep), results.get(p, {}).get(shallow))
            for label, shallow, deep in GAINS}
        for p in order
    }  # fmt: skip


def by_mode(results: Results) -> dict[str, dict[str, Any]]:
    """mode -> its gadget and kublk peers and, per workload either ran, gadget over kublk in
    IOPS and in CPU per request."""
    out: dict[str, dict[str, Any]] = {}
    for p in modes.DISK_PAIRS:
        g, k = results.get(p.gadget, {}), results.get(p.kublk, {})
        ran = [w.name for w in WORKLOADS if w.name in g or w.name in k]
        out[p.mode] = {
            "gadget": p.gadget, "kublk": p.kublk,
            "gadget_over_kublk": {w: report.ratio_of(g.get(w), k.get(w)) for w in ran},
            "cpu_gadget_over_kublk": {w: report.cpu_ratio(g.get(w), k.get(w)) for w in ran},
        }  # fmt: skip
    return out


def summary(results: Results, order: Sequence[str]) -> dict[str, Any]:
    """The figures the table derives, for the record (the top-level ratios: copy mode)."""
    g, k = results.get(GADGET, {}), results.get(KUBLK, {})
    return {
        "gadget_over_kublk": {w.name: report.ratio_of(g.get(w.name), k.get(w.name)) for w in WORKLOADS},
        "cpu_gadget_over_kublk": {w.name: report.cpu_ratio(g.get(w.name), k.get(w.name)) for w in WORKLOADS},
        "by_mode": by_mode(results),
        "qd32_over_qd1": gains(results, order),
    }


_FIRST, _COL, _RATIO = 20, 13, 10


def _row(label: str, cells: Sequence[str], ratios: Sequence[str] = ()) -> str:
    return (f"  {label:<{_FIRST - 2}}" + "".join(f"{c:>{_COL}}" for c in cells)
            + "".join(f"{r:>{_RATIO}}" for r in ratios)).rstrip()  # fmt: skip


def failures(results: Results, order: Sequence[str], workloads: Sequence[Workload]) -> list[str]:
    """One line per peer and distinct error: which workloads it cost."""
    lines = []
    for p in order:
        by_error: dict[str, list[str]] = {}
        for w in workloads:
            r = results.get(p, {}).get(w.name)
            if isinstance(r, str):
                by_error.setdefault(r.splitlines()[0][:120] if r else "?", []).append(w.name)
        for error, names in by_error.items():
            which = "every workload" if len(names) == len(workloads) else ", ".join(names)
            lines.append(f"  failed: {p} ({which}): {error}")
    return lines


def table(results: Results, order: Sequence[str], heading: str) -> str:
    """IOPS per workload and peer, with each gadget peer over the kublk peer of the same
    buffer mode (an ``xkublk`` column per mode whose pair is in ``order``; the ``buffers``
    line names each column's mode), what QD32 buys each peer over QD1, and the userspace
    servers' CPU per request (``-`` for the in-kernel peers)."""
    pairs = [p for p in modes.DISK_PAIRS if p.gadget in order and p.kublk in order]
    names = [modes.base_name(p, modes.DISK_PAIRS) for p in order]
    buffers = [modes.mode_of(p, modes.DISK_PAIRS) or "" for p in order]
    lines = [heading, f"{'IOPS':<{_FIRST}}" + "".join(f"{n:>{_COL}}" for n in names)
             + "".join(f"{'xkublk':>{_RATIO}}" for _ in pairs)]  # fmt: skip
    if any(buffers):
        lines.append(f"{'buffers':<{_FIRST}}" + "".join(f"{m:>{_COL}}" for m in buffers)
                     + "".join(f"{p.mode:>{_RATIO}}" for p in pairs))  # fmt: skip

    def ratios(w: Workload, of: Callable[[Result | str | None, Result | str | None], float | None]) -> list[str]:
        return [report.fmt_ratio(of(results.get(p.gadget, {}).get(w.name), results.get(p.kublk, {}).get(w.name)))
                for p in pairs]  # fmt: skip

    for w in WORKLOADS:
        cells = [report.fmt_iops(results.get(p, {}).get(w.name)) for p in order]
        lines.append(_row(w.name, cells, ratios(w, report.ratio_of)))
    lines.append("QD32/QD1 gain")
    table_gains = gains(results, order)
    for label, _, _ in GAINS:
        lines.append(_row(label, [report.fmt_ratio(table_gains[p][label]) for p in order]))
    lines.append("cpu us/IO")
    for w in WORKLOADS:
        cells = [report.fmt_cpu(results.get(p, {}).get(w.name)) if p in USERSPACE else "-" for p in order]
        lines.append(_row(w.name, cells, ratios(w, report.cpu_ratio)))
    lines += failures(results, order, WORKLOADS)
    return "\n".join(lines)


def heading(detail: Mapping[str, Any]) -> str:
    """The table's first line: which disk, how big, what geometry every server had."""
    return (f"disk: {detail['device']} (virtio-blk over a host file, cache=none), {detail['size'] >> 20} MiB; "
            f"every server {detail['queues']} queue(s) x {detail['depth']} tags")  # fmt: skip
