"""Measure the stall a handover causes: fio logs every I/O while the gadget changes hands.

A gadget serves a file; fio runs mixed 4k random I/O on it with a per-I/O latency log; every
``interval_s`` a successor adopts the device (``serve --adopt``: the old owner drains,
quiesces and exits), and once, optionally, the owner is SIGKILLed and a successor recovers the
device.  Each window runs from the successor's start to its ready line.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fio, latlog, plot
from .gadget import Gadget

WORKLOAD = fio.Workload("4k-randrw-qd32", "randrw", 4096, 32)


@dataclass
class StallResult:
    log: latlog.LatLog
    stalls: list[latlog.Stall]
    steady_p99_s: float
    fio: fio.Result
    picture: Path

    @property
    def worst_live_s(self) -> float | None:
        live = [s.longest_s for s in self.stalls if s.window.kind == "handover"]
        return max(live) if live else None

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": WORKLOAD.name,
            "ios": len(self.log),
            "steady_p99_ms": self.steady_p99_s * 1e3,
            "worst_live_handover_stall_ms": None if self.worst_live_s is None else self.worst_live_s * 1e3,
            "windows": [
                {
                    "kind": s.window.kind,
                    "window_ms": (s.window.end_s - s.window.start_s) * 1e3,
                    "longest_spanning_io_ms": s.longest_s * 1e3,
                    "spanning_ios": s.spanning,
                }
                for s in self.stalls
            ],
            "fio": self.fio.to_json(),
            "picture": str(self.picture),
        }


def hand_over(owner: Gadget, state_file: str, log_dir: Path, n: int, crash: bool) -> tuple[Gadget, latlog.Window]:
    """Replace ``owner`` by a successor: live (it drains and exits) or after SIGKILL."""
    start = time.time()
    if crash:
        owner.kill()
    successor = Gadget.adopt(state_file, log_dir / f"gadget-successor-{n}.log")
    end = time.time()
    if not crash:
        code = owner.wait_exit(60)
        if code != 0:
            raise RuntimeError(f"old owner {owner.pid} exited {code} after handing over; log {owner.log}")
    return successor, latlog.Window("crash" if crash else "handover", start, end)


def measure(
    device_spec: str,
    out_dir: Path,
    handovers: int = 3,
    crash: bool = True,
    interval_s: float = 4.0,
    title: str = "I/O latency across gadget handovers",
) -> StallResult:
    """Serve ``device_spec``, run fio on it across the handovers, and draw the picture."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / "logs"
    state_file = "/run/ublk-bench-gadget.state"
    owner = Gadget.serve([device_spec], log_dir / "gadget-first.log", state_file=state_file)
    lat_prefix = out_dir / "handover"
    report = out_dir / "handover-fio.json"
    runtime = interval_s * (handovers + int(crash) + 1)
    cmd = fio.command(owner.block_devices[0], WORKLOAD, runtime, 0, str(report),
                      extra=(f"--write_lat_log={lat_prefix}", "--log_avg_msec=0", "--log_unix_epoch=1"))  # fmt: skip
    windows: list[latlog.Window] = []
    job = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        for n in range(handovers + int(crash)):
            time.sleep(interval_s)
            owner, window = hand_over(owner, state_file, log_dir, n + 1, crash=n == handovers)
            windows.append(window)
        _, err = job.communicate(timeout=runtime + 120)
        if job.returncode != 0:
            raise fio.FioError(f"{' '.join(cmd)}: exit {job.returncode}: {err.strip()}")
    finally:
        if job.poll() is None:
            job.kill()
        owner.stop()
    with open(report, encoding="utf-8") as f:
        summary = fio.parse(json.load(f), "read")
    log = latlog.parse(Path(f"{lat_prefix}_lat.1.log"))
    stalls = latlog.stalls(log, windows)
    p99 = latlog.percentile(latlog.steady(log, windows), 99)
    picture = plot.latency_over_time(log, stalls, p99, title, out_dir / "handover-latency.png")
    return StallResult(log, stalls, p99, summary, picture)
