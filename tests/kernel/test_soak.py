"""The soak (``python -m bench.soak``), sized for CI: every kind of handover, every target.

The full run (100 live, 20 crash, 20 standby rounds) is for a person to start; this proves the
same code finds nothing lost over a few rounds of each kind, on the kernel the VM booted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import soak

pytestmark = pytest.mark.ublk


def test_the_soak_s_schedule_interleaves_the_kinds() -> None:
    assert soak.schedule(3, 1, 2) == ["live", "crash", "standby", "live", "standby", "live"]


def test_a_short_soak_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = soak.run(tmp_path / "soak", live=3, crash=2, standby=2, pause_s=1.0)
    assert result.rounds == {"live": 3, "crash": 2, "standby": 2}
    assert len(result.dev_ids) == 6
    assert result.verified_ios > 1000
    with capsys.disabled():
        print(f"\n  {result.summary()}")
