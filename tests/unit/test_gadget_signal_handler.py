"""The daemon's signal handler: it runs between any two bytecodes of the main thread, so it
only records; what a signal asked for is logged afterwards, from the main thread."""

from __future__ import annotations

import io
import logging
import signal
import threading
import time

import pytest

from ublk_gadget.daemon import _StopRequest


class SignalDuringWrite(io.StringIO):
    """A stream that delivers a signal in the middle of a write, as a real SIGTERM can."""

    def __init__(self, stop: _StopRequest) -> None:
        super().__init__()
        self.stop = stop
        self.writing = False

    def write(self, text: str) -> int:
        if self.writing:  # what a BufferedWriter says when re-entered
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")
        self.writing = True
        try:
            self.stop.on_signal(signal.SIGTERM, None)
            return super().write(text)
        finally:
            self.writing = False


def test_a_signal_that_lands_inside_a_log_write_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = _StopRequest()
    stream = SignalDuringWrite(stop)
    monkeypatch.setattr("sys.stderr", stream)  # the daemon logs to stderr, as logging's errors do
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("ublk_gadget")
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)  # as the daemon runs
    try:
        log.info("serving /dev/ublkb0")  # the main thread's write, interrupted by SIGTERM
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert stop.is_set() and stop.signal == signal.SIGTERM
    assert "Logging error" not in stream.getvalue()
    stop.close()


def test_the_first_signal_decides_and_later_ones_are_logged_as_ignored(caplog: pytest.LogCaptureFixture) -> None:
    stop = _StopRequest()
    stop.on_signal(signal.SIGHUP, None)
    stop.on_signal(signal.SIGTERM, None)
    assert stop.signal == signal.SIGHUP
    with caplog.at_level(logging.INFO, logger="ublk_gadget"):
        stop.log_signals()
    assert [r.getMessage() for r in caplog.records] == [
        "SIGHUP: handing over",
        "SIGTERM ignored: handover already in progress",
    ]
    stop.close()


def test_a_signal_during_the_wait_wakes_it_at_once() -> None:
    """The main thread sleeps in ``wait``; the handler runs inside it and must not block."""
    stop = _StopRequest()
    previous = signal.signal(signal.SIGALRM, stop.on_signal)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        started = time.monotonic()
        assert stop.wait(30.0)
        assert time.monotonic() - started < 10.0
        assert stop.signal == signal.SIGALRM
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        stop.close()


def test_a_queue_thread_failure_wakes_the_wait() -> None:
    stop = _StopRequest()
    error = OSError(5, "queue 0 died")
    threading.Timer(0.05, stop.on_failure, (error,)).start()
    try:
        assert stop.wait(30.0) and stop.failure is error
        assert stop.wait(0.01)  # and stays requested
    finally:
        stop.close()


def test_without_a_request_the_wait_times_out() -> None:
    stop = _StopRequest()
    try:
        assert stop.wait(0.01) is False
    finally:
        stop.close()


def test_a_signal_the_python_handler_has_not_seen_yet_still_ends_the_wait() -> None:
    """The race a standby (which waits with no timeout) would hang in: the signal lands just
    before ``select`` blocks, so the Python handler, which runs between bytecodes, cannot run
    until the wait ends. Made deterministic here: the main thread blocks the signal and a
    helper thread takes it, so only the C-level handler runs during the wait; it must write
    the wake-up fd that ``_signals_to`` installs."""
    from ublk_gadget.daemon import _signals_to

    stop = _StopRequest()
    go = threading.Event()

    def take_it_here() -> None:
        go.wait()
        signal.pthread_kill(threading.get_ident(), signal.SIGHUP)

    helper = threading.Thread(target=take_it_here)
    helper.start()  # before the mask below: the helper does not block SIGHUP
    with _signals_to(stop):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            go.set()
            started = time.monotonic()
            stop.wait_readable(-1, 30.0)
            assert time.monotonic() - started < 10.0, "only the timeout ended the wait"
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            helper.join()
        assert stop.take_signal() == signal.SIGHUP  # the Python handler ran by now
    assert signal.set_wakeup_fd(-1) == -1  # and the wake-up fd was put back
