"""The benchmark proper, run as root inside the test-bed VM (``python -m bench`` boots it).

Four tables in one boot, so the ratios compare like with like: the main one (every peer on
the guest's tmpfs, same geometry and backing file, fio and the servers pinned apart), the disk
table (bench.disk: the file servers on the test bed's real disk), the shared-CPU table
(bench.shared: null servers with fio unpinned) and the NBD table (bench.nbd: the gadget's nbd
target against the kernel's NBD client on one nbdkit); the engine's cost per completion path
(bench.engine); then the handover stalls (a file device, then an nbd device).  Every
userspace peer states its buffer mode (bench.modes) and each gadget row is divided by the
kublk row of the same mode; the rows in another mode than copy run only the workloads the
buffer-mode goals judge (``--mode-workloads``), to keep the run's length in check.  A peer
that fails to come up is recorded with its error and the run goes on: the tables show what
was measured and say what was not.  ``--tables nbd`` measures the NBD table alone (with the
engine paths and both stalls; ``--handovers 0`` skips the stalls).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import disk, engine, fio, goals, handover, modes, nbd, peers, report, rounds, shared

BACKING_FILE = "/tmp/bench-backing.img"
#: The copy-mode rows first (as before), then each other buffer mode's kublk and gadget rows
#: side by side (bench.modes): a pair's rounds run minutes apart at most.
PEER_ORDER = (
    "null_blk", "loop", "kublk-null", "kublk-loop", "gadget-null", "gadget-mem", "gadget-file",
    "kublk-null-autozc", "gadget-null-autozc", "kublk-loop-autozc", "gadget-file-autozc",
    "kublk-loop-z", "gadget-file-zc", "kublk-null-u", "gadget-null-usercopy",
    "kublk-null-b", "gadget-null-batch",
)  # fmt: skip
#: The workloads the rows in another mode than copy run by default (--mode-workloads): what the
#: buffer-mode goals judge, at a third of the run time of all six.
MODE_WORKLOADS = ("4k-randread-qd32", "128k-read-qd32")


def make_backing_file(path: str, size: int) -> None:
    """A fully written file (no holes: a read of a hole costs less than a read of data)."""
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)


def all_peers(kublk: str, log_dir: Path) -> dict[str, peers.Peer]:
    """Every peer the main table knows: the in-kernel ones, then each pair of bench.modes (a
    gadget and kublk in the same buffer mode, the mode always stated)."""
    made: dict[str, peers.Peer] = {"null_blk": peers.null_blk, "loop": peers.loop}
    for p in modes.MAIN_PAIRS:
        made.setdefault(p.kublk, peers.kublk(kublk, p.kublk_target, p.mode))
        made[p.gadget] = peers.gadget(p.target, log_dir, p.mode)
    return made


def workloads_of(peers_in: Sequence[str], pairs: tuple[modes.Pair, ...],
                 wanted: Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    """peer -> the only workloads it runs: ``wanted`` for the peers of ``pairs`` in another
    mode than copy; None: every peer runs every workload."""
    if wanted is None:
        return {}
    return {n: tuple(wanted) for n in modes.not_copy(pairs) if n in peers_in}


def parse_mode_workloads(text: str) -> tuple[str, ...] | None:
    """``--mode-workloads``: ``all`` (or empty) for every workload of the table, else names."""
    if text.strip() in ("", "all"):
        return None
    return tuple(n for n in text.split(",") if n)


TABLES = ("main", "disk", "shared", "nbd")


@dataclass
class Table:
    """One table beyond the main one: its measurements, or why it has none."""

    measured: rounds.Measured | None = None
    why_not: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # what its heading and record say


def _environment(a: argparse.Namespace, g: peers.Geometry, elapsed: dict[str, float]) -> dict[str, Any]:
    fio_version = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "kernel": platform.release(),
        "fio": fio_version,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fio_cpu": a.fio_cpu,
        "server_cpu": a.server_cpu,
        "runtime_s": a.runtime,
        "ramp_s": a.ramp,
        "rounds": a.rounds,
        "geometry": {"size": g.size, "queues": g.queues, "depth": g.depth, "backing_file": g.backing_file},
        # Wall-clock seconds of each part: what keeps the whole run's length in view.
        "elapsed_s": elapsed,
    }


def measure_disk(a: argparse.Namespace, schedule: rounds.Schedule, log_dir: Path) -> Table:
    """The disk table on ``a.disk``, if the test bed attached one."""
    if not a.disk:
        return Table(why_not="no disk attached (python -m bench attaches one: --disk SIZE)")
    if not disk.wait_for(a.disk):
        return Table(why_not=f"{a.disk}: no such block device")
    g = disk.geometry(a.disk, a.queues, a.depth)
    detail = {"device": a.disk, "size": g.size, "queues": g.queues, "depth": g.depth}
    order = list(disk.PEER_ORDER)
    subsets = workloads_of(order, modes.DISK_PAIRS, a.mode_workloads)
    m = rounds.measure(disk.all_peers(a.kublk, log_dir / "disk"), order, g, disk.WORKLOADS, schedule,
                       a.out / "cpu" / "disk", label="disk ", workloads_of=subsets)  # fmt: skip
    return Table(m, detail=detail)


def measure_shared(a: argparse.Namespace, schedule: rounds.Schedule, log_dir: Path) -> Table:
    """The shared-CPU table: the same rounds, nothing pinned."""
    unpinned = dataclasses.replace(schedule, fio_cpu=None, server_cpu=None)
    g = peers.Geometry(a.size, 1, a.depth, BACKING_FILE)  # each peer sets its own queue count
    detail = {"workload": dataclasses.asdict(shared.WORKLOAD), "depth": a.depth, "pinned": False}
    m = rounds.measure(shared.all_peers(a.kublk, log_dir / "shared"), list(shared.PEER_ORDER), g,
                       (shared.WORKLOAD,), unpinned, a.out / "cpu" / "shared", label="shared ")  # fmt: skip
    return Table(m, detail=detail)


def nbd_geometry(a: argparse.Namespace) -> peers.Geometry:
    """The NBD table's: the main table's size, queues and depth (no backing file: the export
    is the server's)."""
    return peers.Geometry(a.size, a.queues, a.depth, "")


def measure_nbd(a: argparse.Namespace, schedule: rounds.Schedule, log_dir: Path) -> Table:
    """The NBD table: both clients of each transport on one nbdkit, up for the whole table."""
    g = nbd_geometry(a)
    with nbd.servers(a.nbd_transports, g.size, log_dir / "nbd", a.nbdkit_cpu) as running:
        m = rounds.measure(nbd.all_peers(running, log_dir / "nbd"), nbd.peer_order(a.nbd_transports), g,
                           nbd.WORKLOADS, schedule, a.out / "cpu" / "nbd", label="nbd ")  # fmt: skip
        detail = nbd.detail(g, running, nbd.version(), a.nbdkit_cpu)
    return Table(m, detail=detail)


def _timed(elapsed: dict[str, float], name: str, measure: Callable[[], Table]) -> Table:
    """``measure()``, its wall time noted; an unexpected failure costs this table only."""
    t0 = time.monotonic()
    try:
        table = measure()
    except Exception as e:
        traceback.print_exc()
        table = Table(why_not=rounds.error_text(e))
    elapsed[name] = round(time.monotonic() - t0, 1)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the benchmark, inside the VM")
    p.add_argument("--kublk", required=True, help="the kublk binary (built on the host)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runtime", type=float, default=3, help="seconds per workload and round")
    p.add_argument("--ramp", type=float, default=1, help="seconds before fio starts counting")
    p.add_argument("--rounds", type=int, default=3, help="runs per workload and peer; the median counts")
    p.add_argument("--size", type=int, default=256 << 20)
    p.add_argument("--queues", type=int, default=1)
    p.add_argument("--depth", type=int, default=64)
    p.add_argument("--peers", default=",".join(PEER_ORDER), help="the main table's peers")
    p.add_argument("--workloads", default=",".join(w.name for w in fio.WORKLOADS), help="the main table's workloads")
    p.add_argument("--mode-workloads", default=",".join(MODE_WORKLOADS), type=parse_mode_workloads,
                   help="the only workloads the rows in another buffer mode than copy run, in the main and "
                   "the disk table (all: every workload of the table)")
    p.add_argument("--tables", default=",".join(TABLES), help="which tables to measure (main: the tmpfs one)")
    p.add_argument("--disk", default=os.environ.get("UBLK_TESTBED_DISK", ""),
                   help="the disk of the disk table (default $UBLK_TESTBED_DISK: python -m testbed run --disk)")
    p.add_argument("--fio-cpu", type=int, default=0, help="the CPU fio runs on")
    p.add_argument("--server-cpu", type=int, default=1,
                   help="the CPU every thread of a userspace server (kublk, gadget) runs on")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="let the scheduler place fio and the servers (IOPS then vary by boot)")
    p.add_argument("--nbd-transports", default=nbd.TCP,
                   help="the NBD table's transports to nbdkit: tcp, unix or tcp,unix (a pair of rows each)")
    p.add_argument("--nbdkit-cpu", type=int, default=None,
                   help="the CPU the NBD table's nbdkit runs on (default: unpinned, beside neither client)")
    p.add_argument("--handovers", type=int, default=3,
                   help="live handovers in each stall run, the file device's and the nbd one's (0: skip both)")
    p.add_argument("--handover-interval", type=float, default=4)
    p.add_argument("--profile", default="", help="comma-separated gadget peers of the main table to sample "
                   "with py-spy in the last round (profile-PEER.txt; read with python -m bench.profile)")
    a = p.parse_args(argv)
    if not a.pin:
        a.fio_cpu = a.server_cpu = None
    tables = [t for t in a.tables.split(",") if t]
    if set(tables) - set(TABLES):
        p.error(f"unknown tables {sorted(set(tables) - set(TABLES))}; known: {', '.join(TABLES)}")
    try:
        a.nbd_transports = nbd.parse_transports(a.nbd_transports)
    except ValueError as e:
        p.error(f"--nbd-transports: {e}")
    known = {w.name for w in fio.WORKLOADS}
    if a.mode_workloads is not None and set(a.mode_workloads) - known:
        p.error(f"unknown --mode-workloads {sorted(set(a.mode_workloads) - known)}; known: {', '.join(sorted(known))}")

    a.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLCONFIGDIR", str(a.out.parent / "matplotlib"))  # font cache kept across boots
    log_dir = a.out / "logs"
    for stale in [*log_dir.rglob("*.log"), *a.out.glob("profile-*.txt")]:
        stale.unlink()
    shutil.rmtree(a.out / "cpu", ignore_errors=True)
    g = peers.Geometry(a.size, a.queues, a.depth, BACKING_FILE)
    make_backing_file(BACKING_FILE, a.size)
    wanted = a.workloads.split(",")
    workloads = tuple(w for w in fio.WORKLOADS if w.name in wanted)
    available = all_peers(a.kublk, log_dir)
    order = [n for n in a.peers.split(",") if n] if "main" in tables else []
    unknown = [n for n in order if n not in available]
    if unknown:
        p.error(f"unknown peers {unknown}; known: {', '.join(available)}")
    profile = {n: a.out / f"profile-{n}.txt" for n in a.profile.split(",") if n}
    schedule = rounds.Schedule(a.rounds, a.runtime, a.ramp, a.fio_cpu, a.server_cpu)
    elapsed: dict[str, float] = {}
    t0 = time.monotonic()
    subsets = workloads_of(order, modes.MAIN_PAIRS, a.mode_workloads)
    main_table = rounds.measure(available, order, g, workloads, schedule, a.out / "cpu", profile,
                                workloads_of=subsets)  # fmt: skip
    elapsed["main"] = round(time.monotonic() - t0, 1)
    skipped = Table(why_not="skipped (--tables)")
    disk_table, shared_table = skipped, skipped
    if "disk" in tables:
        disk_table = _timed(elapsed, "disk", lambda: measure_disk(a, schedule, log_dir))
    if "shared" in tables:
        shared_table = _timed(elapsed, "shared", lambda: measure_shared(a, schedule, log_dir))
    nbd_table = skipped
    if "nbd" in tables:
        nbd_table = _timed(elapsed, "nbd", lambda: measure_nbd(a, schedule, log_dir))
    engine_text = _timed_engine(elapsed)
    record(a, g, main_table, disk_table, shared_table, None, elapsed, engine_text, nbd_table, None)
    stall: dict[str, Any] = {"error": "skipped (--handovers 0)"}
    nbd_stall = dict(stall) if "nbd" in tables else {"error": "skipped (--tables)"}
    if a.handovers > 0:
        spec = f"file,path={BACKING_FILE},queues={a.queues},depth={a.depth}"
        stall = _timed_stall(elapsed, "stall", lambda: handover.measure(
            spec, a.out, handovers=a.handovers, interval_s=a.handover_interval))
        if "nbd" in tables:
            nbd_stall = _timed_stall(elapsed, "nbd stall", lambda: nbd.measure_stall(
                nbd_geometry(a), a.out / "nbd", a.handovers, a.handover_interval))
    print(record(a, g, main_table, disk_table, shared_table, stall, elapsed, engine_text, nbd_table, nbd_stall))
    return 0


def _timed_stall(elapsed: dict[str, float], name: str, measure: Callable[[], handover.StallResult]) -> dict[str, Any]:
    """``measure()``'s stall for the record, its wall time noted; a failure costs this stall only."""
    t0 = time.monotonic()
    try:
        stall = measure().to_json()
    except Exception as e:
        traceback.print_exc()
        stall = {"error": rounds.error_text(e)}
    elapsed[name] = round(time.monotonic() - t0, 1)
    return stall


def _timed_engine(elapsed: dict[str, float]) -> str:
    """The engine's CPU per request on each completion path, in this VM (bench.engine: no
    ublk work in it, so what the Python side costs here)."""
    t0 = time.monotonic()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            engine.main(["--requests", "20000"])
    except Exception as e:
        traceback.print_exc()
        return f"engine paths: not measured: {rounds.error_text(e)}\n"
    elapsed["engine"] = round(time.monotonic() - t0, 1)
    return out.getvalue()


def _table_json(t: Table, derived: dict[str, Any]) -> dict[str, Any]:
    if t.measured is None:
        return {"error": t.why_not}
    return {**t.detail, "peers": t.measured.peers_json(), "notes": t.measured.notes, **derived}


def _notes(notes: list[str]) -> str:
    return "".join(f"note: {n}\n" for n in notes)


def _stall_text(device: str, stall: dict[str, Any] | None) -> str:
    """A stall block, or why there is none; ``device``: "" (the file device's) or "nbd "."""
    if stall is None:
        return f"\n{device}handover stall: not measured (yet)\n"
    if "error" in stall:
        return f"\n{device}handover stall: not measured: {stall['error']}\n"
    worst = stall.get("worst_live_handover_stall_ms")
    summary = "" if worst is None else f"  worst live handover stall: {worst:.1f} ms\n"
    return f"\n{device}{report.format_stall(stall)}\n{summary}"


def _nbd_text(t: Table, results: report.Results, stall: dict[str, Any] | None) -> str:
    if t.measured is None:
        return f"\nnbd table: not measured: {t.why_not}\n"
    text = "\n" + nbd.table(results, t.measured.order, nbd.heading(t.detail)) + "\n" + _notes(t.measured.notes)
    return text + _stall_text("nbd ", stall)


def record(
    a: argparse.Namespace,
    g: peers.Geometry,
    main: rounds.Measured,
    disk_table: Table,
    shared_table: Table,
    stall: dict[str, Any] | None,
    elapsed: dict[str, float],
    engine_text: str = "",
    nbd_table: Table | None = None,
    nbd_stall: dict[str, Any] | None = None,
) -> str:
    """Write results.json and results.txt (also before the stall runs: a timeout then costs
    only the stalls); returns the text."""
    nbd_table = nbd_table or Table(why_not="skipped (--tables)")
    results = main.results()
    stall_s = None
    if stall and stall.get("worst_live_handover_stall_ms") is not None:
        stall_s = stall["worst_live_handover_stall_ms"] / 1e3
    disk_results = disk_table.measured.results() if disk_table.measured else {}
    shared_results = shared_table.measured.results() if shared_table.measured else {}
    nbd_results = nbd_table.measured.results() if nbd_table.measured else {}
    nbd_order = nbd_table.measured.order if nbd_table.measured else []
    checks = goals.checks(results, disk_results, shared_results, stall_s, nbd_results)
    doc = {
        "environment": _environment(a, g, elapsed),
        "peers": main.peers_json(),
        "notes": main.notes,
        "ratios": report.ratios(results, main.workloads),
        "buffer_modes": report.buffer_modes(results, main.workloads),
        "disk": _table_json(disk_table, disk.summary(disk_results, disk.PEER_ORDER)),
        "shared_cpu": _table_json(shared_table, {"pairs": shared.pairs(shared_results)}),
        "nbd": _table_json(nbd_table, nbd.summary(nbd_results, nbd_order)),
        "handover_stall": stall,
        "nbd_handover_stall": nbd_stall,
        "engine": engine_text,
        "targets": checks,
    }
    (a.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = report.table(results, main.workloads, main.order) + "\n" + _notes(main.notes)
    modes_text = report.mode_table(results, main.workloads)
    text += f"\n{modes_text}\n" if modes_text else ""
    if disk_table.measured:
        text += "\n" + disk.table(disk_results, disk_table.measured.order, disk.heading(disk_table.detail)) + "\n"
        text += _notes(disk_table.measured.notes)
    else:
        text += f"\ndisk table: not measured: {disk_table.why_not}\n"
    if shared_table.measured:
        text += "\n" + shared.table(shared_results, shared_table.measured.order) + "\n"
        text += _notes(shared_table.measured.notes)
    else:
        text += f"\nshared-CPU table: not measured: {shared_table.why_not}\n"
    text += _nbd_text(nbd_table, nbd_results, nbd_stall)
    text += _stall_text("", stall)
    if engine_text:
        text += "\n" + engine_text
    text += "\ngoals (the asynchronous data plane):\n" + report.format_checks(checks) + "\n"
    (a.out / "results.txt").write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
