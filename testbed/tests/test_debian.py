"""Version ordering and failure messages of the private apt layer."""

from __future__ import annotations

import subprocess

from testbed import describe
from testbed.debian import newest


def test_newest_follows_dpkg_not_string_order() -> None:
    assert newest(["6.9.12-1", "6.12.117-1", "6.12.9-1"]) == "6.12.117-1"
    assert newest(["7.2.13-1", "7.2.13-1+b1", "7.2~rc7-1"]) == "7.2.13-1+b1"


def test_a_failed_apt_call_reads_as_tool_and_action() -> None:
    cmd = [
        "apt-get",
        "-o",
        "Dir::Cache=/x",
        "-o",
        "Debug::NoLocking=1",
        "update",
        "-q",
        "--error-on=any",
    ]
    assert (
        describe(subprocess.CalledProcessError(100, cmd)) == "apt-get update exited with status 100"
    )
    assert (
        describe(LookupError("liburing2: no version in Debian sid"))
        == "liburing2: no version in Debian sid"
    )
