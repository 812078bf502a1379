"""The command the guest runs: exactly the argv, environment and directory asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import TestbedError
from testbed.__main__ import _parse_env
from testbed.qemu import boot_env, check_visible, guest_script


def test_guest_script_runs_argv_in_cwd_with_only_the_given_env(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "ODD": 'it\'s "quoted" $HOME `x` ;', "EMPTY": ""}
    probe = "import json, os, sys; print(json.dumps([os.getcwd(), sys.argv[1:], dict(os.environ)]))"
    argv = [sys.executable, "-c", probe, "two words", "$NOT_EXPANDED", "*"]
    script = guest_script(tmp_path, env, argv)
    done = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, check=True, env={"HOST": "leak"}
    )
    cwd, args, seen = json.loads(done.stdout)
    assert cwd == str(tmp_path)
    assert args == ["two words", "$NOT_EXPANDED", "*"]
    assert {k: v for k, v in seen.items() if k != "LC_CTYPE"} == env  # python may add LC_CTYPE


def test_guest_script_fails_with_the_testbed_status_when_cwd_is_missing(tmp_path: Path) -> None:
    done = subprocess.run(
        ["sh", "-c", guest_script(tmp_path / "gone", {}, ["true"])], capture_output=True
    )
    assert done.returncode == 125


@pytest.mark.parametrize("path", ["/tmp/other/.out", "/run/x", "/dev/shm/y"])
def test_paths_under_the_guests_tmpfs_are_refused_before_booting(path: str) -> None:
    with pytest.raises(TestbedError, match="fresh tmpfs in the guest"):
        check_visible(Path(path), "output directory", Path("/work/main"))
    with pytest.raises(TestbedError, match="fresh tmpfs in the guest"):
        check_visible(Path(path), "output directory", Path("/tmp/checkout"))


def test_a_tmpfs_mount_point_cannot_be_the_working_directory() -> None:
    with pytest.raises(TestbedError, match="/tmp is under /tmp"):
        check_visible(Path("/tmp"), "working directory", Path("/tmp"))


def test_a_working_directory_under_tmp_is_bound_back_with_what_is_inside_it() -> None:
    cwd = Path("/tmp/checkout")
    check_visible(cwd, "working directory", cwd)
    check_visible(cwd / ".out", "output directory", cwd)
    assert "TESTBED_KEEP=/tmp/checkout\n" in boot_env(cwd / ".out", cwd)


def test_paths_elsewhere_are_fine() -> None:
    check_visible(Path("/work/main"), "working directory", Path("/work/main"))
    check_visible(Path("/tmpfoo"), "working directory", Path("/tmpfoo"))
    assert "TESTBED_KEEP=''\n" in boot_env(Path("/work/main/.out"), Path("/work/main"))


def test_env_options_are_key_value_pairs() -> None:
    assert _parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(TestbedError, match="expected KEY=VALUE"):
        _parse_env(["NOEQUALS"])
