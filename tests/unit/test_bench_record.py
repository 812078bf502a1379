"""bench.guest.record: the record and the text carry every table, or say why one is missing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import disk, guest, peers, rounds, shared
from bench.fio import WORKLOADS, Result, Workload


def res(iops: float, cpu: float | None = None) -> Result:
    return Result(iops=iops, bw_bytes=iops * 4096, lat_p50_ns=1000, lat_p99_ns=2000, lat_max_ns=3000, ios=10,
                  server_cpu_us_per_io=cpu)  # fmt: skip


def measured(order: list[str], workloads: tuple[Workload, ...], iops: float) -> rounds.Measured:
    m = rounds.Measured(order, workloads)
    m.details = {n: f"made {n}" for n in order}
    m.cells = {n: {w.name: rounds.Cell([res(iops, 50)]) for w in workloads} for n in order}
    return m


def args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(out=tmp_path, fio_cpu=0, server_cpu=1, runtime=2.0, ramp=0.0, rounds=1)


G = peers.Geometry(256 << 20, 1, 64, "/tmp/bench-backing.img")


def test_every_table_is_in_the_record_and_the_text(tmp_path: Path) -> None:
    main = measured(["kublk-null", "gadget-null"], WORKLOADS, 1000)
    d = guest.Table(measured(list(disk.PEER_ORDER), disk.WORKLOADS, 500),
                    detail={"device": "/dev/vda", "size": 512 << 20, "queues": 1, "depth": 64})  # fmt: skip
    s = guest.Table(measured(list(shared.PEER_ORDER), (shared.WORKLOAD,), 800), detail={"pinned": False})
    text = guest.record(args(tmp_path), G, main, d, s, None, {"main": 1.0, "disk": 2.0})
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["disk"]["device"] == "/dev/vda" and set(doc["disk"]["peers"]) == set(disk.PEER_ORDER)
    assert doc["disk"]["gadget_over_kublk"]["4k-randread-qd1"] == 1.0
    assert doc["shared_cpu"]["pairs"][0]["iops_ratio"] == 1.0 and doc["shared_cpu"]["pinned"] is False
    assert doc["environment"]["elapsed_s"] == {"main": 1.0, "disk": 2.0}
    assert set(doc["peers"]) == {"kublk-null", "gadget-null"}
    assert "disk: /dev/vda" in text and "QD32/QD1 gain" in text and "shared CPU: 4k-randread-2x32" in text
    assert text.index("4k-randread-qd1") < text.index("disk: /dev/vda") < text.index("shared CPU")
    assert (tmp_path / "results.txt").read_text() == text


def test_a_table_not_measured_says_why_in_both(tmp_path: Path) -> None:
    main = measured(["kublk-null"], WORKLOADS, 1000)
    none = guest.Table(why_not="no disk attached")
    text = guest.record(args(tmp_path), G, main, none, guest.Table(why_not="skipped (--tables)"), None, {})
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["disk"] == {"error": "no disk attached"} and doc["shared_cpu"] == {"error": "skipped (--tables)"}
    assert "disk table: not measured: no disk attached" in text
    assert "shared-CPU table: not measured: skipped (--tables)" in text


def test_the_buffer_modes_are_in_the_record_and_the_text(tmp_path: Path) -> None:
    two = tuple(w for w in WORKLOADS if w.name in ("4k-randread-qd32", "128k-read-qd32"))
    main = measured(["kublk-null", "gadget-null"], WORKLOADS, 1000)
    zc = measured(["kublk-null-autozc", "gadget-null-autozc"], two, 2000)
    main.order += zc.order
    main.details.update(zc.details)
    main.cells.update(zc.cells)
    none = guest.Table(why_not="skipped (--tables)")
    text = guest.record(args(tmp_path), G, main, none, none, None, {})
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(doc["ratios"]["gadget-null-autozc"]) == {"4k-randread-qd32", "128k-read-qd32"}
    assert doc["ratios"]["gadget-null-autozc"]["128k-read-qd32"]["kublk"] == 1.0
    assert doc["buffer_modes"]["null"]["128k-read-qd32"]["auto-zc"]["cpu_ratio"] == 1.0
    assert set(doc["buffer_modes"]["null"]["128k-read-qd32"]) == {"copy", "auto-zc"}
    assert "buffer modes: each gadget mode against kublk in the same mode" in text
    assert text.index("buffer modes") < text.index("disk table: not measured")
    assert "gadget-null-autozc 128k-read-qd32 >= 1.0x kublk-null-autozc" in text
