"""bench.shared: the unpinned two-job workload, its peers and its ratios to kublk."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench import fio, peers, shared
from bench.fio import Result

W = shared.WORKLOAD.name


def res(iops: float, cpu: float | None) -> Result:
    return Result(iops=iops, bw_bytes=iops * 4096, lat_p50_ns=1000, lat_p99_ns=2_500_000, lat_max_ns=3000, ios=10,
                  server_cpu_us_per_io=cpu)  # fmt: skip


RESULTS: dict[str, dict[str, Result | str]] = {
    "kublk-null-q1": {W: res(15000, 30)},
    "gadget-null-q1": {W: res(12000, 48)},
    "kublk-null-q2": {W: res(20000, 32)},
    "gadget-null-q2": {W: "FioError: exit 1"},
}


def test_the_workload_is_two_jobs_of_qd32_4k_random_reads() -> None:
    w = shared.WORKLOAD
    assert (w.rw, w.bs, w.iodepth, w.numjobs) == ("randread", 4096, 32, 2)
    cmd = fio.sequence_command("/dev/x", [w], 3, 1, "/o.json")
    assert "--numjobs=2" in cmd[cmd.index(f"--name={w.name}"):] and "--group_reporting" in cmd


def test_both_servers_with_one_and_two_queues() -> None:
    assert shared.PEER_ORDER == ("kublk-null-q1", "gadget-null-q1", "kublk-null-q2", "gadget-null-q2")
    assert set(shared.all_peers("/kublk", Path("/logs"))) == set(shared.PEER_ORDER)


def test_a_peer_with_fixed_queues_overrides_the_tables_geometry() -> None:
    seen: list[peers.Geometry] = []

    @contextmanager
    def fake(g: peers.Geometry) -> Iterator[peers.Device]:
        seen.append(g)
        yield peers.Device("/dev/x", "fake")

    with peers.with_queues(fake, 2)(peers.Geometry(1 << 20, 1, 64, "/f")):
        pass
    assert seen == [peers.Geometry(1 << 20, 2, 64, "/f")]


def test_pairs_divide_gadget_by_kublk_in_iops_and_cpu() -> None:
    one, two = shared.pairs(RESULTS)
    assert (one["queues"], one["gadget"], one["kublk"]) == (1, "gadget-null-q1", "kublk-null-q1")
    assert one["iops_ratio"] == pytest.approx(0.8) and one["cpu_ratio"] == pytest.approx(1.6)
    assert one["iops_within_tracked"] is True and one["cpu_within_tracked"] is False
    assert two["iops_ratio"] is None and two["iops_within_tracked"] is None


def test_within_one_and_a_half_is_inclusive() -> None:
    r = {"kublk-null-q1": {W: res(1500, 20)}, "gadget-null-q1": {W: res(1000, 30)}}
    one = shared.pairs(r)[0]
    assert one["iops_within_tracked"] is True and one["cpu_within_tracked"] is True


def test_the_table_has_a_row_per_server_and_queue_count_with_ratios_on_gadget_rows() -> None:
    text = shared.table(RESULTS, list(shared.PEER_ORDER))
    rows = [line.split() for line in text.splitlines()[2:]]
    assert rows[0] == ["kublk-null", "1", "15000", "2500", "30"]
    assert rows[1] == ["gadget-null", "1", "12000", "2500", "48", "0.80x", "1.60x"]
    assert rows[3][:3] == ["gadget-null", "2", "failed:"]
    assert text.splitlines()[-1] == ("  within 1.5x of kublk (tracked, not a goal): 1 queue(s): IOPS yes, cpu no; "
                                     "2 queue(s): IOPS not measured, cpu not measured")  # fmt: skip
    assert "unpinned" in text.splitlines()[0]
