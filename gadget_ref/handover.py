"""The owner's half of a live handover (SIGHUP): quiesce, let go, exit.

The kernel does the hard part.  QUIESCE_DEV marks the device "canceling" (new requests wait
in the kernel's requeue list instead of reaching us), waits until every queue has an idle
tag, then completes each idle FETCH with UBLK_IO_RES_ABORT.  Requests we are processing at
that moment are still ours: the queue threads keep running, complete them and commit them
(the fetch half of that COMMIT_AND_FETCH then sits unused until the ring is closed, because
canceling dispatches nothing).  Releasing /dev/ublkcN then leaves the device QUIESCED,
holding the waiting requests for the successor, which END_USER_RECOVERY kicks.

QUIESCE_DEV is never given 0 (that waits forever, and a queue whose every tag is busy would
hang the handover): each call is bounded and EBUSY is retried within a budget.  Without
UBLK_F_QUIESCE (Linux < 6.16: 6.12, 6.1), or when the budget runs out, the handover falls
back to drain-and-release: the owner exits with its queues open, as a crashed server would
(see :func:`exit_releasing` for why not close them first).  The kernel then requeues, for the
successor, the requests it had handed to us that we never committed (because the device has
UBLK_F_USER_RECOVERY_REISSUE; without it they would fail with EIO) and those still on their
way to us (UBLK_F_USER_RECOVERY alone does that): slower, as they run again, but nothing is
lost.

A batch device (UBLK_F_BATCH_IO) is always handed over by drain-and-release: the 7.x
driver's QUIESCE_DEV cancels a batch queue's fetch with ``ublk_batch_cancel_queue``, which
sets the queue's ``force_abort``, and until a successor prepares the queue again every
request that reaches it (new ones, and those the release requeues and kicks) fails with
EIO (``ublk_prep_req``).  A server that exits with its queues open takes the cancel path of
its ring instead, which leaves ``force_abort`` alone and requeues everything.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn, Protocol

from ublk_bindings import UBLK_F_BATCH_IO, UBLK_F_QUIESCE
from ublk_bindings.errors import UblkError

from . import events, faults

log = logging.getLogger("ublk_gadget.handover")

QUIESCE_SLICE_MS = 250
"""One QUIESCE_DEV call's timeout: short, so a failure is seen and logged while retrying."""
QUIESCE_BUDGET_S = 10.0
"""All QUIESCE_DEV attempts of one handover; past it, drain-and-release."""

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m|h)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds from ``500ms``, ``30s``, ``2m``, ``1h`` or a bare number of seconds."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration (a number with ms, s, m or h)")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than zero")
    return seconds


class Deadline:
    """A point in monotonic time that bounds a wait that must not last forever."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


class QuiesceControl(Protocol):
    def quiesce_dev(self, dev_id: int, timeout_ms: int = ...) -> None: ...


class Releasable(Protocol):
    """A device as its owner serves it (the daemon's device lifecycle provides this)."""

    @property
    def dev_id(self) -> int: ...

    @property
    def flags(self) -> int:
        """The UBLK_F_* flags the device was added with."""
        ...

    def release(self) -> None:
        """Commit what the queues are processing, take nothing new, close ring, mapping, fd.

        Must not STOP_DEV or DEL_DEV: the device stays for the successor.
        """
        ...


def quiesce(
    ctrl: QuiesceControl,
    dev_id: int,
    deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """QUIESCE_DEV ``dev_id`` with bounded calls until it succeeds or ``deadline`` passes.

    True when the kernel quiesced the device; False when the caller must drain and release
    instead (EBUSY until the deadline: some queue never had an idle tag).  The caller's
    queue threads must keep serving I/O meanwhile: a busy tag becomes idle only when its
    request is committed.
    """
    attempts = 0
    while True:
        slice_ms = max(1, min(QUIESCE_SLICE_MS, int(deadline.remaining() * 1000)))
        attempts += 1
        try:
            ctrl.quiesce_dev(dev_id, timeout_ms=slice_ms)
            return True
        except UblkError as e:
            if e.errno != errno.EBUSY:
                raise
        if deadline.expired():
            log.warning("device %d: QUIESCE_DEV still EBUSY after %d attempts in %.1f s",
                        dev_id, attempts, deadline.seconds)
            return False
        sleep(0.01)  # the kernel already waited slice_ms; just let the queues breathe


def hand_over(
    ctrl: QuiesceControl,
    devices: Sequence[Releasable],
    budget_s: float = QUIESCE_BUDGET_S,
) -> list[Releasable]:
    """Let go of every device for a successor, in order: quiesce and release each one.

    Device by device, so the successor can adopt the first while the next is quiescing.
    Returns the devices that could not be quiesced: :func:`exit_releasing` lets go of those.
    """
    deadline = Deadline(budget_s)
    left: list[Releasable] = []
    for dev in devices:
        if not dev.flags & UBLK_F_QUIESCE:
            log.info("device %d: no UBLK_F_QUIESCE on this kernel: handing over by "
                     "drain-and-release", dev.dev_id)
            left.append(dev)
            continue
        if dev.flags & UBLK_F_BATCH_IO:
            log.info("device %d: a batch device (QUIESCE_DEV would fail its I/O until the "
                     "successor is ready): handing over by drain-and-release", dev.dev_id)
            left.append(dev)
            continue
        try:
            quiesced = quiesce(ctrl, dev.dev_id, deadline)
        except UblkError as e:
            log.warning("device %d: %s: handing over by drain-and-release", dev.dev_id, e)
            quiesced = False
        if not quiesced:
            left.append(dev)
            continue
        faults.reached(faults.MID_QUIESCE)
        dev.release()
        log.info("device %d released (quiesced)", dev.dev_id)
        events.emit("released", dev_id=dev.dev_id, how="quiesce")
    return left


def exit_releasing(devices: Sequence[Releasable], status: int = 0) -> NoReturn:
    """Release ``devices`` the way the kernel expects a server to go: exit, queues still open.

    Without QUIESCE_DEV the kernel keeps dispatching to our FETCHes until it sees them
    cancelled, and closing the queue rings from a process that lives on lets a request be
    dispatched to a queue thread after its queue was cancelled (seen on Linux 6.12: the
    request stays in flight forever and START_USER_RECOVERY hangs behind it).  Process exit is
    the path the driver is built for: every thread is exiting when the kernel cancels the
    FETCHes and requeues, thanks to UBLK_F_USER_RECOVERY_REISSUE, each request we had not
    committed, for the successor.  Those we were processing run again there; none is lost.
    """
    for dev in devices:
        events.emit("released", dev_id=dev.dev_id, how="drain")
        log.info("device %d released (drained: exiting with its queues open; the kernel "
                 "requeues what was not committed for the successor)", dev.dev_id)
    faults.reached(faults.AFTER_RELEASE)
    logging.shutdown()
    sys.stdout.flush()
    os._exit(status)
