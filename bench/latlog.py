"""fio's per-I/O latency log and what a handover does to it.

With ``write_lat_log=P``, ``log_avg_msec=0`` and ``log_unix_epoch=1`` fio writes ``P_lat.1.log``:
one line per I/O, ``completion time (ms since the Unix epoch), total latency (ns), direction,
block size, offset``.  An I/O was in flight from ``completion - latency`` to ``completion``;
it *spans* a handover when that interval meets the handover's window.  The stall a handover
causes is the longest I/O that spans it; steady state is every I/O that spans none.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DIRECTIONS = {0: "read", 1: "write", 2: "trim"}


class LatLogError(ValueError):
    """A line fio's latency log should not contain; names file and line."""


@dataclass
class LatLog:
    """Columns of one latency log: completion time (s, epoch), latency (s), direction."""

    done_s: array[float]
    lat_s: array[float]
    ddir: array[int]

    def __len__(self) -> int:
        return len(self.done_s)

    def issued_s(self, i: int) -> float:
        return self.done_s[i] - self.lat_s[i]


def parse(path: Path) -> LatLog:
    """Read ``path``; a malformed line is an error naming ``path:line``, never skipped."""
    log = LatLog(array("d"), array("d"), array("b"))
    with open(path, encoding="ascii") as f:
        for number, line in enumerate(f, 1):
            fields = line.split(",")
            try:
                if len(fields) < 3:
                    raise ValueError(f"{len(fields)} fields, expected at least 3")
                done_ms, lat_ns, ddir = int(fields[0]), int(fields[1]), int(fields[2])
            except ValueError as e:
                raise LatLogError(f"{path}:{number}: {e}: {line.strip()!r}") from None
            log.done_s.append(done_ms / 1e3)
            log.lat_s.append(lat_ns / 1e9)
            log.ddir.append(ddir)
    return log


@dataclass(frozen=True)
class Window:
    """A handover as the orchestrator saw it: from the successor's start (or the owner's
    SIGKILL) to the successor's ready line, in seconds since the epoch."""

    kind: str  # "handover" (live, SIGHUP to the old owner) or "crash" (SIGKILL, then adopt)
    start_s: float
    end_s: float
    #: Moments around it, (what, epoch s): where a long window spent its time.
    moments: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Stall:
    window: Window
    longest_s: float  # the longest I/O that spans the window (0 if none did)
    longest_done_s: float  # when that I/O completed (epoch s; 0 if none did)
    spanning: int  # how many I/Os span it


def _spans(log: LatLog, i: int, w: Window) -> bool:
    return log.issued_s(i) <= w.end_s and log.done_s[i] >= w.start_s


def stalls(log: LatLog, windows: Sequence[Window]) -> list[Stall]:
    """For each window, the longest I/O that was in flight at some moment of it."""
    out = []
    for w in windows:
        spanning = [i for i in range(len(log)) if _spans(log, i, w)]
        if not spanning:
            out.append(Stall(w, 0.0, 0.0, 0))
            continue
        longest = max(spanning, key=lambda i: log.lat_s[i])
        out.append(Stall(w, log.lat_s[longest], log.done_s[longest], len(spanning)))
    return out


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``, which must not be empty."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def steady(log: LatLog, windows: Sequence[Window]) -> list[float]:
    """Latencies of the I/Os that span no window: the service when nothing is handed over."""
    return [log.lat_s[i] for i in range(len(log)) if not any(_spans(log, i, w) for w in windows)]
