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


def cres(iops: float, cpu: float | None) -> Result:
    return dataclasses.replace(res(iops), server_cpu_us_per_io=cpu)


MODES: dict[str, dict[str, Result | str]] = {
    **RESULTS,
    "kublk-null": {"4k-randread-qd32": cres(15000, 30), "128k-read-qd32": cres(2000, 60),
                   "4k-randwrite-qd1": cres(5000, 40)},
    "gadget-null": {"4k-randread-qd32": cres(13500, 50), "128k-read-qd32": cres(1000, 120),
                    "4k-randwrite-qd1": cres(4000, 60)},
    "kublk-null-autozc": {"4k-randread-qd32": cres(16000, 25), "128k-read-qd32": cres(12000, 20)},
    "gadget-null-autozc": {"4k-randread-qd32": cres(14400, 40), "128k-read-qd32": cres(13200, 30)},
    "kublk-null-u": {"4k-randread-qd32": cres(8000, 40), "128k-read-qd32": "FioError: EIO"},
    "gadget-null-usercopy": {"4k-randread-qd32": cres(8800, 60), "128k-read-qd32": cres(1400, 90)},
}  # fmt: skip


def test_each_mode_row_is_divided_by_kublk_in_the_same_mode() -> None:
    r = report.ratios(MODES, W)
    assert r["gadget-null"]["128k-read-qd32"]["kublk"] == pytest.approx(0.5)  # copy over copy
    assert r["gadget-null-autozc"]["128k-read-qd32"]["kublk"] == pytest.approx(1.1)  # zero copy over zero copy
    assert r["gadget-null-usercopy"]["4k-randread-qd32"]["kublk"] == pytest.approx(1.1)
    assert r["gadget-null-usercopy"]["128k-read-qd32"]["kublk"] is None  # kublk -u failed there
    assert r["gadget-null-autozc"]["4k-randread-qd32"]["null_blk"] == pytest.approx(14400 / 60000)


def test_ratios_cover_the_workloads_a_gadget_ran() -> None:
    w3 = (*W, Workload("4k-randwrite-qd1", "randwrite", 4096, 1))
    r = report.ratios(MODES, w3)
    assert set(r["gadget-null"]) == {"4k-randread-qd32", "128k-read-qd32", "4k-randwrite-qd1"}
    assert set(r["gadget-null-autozc"]) == {"4k-randread-qd32", "128k-read-qd32"}


def test_the_main_table_shows_the_mode_rows_with_their_own_ratio() -> None:
    text = report.table(MODES, W, list(MODES))
    block = text[text.index("128k-read-qd32"):].splitlines()
    row = next(line for line in block if line.strip().startswith("gadget-null-autozc"))
    assert row.split()[-1] == "1.10x" and row.split()[5] == "30"  # xkublk, cpu us/IO
    assert any(line.strip().startswith("gadget-null-usercopy") for line in block)
    header = block[1]
    assert len(row) == header.index("xkublk") + len("xkublk")  # the long name keeps the columns in line


def test_the_buffer_modes_block_pairs_each_mode_with_cpu_per_request() -> None:
    w3 = (*W, Workload("4k-randwrite-qd1", "randwrite", 4096, 1))
    modes = report.buffer_modes(MODES, w3)
    assert set(modes) == {"null"}  # file ran in copy mode only; the mem target has no other mode
    assert set(modes["null"]) == {"4k-randread-qd32", "128k-read-qd32"}  # 4k-randwrite-qd1: copy only
    big = modes["null"]["128k-read-qd32"]
    assert list(big) == ["copy", "user-copy", "auto-zc"]
    assert big["auto-zc"] == pytest.approx({
        "gadget": "gadget-null-autozc", "kublk": "kublk-null-autozc", "gadget_iops": 13200, "kublk_iops": 12000,
        "iops_ratio": 1.1, "gadget_cpu_us_per_io": 30, "kublk_cpu_us_per_io": 20, "cpu_ratio": 1.5})  # fmt: skip
    assert big["user-copy"]["kublk_iops"] is None and big["user-copy"]["iops_ratio"] is None
    text = report.mode_table(MODES, w3)
    lines = text.splitlines()
    assert lines[0].startswith("buffer modes: each gadget mode against kublk in the same mode")
    i = lines.index("  null 128k-read-qd32")
    assert lines[i + 1].split() == ["copy", "1000", "2000", "0.50x", "120", "60", "2.00x"]
    assert lines[i + 2].split() == ["user-copy", "1400", "failed", "-", "90", "failed", "-"]
    assert lines[i + 3].split() == ["auto-zc", "13200", "12000", "1.10x", "30", "20", "1.50x"]
    assert "4k-randwrite-qd1" not in text


def test_without_a_second_mode_there_is_no_buffer_modes_block() -> None:
    assert report.mode_table(RESULTS, W) == "" and report.buffer_modes(RESULTS, W) == {}


def test_a_goal_that_picks_among_modes_names_what_it_compared() -> None:
    text = report.format_checks([{"goal": "g", "value": 1.2, "met": True, "against": "a over b"},
                                 {"goal": "h", "value": None, "met": None}])  # fmt: skip
    first, second = text.splitlines()
    assert first.endswith("1.200  met  (a over b)") and second.endswith("-  not measured")
