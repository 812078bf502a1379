"""Draw I/O latency over time with the handovers marked: the picture of a handover stall.

One dot per I/O at the moment it completed, latency on a log scale so both the steady
microseconds and a stall of a second are readable; each handover window is shaded, and its
longest spanning I/O drawn as a bar from issue to completion and labelled.  Agg backend: no display needed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .latlog import LatLog, Stall

COLORS = {"handover": "tab:orange", "crash": "tab:red"}
LABELS = {"handover": "live handover (SIGHUP, --adopt)", "crash": "crash adoption (SIGKILL, standby --adopt)"}


def latency_over_time(
    log: LatLog, stalls: Sequence[Stall], steady_p99_s: float, title: str, out: Path
) -> Path:
    """Write the PNG to ``out`` and return its path."""
    if "MPLCONFIGDIR" not in os.environ and not os.access(Path.home(), os.W_OK):
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="matplotlib-")  # the VM's / is read-only
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(log.done_s[0], *(s.window.start_s for s in stalls)) if stalls else log.done_s[0]
    fig, ax = plt.subplots(figsize=(11, 5), dpi=110)
    for ddir, color, name in ((0, "tab:blue", "read"), (1, "tab:green", "write")):
        xs = [log.done_s[i] - t0 for i in range(len(log)) if log.ddir[i] == ddir]
        ys = [log.lat_s[i] * 1e3 for i in range(len(log)) if log.ddir[i] == ddir]
        if xs:
            ax.scatter(xs, ys, s=2, color=color, alpha=0.35, linewidths=0, label=f"{name} I/O", rasterized=True)
    ax.axhline(steady_p99_s * 1e3, color="black", linestyle="--", linewidth=1,
               label=f"steady-state p99 {steady_p99_s * 1e3:.2f} ms")  # fmt: skip
    labelled: set[str] = set()
    for s in stalls:
        w = s.window
        ax.axvspan(w.start_s - t0, w.end_s - t0, color=COLORS[w.kind], alpha=0.18,
                   label=None if w.kind in labelled else LABELS[w.kind])  # fmt: skip
        labelled.add(w.kind)
        if not s.spanning:
            continue
        # The longest spanning I/O drawn as what it was: in flight from issue to completion.
        done, lat_ms = s.longest_done_s - t0, s.longest_s * 1e3
        ax.plot([done - s.longest_s, done], [lat_ms, lat_ms], color=COLORS[w.kind], linewidth=2.5,
                solid_capstyle="butt")  # fmt: skip
        ax.annotate(f"{lat_ms:.0f} ms", xy=(done, lat_ms), xytext=(4, 4), textcoords="offset points",
                    fontsize=9, color=COLORS[w.kind], fontweight="bold")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("I/O latency, submit to complete (ms)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, markerscale=4, framealpha=0.9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
