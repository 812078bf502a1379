"""Run fio and read its JSON report: the only source of the benchmark's figures.

Every job is one fio process, one job, io_uring, O_DIRECT, time based, with a ramp so the
first requests (page faults, the first FETCH round) stay out of the figure.  A workload of
several jobs (``numjobs``) is reported as one, summed (``group_reporting``).  Latency is the
total latency (``lat_ns``: submission to completion), its percentiles turned on with
``lat_percentiles``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Workload:
    """One fio job shape; ``name`` is the row label in the table and the JSON key."""

    name: str
    rw: str  # fio's rw=: randread, randwrite, read, write
    bs: int
    iodepth: int
    numjobs: int = 1  # >1: that many submitters at once, their figures summed

    @property
    def is_read(self) -> bool:
        return "read" in self.rw


WORKLOADS = (
    Workload("4k-randread-qd1", "randread", 4096, 1),
    Workload("4k-randread-qd32", "randread", 4096, 32),
    Workload("4k-randwrite-qd1", "randwrite", 4096, 1),
    Workload("4k-randwrite-qd32", "randwrite", 4096, 32),
    Workload("128k-read-qd32", "read", 128 << 10, 32),
    Workload("128k-write-qd32", "write", 128 << 10, 32),
)


@dataclass(frozen=True)
class Result:
    """What one fio job measured, for the direction it ran."""

    iops: float
    bw_bytes: float  # bytes per second
    lat_p50_ns: int
    lat_p99_ns: int
    lat_max_ns: int
    ios: int
    #: IOPS of every round of this cell, in the order run (this Result is the median one).
    rounds_iops: tuple[float, ...] = ()
    #: CPU the userspace server spent per request (bench.cpu); None for in-kernel devices.
    server_cpu_us_per_io: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "iops": self.iops,
            "bw_bytes": self.bw_bytes,
            "bw_mib_s": self.bw_bytes / (1 << 20),
            "lat_p50_us": self.lat_p50_ns / 1000,
            "lat_p99_us": self.lat_p99_ns / 1000,
            "lat_max_us": self.lat_max_ns / 1000,
            "ios": self.ios,
            "rounds_iops": list(self.rounds_iops),
            "server_cpu_us_per_io": self.server_cpu_us_per_io,
        }


class FioError(RuntimeError):
    """fio failed or reported an error; the message carries fio's own words."""


def command(
    filename: str,
    w: Workload,
    runtime_s: float,
    ramp_s: float,
    output: str,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The fio command line for ``w`` against ``filename``, JSON report to ``output``."""
    return [*_global(filename, runtime_s, ramp_s, output), *_job(w), *extra]


PerJob = Callable[[Workload], list[str]]


def sequence_command(
    filename: str,
    workloads: Sequence[Workload],
    runtime_s: float,
    ramp_s: float,
    output: str,
    per_job: PerJob | None = None,
) -> list[str]:
    """One fio process running ``workloads`` one after the other (``stonewall``), each with
    its own ramp: one process start per device and round instead of one per workload.
    ``per_job(w)`` adds options to ``w``'s job (bench.cpu's probes)."""
    jobs = [[*_job(w), "--stonewall", *(per_job(w) if per_job else [])] for w in workloads]
    return [*_global(filename, runtime_s, ramp_s, output), *(a for job in jobs for a in job)]


def _global(filename: str, runtime_s: float, ramp_s: float, output: str) -> list[str]:
    return [
        "fio",
        f"--filename={filename}",
        "--ioengine=io_uring",
        "--direct=1",
        "--numjobs=1",
        "--time_based",
        f"--runtime={round(runtime_s * 1000)}ms",  # fio reads "0.5s" as 0 s
        f"--ramp_time={round(ramp_s * 1000)}ms",
        "--norandommap",
        "--randrepeat=0",
        "--lat_percentiles=1",
        "--output-format=json",
        f"--output={output}",
        "--eta=never",
    ]


def _job(w: Workload) -> list[str]:
    job = [f"--name={w.name}", f"--rw={w.rw}", f"--bs={w.bs}", f"--iodepth={w.iodepth}"]
    if w.numjobs > 1:
        job += [f"--numjobs={w.numjobs}", "--group_reporting"]
    return job


def _percentile(lat: dict[str, Any], key: str) -> int:
    table = lat.get("percentile")
    if not table or key not in table:
        raise FioError(f"fio report has no total-latency percentile {key} (lat_percentiles off?)")
    return int(table[key])


def parse_job(job: dict[str, Any], rw: str) -> Result:
    """The figures of one job of a fio JSON report, for direction ``rw``."""
    if job.get("error"):
        raise FioError(f"fio job {job.get('jobname')!r} failed: error {job['error']}")
    side = job["read" if "read" in rw else "write"]
    if side["total_ios"] == 0:
        raise FioError(f"fio job {job.get('jobname')!r} completed no I/O")
    lat = side["lat_ns"]
    return Result(
        iops=float(side["iops"]),
        bw_bytes=float(side["bw_bytes"]),
        lat_p50_ns=_percentile(lat, "50.000000"),
        lat_p99_ns=_percentile(lat, "99.000000"),
        lat_max_ns=int(lat["max"]),
        ios=int(side["total_ios"]),
    )


def parse(report: dict[str, Any], rw: str) -> Result:
    """The figures of the single job in a fio JSON ``report``, for direction ``rw``."""
    jobs = report.get("jobs")
    if not isinstance(jobs, list) or len(jobs) != 1:
        raise FioError(f"expected one job in the fio report, found {len(jobs or [])}")
    return parse_job(jobs[0], rw)


def run(filename: str, w: Workload, runtime_s: float, ramp_s: float) -> Result:
    """Run ``w`` on ``filename`` and return what fio measured."""
    result = run_sequence(filename, [w], runtime_s, ramp_s)[w.name]
    if isinstance(result, str):
        raise FioError(result)
    return result


def run_sequence(
    filename: str,
    workloads: Sequence[Workload],
    runtime_s: float,
    ramp_s: float,
    per_job: PerJob | None = None,
    cwd: Path | None = None,
    cpu: int | None = None,
) -> dict[str, Result | str]:
    """Run ``workloads`` in turn on ``filename``: each one's Result, or why it has none.

    A job that failed costs its own figure only; fio failing as a whole fails them all.
    ``cpu``: the one CPU fio may run on (``--cpus_allowed``).
    """
    with tempfile.TemporaryDirectory(prefix="bench-fio-") as tmp:
        output = Path(tmp) / "fio.json"
        cmd = sequence_command(filename, workloads, runtime_s, ramp_s, str(output), per_job)
        if cpu is not None:
            cmd.append(f"--cpus_allowed={cpu}")
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd or tmp)
        if done.returncode != 0 and not output.exists():
            error = f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}"
            return {w.name: error for w in workloads}
        jobs = {job.get("jobname"): job for job in load(output).get("jobs", [])}
    results: dict[str, Result | str] = {}
    for w in workloads:
        try:
            if w.name not in jobs:
                raise FioError(f"no job {w.name!r} in fio's report (exit {done.returncode}: {done.stderr.strip()})")
            results[w.name] = parse_job(jobs[w.name], w.rw)
        except FioError as e:
            results[w.name] = str(e)
    return results


def load(path: Path) -> dict[str, Any]:
    """fio's JSON report from ``path``; fio may put notices (``fio: terminating on signal 2``)
    on lines before the JSON, which are skipped."""
    text = path.read_text(encoding="utf-8")
    start = 0 if text.startswith("{") else text.find("\n{") + 1
    try:
        if start == 0 and not text.startswith("{"):
            raise ValueError("no line starts a JSON object")
        doc = json.loads(text[start:])
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return doc
    except ValueError as e:
        raise FioError(f"{path}: not a fio JSON report ({e}): {text[:200]!r}") from None


class Background:
    """fio running while something else happens (handovers): started with a runtime longer
    than needed and stopped with SIGINT, on which fio ends the job and writes its report
    and logs.  fio ending before it is asked to is an error (it failed I/O)."""

    def __init__(self, cmd: list[str], output: Path) -> None:
        self.cmd = cmd
        self.output = output
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._stderr, text=True)

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().strip()

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise FioError(f"{' '.join(self.cmd)}: ended early, exit {self.proc.returncode}: {self._stderr_text()}")

    def stop(self, timeout_s: float = 120) -> dict[str, Any]:
        """SIGINT, wait, and return fio's report (its jobs' ``error`` tells if I/O failed)."""
        self.check_running()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise FioError(f"{' '.join(self.cmd)}: still running {timeout_s:g} s after SIGINT") from None
        return load(self.output)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
