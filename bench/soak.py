"""``python -m bench.soak``: many handovers in a row on devices of every target, nothing lost.

One gadget serves two devices of each target (null, mem, file; 2 queues each); one fio
process writes to every device throughout, with crc32c verification (``verify_backlog``: what
was written is read back and checked while the handovers happen) on mem and file, and plain
random read/write on null (whose reads are zeroes by design).  The rounds cycle through the
three ways a device changes hands: a live handover (``serve --adopt``: SIGHUP, quiesce or
drain), a crash then ``--adopt`` (SIGKILL, then a successor starts), and a crash to a standby
(``--adopt --standby``, started first).  After each round the dev_ids must be the same as at
the start; at the end fio must report no error, the kernel must have logged no I/O error for
the devices, and a clean stop must leave no state or memory file.

It prints the rounds done, the I/Os verified and the worst stall (fio's longest I/O), and
exits 1 on any loss.  On the host it boots the test bed (``--kernel``) and runs itself there;
the full run (``--live 100 --crash 20 --standby 20``, the default) takes about 15 minutes of
VM time per kernel, so CI runs a short one (tests/kernel/test_soak.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fio
from .gadget import Gadget
from .handover import hand_over

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20
SIZE = 32 * MiB
KINDS = ("live", "crash", "standby")
MEMORY_DIR = Path("/dev/shm")


class SoakFailure(AssertionError):
    """Something was lost or went wrong; the message says what, in which round."""


@dataclass
class Soak:
    """The figures of one soak run."""

    rounds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    verified_ios: int = 0
    total_ios: int = 0
    worst_io_ms: float = 0.0
    worst_window_ms: float = 0.0
    dev_ids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        done = ", ".join(f"{n} {kind}" for kind, n in self.rounds.items())
        return (f"soak: {sum(self.rounds.values())} rounds ({done}) on devices "
                f"{self.dev_ids} (same dev_ids throughout); {self.verified_ios} I/Os verified "
                f"of {self.total_ios}; 0 verify errors, 0 kernel I/O errors; worst stall "
                f"{self.worst_io_ms:.0f} ms (longest I/O), longest handover window "
                f"{self.worst_window_ms:.0f} ms")


def schedule(live: int, crash: int, standby: int) -> list[str]:
    """The rounds, interleaved (a crash never comes only at the end): live, crash, standby,
    live, ... until each kind has had its count."""
    left = {"live": live, "crash": crash, "standby": standby}
    order: list[str] = []
    for kind in itertools.cycle(KINDS):
        if not any(left.values()):
            return order
        if left[kind]:
            left[kind] -= 1
            order.append(kind)
    raise AssertionError("unreachable")


def specs(work: Path) -> list[str]:
    out = []
    for i in range(2):
        backing = work / f"soak-{i}.img"
        with open(backing, "wb") as f:
            f.truncate(SIZE)
        out += [f"null,size={SIZE},queues=2", f"mem,size={SIZE},queues=2",
                f"file,path={backing},queues=2"]
    return out


def fio_command(devices: list[dict[str, Any]], report: Path) -> list[str]:
    """One fio, a job per device: verify where the target keeps data, plain I/O on null."""
    cmd = ["fio", "--ioengine=libaio", "--direct=1", "--bs=4k", "--iodepth=8",
           "--time_based", "--runtime=86400", "--output-format=json", f"--output={report}"]
    for d in devices:
        name = Path(d["block_device"]).name
        cmd += [f"--name={name}-{d['target']}", f"--filename={d['block_device']}",
                f"--size={SIZE}"]
        if d["target"] == "null":
            cmd += ["--rw=randrw"]
        else:
            cmd += ["--rw=randwrite", "--verify=crc32c", "--verify_backlog=64",
                    "--verify_fatal=1"]
    return cmd


def kernel_errors(before: int, names: list[str]) -> list[str]:
    lines = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [ln for ln in lines[before:] if "error" in ln.lower() and any(n in ln for n in names)]


def dmesg_lines() -> int:
    return len(subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout.splitlines())


def crash_then_adopt(owner: Gadget, state_file: str, log: Path) -> tuple[Gadget, float]:
    """SIGKILL the owner, then start a successor (nothing loaded beforehand)."""
    killed = time.time()
    owner.kill()
    successor = Gadget.adopt(state_file, log)
    return successor, (float(successor.ready["t"]) - killed) * 1e3


def _say(text: str) -> None:
    print(text, flush=True)  # through the VM's serial console, as it happens


def run(work: Path, live: int, crash: int, standby: int, pause_s: float = 1.0,
        say: Callable[[str], None] = _say) -> Soak:
    """The soak itself (on a host with the ublk driver); raises SoakFailure on any loss."""
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    state_file = str(work / "soak.state")
    result = Soak()
    owner = Gadget.serve(specs(work), logs / "gadget-0.log", state_file=state_file)
    devices = owner.ready["devices"]
    result.dev_ids = [int(d["dev_id"]) for d in devices]
    names = [Path(d["block_device"]).name for d in devices]
    before = dmesg_lines()
    report = work / "soak-fio.json"
    job = fio.Background(fio_command(devices, report), report)
    try:
        for n, kind in enumerate(schedule(live, crash, standby), 1):
            time.sleep(pause_s)
            job.check_running()
            log = logs / f"gadget-{n}-{kind}.log"
            if kind == "crash":
                owner, window_ms = crash_then_adopt(owner, state_file, log)
            else:
                owner, window = hand_over(owner, state_file, logs, n, crash=kind == "standby")
                window_ms = (window.end_s - window.start_s) * 1e3
            ids = [int(d["dev_id"]) for d in owner.ready["devices"]]
            if ids != result.dev_ids:
                raise SoakFailure(f"round {n} ({kind}): devices {ids}, were {result.dev_ids}")
            result.rounds[kind] += 1
            result.worst_window_ms = max(result.worst_window_ms, window_ms)
            if n % 10 == 0:
                say(f"soak: {n} rounds, longest window {result.worst_window_ms:.0f} ms")
        time.sleep(pause_s)
        jobs = job.stop()["jobs"]
    finally:
        job.kill()
        code = owner.stop()
    failed = [f"{j['jobname']}: error {j['error']}" for j in jobs if j.get("error")]
    if failed:
        raise SoakFailure("fio: " + "; ".join(failed))
    for j in jobs:
        ios = j["read"]["total_ios"] + j["write"]["total_ios"]
        if j["write"]["total_ios"] == 0:
            raise SoakFailure(f"fio job {j['jobname']} wrote nothing")
        result.total_ios += ios
        if not j["jobname"].endswith("-null"):
            result.verified_ios += j["read"]["total_ios"]
        result.worst_io_ms = max(result.worst_io_ms, j["read"]["lat_ns"]["max"] / 1e6,
                                 j["write"]["lat_ns"]["max"] / 1e6)
    errors = kernel_errors(before, names)
    if errors:
        raise SoakFailure("kernel I/O errors:\n" + "\n".join(errors))
    if code != 0:
        raise SoakFailure(f"the last owner exited {code} on SIGTERM; log {owner.log}")
    left = [p for p in [Path(state_file), *MEMORY_DIR.glob("ublk-gadget-mem.*")] if p.exists()]
    if left:
        raise SoakFailure(f"left behind after a clean stop: {left}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--kernel", default="sid", help="test-bed kernel: sid (7.2) or trixie (6.12)")
    p.add_argument("--live", type=int, default=100)
    p.add_argument("--crash", type=int, default=20)
    p.add_argument("--standby", type=int, default=20)
    p.add_argument("--timeout", type=float, default=7200, help="seconds for the whole VM run")
    p.add_argument("--guest", action="store_true", help="run here (a host with ublk_drv)")
    a = p.parse_args(argv)
    counts = ["--live", str(a.live), "--crash", str(a.crash), "--standby", str(a.standby)]
    if not a.guest:
        vm = [sys.executable, "-m", "testbed", "run", "--kernel", a.kernel, "--timeout",
              str(a.timeout), "--", sys.executable, "-m", "bench.soak", "--guest", *counts]
        return subprocess.run(vm, cwd=REPO).returncode
    out = REPO / ".out" / "soak"
    started = time.monotonic()
    try:
        result = run(Path("/run/ublk-soak"), a.live, a.crash, a.standby)
    except Exception as e:  # SoakFailure, or a gadget that did not come up: the run failed
        print(f"soak FAILED on {os.uname().release}: {e}", file=sys.stderr)
        return 1
    line = f"{result.summary()}; kernel {os.uname().release}; {time.monotonic() - started:.0f} s"
    print(line)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"soak-{os.uname().release}.json").write_text(json.dumps(
        {"kernel": os.uname().release, "summary": line, "rounds": result.rounds,
         "verified_ios": result.verified_ios, "total_ios": result.total_ios,
         "worst_io_ms": result.worst_io_ms, "worst_window_ms": result.worst_window_ms,
         "dev_ids": result.dev_ids}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
