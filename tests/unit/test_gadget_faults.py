"""The fault-injection hook: a named step kills the process there, and only a known name works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from ublk_gadget import faults


def test_every_step_is_named_once() -> None:
    assert len(set(faults.STEPS)) == len(faults.STEPS) == 7


def test_an_unknown_step_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.KILL_AT_ENV, "after-lunch")
    with pytest.raises(ValueError, match="'after-lunch' is not a step .one of: after-sighup"):
        faults.kill_at()


def test_no_step_kills_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.KILL_AT_ENV, raising=False)
    assert faults.kill_at() is None


@pytest.mark.parametrize("step", [faults.MID_QUIESCE, faults.ADOPT[next(iter(faults.ADOPT))]])
def test_the_named_step_and_no_other_is_a_sigkill(step: str) -> None:
    """In a child process: reaching another step returns, reaching this one never does."""
    other = next(s for s in faults.STEPS if s != step)
    code = ("from ublk_gadget import faults; "
            f"faults.reached({other!r}); print('passed', flush=True); faults.reached({step!r}); "
            "print('survived', flush=True)")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, faults.KILL_AT_ENV: step}, timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert child.stdout == "passed\n"
    assert f"{faults.KILL_AT_ENV}={step}: killing myself" in child.stderr
