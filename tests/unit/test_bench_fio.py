"""bench.fio: the figures come from fio's JSON, for the direction the job ran."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import fio


def report(read_iops: float, write_iops: float, error: int = 0) -> dict[str, Any]:
    def side(iops: float, base_ns: int) -> dict[str, Any]:
        return {
            "iops": iops,
            "bw_bytes": iops * 4096,
            "total_ios": int(iops * 10),
            "lat_ns": {
                "max": base_ns * 100,
                "percentile": {"50.000000": base_ns, "99.000000": base_ns * 10},
            },
        }

    job = {"jobname": "j", "error": error, "read": side(read_iops, 1000), "write": side(write_iops, 2000)}
    return {"fio version": "fio-3.33", "jobs": [job]}


def test_a_read_job_reports_the_read_side() -> None:
    r = fio.parse(report(read_iops=500.0, write_iops=0.5), "randread")
    assert (r.iops, r.bw_bytes, r.lat_p50_ns, r.lat_p99_ns, r.lat_max_ns) == (500.0, 500.0 * 4096, 1000, 10000, 100000)


def test_a_write_job_reports_the_write_side() -> None:
    r = fio.parse(report(read_iops=0.5, write_iops=700.0), "write")
    assert (r.iops, r.lat_p50_ns) == (700.0, 2000)


def test_a_job_error_is_an_error_not_a_figure() -> None:
    with pytest.raises(fio.FioError, match="error 5"):
        fio.parse(report(1.0, 1.0, error=5), "randread")


def test_a_job_without_io_is_an_error() -> None:
    with pytest.raises(fio.FioError, match="no I/O"):
        fio.parse(report(0.0, 0.0), "randread")


def test_missing_total_latency_percentiles_are_named() -> None:
    bad = report(10.0, 0.0)
    del bad["jobs"][0]["read"]["lat_ns"]["percentile"]
    with pytest.raises(fio.FioError, match="lat_percentiles"):
        fio.parse(bad, "read")


def test_every_workload_runs_one_job_with_io_uring_and_direct_io() -> None:
    for w in fio.WORKLOADS:
        cmd = fio.command("/dev/x", w, 10, 2, "/tmp/o.json")
        assert {"--ioengine=io_uring", "--direct=1", "--numjobs=1", "--time_based",
                "--lat_percentiles=1", "--output-format=json"} <= set(cmd)  # fmt: skip
        assert f"--iodepth={w.iodepth}" in cmd and f"--bs={w.bs}" in cmd


def test_the_issue_workloads_are_all_there() -> None:
    shapes = {(w.rw, w.bs, w.iodepth) for w in fio.WORKLOADS}
    assert {("randread", 4096, 1), ("randread", 4096, 32), ("randwrite", 4096, 1),
            ("randwrite", 4096, 32), ("read", 128 << 10, 32), ("write", 128 << 10, 32)} == shapes  # fmt: skip


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
def test_a_real_fio_report_parses(tmp_path: Path) -> None:
    """fio's real JSON has the fields we read; 0.5 s of 4k reads on a host file."""
    target = tmp_path / "f"
    target.write_bytes(b"\xa5" * (4 << 20))
    w = fio.Workload("t", "randread", 4096, 4)
    r = fio.run(str(target), w, 0.5, 0)
    assert r.ios > 0 and r.iops > 0
    assert r.bw_bytes == pytest.approx(r.iops * 4096, rel=0.01)
    assert 0 < r.lat_p50_ns <= r.lat_p99_ns <= r.lat_max_ns


def test_a_report_after_fio_notices_loads(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('\nfio: terminating on signal 2\n{\n  "jobs": []\n}\n')
    assert fio.load(path) == {"jobs": []}


def test_a_report_without_json_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("fio: pid=0, err=22/file:filesetup.c:1155\n")
    with pytest.raises(fio.FioError, match="r.json: not a fio JSON report"):
        fio.load(path)


def test_a_sequence_runs_its_jobs_one_after_the_other_with_shared_settings() -> None:
    cmd = fio.sequence_command("/dev/x", fio.WORKLOADS, 3, 1, "/tmp/o.json")
    assert cmd.count("--ioengine=io_uring") == 1 and cmd.count("--filename=/dev/x") == 1
    assert cmd.count("--stonewall") == len(fio.WORKLOADS)
    for w in fio.WORKLOADS:  # each job's own options follow its name
        at = cmd.index(f"--name={w.name}")
        assert cmd[at + 1 : at + 5] == [f"--rw={w.rw}", f"--bs={w.bs}", f"--iodepth={w.iodepth}", "--stonewall"]


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
def test_a_real_sequence_reports_each_workload_under_its_name(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"\x5a" * (4 << 20))
    reads = fio.Workload("reads", "randread", 4096, 2)
    writes = fio.Workload("writes", "write", 65536, 2)
    got = fio.run_sequence(str(target), [reads, writes], 0.3, 0)
    r, w = got["reads"], got["writes"]
    assert isinstance(r, fio.Result) and isinstance(w, fio.Result)
    assert r.bw_bytes == pytest.approx(r.iops * 4096, rel=0.01)
    assert w.bw_bytes == pytest.approx(w.iops * 65536, rel=0.01)


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
def test_fio_failing_as_a_whole_fails_every_workload_with_its_words(tmp_path: Path) -> None:
    got = fio.run_sequence(str(tmp_path / "missing-dir" / "f"), fio.WORKLOADS[:2], 0.3, 0)
    assert all(isinstance(v, str) and "fio" in v for v in got.values())


def test_a_workload_of_several_jobs_is_reported_as_one() -> None:
    w = fio.Workload("two", "randread", 4096, 32, numjobs=2)
    cmd = fio.sequence_command("/dev/x", [fio.WORKLOADS[0], w], 3, 1, "/tmp/o.json")
    job = cmd[cmd.index("--name=two"):]
    assert "--numjobs=2" in job and "--group_reporting" in job
    first = cmd[cmd.index(f"--name={fio.WORKLOADS[0].name}"):cmd.index("--name=two")]
    assert not any(a.startswith("--numjobs") or a == "--group_reporting" for a in first)


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
def test_a_real_two_job_workload_is_one_summed_report_entry(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"\x5a" * (4 << 20))
    one = fio.Workload("one", "randread", 4096, 2)
    two = fio.Workload("two", "randread", 4096, 2, numjobs=2)
    out = tmp_path / "o.json"
    subprocess.run(fio.sequence_command(str(target), [one, two], 0.3, 0, str(out)), check=True, cwd=tmp_path)
    jobs = fio.load(out)["jobs"]
    assert [j["jobname"] for j in jobs] == ["one", "two"]  # not one entry per clone
    assert isinstance(fio.parse_job(jobs[1], "randread"), fio.Result)
