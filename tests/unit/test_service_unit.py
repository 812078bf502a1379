"""The shipped unit (gadget_ref/systemd/ublk-gadget@.service): systemd's own parser accepts it,
its commands are ones the gadget's command line takes, and they agree on the state file.

Running the unit's commands on the real driver under a notify-socket listener is
tests/kernel/test_service.py.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ublk_gadget import unitfile
from ublk_gadget.cli import build_parser
from ublk_gadget.daemon import CONTROL_PATH

HAVE_DRIVER = os.path.exists(CONTROL_PATH)


def service_section() -> dict[str, list[str]]:
    """Each key of [Service] with its values, in order (a key may repeat)."""
    section: dict[str, list[str]] = {}
    current = ""
    for line in unitfile.text(unitfile.UNIT).splitlines():
        if line.startswith("["):
            current = line
        elif current == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            section.setdefault(key, []).append(value)
    return section


def example_devices() -> list[str]:
    """$DEVICES of the example configuration, split as systemd splits an unquoted $VAR."""
    [line] = [ln for ln in unitfile.text(unitfile.EXAMPLE_CONFIG).splitlines()
              if ln.startswith("DEVICES=")]
    return shlex.split(shlex.split(line.partition("=")[2])[0])


def command(key: str) -> list[str]:
    """The unit's ``key`` command as the gadget's arguments, $DEVICES from the example."""
    [value] = service_section()[key]
    words = shlex.split(value)
    assert words[0] == unitfile.SHIPPED_COMMAND
    expanded: list[str] = []
    for word in words[1:]:
        expanded += example_devices() if word == "$DEVICES" else [word]
    return expanded


def test_the_unit_is_a_notify_service_that_hears_its_successors() -> None:
    service = service_section()
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["all"]  # the successor is not the process systemd started
    assert service["Restart"] == ["on-failure"]
    assert service["RuntimeDirectoryPreserve"] == ["yes"]


def test_start_and_reload_name_the_same_state_file_in_the_runtime_directory() -> None:
    start = build_parser().parse_args(command("ExecStart"))
    reload = build_parser().parse_args(command("ExecReload"))
    assert (start.command, start.adopt_or_create, reload.command) == ("serve", True, "reload")
    assert start.device == example_devices()[1::2]
    assert start.state_file == reload.state_file
    [runtime] = service_section()["RuntimeDirectory"]
    assert os.path.dirname(start.state_file) == f"%t/{runtime}"


def test_systemd_accepts_the_rendered_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze here")
    (tmp_path / unitfile.UNIT).write_text(unitfile.render(unitfile.text(unitfile.UNIT)))
    instance = tmp_path / "ublk-gadget@disk0.service"
    instance.symlink_to(unitfile.UNIT)
    result = subprocess.run([analyze, "verify", "--man=no", str(instance)], capture_output=True,
                            text=True, timeout=120)
    # Unknown keys and bad values are only warnings on stderr; a command that is not
    # executable is an error.
    assert (result.returncode, result.stderr) == (0, "")


def test_rendering_names_this_installation_in_every_command_and_nowhere_else() -> None:
    shipped = unitfile.text(unitfile.UNIT)
    rendered = unitfile.render(shipped, "/opt/ublk gadget/bin/python%3")
    ours = '"/opt/ublk gadget/bin/python%%3" -m ublk_gadget'
    changed = [(a, b) for a, b in zip(shipped.splitlines(), rendered.splitlines()) if a != b]
    assert {a.partition("=")[0] for a, _ in changed} == {"ExecStart", "ExecReload"}
    assert all(b == a.replace(unitfile.SHIPPED_COMMAND, ours) for a, b in changed)


def test_systemd_unit_prints_the_rendered_unit_and_the_example() -> None:
    def gadget(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "ublk_gadget", *args], check=True,
                              capture_output=True, text=True, timeout=60).stdout

    assert gadget("systemd-unit") == unitfile.render(unitfile.text(unitfile.UNIT))
    assert gadget("systemd-unit", "--example-config") == unitfile.text(unitfile.EXAMPLE_CONFIG)


def gadget_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ublk_gadget", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.skipif(HAVE_DRIVER, reason="this host has the ublk driver")
def test_adopt_or_create_adopts_when_a_state_file_exists(tmp_path: Path) -> None:
    """With a state file the devices are adopted and --device is not even opened (the missing
    backing file is no error: the adoption reaches /dev/ublk-control first); without one
    they are created, so the missing file is the error."""
    state = tmp_path / "state"
    state.write_text("{}")
    missing = f"file,path={tmp_path}/absent.img"
    adopting = gadget_run("serve", "--adopt-or-create", "--state-file", str(state),
                          "--device", missing)
    assert adopting.returncode == 1, adopting.stderr
    assert "ublk_drv is not loaded" in adopting.stderr
    state.unlink()
    creating = gadget_run("serve", "--adopt-or-create", "--state-file", str(state),
                          "--device", missing)
    assert creating.returncode == 2, creating.stderr
    assert "absent.img: no such file" in creating.stderr


@pytest.mark.parametrize("args", [
    ("serve", "--adopt-or-create", "--device", "mem,size=1M"),
    ("serve", "--adopt-or-create", "--state-file", "/run/x.state"),
    ("serve", "--adopt-or-create", "--adopt", "--state-file", "/run/x.state"),
])
def test_adopt_or_create_needs_both_a_state_file_and_devices(args: tuple[str, ...]) -> None:
    result = gadget_run(*args)
    assert result.returncode == 2
    assert "--adopt-or-create needs --state-file PATH and --device" in result.stderr


def test_a_spec_typo_fails_even_when_the_devices_would_be_adopted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("{}")
    result = gadget_run("serve", "--adopt-or-create", "--state-file", str(state),
                        "--device", "disk,size=1M")
    assert result.returncode == 2 and "unknown target 'disk'" in result.stderr


def test_reload_without_a_state_file_starts_nothing(tmp_path: Path) -> None:
    result = gadget_run("reload", "--state-file", str(tmp_path / "none"))
    assert result.returncode == 2
    assert result.stderr.strip().endswith("no state file (nothing was handed over)")
    assert result.stdout == ""


def test_ready_fd_must_be_an_open_descriptor() -> None:
    result = gadget_run("serve", "--device", "null,size=1M", "--ready-fd", "97")
    assert result.returncode == 2 and "97 is not an open file descriptor" in result.stderr
