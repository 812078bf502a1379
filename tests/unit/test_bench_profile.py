"""bench.profile: self and total shares from py-spy's collapsed stacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import profile

STACKS = """\
thread (7): ublk0q0;run (ublk_bindings/io.py:240);submit (ublk_bindings/ring.py:120) 60
thread (7): ublk0q0;run (ublk_bindings/io.py:243);__call__ (ublk_gadget/handler.py:50) 30
thread (7): ublk0q0;run (ublk_bindings/io.py:251) 10
thread (1): MainThread;serve (ublk_gadget/daemon.py:90) 100
"""


def test_shares_of_the_queue_thread(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text(STACKS)
    samples, own, total = profile.summarize(path, thread="ublk")
    assert samples == 100
    assert own["submit (ublk_bindings/ring.py)"] == 60
    assert own["run (ublk_bindings/io.py)"] == 10  # the lines of one function merge
    assert total["run (ublk_bindings/io.py)"] == 100
    assert "serve (ublk_gadget/daemon.py)" not in total


def test_all_threads_by_default(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text(STACKS)
    assert profile.summarize(path)[0] == 200


def test_a_line_without_a_count_names_its_place(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("thread (7): ublk0q0;run (io.py:1)\n")
    with pytest.raises(ValueError, match=r"p.txt:1"):
        profile.summarize(path)
