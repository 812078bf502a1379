"""Measure one table: its devices up at once, then rounds of every workload on every peer.

Every table of the benchmark (tmpfs, disk, shared CPU) is measured this way, so its ratios
compare like with like: round i of two peers ran within a minute of each other, the peer
order reversed every other round, so a neighbour's load on the VM's host hits all peers alike.
A peer that fails to come up is recorded with its error and the run goes on.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import subprocess
import traceback
from collections.abc import Collection, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cpu, fio, peers
from .fio import Result


@dataclass(frozen=True)
class Schedule:
    """How long and where: the same for every peer of a table."""

    rounds: int
    runtime_s: float
    ramp_s: float
    fio_cpu: int | None  # None: fio goes wherever the scheduler puts it
    server_cpu: int | None  # None: so do the userspace servers


def pin(pid: int, cpu: int) -> None:
    """Move every thread of ``pid`` (a userspace server: kublk or the gadget) onto ``cpu``."""
    subprocess.run(["taskset", "--all-tasks", "--cpu-list", "--pid", str(cpu), str(pid)],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip


def error_text(e: BaseException) -> str:
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
                notes.append(f"{name}: teardown: {error_text(e)}")


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


@dataclass
class Measured:
    """One table's measurements: per peer, how it was made and a Cell per workload."""

    order: list[str]
    workloads: tuple[fio.Workload, ...]
    details: dict[str, str] = field(default_factory=dict)
    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def results(self) -> dict[str, dict[str, Result | str]]:
        return {n: {w: c.figure() for w, c in cs.items()} for n, cs in self.cells.items()}

    def peers_json(self) -> dict[str, Any]:
        return {
            n: {
                "detail": self.details[n],
                "workloads": {w: r.to_json() if isinstance(r, Result) else {"error": r} for w, r in rs.items()},
            }
            for n, rs in self.results().items()
        }


def measure(
    available: Mapping[str, peers.Peer],
    order: list[str],
    g: peers.Geometry,
    workloads: tuple[fio.Workload, ...],
    schedule: Schedule,
    cpu_dir: Path,
    profile: Mapping[str, Path] | None = None,
    label: str = "",
    workloads_of: Mapping[str, Collection[str]] | None = None,
) -> Measured:
    """All devices of ``order`` up at once; ``schedule.rounds`` rounds, each running every
    workload on every peer (one fio process per peer and round).  The server CPU snapshots go
    to ``cpu_dir/<peer>-round<i>``; ``profile``: peer -> py-spy output, taken in the last
    round.  ``label`` prefixes the progress lines.  ``workloads_of``: peer -> the names of the
    only workloads it runs (the others have no cell); a peer left with none is not made."""
    mine = {n: tuple(w for w in workloads if workloads_of is None or n not in workloads_of
                     or w.name in workloads_of[n]) for n in order}  # fmt: skip
    m = Measured([n for n in order if mine[n]], workloads)
    m.notes += [f"{n}: not measured: none of its workloads was selected" for n in order if not mine[n]]
    order = m.order
    m.cells = {n: {w.name: Cell() for w in mine[n]} for n in order}
    profile = profile or {}
    with ExitStack() as stack:
        devices: dict[str, peers.Device] = {}
        for name in order:
            try:
                devices[name] = stack.enter_context(_guarded(available[name](g), m.notes, name))
                m.details[name] = devices[name].detail
                server = devices[name].server_pid
                if schedule.server_cpu is not None and server:
                    pin(server, schedule.server_cpu)
            except Exception as e:
                traceback.print_exc()
                m.details[name] = f"failed to start: {error_text(e)}"
                for cell in m.cells[name].values():
                    cell.error = m.details[name]
        up = [n for n in order if n in devices]
        for r in range(schedule.rounds):
            for name in up if r % 2 == 0 else reversed(up):
                spy = profile.get(name) if r == schedule.rounds - 1 else None
                measured = _one_round(devices[name], mine[name], schedule, cpu_dir / f"{name}-round{r + 1}", spy)
                for w in mine[name]:
                    cell, got = m.cells[name][w.name], measured[w.name]
                    if isinstance(got, str):
                        cell.error = got
                    else:
                        cell.runs.append(got)
                    print(f"bench: {label}round {r + 1} {name:<20} {w.name:<18} {_short(cell)}", flush=True)
    return m


def _one_round(
    dev: peers.Device,
    workloads: tuple[fio.Workload, ...],
    schedule: Schedule,
    snapshots: Path,
    spy: Path | None,
) -> dict[str, Result | str]:
    """Every workload once on ``dev`` in one fio process, with the server's CPU per request."""
    shutil.rmtree(snapshots, ignore_errors=True)  # the probes keep a clone's first snapshot
    snapshots.mkdir(parents=True)
    probes = cpu.probes(dev.server_pid, dev.path, snapshots) if dev.server_pid else None
    try:
        with peers.profiled(dev.server_pid, spy):
            measured = fio.run_sequence(dev.path, workloads, schedule.runtime_s, schedule.ramp_s, probes,
                                        snapshots, cpu=schedule.fio_cpu)  # fmt: skip
    except Exception as e:  # a failed peer must not cost the other figures
        return {w.name: error_text(e) for w in workloads}
    for w in workloads:
        got = measured[w.name]
        if isinstance(got, Result) and probes:
            measured[w.name] = dataclasses.replace(got, server_cpu_us_per_io=cpu.cpu_us_per_io(snapshots, w))
    return measured


def _short(cell: Cell) -> str:
    if cell.error:
        return "failed: " + cell.error.splitlines()[0][:100]
    r = cell.runs[-1]
    return f"{r.iops:9.0f} IOPS {r.bw_bytes / (1 << 20):8.1f} MiB/s p99 {r.lat_p99_ns / 1000:8.0f} us"
