"""``python -m testbed run`` on a host whose own kernel has the driver: no VM, same contract."""

from __future__ import annotations

from pathlib import Path

import pytest

import testbed.__main__ as cli


@pytest.fixture
def host_has_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "CONTROL", Path("/dev/null"))  # exists: stands in for ublk-control
    monkeypatch.setenv("UBLK_BINDINGS_LIBURING", "/opt/liburing-ffi.so.2")  # no fetch


@pytest.mark.usefixtures("host_has_driver")
def test_the_command_runs_here_with_the_driver_required_and_its_status_returned() -> None:
    check = '[ "$UBLK_REQUIRE_DRIVER" = 1 ] && [ "$EXTRA" = "a b" ] && exit 4'
    assert cli.main(["run", "--env", "EXTRA=a b", "--", "sh", "-c", check]) == 4


@pytest.mark.usefixtures("host_has_driver")
def test_a_command_over_its_time_is_stopped_with_timeouts_status() -> None:
    assert cli.main(["run", "--timeout", "0.2", "--", "sleep", "5"]) == 124


def test_no_command_is_a_testbed_error() -> None:
    assert cli.main(["run", "--"]) == 125
