"""bench.disk: the disk table's ratios, QD32/QD1 gains and layout."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bench import disk
from bench.fio import Result


def res(iops: float, cpu: float | None = None, rounds: tuple[float, ...] = ()) -> Result:
    return Result(iops=iops, bw_bytes=iops * 4096, lat_p50_ns=1000, lat_p99_ns=2000, lat_max_ns=3000, ios=10,
                  rounds_iops=rounds, server_cpu_us_per_io=cpu)  # fmt: skip


def peer(qd1: float, qd32: float, cpu: float | None = None) -> dict[str, Result | str]:
    return {
        "4k-randread-qd1": res(qd1, cpu), "4k-randread-qd32": res(qd32, cpu),
        "4k-randwrite-qd1": res(qd1 / 2, cpu), "4k-randwrite-qd32": res(qd32 / 2, cpu),
        "128k-read-qd32": res(qd32 / 10, cpu),
    }  # fmt: skip


RESULTS: dict[str, dict[str, Result | str]] = {
    "disk": peer(2000, 10000),
    "loop": peer(1800, 8000),
    "kublk-loop": peer(800, 2800, cpu=100),
    "gadget-file": peer(1000, 1400, cpu=150),
}
ORDER = ["disk", "loop", "kublk-loop", "gadget-file"]  # the copy-mode table as before


def test_the_table_has_the_asked_workloads_and_peers() -> None:
    assert [w.name for w in disk.WORKLOADS] == [
        "4k-randread-qd1", "4k-randread-qd32", "4k-randwrite-qd1", "4k-randwrite-qd32", "128k-read-qd32"]  # fmt: skip
    assert disk.PEER_ORDER == ("disk", "loop", "kublk-loop", "gadget-file", "kublk-loop-autozc", "gadget-file-autozc")
    assert set(disk.all_peers("/kublk", Path("/logs"))) == set(disk.PEER_ORDER)


def test_each_peer_gains_qd32_over_qd1() -> None:
    gains = disk.gains(RESULTS, ORDER)
    assert gains["disk"] == pytest.approx({"4k-randread": 5.0, "4k-randwrite": 5.0})
    assert gains["gadget-file"]["4k-randread"] == pytest.approx(1.4)


def test_a_gain_pairs_the_rounds_of_one_fio_process() -> None:
    # round 2 ran while the host was busy: both depths slowed alike
    r = {"kublk-loop": {"4k-randread-qd1": res(900, rounds=(1000, 500, 900)),
                        "4k-randread-qd32": res(3000, rounds=(3000, 1600, 3000))}}  # fmt: skip
    assert disk.gains(r, ["kublk-loop"])["kublk-loop"]["4k-randread"] == pytest.approx(3.2, abs=0.1)


def test_a_failed_depth_has_no_gain() -> None:
    r = {"gadget-file": {**peer(1, 2), "4k-randread-qd1": "FioError: boom"}}
    assert disk.gains(r, ["gadget-file"])["gadget-file"]["4k-randread"] is None


def test_the_summary_divides_gadget_file_by_kublk_loop_in_iops_and_cpu() -> None:
    s = disk.summary(RESULTS, ORDER)
    assert s["gadget_over_kublk"]["4k-randread-qd1"] == pytest.approx(1000 / 800)
    assert s["gadget_over_kublk"]["4k-randread-qd32"] == pytest.approx(1400 / 2800)
    assert s["cpu_gadget_over_kublk"]["128k-read-qd32"] == pytest.approx(1.5)
    assert s["qd32_over_qd1"]["loop"]["4k-randread"] == pytest.approx(8000 / 1800)


def lines_of(text: str) -> dict[str, list[list[str]]]:
    """Rows by label, in order: a label appears once in the IOPS block, once under cpu us/IO."""
    rows: dict[str, list[list[str]]] = {}
    for line in text.splitlines()[1:]:
        words = line.split()
        if words:
            rows.setdefault(words[0], []).append(words[1:])
    return rows


def test_the_table_shows_iops_ratio_gains_and_cpu_of_the_userspace_servers_only() -> None:
    text = disk.table(RESULTS, ORDER, "disk: heading")
    assert text.splitlines()[0] == "disk: heading"
    assert text.splitlines()[1].split() == ["IOPS", "disk", "loop", "kublk-loop", "gadget-file", "xkublk"]
    assert text.splitlines()[2].split() == ["buffers", "copy", "copy", "copy"]
    rows = lines_of(text)
    iops, cpu = rows["4k-randread-qd32"]
    assert iops == ["10000", "8000", "2800", "1400", "0.50x"]
    assert cpu == ["-", "-", "100", "150", "1.50x"]
    assert rows["4k-randread"] == [["5.00x", "4.44x", "3.50x", "1.40x"]]
    assert "failed" not in text


def test_columns_line_up_under_their_headers() -> None:
    text = disk.table(RESULTS, ORDER, "h").splitlines()
    header, row = text[1], next(line for line in text if line.strip().startswith("4k-randread-qd32"))
    for name in ("disk", "gadget-file", "xkublk"):
        end = header.index(name) + len(name)
        assert row[end - 1] != " " and (end == len(row) or row[end] == " ")


def test_a_peer_that_did_not_start_is_named_once_with_its_error() -> None:
    gone = {w.name: "failed to start: GadgetError: exited 1 before ready" for w in disk.WORKLOADS}
    text = disk.table({**RESULTS, "gadget-file": dict(gone)}, ORDER, "h")
    rows = lines_of(text)
    assert rows["4k-randread-qd1"][0][3:] == ["failed", "-"]
    assert text.count("GadgetError") == 1
    assert "failed: gadget-file (every workload): failed to start: GadgetError: exited 1 before ready" in text


def test_one_failed_workload_names_that_workload() -> None:
    one = {**RESULTS, "kublk-loop": {**RESULTS["kublk-loop"], "128k-read-qd32": "FioError: EIO"}}
    text = disk.table(one, ORDER, "h")
    assert "failed: kublk-loop (128k-read-qd32): FioError: EIO" in text


def test_without_both_servers_there_is_no_ratio_column() -> None:
    text = disk.table(RESULTS, ["disk", "loop"], "h")
    assert "xkublk" not in text


def test_the_heading_names_the_disk_and_geometry() -> None:
    h = disk.heading({"device": "/dev/vda", "size": 512 << 20, "queues": 1, "depth": 64})
    assert h.startswith("disk: /dev/vda (virtio-blk") and "512 MiB" in h and "1 queue(s) x 64 tags" in h


def test_cpu_of_a_peer_without_probe_is_a_dash() -> None:
    bare: dict[str, Result | str] = {
        k: dataclasses.replace(v, server_cpu_us_per_io=None)
        for k, v in RESULTS["gadget-file"].items() if isinstance(v, Result)
    }  # fmt: skip
    no_cpu = {**RESULTS, "gadget-file": bare}
    cpu = lines_of(disk.table(no_cpu, ORDER, "h"))["4k-randread-qd1"][1]
    assert cpu == ["-", "-", "100", "-", "-"]


ZC: dict[str, dict[str, Result | str]] = {
    **RESULTS,
    "kublk-loop-autozc": {"4k-randread-qd32": res(3500, cpu=60), "128k-read-qd32": res(400, cpu=80)},
    "gadget-file-autozc": {"4k-randread-qd32": res(3150, cpu=90), "128k-read-qd32": res(480, cpu=40)},
}
FULL = list(disk.PEER_ORDER)


def test_the_zero_copy_rows_are_named_and_divided_by_their_own_mode() -> None:
    text = disk.table(ZC, FULL, "h")
    head, buffers = text.splitlines()[1].split(), text.splitlines()[2].split()
    assert head == ["IOPS", "disk", "loop", "kublk-loop", "gadget-file", "kublk-loop", "gadget-file",
                    "xkublk", "xkublk"]  # fmt: skip
    assert buffers == ["buffers", "copy", "copy", "auto-zc", "auto-zc", "copy", "auto-zc"]
    rows = lines_of(text)
    iops, cpu = rows["4k-randread-qd32"]
    assert iops == ["10000", "8000", "2800", "1400", "3500", "3150", "0.50x", "0.90x"]
    assert cpu == ["-", "-", "100", "150", "60", "90", "1.50x", "1.50x"]
    # a workload the zero-copy rows did not run: no figure, no ratio, and not a failure
    assert rows["4k-randread-qd1"][0][4:] == ["-", "-", "1.25x", "-"]
    assert rows["128k-read-qd32"][0][-1] == "1.20x" and rows["128k-read-qd32"][1][-1] == "0.50x"
    assert "failed" not in text


def test_the_summary_keeps_the_copy_ratios_and_adds_one_entry_per_mode() -> None:
    s = disk.summary(ZC, FULL)
    assert s["gadget_over_kublk"]["4k-randread-qd32"] == pytest.approx(0.5)  # copy, as before
    copy, zc = s["by_mode"]["copy"], s["by_mode"]["auto-zc"]
    assert (copy["gadget"], copy["kublk"]) == ("gadget-file", "kublk-loop")
    assert (zc["gadget"], zc["kublk"]) == ("gadget-file-autozc", "kublk-loop-autozc")
    assert zc["gadget_over_kublk"] == pytest.approx({"4k-randread-qd32": 0.9, "128k-read-qd32": 1.2})
    assert zc["cpu_gadget_over_kublk"] == pytest.approx({"4k-randread-qd32": 1.5, "128k-read-qd32": 0.5})
    assert len(copy["gadget_over_kublk"]) == len(disk.WORKLOADS)


def test_columns_line_up_with_the_zero_copy_rows() -> None:
    text = disk.table(ZC, FULL, "h").splitlines()
    row = next(line for line in text if line.strip().startswith("4k-randread-qd32"))
    for line in text[1:3]:  # the names and the buffers line: every word right-aligned over a cell
        for word in list(re.finditer(r"\S+", line))[1:]:
            assert row[word.end() - 1] != " " and (word.end() == len(row) or row[word.end()] == " ")
