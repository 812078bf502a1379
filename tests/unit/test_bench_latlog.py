"""bench.latlog: the stall of a handover is the longest I/O in flight during its window."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import latlog
from bench.latlog import Window

T0 = 1_800_000_000.0  # an epoch second


def write_log(path: Path, ios: list[tuple[float, float, int]]) -> Path:
    """ios: (completion s since T0, latency s, direction) as fio writes them (ms, ns)."""
    lines = [f"{round((T0 + done) * 1e3)}, {round(lat * 1e9)}, {ddir}, 4096, 0\n" for done, lat, ddir in ios]
    path.write_text("".join(lines))
    return path


def test_parse_reads_epoch_milliseconds_and_nanoseconds(tmp_path: Path) -> None:
    log = latlog.parse(write_log(tmp_path / "l", [(1.5, 0.000250, 0), (2.0, 0.5, 1)]))
    assert len(log) == 2
    assert log.done_s[0] == pytest.approx(T0 + 1.5)
    assert log.lat_s[1] == pytest.approx(0.5)
    assert list(log.ddir) == [0, 1]
    assert log.issued_s(1) == pytest.approx(T0 + 1.5)


def test_a_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "l"
    path.write_text("1800000000000, 1000, 0, 4096, 0\n1800000000001, oops, 0, 4096, 0\n")
    with pytest.raises(latlog.LatLogError, match=r"l:2: .*oops"):
        latlog.parse(path)


def test_the_stall_is_the_longest_io_in_flight_during_the_window(tmp_path: Path) -> None:
    ios = [
        (1.0, 0.001, 0),  # before the window
        (5.30, 0.40, 0),  # issued 4.90, done 5.30: in flight through the window: the stall
        (5.05, 0.10, 1),  # issued 4.95: also spans, shorter
        (5.60, 0.001, 0),  # after the window
        (4.50, 0.90, 0),  # issued 3.60, done 4.50: long, but over before the window began
    ]
    log = latlog.parse(write_log(tmp_path / "l", ios))
    (stall,) = latlog.stalls(log, [Window("handover", T0 + 5.0, T0 + 5.2)])
    assert stall.longest_s == pytest.approx(0.40)
    assert stall.longest_done_s == pytest.approx(T0 + 5.30)
    assert stall.spanning == 2


def test_an_io_inside_a_window_spans_it(tmp_path: Path) -> None:
    log = latlog.parse(write_log(tmp_path / "l", [(5.15, 0.05, 0)]))
    (stall,) = latlog.stalls(log, [Window("crash", T0 + 5.0, T0 + 5.2)])
    assert stall.spanning == 1


def test_a_window_no_io_spans_has_no_stall(tmp_path: Path) -> None:
    log = latlog.parse(write_log(tmp_path / "l", [(1.0, 0.001, 0)]))
    (stall,) = latlog.stalls(log, [Window("handover", T0 + 5.0, T0 + 5.2)])
    assert (stall.longest_s, stall.spanning) == (0.0, 0)


def test_steady_state_leaves_out_every_io_that_spans_a_window(tmp_path: Path) -> None:
    ios = [(1.0, 0.001, 0), (2.0, 0.002, 0), (5.1, 0.3, 0), (9.1, 0.2, 1), (12.0, 0.003, 1)]
    log = latlog.parse(write_log(tmp_path / "l", ios))
    windows = [Window("handover", T0 + 5.0, T0 + 5.2), Window("crash", T0 + 9.0, T0 + 9.5)]
    assert sorted(latlog.steady(log, windows)) == pytest.approx([0.001, 0.002, 0.003])


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert latlog.percentile(values, 99) == 99.0
    assert latlog.percentile(values, 50) == 50.0
    assert latlog.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        latlog.percentile([], 99)
