"""Measure the stall a handover causes: fio logs every I/O while the gadget changes hands.

A gadget serves a file; fio runs mixed 4k random I/O on it with a per-I/O latency log; every
``interval_s`` a successor adopts the device (``serve --adopt``: the old owner drains,
quiesces and exits), and once, optionally, the owner is SIGKILLed and a successor recovers the
device (by a standby successor, started beforehand).  Each window runs from the moment the
owner is told to go (the successor's SIGHUP, or the SIGKILL) to the successor's ready line;
the successor's own Python start-up, before it signals or stands by, is recorded but outside
the window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fio, latlog, plot
from .gadget import Gadget, GadgetError

WORKLOAD = fio.Workload("4k-randrw-qd32", "randrw", 4096, 32)


@dataclass
class StallResult:
    log: latlog.LatLog
    stalls: list[latlog.Stall]
    steady_p99_s: float
    fio: fio.Result
    picture: Path
    notes: list[str]

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
                    "moments_ms": {what: (t - s.window.start_s) * 1e3 for what, t in s.window.moments},
                }
                for s in self.stalls
            ],
            "fio": self.fio.to_json(),
            "picture": str(self.picture),
            "notes": self.notes,
        }


#: What a successor logs as it signals the owner (ublk_gadget.adopt); the live window opens there.
SIGNAL_LOGGED = "(SIGHUP)"


def hand_over(owner: Gadget, state_file: str, log_dir: Path, n: int, crash: bool) -> tuple[Gadget, latlog.Window]:
    """Replace ``owner`` by a successor: live (it drains and exits) or after SIGKILL.

    Live: the window opens at the successor's SIGHUP, once it has started up (its Python
    start is not the device's stall). Crash: a standby successor (``--adopt --standby``) is
    started and stands by first, as an operator would run one; the window opens at the
    SIGKILL. Either closes when the successor announces ready.
    """
    spawned = time.time()
    log = log_dir / f"gadget-successor-{n}.log"
    if crash:
        successor = Gadget.adopt(state_file, log, standby=True)
        standing = float(successor.wait_event("standby")["t"])
        killed = time.time()
        owner.kill()
        ready = float(successor.wait_event("ready")["t"])  # stamped as the line arrived
        moments = [("successor spawned", spawned), ("successor standing by", standing),
                   ("owner SIGKILLed", killed), ("successor ready", ready)]
        return successor, latlog.Window("crash", killed, ready, tuple(moments))
    successor = Gadget.adopt(state_file, log)
    ready = float(successor.ready["t"])
    code = owner.wait_exit(60)
    if code != 0:
        raise RuntimeError(f"old owner {owner.pid} exited {code} after handing over; log {owner.log}")
    signalled = successor.logged(SIGNAL_LOGGED)
    moments = [("successor spawned", spawned)]
    if successor.stderr:
        moments.append(("successor's first log line (Python started)", successor.stderr[0][0]))
    if signalled is not None:
        moments.append(("owner signalled (SIGHUP)", signalled))
    moments.append(("successor ready", ready))
    return successor, latlog.Window("handover", signalled or spawned, ready, tuple(moments))


def measure(
    device_spec: str,
    out_dir: Path,
    handovers: int = 3,
    crash: bool = True,
    interval_s: float = 4.0,
    title: str = "I/O latency across ublk-gadget handovers (fio 4k randrw QD32 on a file device)",
) -> StallResult:
    """Serve ``device_spec``, run fio on it across the handovers, and draw the picture."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / "logs"
    state_file = "/run/ublk-bench-gadget.state"
    lat_prefix = out_dir / "handover"
    for stale in out_dir.glob("handover_*.log"):
        stale.unlink()
    report = out_dir / "handover-fio.json"
    owner = Gadget.serve([device_spec], log_dir / "gadget-first.log", state_file=state_file)
    cmd = fio.command(owner.block_devices[0], WORKLOAD, 3600, 0, str(report),
                      extra=(f"--write_lat_log={lat_prefix}", "--log_avg_msec=0", "--log_unix_epoch=1"))  # fmt: skip
    windows: list[latlog.Window] = []
    job = fio.Background(cmd, report)
    try:
        for n in range(handovers + int(crash)):
            time.sleep(interval_s)
            job.check_running()
            owner, window = hand_over(owner, state_file, log_dir, n + 1, crash=n == handovers)
            windows.append(window)
        time.sleep(interval_s)
        summary = fio.parse(job.stop(), "read")
    finally:
        job.kill()
        notes = []
        try:
            code = owner.stop()
            if code != 0:
                notes.append(f"last owner {owner.pid} exited {code} on SIGTERM; log {owner.log}")
        except GadgetError as e:  # the measurement stands; the failure to stop is reported
            owner.kill()
            notes.append(f"last owner did not stop on SIGTERM, killed: {e}")
    log = latlog.parse(Path(f"{lat_prefix}_lat.1.log"))
    stalls = latlog.stalls(log, windows)
    p99 = latlog.percentile(latlog.steady(log, windows), 99)
    picture = plot.latency_over_time(log, stalls, p99, title, out_dir / "handover-latency.png")
    return StallResult(log, stalls, p99, summary, picture, notes)
