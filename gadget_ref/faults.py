"""Fault injection for tests: ``UBLK_GADGET_KILL_AT=STEP`` SIGKILLs the gadget at that step.

A handover must lose nothing whenever either side dies, so the tests kill the owner and the
successor at each step where the devices are between two states; SIGKILL, because that is
what a crash, the OOM killer or ``systemctl kill`` is, and no Python cleanup may run.  A step
name that is not one of :data:`STEPS` is refused at start: a misspelt step would otherwise
make a test pass without killing anything.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from ublk_bindings.io import (
    STEP_AFTER_START,
    STEP_BEFORE_END,
    STEP_BEFORE_START,
    STEP_QUEUE_FETCHED,
    STEP_RESUMED,
)

KILL_AT_ENV = "UBLK_GADGET_KILL_AT"

# The owner's half of a live handover (handover.py, daemon._serve).
AFTER_SIGHUP = "after-sighup"
MID_QUIESCE = "mid-quiesce"  # a device quiesced by QUIESCE_DEV, not yet released
AFTER_RELEASE = "after-release"  # every device released, the process not yet exited
# The successor's half (ublk_bindings.device.Device.adopt), by the runtime's step names.
ADOPT = {
    STEP_BEFORE_START: "before-start-recovery",
    STEP_AFTER_START: "after-start-recovery",
    STEP_QUEUE_FETCHED: "queue-fetched",  # the first queue's FETCHes are in, others may not be
    STEP_BEFORE_END: "before-end-recovery",
}
STEPS = (AFTER_SIGHUP, MID_QUIESCE, AFTER_RELEASE, *ADOPT.values())

log = logging.getLogger("ublk_gadget.faults")


def kill_at() -> str | None:
    """The step named by the environment, checked; ValueError for an unknown one."""
    step = os.environ.get(KILL_AT_ENV) or None
    if step is not None and step not in STEPS:
        raise ValueError(f"{KILL_AT_ENV}={step!r} is not a step (one of: {', '.join(STEPS)})")
    return step


_KILL_AT = os.environ.get(KILL_AT_ENV)  # checked by the command line (kill_at) at start


def reached(step: str) -> None:
    """Die here, at once and without cleanup, if the environment asks for ``step``."""
    if step == _KILL_AT:
        log.warning("%s=%s: killing myself (SIGKILL)", KILL_AT_ENV, step)
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def adopt_step(runtime_step: str) -> None:
    """``ublk_bindings.device.Device``'s ``on_step`` hook: the runtime's steps, by our names; the
    one that is news to a user (a recovery resumed, Linux 6.12) is logged."""
    if runtime_step == STEP_RESUMED:
        log.warning("%s", runtime_step)
        return
    reached(ADOPT[runtime_step])
