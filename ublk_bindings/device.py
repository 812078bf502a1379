"""A device served by this process: its queue threads, START_DEV, recovery, teardown.

The orchestration around :mod:`ublk_bindings.queue`: one thread and one :class:`Queue` per
hardware queue, the control commands that wait for the queues (START_DEV,
END_USER_RECOVERY) issued once every queue has fetched, and the way back out of any step
that fails half-way.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

from .ctrl import Control, block_dev_path, char_dev_path
from .errors import UblkError
from .batch import BatchQueue
from .buffers import BUFFER_MODE_FLAGS, BufferMode, buffer_mode
from .queue import Queue, Served
from .ublk_cmd import (
    UBLK_F_UNPRIVILEGED_DEV,
    UBLK_F_USER_RECOVERY,
    UBLK_S_DEV_QUIESCED,
    UblkF,
    ublk_params,
    ublksrv_ctrl_dev_info,
)

__all__ = ["Device", "queue_class", "ADOPT_STEPS", "STEP_BEFORE_START", "STEP_RESUMED", "STEP_AFTER_START",
           "STEP_QUEUE_FETCHED", "STEP_BEFORE_END"]

_ENOTSUPP = 524  # the kernel-internal errno some drivers leak for "no such command"


STEP_BEFORE_START = "before START_USER_RECOVERY"
STEP_AFTER_START = "after START_USER_RECOVERY"
STEP_QUEUE_FETCHED = "a queue fetched"
"""Reported from that queue's thread, once its FETCHes are queued (create and adopt alike)."""
STEP_BEFORE_END = "before END_USER_RECOVERY"
STEP_RESUMED = "START_USER_RECOVERY refused (EINVAL): resuming the recovery an earlier server began"
ADOPT_STEPS = (STEP_BEFORE_START, STEP_RESUMED, STEP_AFTER_START, STEP_QUEUE_FETCHED,
               STEP_BEFORE_END)


def queue_class(flags: int) -> type[Queue]:
    """The engine that serves a device with ``flags``: per-tag commands, or batch commands
    (``UBLK_F_BATCH_IO``, whose driver refuses the per-tag ones)."""
    return BatchQueue if buffer_mode(flags) is BufferMode.BATCH else Queue


class Device:
    """A device served by this process, with one thread per queue.

    ``targets(q_id)`` makes each queue's target (a :class:`~ublk_bindings.queue.TargetOps`,
    or a synchronous :data:`~ublk_bindings.queue.Handler`), called in that queue's thread.
    The control commands that wait for the queues (START_DEV, END_USER_RECOVERY) are issued
    from the calling thread once every queue thread has submitted its FETCHes.

    * :meth:`create`: ADD_DEV, SET_PARAMS, queues, START_DEV; ``/dev/ublkbN`` then exists.
    * :meth:`stop` (or leaving ``with``): STOP_DEV, queues end, char device closed, DEL_DEV.
    * :meth:`release`: queues end and the char device is closed, the device stays (after
      QUIESCE_DEV, or to let a successor recover it).
    * :meth:`adopt`: take over a released device: START_USER_RECOVERY, queues,
      END_USER_RECOVERY.

    Whatever fails half-way is undone: no queue thread, char device or (for create) device
    is left behind.  Failures are told as they happen, from the queue's thread:
    ``on_failure(q_id, exc)`` when a queue thread dies (its tags are no longer served),
    ``on_target_error(q_id, exc)`` when a target raised (only that request failed, EIO).
    """

    def __init__(
        self, ctrl: Control, targets: Callable[[int], Served], *, ready_timeout: float = 30.0,
        on_step: Callable[[str], None] | None = None,
        on_failure: Callable[[int, BaseException], None] | None = None,
        on_target_error: Callable[[int, BaseException], None] | None = None,
    ) -> None:
        self.ctrl = ctrl
        self.targets = targets
        self.ready_timeout = ready_timeout
        self.on_step = on_step
        """Called with each step of :meth:`adopt` as it is reached (``ADOPT_STEPS``): for
        logs, and for tests that kill a server at each one."""
        self.on_failure = on_failure
        self.on_target_error = on_target_error
        self.info: ublksrv_ctrl_dev_info | None = None
        """The device's dev_info: as ADD_DEV wrote it back, or GET_DEV_INFO for adopt."""
        self.queues: list[Queue | None] = []
        self.errors: list[BaseException] = []
        """Exceptions of queue threads, then of targets (a target's request got EIO)."""
        self._failed: list[BaseException] = []  # queue threads that died
        self._threads: list[threading.Thread] = []
        self._ready: list[threading.Event] = []
        self._fd = -1
        self._abandoned = False  # a START_DEV/END_USER_RECOVERY given up while in flight

    def _step(self, name: str) -> None:
        if self.on_step is not None:
            self.on_step(name)

    @property
    def dev_id(self) -> int:
        if self.info is None:
            raise ValueError("no device")
        return int(self.info.dev_id)

    @property
    def block_path(self) -> str:
        return block_dev_path(self.dev_id)

    # -- queue threads ----------------------------------------------------------------------

    def _serve(self, q_id: int) -> None:
        def target_error(exc: BaseException) -> None:
            if self.on_target_error is not None:
                self.on_target_error(q_id, exc)

        try:
            assert self.info is not None
            with queue_class(self.info.flags)(self._fd, self.info, q_id, self.targets(q_id),
                                              on_error=target_error) as q:
                self.queues[q_id] = q
                q.fetch()
                self._step(STEP_QUEUE_FETCHED)
                self._ready[q_id].set()
                q.run()
                if q.error is not None:
                    self.errors.append(q.error)
        except BaseException as e:
            self._failed.append(e)
            self.errors.insert(0, e)
            if self.on_failure is not None:
                self.on_failure(q_id, e)
        finally:
            self._ready[q_id].set()

    def _open_char_dev(self, deadline: float) -> int:
        """Open /dev/ublkcN, waiting until ``deadline`` for udev: devtmpfs creates the node at
        once (root's, mode 0600), and only udev's rule hands an unprivileged device's node to
        its owner, a moment later."""
        assert self.info is not None
        path = char_dev_path(self.dev_id)
        unprivileged = bool(self.info.flags & UBLK_F_UNPRIVILEGED_DEV)
        while True:
            try:
                return os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise
            except PermissionError as e:
                if not unprivileged:
                    raise
                if time.monotonic() > deadline:
                    raise PermissionError(
                        e.errno, f"{e.strerror}: no udev rule gave this unprivileged device's node "
                        "to its owner (owner_uid/owner_gid of GET_DEV_INFO2)",
                        path) from None
            time.sleep(0.01)

    def _start_queues(self, deadline: float | None = None) -> None:
        """Open the char device, start one thread per queue, wait until all have fetched;
        all by ``deadline`` (``time.monotonic()``; default: ``ready_timeout`` from now)."""
        assert self.info is not None
        if deadline is None:
            deadline = time.monotonic() + self.ready_timeout
        self._fd = self._open_char_dev(deadline)
        n = self.info.nr_hw_queues
        self.queues = [None] * n
        self._ready = [threading.Event() for _ in range(n)]
        for q_id in range(n):
            t = threading.Thread(target=self._serve, args=(q_id,),
                                 name=f"ublk{self.dev_id}q{q_id}", daemon=True)
            self._threads.append(t)
            t.start()
        for ev in self._ready:
            ev.wait(max(0.0, deadline - time.monotonic()))
        if self._failed:
            raise self._failed[0]
        if not all(ev.is_set() for ev in self._ready):
            raise TimeoutError(f"queues of ublk{self.dev_id} did not fetch in "
                               f"{self.ready_timeout:g} s")

    def _end_queues(self, grace: float) -> None:
        """Join the queue threads, kicking them out after ``grace`` seconds, then close the
        char device so that the driver can release it."""
        deadline = time.monotonic() + grace
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            for q in self.queues:
                if q is not None:
                    q.kick()
            deadline = time.monotonic() + self.ready_timeout
            for t in self._threads:
                t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:  # a target call that never returns; its ring keeps the char device busy
            self.errors.append(TimeoutError(f"queue threads {', '.join(stuck)} did not end "
                                            f"in {self.ready_timeout:g} s"))
        self._threads = []
        self.queues = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _queue_failed(self) -> BaseException | None:
        """Why START_DEV/END_USER_RECOVERY will never return: a queue thread that died (its
        FETCHes are gone, so the device never becomes ready); else None."""
        if self._failed:
            self._abandoned = True
            return self._failed[0]
        return None

    # -- life cycle -------------------------------------------------------------------------

    def create(self, info: ublksrv_ctrl_dev_info, params: ublk_params) -> Device:
        """ADD_DEV, SET_PARAMS, queue threads, START_DEV; returns self.

        A buffer mode the driver left out of the flags it wrote back (it drops what it does
        not know: Linux 6.12 has no zero copy) is an error, not a device served otherwise.
        """
        asked = info.flags & BUFFER_MODE_FLAGS
        self.info = self.ctrl.add_dev(info)
        deadline = time.monotonic() + self.ready_timeout
        try:
            dropped = asked & ~self.info.flags
            if dropped:
                names = ", ".join(f"UBLK_F_{m.name}" for m in UblkF if m & dropped)
                raise UblkError(errno.EOPNOTSUPP,
                                f"ADD_DEV (this kernel has no {names}: it dropped it)")
            self._wait_for_node(deadline)
            self.ctrl.set_params(self.dev_id, params)
            self._start_queues(deadline)
            self.ctrl.start_dev(self.dev_id, abort_if=self._queue_failed)
        except BaseException as e:
            try:
                self.stop(raise_errors=False)
            except Exception as cleanup:  # keep the cause; say what is left behind
                add_note = getattr(e, "add_note", None)  # Python 3.11+
                if add_note is not None:
                    add_note(f"and removing device {self.dev_id} failed: {cleanup}")
            raise
        return self

    def _wait_for_node(self, deadline: float) -> None:
        """Wait until udev has given an unprivileged device's /dev/ublkcN to us: the kernel
        checks every command after ADD_DEV against our access to that node (EACCES)."""
        assert self.info is not None
        if not self.info.flags & UBLK_F_UNPRIVILEGED_DEV:
            return
        path = char_dev_path(self.dev_id)
        while not os.access(path, os.R_OK | os.W_OK, effective_ids=True):
            if time.monotonic() > deadline:
                raise PermissionError(
                    errno.EACCES, f"{os.strerror(errno.EACCES)}: no udev rule gave this "
                    "unprivileged device's node to its owner (owner_uid/owner_gid of "
                    "GET_DEV_INFO2) within the ready timeout", path)
            time.sleep(0.01)

    def adopt(self, dev_id: int) -> Device:
        """Serve a device whose server is gone (``UBLK_F_USER_RECOVERY``); returns self.

        START_USER_RECOVERY answers EBUSY until the driver has released the old server's
        char device (asynchronously after it closed); that, and only that, is retried.
        """
        self.info = self.ctrl.get_dev_info(dev_id)
        deadline = time.monotonic() + self.ready_timeout
        self._step(STEP_BEFORE_START)
        resumed: UblkError | None = None  # START refused, an earlier one's recovery resumed
        while True:
            try:
                self.ctrl.start_user_recovery(dev_id)
                break
            except UblkError as e:
                if e.errno == errno.EINVAL and self._resumable(dev_id):
                    resumed = e
                    self._step(STEP_RESUMED)
                    break
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    self.info = None
                    raise
                time.sleep(0.02)
        try:
            self._step(STEP_AFTER_START)
            self._start_queues(deadline)  # the same deadline: ready_timeout bounds it all
            self._step(STEP_BEFORE_END)
            self.ctrl.end_user_recovery(dev_id, abort_if=self._queue_failed)
        except BaseException as e:
            self._end_queues(grace=0)
            if resumed is not None and isinstance(e, OSError):
                raise resumed from e  # not resumable after all: START's refusal is the cause
            raise
        return self

    def _resumable(self, dev_id: int) -> bool:
        """Whether a START_USER_RECOVERY refused with EINVAL is one an earlier server already
        did: Linux 6.12 refuses a second START until a queue of the first became ready
        (``nr_queues_ready`` is 0), yet the device is QUIESCED with its queues reset, so a
        server that died before it mapped them leaves a recovery that FETCH and
        END_USER_RECOVERY can finish.  If it had mapped them the mapping is refused (EINVAL)
        and the device can only be deleted."""
        info = self.ctrl.get_dev_info(dev_id)
        return bool(info.state == UBLK_S_DEV_QUIESCED and info.flags & UBLK_F_USER_RECOVERY)

    def release(self, *, raise_errors: bool = True) -> None:
        """Stop serving but leave the device: after QUIESCE_DEV, or for a successor.

        Then, with ``raise_errors``, re-raise the first exception of a queue thread or a
        target.
        """
        if self.info is not None:
            self._end_queues(grace=0)
            self.info = None
        if raise_errors and self.errors:
            raise self.errors[0]

    def stop(self, *, raise_errors: bool = True, wait_deleted: bool = True) -> None:
        """STOP_DEV, join the queues, close ``/dev/ublkcN``, DEL_DEV; safe to call twice.

        DEL_DEV returns only once nothing holds the device any more: a file system still
        mounted from ``/dev/ublkbN``, or any open fd of it, keeps it waiting.  With
        ``wait_deleted=False`` DEL_DEV_ASYNC is used instead (where the driver has it): the
        device is removed all the same and its number is freed when the last holder lets go.
        Then, with ``raise_errors``, re-raise the first exception of a queue thread or a
        target.
        """
        if self.info is None:
            return
        dev_id = self.dev_id
        try:
            try:
                self.ctrl.stop_dev(dev_id)  # aborts every outstanding FETCH
            finally:
                # STOP_DEV aborts every FETCH; the kick after a grace period covers a
                # device that never started on kernels that leave those FETCHes pending.
                self._end_queues(grace=5.0)
        finally:
            self.info = None
            # an abandoned START_DEV holds the device until this Control closes: DEL_DEV
            # would wait for that forever
            self._delete(dev_id, wait_deleted and not self._abandoned)
        if raise_errors and self.errors:
            raise self.errors[0]

    def _delete(self, dev_id: int, wait: bool) -> None:
        if not wait:
            try:
                self.ctrl.del_dev_async(dev_id)
                return
            except UblkError as e:  # before Linux 6.9 there is only the waiting DEL_DEV
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, _ENOTSUPP):
                    raise
        self.ctrl.del_dev(dev_id)

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(raise_errors=exc is None)
