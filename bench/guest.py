"""The benchmark proper, run as root inside the test-bed VM (``python -m bench`` boots it).

Every peer gets the same geometry and the same backing file on the guest's tmpfs; every
workload runs on every peer in one boot, so the ratios compare like with like.  A peer that
fails to come up is recorded with its error and the run goes on: the table shows what was
measured and says what was not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cpu, fio, handover, peers, report
from .fio import Result

BACKING_FILE = "/tmp/bench-backing.img"
PEER_ORDER = ("null_blk", "loop", "kublk-null", "kublk-loop", "gadget-null", "gadget-mem", "gadget-file")


def make_backing_file(path: str, size: int) -> None:
    """A fully written file (no holes: a read of a hole costs less than a read of data)."""
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)


def all_peers(kublk: str, log_dir: Path) -> dict[str, peers.Peer]:
    return {
        "null_blk": peers.null_blk,
        "loop": peers.loop,
        "kublk-null": peers.kublk_null(kublk),
        "kublk-loop": peers.kublk_loop(kublk),
        **{f"gadget-{t}": peers.gadget(t, log_dir) for t in ("null", "mem", "file")},
    }


def pin(pid: int, cpu: int) -> None:
    """Move every thread of ``pid`` (a userspace server: kublk or the gadget) onto ``cpu``."""
    subprocess.run(["taskset", "--all-tasks", "--cpu-list", "--pid", str(cpu), str(pid)],
                   check=True, stdout=subprocess.DEVNULL)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


@contextmanager
def _guarded(cm: AbstractContextManager[peers.Device], notes: list[str], name: str) -> Iterator[peers.Device]:
    """``cm``, but a failure to tear it down is noted instead of hiding the figures."""
    with ExitStack() as stack:
        device = stack.enter_context(cm)
        try:
            yield device
        finally:
            try:
                stack.close()
            except Exception as e:
                notes.append(f"{name}: teardown: {_error(e)}")


@dataclass
class Cell:
    """Every round of one workload on one peer; the figure is the round of median IOPS."""

    runs: list[Result] = field(default_factory=list)
    error: str | None = None

    def figure(self) -> Result | str:
        """A failed round voids the cell: a server that failed I/O once has no figure."""
        if self.error or not self.runs:
            return self.error or "not run"
        median = sorted(self.runs, key=lambda r: r.iops)[(len(self.runs) - 1) // 2]
        cpu_costs = [r.server_cpu_us_per_io for r in self.runs if r.server_cpu_us_per_io is not None]
        return dataclasses.replace(
            median,
            rounds_iops=tuple(r.iops for r in self.runs),
            server_cpu_us_per_io=statistics.median(cpu_costs) if cpu_costs else None,
        )


def measure(
    available: dict[str, peers.Peer],
    order: list[str],
    g: peers.Geometry,
    workloads: tuple[fio.Workload, ...],
    a: argparse.Namespace,
    profile: set[str],
) -> tuple[dict[str, str], dict[str, dict[str, Cell]], list[str]]:
    """All devices up at once; ``rounds`` rounds, each running every workload on every peer
    (one fio process per peer and round), the peer order reversed every other round, so a
    neighbour's load on the VM's host hits all peers alike."""
    details: dict[str, str] = {}
    cells = {n: {w.name: Cell() for w in workloads} for n in order}
    notes: list[str] = []
    with ExitStack() as stack:
        devices: dict[str, peers.Device] = {}
        for name in order:
            try:
                devices[name] = stack.enter_context(_guarded(available[name](g), notes, name))
                details[name] = devices[name].detail
                if a.server_cpu is not None and devices[name].server_pid:
                    pin(devices[name].server_pid, a.server_cpu)
            except Exception as e:
                traceback.print_exc()
                details[name] = f"failed to start: {_error(e)}"
                for cell in cells[name].values():
                    cell.error = details[name]
        up = [n for n in order if n in devices]
        for r in range(a.rounds):
            for name in up if r % 2 == 0 else reversed(up):
                dev = devices[name]
                sampled = r == a.rounds - 1 and name in profile
                spy = a.out / f"profile-{name}.txt" if sampled else None
                snapshots = a.out / "cpu" / f"{name}-round{r + 1}"
                snapshots.mkdir(parents=True, exist_ok=True)
                probes = cpu.probes(dev.server_pid, dev.path, snapshots) if dev.server_pid else None
                try:
                    with peers.profiled(dev.server_pid, spy):
                        measured = fio.run_sequence(dev.path, workloads, a.runtime, a.ramp, probes, snapshots,
                                                    cpu=a.fio_cpu)
                except Exception as e:  # a failed peer must not cost the other figures
                    measured = {w.name: _error(e) for w in workloads}
                for w in workloads:
                    got = measured[w.name]
                    if isinstance(got, Result) and probes:
                        measured[w.name] = dataclasses.replace(got, server_cpu_us_per_io=cpu.cpu_us_per_io(snapshots, w))
                for w in workloads:
                    cell, got = cells[name][w.name], measured[w.name]
                    if isinstance(got, str):
                        cell.error = got
                    else:
                        cell.runs.append(got)
                    print(f"bench: round {r + 1} {name:<12} {w.name:<18} {_short(cell)}", flush=True)
    return details, cells, notes


def _short(cell: Cell) -> str:
    if cell.error:
        return "failed: " + cell.error.splitlines()[0][:100]
    r = cell.runs[-1]
    return f"{r.iops:9.0f} IOPS {r.bw_bytes / (1 << 20):8.1f} MiB/s p99 {r.lat_p99_ns / 1000:8.0f} us"


def _environment(a: argparse.Namespace, g: peers.Geometry) -> dict[str, Any]:
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
    }


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
    p.add_argument("--peers", default=",".join(PEER_ORDER))
    p.add_argument("--workloads", default=",".join(w.name for w in fio.WORKLOADS))
    p.add_argument("--fio-cpu", type=int, default=0, help="the CPU fio runs on")
    p.add_argument("--server-cpu", type=int, default=1,
                   help="the CPU every thread of a userspace server (kublk, gadget) runs on")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="let the scheduler place fio and the servers (IOPS then vary by boot)")
    p.add_argument("--handovers", type=int, default=3, help="live handovers in the stall run (0: skip it)")
    p.add_argument("--handover-interval", type=float, default=4)
    p.add_argument("--profile", default="", help="comma-separated gadget peers to sample with py-spy "
                   "in the last round (profile-PEER.txt; read with python -m bench.profile)")
    a = p.parse_args(argv)
    if not a.pin:
        a.fio_cpu = a.server_cpu = None

    a.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLCONFIGDIR", str(a.out.parent / "matplotlib"))  # font cache kept across boots
    log_dir = a.out / "logs"
    for stale in [*log_dir.glob("*.log"), *a.out.glob("profile-*.txt")]:
        stale.unlink()
    shutil.rmtree(a.out / "cpu", ignore_errors=True)
    g = peers.Geometry(a.size, a.queues, a.depth, BACKING_FILE)
    make_backing_file(BACKING_FILE, a.size)
    wanted = a.workloads.split(",")
    workloads = tuple(w for w in fio.WORKLOADS if w.name in wanted)
    available = all_peers(a.kublk, log_dir)
    order = [n for n in a.peers.split(",") if n]
    unknown = [n for n in order if n not in available]
    if unknown:
        p.error(f"unknown peers {unknown}; known: {', '.join(available)}")
    profile = {n for n in a.profile.split(",") if n}
    details, cells, notes = measure(available, order, g, workloads, a, profile)
    record(a, g, workloads, order, details, cells, notes, stall=None)
    stall: dict[str, Any] | None = {"error": "skipped (--handovers 0)"}
    if a.handovers > 0:
        try:
            spec = f"file,path={BACKING_FILE},queues={a.queues},depth={a.depth}"
            s = handover.measure(spec, a.out, handovers=a.handovers, interval_s=a.handover_interval)
            stall = s.to_json()
        except Exception as e:
            traceback.print_exc()
            stall = {"error": _error(e)}
    print(record(a, g, workloads, order, details, cells, notes, stall))
    return 0


def record(
    a: argparse.Namespace,
    g: peers.Geometry,
    workloads: tuple[fio.Workload, ...],
    order: list[str],
    details: dict[str, str],
    cells: dict[str, dict[str, Cell]],
    notes: list[str],
    stall: dict[str, Any] | None,
) -> str:
    """Write results.json and results.txt (also before the stall run: a timeout then costs
    only the stall); returns the text."""
    results = {n: {w: c.figure() for w, c in cs.items()} for n, cs in cells.items()}
    stall_s = None
    if stall and stall.get("worst_live_handover_stall_ms") is not None:
        stall_s = stall["worst_live_handover_stall_ms"] / 1e3
    checks = report.target_checks(results, stall_s)
    doc = {
        "environment": _environment(a, g),
        "peers": {
            n: {
                "detail": details[n],
                "workloads": {w: r.to_json() if isinstance(r, Result) else {"error": r} for w, r in rs.items()},
            }
            for n, rs in results.items()
        },
        "notes": notes,
        "ratios": report.ratios(results, workloads),
        "handover_stall": stall,
        "targets": checks,
    }
    (a.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = report.table(results, workloads, order) + "\n"
    if stall is None:
        text += "\nhandover stall: not measured (yet)\n"
    elif "error" in stall:
        text += f"\nhandover stall: not measured: {stall['error']}\n"
    else:
        text += "\n" + report.format_stall(stall) + "\n"
    text += "".join(f"note: {n}\n" for n in notes)
    text += "\ngoals (issue 6):\n" + report.format_checks(checks) + "\n"
    (a.out / "results.txt").write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
