"""bench.rounds: every table's measuring loop: rounds, order, failures kept to their peer."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench import peers, rounds
from bench.fio import Result, Workload


def res(iops: float, cpu: float | None = None) -> Result:
    return Result(iops=iops, bw_bytes=iops, lat_p50_ns=1, lat_p99_ns=2, lat_max_ns=3, ios=10, server_cpu_us_per_io=cpu)


def test_a_cell_shows_its_median_round_with_every_rounds_iops_and_median_cpu() -> None:
    cell = rounds.Cell([res(300, 9), res(100, 30), res(200, 10)])
    got = cell.figure()
    assert isinstance(got, Result)
    assert got.iops == 200 and got.rounds_iops == (300, 100, 200) and got.server_cpu_us_per_io == 10


def test_a_failed_round_voids_the_cell() -> None:
    assert rounds.Cell([res(1)], error="FioError: EIO").figure() == "FioError: EIO"
    assert rounds.Cell().figure() == "not run"


def file_peer(path: Path) -> peers.Peer:
    @contextmanager
    def made(g: peers.Geometry) -> Iterator[peers.Device]:
        yield peers.Device(str(path), f"a file of {g.size} bytes")

    return made


@contextmanager
def broken(g: peers.Geometry) -> Iterator[peers.Device]:
    raise RuntimeError("no such server")
    yield peers.Device("", "")  # pragma: no cover


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
def test_rounds_alternate_the_order_and_a_peer_that_fails_costs_only_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"\x11" * (1 << 20))
    available = {"a": file_peer(tmp_path / "a"), "b": file_peer(tmp_path / "b"), "bad": broken}
    w = (Workload("rr", "randread", 4096, 2),)
    schedule = rounds.Schedule(rounds=2, runtime_s=0.2, ramp_s=0, fio_cpu=None, server_cpu=None)
    m = rounds.measure(available, ["a", "bad", "b"], peers.Geometry(1 << 20, 1, 4, ""), w, schedule,
                       tmp_path / "cpu", label="t ")  # fmt: skip
    progress = [line.split()[2:5] for line in capsys.readouterr().out.splitlines() if line.startswith("bench: t ")]
    assert progress == [["round", "1", "a"], ["round", "1", "b"], ["round", "2", "b"], ["round", "2", "a"]]
    results = m.results()
    assert isinstance(results["a"]["rr"], Result) and len(results["a"]["rr"].rounds_iops) == 2
    assert results["bad"]["rr"] == "failed to start: RuntimeError: no such server"
    assert m.details["a"] == "a file of 1048576 bytes"
    doc = m.peers_json()
    assert doc["bad"] == {"detail": "failed to start: RuntimeError: no such server",
                          "workloads": {"rr": {"error": "failed to start: RuntimeError: no such server"}}}  # fmt: skip
    assert (tmp_path / "cpu" / "a-round2").is_dir()


def test_the_schedule_is_replaced_not_mutated_for_the_unpinned_table() -> None:
    pinned = rounds.Schedule(3, 3, 1, 0, 1)
    free = dataclasses.replace(pinned, fio_cpu=None, server_cpu=None)
    assert (pinned.fio_cpu, free.fio_cpu, free.rounds) == (0, None, 3)
