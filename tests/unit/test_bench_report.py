"""bench.report: each gadget figure over the same workload on its peers, and the issue's goals."""

from __future__ import annotations

import dataclasses

import pytest

from bench import report
from bench.fio import Result, Workload

W = (Workload("4k-randread-qd32", "randread", 4096, 32), Workload("128k-read-qd32", "read", 128 << 10, 32))


def res(iops: float) -> Result:
    return Result(iops=iops, bw_bytes=iops * 4096, lat_p50_ns=1000, lat_p99_ns=2000, lat_max_ns=3000, ios=10)


RESULTS: dict[str, dict[str, Result | str]] = {
    "null_blk": {"4k-randread-qd32": res(60000), "128k-read-qd32": res(9000)},
    "loop": {"4k-randread-qd32": res(30000), "128k-read-qd32": res(12000)},
    "kublk-null": {"4k-randread-qd32": res(15000), "128k-read-qd32": res(2000)},
    "kublk-loop": {"4k-randread-qd32": res(12000), "128k-read-qd32": res(1200)},
    "gadget-null": {"4k-randread-qd32": res(13500), "128k-read-qd32": res(1000)},
    "gadget-file": {"4k-randread-qd32": res(6000), "128k-read-qd32": "GadgetError: exited 1 before ready"},
}


def test_each_gadget_is_compared_with_the_kublk_target_doing_the_same_job() -> None:
    r = report.ratios(RESULTS, W)
    assert r["gadget-null"]["4k-randread-qd32"] == pytest.approx(
        {"null_blk": 13500 / 60000, "loop": 13500 / 30000, "kublk": 13500 / 15000}
    )
    assert r["gadget-file"]["4k-randread-qd32"]["kublk"] == pytest.approx(6000 / 12000)


def test_a_figure_that_failed_has_no_ratio() -> None:
    assert report.ratios(RESULTS, W)["gadget-file"]["128k-read-qd32"] == {"null_blk": None, "loop": None, "kublk": None}


def test_a_gadget_not_measured_is_left_out() -> None:
    assert "gadget-mem" not in report.ratios(RESULTS, W)


def test_goals_are_judged_on_the_measured_ratio() -> None:
    checks = {c["goal"]: c for c in report.target_checks(RESULTS, stall_s=0.7)}
    null = checks["gadget-null 4k-randread-qd32 >= 0.9x kublk-null"]
    assert null["value"] == pytest.approx(0.9) and null["met"] is True
    assert checks["gadget-file 128k-read-qd32 >= 0.9x kublk-loop"]["met"] is None
    assert checks["handover stall < 0.5 s"]["met"] is False


def test_the_table_shows_ratios_on_gadget_rows_only_and_names_failures() -> None:
    text = report.table(RESULTS, W, list(RESULTS))
    row = next(line for line in text.splitlines() if line.strip().startswith("gadget-null"))
    assert row.split()[-3:] == ["0.23x", "0.45x", "0.90x"]
    kublk_row = next(line for line in text.splitlines() if line.strip().startswith("kublk-null"))
    assert "x" not in kublk_row.split()[-1]
    assert "failed: GadgetError: exited 1 before ready" in text


def test_the_stall_block_gives_each_window_its_longest_io_and_moments() -> None:
    stall = {
        "workload": "4k-randrw-qd32", "ios": 1000, "steady_p99_ms": 2.5, "picture": "/x.png",
        "windows": [
            {"kind": "handover", "window_ms": 300.0, "longest_spanning_io_ms": 120.0, "spanning_ios": 40,
             "moments_ms": {"owner signalled (SIGHUP)": 0.0, "successor ready": 300.0}},
            {"kind": "crash", "window_ms": 4000.0, "longest_spanning_io_ms": 4100.0, "spanning_ios": 32},
        ],
    }  # fmt: skip
    text = report.format_stall(stall)
    assert "steady-state p99 2.50 ms" in text
    assert "handover  window     300 ms   longest spanning I/O    120.0 ms (40 I/Os spanned it)" in text
    assert "successor ready +300 ms" in text
    assert "crash     window    4000 ms   longest spanning I/O   4100.0 ms" in text


def test_with_rounds_the_ratio_is_the_median_of_per_round_ratios() -> None:
    # Round 2 ran while the host was busy: both sides slowed; the per-round ratio holds.
    g = dataclasses.replace(res(900), rounds_iops=(1000.0, 100.0, 900.0))
    k = dataclasses.replace(res(1000), rounds_iops=(1000.0, 110.0, 1000.0))
    results: dict[str, dict[str, Result | str]] = {
        "gadget-null": {"4k-randread-qd32": g}, "kublk-null": {"4k-randread-qd32": k}}  # fmt: skip
    assert report.ratio(results, "gadget-null", "kublk-null", "4k-randread-qd32") == pytest.approx(0.909, abs=1e-3)


def test_rounds_that_do_not_pair_fall_back_to_the_medians() -> None:
    g = dataclasses.replace(res(900), rounds_iops=(900.0,))
    k = dataclasses.replace(res(1000), rounds_iops=(1000.0, 1000.0))
    results: dict[str, dict[str, Result | str]] = {
        "gadget-null": {"4k-randread-qd32": g}, "kublk-null": {"4k-randread-qd32": k}}  # fmt: skip
    assert report.ratio(results, "gadget-null", "kublk-null", "4k-randread-qd32") == pytest.approx(0.9)
