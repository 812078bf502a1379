"""bench.cpu: server CPU per request from snapshots taken by fio around each job."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench import cpu, fio

W = fio.Workload("w", "randread", 4096, 32)


def snapshot(path: Path, utime: int, stime: int, reads: int, writes: int) -> None:
    # comm with a space and a parenthesis, as /proc allows; fields 14 and 15 are utime, stime
    proc = f"42 (ublk q0) x) S 1 42 42 0 -1 4194560 10 0 0 0 {utime} {stime} 0 0 20 0 2 0 100 1 1"
    disk = f"{reads} 0 {reads * 8} 5 {writes} 0 {writes * 8} 5 0 10 10 0 0 0 0 0 0"
    path.write_text(f"{proc}\n{disk}\n")


def test_cpu_per_request_over_the_same_interval(tmp_path: Path) -> None:
    snapshot(tmp_path / "w.pre", utime=100, stime=50, reads=1000, writes=0)
    snapshot(tmp_path / "w.post", utime=130, stime=70, reads=6000, writes=0)
    # 50 ticks for 5000 requests
    assert cpu.cpu_us_per_io(tmp_path, W) == pytest.approx(50 / cpu.TICKS_PER_S * 1e6 / 5000)


def test_writes_count_as_requests_too(tmp_path: Path) -> None:
    snapshot(tmp_path / "w.pre", utime=0, stime=0, reads=0, writes=0)
    snapshot(tmp_path / "w.post", utime=10, stime=0, reads=100, writes=100)
    assert cpu.cpu_us_per_io(tmp_path, W) == pytest.approx(10 / cpu.TICKS_PER_S * 1e6 / 200)


def test_no_snapshot_or_no_request_means_no_figure(tmp_path: Path) -> None:
    assert cpu.cpu_us_per_io(tmp_path, W) is None
    snapshot(tmp_path / "w.pre", utime=0, stime=0, reads=5, writes=0)
    snapshot(tmp_path / "w.post", utime=3, stime=0, reads=5, writes=0)
    assert cpu.cpu_us_per_io(tmp_path, W) is None


@pytest.mark.skipif(shutil.which("fio") is None or not os.path.exists("/sys/block"), reason="needs fio and sysfs")
def test_fio_takes_the_snapshots_around_each_job(tmp_path: Path) -> None:
    disk = sorted(os.listdir("/sys/block"))[0]
    target = tmp_path / "f"
    target.write_bytes(b"\0" * (1 << 20))
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    got = fio.run_sequence(str(target), [W], 0.2, 0, cpu.probes(os.getpid(), f"/dev/{disk}", snaps), snaps)
    assert isinstance(got["w"], fio.Result)
    assert (snaps / "w.pre").read_text().startswith(f"{os.getpid()} (")
    assert len((snaps / "w.post").read_text().splitlines()) == 2


@pytest.mark.skipif(shutil.which("fio") is None or not os.path.exists("/sys/block"), reason="needs fio and sysfs")
def test_clones_of_one_job_leave_one_whole_snapshot_each_side(tmp_path: Path) -> None:
    """numjobs runs the commands once per clone: the first "before" and a whole "after" stay."""
    disk = sorted(os.listdir("/sys/block"))[0]
    target = tmp_path / "f"
    target.write_bytes(b"\0" * (1 << 20))
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    two = fio.Workload("w", "randread", 4096, 4, numjobs=2)
    got = fio.run_sequence(str(target), [two], 0.2, 0, cpu.probes(os.getpid(), f"/dev/{disk}", snaps), snaps)
    assert isinstance(got["w"], fio.Result)
    for end in ("pre", "post"):
        lines = (snaps / f"w.{end}").read_text().splitlines()
        assert len(lines) == 2 and lines[0].startswith(f"{os.getpid()} (")
    assert sorted(p.name for p in snaps.glob("w.p*") if not p.name.endswith(".txt")) == ["w.post", "w.pre"]
