"""bench.publish: the README shows a run's own table, written between its markers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import publish

ENV = {"date": "2026-11-26T12:00:00+0000", "kernel": "7.2.13+deb14-amd64", "cpus": 2, "fio": "fio-3.33",
       "rounds": 3, "runtime_s": 3.0, "ramp_s": 1.0, "geometry": {"queues": 1, "depth": 64}}  # fmt: skip


def run_dir(tmp_path: Path, with_picture: bool) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"environment": ENV}))
    (out / "results.txt").write_text(f"4k-randread-qd32\n  gadget-null  123\n  picture: {out}/handover-latency.png\n")
    if with_picture:
        (out / "handover-latency.png").write_bytes(b"\x89PNG")
    return out


def test_the_table_goes_between_the_markers_and_nothing_else_changes(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n## Benchmarks\n\n{publish.START}\nold table\n{publish.END}\n\n## Next\n")
    publish.publish(run_dir(tmp_path, with_picture=True), tmp_path / "results", readme)
    text = readme.read_text()
    assert text.startswith("# title\n\n## Benchmarks\n\n" + publish.START + "\n")
    assert text.endswith(publish.END + "\n\n## Next\n")
    assert "old table" not in text
    assert "  gadget-null  123\n  picture: bench/results/handover-latency.png" in text
    assert "![I/O latency across gadget handovers](bench/results/handover-latency.png)" in text
    assert "Linux 7.2.13+deb14-amd64" in text and "3 rounds of 3 s" in text
    assert (tmp_path / "results" / "handover-latency.png").read_bytes() == b"\x89PNG"


def test_without_a_picture_none_is_linked(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{publish.START}\n{publish.END}\n")
    publish.publish(run_dir(tmp_path, with_picture=False), tmp_path / "results", readme)
    assert "![" not in readme.read_text()


def test_a_readme_without_markers_is_left_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# title\n")
    with pytest.raises(publish.PublishError, match="markers"):
        publish.publish(run_dir(tmp_path, with_picture=False), tmp_path / "results", readme)
    assert readme.read_text() == "# title\n"


def test_nothing_to_publish_says_so(tmp_path: Path) -> None:
    with pytest.raises(publish.PublishError, match="run python -m bench first"):
        publish.publish(tmp_path, tmp_path / "results", tmp_path / "README.md")


def test_the_host_load_is_stated_when_recorded(tmp_path: Path) -> None:
    out = run_dir(tmp_path, with_picture=False)
    (out / "host.json").write_text('{"cpus": 2, "loadavg_1min_before": 9.5, "loadavg_1min_after": 3.25}')
    readme = tmp_path / "README.md"
    readme.write_text(f"{publish.START}\n{publish.END}\n")
    publish.publish(out, tmp_path / "results", readme)
    assert "The host (2 cores) had a load average of 9.5 before and 3.2 after the run." in readme.read_text()


def test_the_disk_and_shared_tables_are_introduced_when_recorded() -> None:
    doc = {"environment": ENV, "disk": {"device": "/dev/vda", "size": 512 << 20, "peers": {}},
           "shared_cpu": {"peers": {}}}  # fmt: skip
    text = publish.block(doc, "table", None, None)
    assert "The disk table: /dev/vda, a 512 MiB virtio-blk disk over a host file" in text
    assert "The shared-CPU table: fio and the servers unpinned." in text


def test_tables_not_measured_are_not_introduced() -> None:
    doc = {"environment": ENV, "disk": {"error": "no disk attached"}, "shared_cpu": {"error": "skipped"}}
    text = publish.block(doc, "table", None, None)
    assert "disk table" not in text and "shared-CPU" not in text
