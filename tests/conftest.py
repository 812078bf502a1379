"""What the ``ublk`` marker means: the test needs the real driver, and leaves no device behind.

Without ``/dev/ublk-control`` a ``ublk`` test is skipped with the reason, except under
``UBLK_REQUIRE_DRIVER=1`` (set by ``python -m testbed run``), where a missing driver fails the
test: the VM must never pass by skipping.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CONTROL = Path("/dev/ublk-control")
DEV = Path("/dev")


def _driver_required() -> bool:
    return os.environ.get("UBLK_REQUIRE_DRIVER") == "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("ublk") is None or CONTROL.exists():
        return
    if _driver_required():
        pytest.fail(
            f"UBLK_REQUIRE_DRIVER=1 but {CONTROL} is missing: is ublk_drv loaded?", pytrace=False
        )
    pytest.skip(f"{CONTROL} missing: no ublk driver here (the VM has one: make test)")


_skipped_ublk: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "ublk" in report.keywords and _driver_required():
        _skipped_ublk.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Where the driver is required (the VM, CI), a skipped ``ublk`` test fails the run."""
    if _skipped_ublk and exitstatus == pytest.ExitCode.OK:
        skipped = ", ".join(_skipped_ublk)
        print(f"\nUBLK_REQUIRE_DRIVER=1, yet {len(_skipped_ublk)} ublk test(s) skipped: {skipped}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def ublk_devices() -> list[str]:
    """Every ublk device node: per-device char devices (ublkcN) and block devices (ublkbN)."""
    return sorted(p.name for pattern in ("ublkc*", "ublkb*") for p in DEV.glob(pattern))


@pytest.fixture(autouse=True)
def no_ublk_devices_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a ``ublk`` test, passing or failing, no /dev/ublkc* or /dev/ublkb* may remain.

    A leftover device would make the next test's results (device ids, ENODEV checks) depend on
    this one's, so the test that left it errors here with the list.
    """
    yield
    if request.node.get_closest_marker("ublk") is None:
        return
    left = ublk_devices()
    if left:
        problems = remove_devices(left)
        pytest.fail(
            f"ublk devices left after the test: {', '.join(left)}"
            + "".join(f"; cleanup: {p}" for p in problems),
            pytrace=False,
        )


def remove_devices(names: list[str]) -> list[str]:
    """STOP_DEV and DEL_DEV every device of ``names`` so that the next test starts clean;
    returns what went wrong (a device still held by a leaked server times out)."""
    import errno

    from ublk_bindings.ctrl import Control
    from ublk_bindings.errors import UblkError

    problems: list[str] = []
    try:
        with Control(timeout=30) as ctrl:
            for dev_id in sorted({int(n[5:]) for n in names if n[5:].isdigit()}):
                try:
                    ctrl.stop_dev(dev_id)  # a leaked server's queues get ABORT and end
                    _close_own_fds(f"/dev/ublkc{dev_id}")  # else DEL_DEV waits for them
                    ctrl.del_dev(dev_id)
                except UblkError as e:
                    if e.errno != errno.ENODEV:
                        problems.append(str(e))
    except OSError as e:
        problems.append(str(e))
    return problems


def _close_own_fds(path: str) -> None:
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(fd) == path:
                os.close(int(fd.name))
        except OSError:
            pass


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Orphans come to this process, as to a service manager: a reload's successor, an old
    owner (tests of the systemd service, on the host and in the VM)."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
