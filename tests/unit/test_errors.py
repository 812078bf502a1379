"""UblkError: what a caller sees when the kernel refuses a command."""

from __future__ import annotations

import errno
import pickle

import pytest

from ublk_bindings.errors import UblkError, UblkTimeout, check, checked


def test_message_names_command_errno_and_its_meaning() -> None:
    e = UblkError(errno.EINVAL, "ADD_DEV")
    assert str(e) == "ADD_DEV failed: EINVAL (Invalid argument)"


def test_is_an_oserror_with_the_errno() -> None:
    e = UblkError(errno.ENODEV, "GET_DEV_INFO")
    assert isinstance(e, OSError)
    assert e.errno == errno.ENODEV
    assert e.errno_name == "ENODEV"
    assert e.command == "GET_DEV_INFO"
    with pytest.raises(OSError) as caught:
        raise e
    assert caught.value.errno == errno.ENODEV


def test_unnamed_errno_still_reads() -> None:
    e = UblkError(4242, "START_DEV")
    assert str(e).startswith("START_DEV failed: errno 4242 (")


def test_survives_pickling_with_its_command() -> None:
    # exceptions cross process boundaries (multiprocessing, pytest-xdist)
    e = pickle.loads(pickle.dumps(UblkError(errno.EACCES, "SET_PARAMS")))
    assert (type(e), e.errno, e.command) == (UblkError, errno.EACCES, "SET_PARAMS")
    t = pickle.loads(pickle.dumps(UblkTimeout("START_DEV", 2.5)))
    assert (type(t), t.command, t.timeout) == (UblkTimeout, "START_DEV", 2.5)


def test_timeout_is_both_a_ublk_error_and_a_timeout_error() -> None:
    t = UblkTimeout("DEL_DEV", 3)
    assert isinstance(t, UblkError) and isinstance(t, TimeoutError)
    assert str(t) == "DEL_DEV: no completion within 3 s (still in flight)"


def test_check_turns_negative_errno_into_ublk_error() -> None:
    assert check(0, "STOP_DEV") == 0
    assert check(7, "io_uring_submit") == 7
    with pytest.raises(UblkError) as caught:
        check(-errno.EOPNOTSUPP, "QUIESCE_DEV")
    assert caught.value.errno == errno.EOPNOTSUPP
    assert str(caught.value) == "QUIESCE_DEV failed: EOPNOTSUPP (Operation not supported)"


def test_checked_calls_through_and_names_the_call() -> None:
    calls: list[tuple[object, ...]] = []

    def fake_c_function(*args: object) -> int:
        calls.append(args)
        return -errno.EBUSY if args[0] == "busy" else 3

    assert checked("io_uring_submit", fake_c_function, "ok", 1) == 3
    with pytest.raises(UblkError, match=r"^io_uring_submit failed: EBUSY "):
        checked("io_uring_submit", fake_c_function, "busy")
    assert calls == [("ok", 1), ("busy",)]
