"""The demo, run as root inside the test-bed VM (``python -m demo`` boots it).

A gadget serves a file; ext4 goes on it; files are written and checksummed; then, while fio
hammers a file in that file system (writes verified by fio as it goes) and a writer keeps
adding fsynced files, the gadget is handed over live once, and SIGKILLed once and recovered by a
standby successor (``serve --adopt --standby``, started beforehand).
Afterwards the file system is unmounted, fsck'd and remounted, and every file whose fsync
returned is read back and compared with the checksum taken when it was written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import fio, latlog, plot
from bench.gadget import Gadget
from bench.handover import hand_over

DISK = "/tmp/demo-disk.img"
MOUNT = "/tmp/demo-mnt"
STATE = "/run/ublk-demo.state"
WORKLOAD = fio.Workload("demo-randwrite-verify", "randwrite", 4096, 16)
LIVE_FILES_MAX = 400  # 50 MiB: the file system keeps room for fio's 64 MiB


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def sh(*cmd: str) -> str:
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}:\n{done.stdout.strip()}")
    return done.stdout


@dataclass
class Written:
    """Files whose write (and fsync) returned, with the SHA-256 of what was written."""

    sums: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, path: Path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with self.lock:
            self.sums[path.name] = hashlib.sha256(data).hexdigest()

    def check(self, directory: Path) -> list[str]:
        """Names of the files that are missing or differ; empty means every byte came back."""
        bad = []
        for name, digest in sorted(self.sums.items()):
            try:
                if hashlib.sha256((directory / name).read_bytes()).hexdigest() != digest:
                    bad.append(f"{name}: content differs")
            except OSError as e:
                bad.append(f"{name}: {e.strerror}")
        return bad


def keep_writing(written: Written, directory: Path, stop: threading.Event, errors: list[str]) -> None:
    """Add 128 KiB files, each fsynced, until told to stop: I/O that must cross the handovers."""
    n = 0
    try:
        while not stop.is_set() and n < LIVE_FILES_MAX:
            written.write(directory / f"live-{n:04d}.bin", os.urandom(128 << 10))
            n += 1
    except OSError as e:
        errors.append(f"writer: live-{n:04d}.bin: {e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the demo, inside the VM")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=256 << 20)
    p.add_argument("--phase", type=float, default=5.0, help="seconds of I/O before, between and after")
    a = p.parse_args(argv)
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLCONFIGDIR", str(out.parent / "matplotlib"))  # font cache kept across boots
    for stale in [*out.glob("demo-lat*.log"), *out.glob("logs/*.log")]:
        stale.unlink()

    say(f"backing file {DISK} ({a.size >> 20} MiB, guest tmpfs)")
    with open(DISK, "wb") as f:
        f.truncate(a.size)
    owner = Gadget.serve([f"file,path={DISK}"], out / "logs" / "gadget-1.log", state_file=STATE)
    dev = owner.block_devices[0]
    say(f"ublk-gadget (pid {owner.pid}) serves {DISK} as {dev}")
    mounted = False
    try:
        sh("mkfs.ext4", "-q", "-F", dev)
        os.makedirs(MOUNT, exist_ok=True)
        sh("mount", dev, MOUNT)
        mounted = True
        mnt = Path(MOUNT)
        written = Written()
        for i in range(16):
            written.write(mnt / f"file-{i:02d}.bin", os.urandom((64 << 10) * (i + 1)))
        say(f"ext4 made and mounted on {MOUNT}; {len(written.sums)} files written, checksums taken")

        lat_prefix = out / "demo-lat"
        report = out / "demo-fio.json"
        job_file = ("--size=64M", "--verify=crc32c", "--verify_backlog=256", "--verify_fatal=1")
        cmd = fio.command(str(mnt / "fio.dat"), WORKLOAD, 3600, 0, str(report), extra=(
            *job_file, f"--write_lat_log={lat_prefix}", "--log_avg_msec=0", "--log_unix_epoch=1"))  # fmt: skip
        # Lay the 64 MiB file out now, not in the measured run.
        sh(*fio.command(str(mnt / "fio.dat"), WORKLOAD, 1, 0, str(report), extra=(*job_file, "--create_only=1")))
        say(f"fio: 4k random writes, QD{WORKLOAD.iodepth}, each read back and verified by fio; "
            "a writer adds fsynced files alongside")  # fmt: skip
        stop, errors = threading.Event(), list[str]()
        writer = threading.Thread(target=keep_writing, args=(written, mnt, stop, errors))
        job = fio.Background(cmd, report)
        writer.start()
        windows: list[latlog.Window] = []
        try:
            time.sleep(a.phase)
            job.check_running()
            old = owner.pid
            owner, w = hand_over(owner, STATE, out / "logs", 2, crash=False)
            windows.append(w)
            say(f"live handover: pid {old} -> {owner.pid} in {w.end_s - w.start_s:.2f} s, old owner exited 0")
            time.sleep(a.phase)
            job.check_running()
            old = owner.pid
            owner, w = hand_over(owner, STATE, out / "logs", 3, crash=True)
            windows.append(w)
            say(f"crash adoption: pid {old} SIGKILLed, standby {owner.pid} recovered {dev} "
                f"in {w.end_s - w.start_s:.2f} s")
            time.sleep(a.phase)
            summary = fio.parse(job.stop(), "write")
        finally:
            stop.set()
            writer.join()
            job.kill()
        if errors:
            raise RuntimeError("; ".join(errors))
        say(f"fio stopped: {summary.ios} writes, read back and verified in batches of 256 as it went, no errors")

        sh("umount", MOUNT)
        mounted = False
        fsck = sh("e2fsck", "-f", "-n", dev)
        say(f"fsck clean: {fsck.strip().splitlines()[-1]}")
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        sh("mount", dev, MOUNT)
        mounted = True
        bad = written.check(mnt)
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(written.sums)} files lost or changed: {bad[:5]}")
        say(f"checksums: all {len(written.sums)} files read back intact after remount")

        log = latlog.parse(Path(f"{lat_prefix}_lat.1.log"))
        stalls = latlog.stalls(log, windows)
        p99 = latlog.percentile(latlog.steady(log, windows), 99)
        picture = plot.latency_over_time(log, stalls, p99, "demo: fio on ext4 on ublk-gadget, "
                                         "a live handover and a crash adoption", out / "demo-latency.png")  # fmt: skip
        result = {
            "device": dev,
            "files_verified": len(written.sums),
            "fio": summary.to_json(),
            "steady_p99_ms": p99 * 1e3,
            "stalls": [{"kind": s.window.kind, "window_s": s.window.end_s - s.window.start_s,
                        "longest_spanning_io_ms": s.longest_s * 1e3,
                        "moments_s": {what: t - s.window.start_s for what, t in s.window.moments}}
                       for s in stalls],  # fmt: skip
            "picture": str(picture),
        }
        (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
        lines = [
            "",
            "demo report",
            f"  device            {dev} (ublk-gadget file target on {DISK})",
            f"  files verified    {len(written.sums)} (sha256 after umount, fsck, remount)",
            f"  fio               {summary.ios} verified 4k writes, {summary.iops:.0f} IOPS, "
            f"p99 {summary.lat_p99_ns / 1e3:.0f} us",
            f"  steady p99        {p99 * 1e3:.2f} ms",
        ]
        for s in stalls:
            w = s.window
            why = " (SIGKILL to a standby successor's ready line)" if w.kind == "crash" else ""
            lines.append(f"  {w.kind:<17} window {w.end_s - w.start_s:.2f} s, longest I/O across it "
                         f"{s.longest_s * 1e3:.0f} ms{why}")  # fmt: skip
        lines += [f"  latency picture   {picture}", ""]
        print("\n".join(lines), flush=True)
        (out / "demo.txt").write_text("\n".join(lines[1:]))
        return 0
    finally:
        if mounted:
            subprocess.run(["umount", MOUNT])
        owner.stop()


if __name__ == "__main__":
    sys.exit(main())
