"""A handover killed at every step loses nothing: the next ``--adopt`` recovers every device.

Each side of a handover is SIGKILLed (``UBLK_GADGET_KILL_AT``, gadget_ref/faults.py) at each
step where the devices are between owners, with fio write+verify (crc32c, verify_backlog)
running on a file and a mem device of 2 queues each; afterwards the devices keep their
dev_ids, fio verified everything and saw no error, the kernel logged none, and a clean stop
leaves no state or memory file behind.

Linux 6.12 refuses a second START_USER_RECOVERY until a queue of the first became ready; a
successor killed right after its START is then resumed (the runtime's ``_resumable``), which
``after-start-recovery`` proves there.  Without UBLK_F_QUIESCE (6.12) the owner never
quiesces, so ``mid-quiesce`` is never reached: the owner hands over by draining and exits 0.

``queue-fetched`` on Linux 6.12 uses devices of one queue.  With two, the successor may die
after queue 0 fetched and before queue 1 did; 6.12 then accepts the next START_USER_RECOVERY
(a queue became ready) and its ``ublk_queue_reinit`` puts the never-fetched queue's NULL
``ubq_daemon``: a kernel NULL pointer dereference in ``ublk_ctrl_uring_cmd`` (seen in CI,
6.12.117), which takes the driver down.  7.2 survives it, and is tested with two queues.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from test_gadget import READY_TIMEOUT, backing_file
from test_handover import (
    SIZE,
    Owner,
    Successor,
    finish,
    fio_throughout,
    no_gadget_left_running,
    quiesce_supported,
    state_file,
)

from ublk_bindings import UBLK_F_QUIESCE
from ublk_bindings.ctrl import Control
from ublk_bindings.io import STEP_AFTER_START, STEP_QUEUE_FETCHED, STEP_RESUMED
from ublk_gadget import faults

pytestmark = pytest.mark.ublk

__all__ = ["no_gadget_left_running", "state_file"]  # fixtures, used by name

OWNER_STEPS = (faults.AFTER_SIGHUP, faults.MID_QUIESCE, faults.AFTER_RELEASE)
SUCCESSOR_STEPS = tuple(faults.ADOPT.values())


def owner(tmp_path: Path, state_file: str, kill_at: str | None = None, queues: int = 2
          ) -> Owner:
    g = Owner(f"file,path={backing_file(tmp_path, SIZE)},queues={queues}",
              f"mem,size={SIZE},queues={queues}", state_file=state_file)
    if kill_at:
        g.env = {faults.KILL_AT_ENV: kill_at}
    return g.__enter__()


@pytest.mark.parametrize("step", OWNER_STEPS)
def test_an_owner_killed_during_its_handover_loses_nothing(
    step: str, tmp_path: Path, state_file: str
) -> None:
    served = owner(tmp_path, state_file, kill_at=step)
    with fio_throughout(served, tmp_path):
        successor = Successor(state_file).__enter__()  # SIGHUPs the owner, which dies at step
        status = served.proc.wait(timeout=READY_TIMEOUT)
        served.stop()
        if step == faults.MID_QUIESCE and not quiesce_supported(served):
            assert status == 0, served.stderr  # drained: no quiesce step to die in
            assert {e["how"] for e in served.said("released")} == {"drain"}, served.events
        else:
            assert status == -signal.SIGKILL, served.stderr
            assert f"{faults.KILL_AT_ENV}={step}: killing myself" in served.stderr
            if step == faults.AFTER_RELEASE:  # died after letting go: each device said so
                assert len(served.said("released")) == len(served.devices), served.events
        assert successor.all_devs() == served.all_devs()
    finish(successor, state_file)


@pytest.mark.parametrize("step", SUCCESSOR_STEPS)
def test_a_successor_killed_while_adopting_leaves_it_to_the_next(
    step: str, tmp_path: Path, state_file: str
) -> None:
    queues = 1 if step == faults.ADOPT[STEP_QUEUE_FETCHED] and not kernel_has_quiesce() else 2
    served = owner(tmp_path, state_file, queues=queues)
    with fio_throughout(served, tmp_path):
        doomed = Successor(state_file)
        doomed.env = {faults.KILL_AT_ENV: step}
        doomed.start()
        assert doomed.proc.wait(timeout=READY_TIMEOUT) == -signal.SIGKILL
        doomed.stop()
        assert f"{faults.KILL_AT_ENV}={step}: killing myself" in doomed.stderr, doomed.stderr
        assert served.proc.wait(timeout=READY_TIMEOUT) == 0  # it had been asked, and let go
        assert served.stop() == 0, served.stderr
        successor = Successor(state_file).__enter__()
        assert successor.all_devs() == served.all_devs()
    finish(successor, state_file)
    assert "Traceback" not in successor.stderr
    if step == faults.ADOPT[STEP_AFTER_START] and not quiesce_supported(served):
        # Linux 6.12 (no QUIESCE) refuses a second START_USER_RECOVERY: resumed instead
        assert STEP_RESUMED in successor.stderr, successor.stderr


def kernel_has_quiesce() -> bool:
    """Linux 6.16+ (UBLK_F_QUIESCE); here, what tells 7.2 from 6.12's older recovery code."""
    with Control() as ctrl:
        return bool(ctrl.features is not None and ctrl.features & UBLK_F_QUIESCE)


def test_an_unknown_step_is_refused_at_start(tmp_path: Path, state_file: str) -> None:
    g = Owner(f"mem,size={SIZE}", state_file=state_file)
    g.env = {faults.KILL_AT_ENV: "after-lunch"}
    g.start()
    assert g.proc.wait(timeout=READY_TIMEOUT) == 2
    g.stop()
    assert "UBLK_GADGET_KILL_AT='after-lunch' is not a step" in g.stderr
    assert not Path(state_file).exists()
