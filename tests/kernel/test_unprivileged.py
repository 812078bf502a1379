"""``ublk-gadget serve`` as a user without root (UBLK_F_UNPRIVILEGED_DEV), on the real driver.

The VM has no udev and no user database: devtmpfs makes every node root's, mode 0600.  So this
module stands in for udev, with the rule the gadget ships (``ublk-gadget udev-rule``, parsed
here, so the test and the rule cannot drift): /dev/ublk-control goes to the rule's group, and a
thread gives each new /dev/ublkcN and /dev/ublkbN to whoever the rule's PROGRAM (``ublk-gadget
udev-owner %k``) names.  The users are numbers: OWNER serves, OTHER is a second user of the
same group (so it may open /dev/ublk-control: the kernel, not the node, must stop it).
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from ublk_bindings import UBLK_F_UNPRIVILEGED_DEV, UBLK_F_USER_RECOVERY, UBLK_S_DEV_LIVE
from ublk_bindings.ctrl import CONTROL_PATH, Control
from ublk_gadget.owner import ProcessIdentity
from ublk_gadget.spec import parse_spec
from ublk_gadget.state import DaemonState, DeviceState, write_state
from test_gadget import Gadget, assert_verified, run

pytestmark = pytest.mark.ublk

MiB = 1 << 20
GROUP = 2000  # stands for the rule's group ("ublk"), which the VM has no name for
OWNER = 2001
OTHER = 2002
RULE_GROUP_NAMES = {"ublk": GROUP}
USER_PYTHON = "/usr/bin/python3"
"""The users' interpreter: the test's own lives under /root (0700 on the host)."""
GADGET = [USER_PYTHON, "-m", "ublk_gadget"]
REPO = Path(__file__).resolve().parents[2]

_ASSIGNMENT = re.compile(r'([A-Z]+)(?:\{[^}]*\})?\s*(==|!=|\+=|:=|=)\s*"([^"]*)"')


def rule_lines() -> list[list[tuple[str, str, str]]]:
    """The rule as ``udev-rule`` prints it: each rule a list of (key, operator, value)."""
    text = subprocess.run([sys.executable, "-m", "ublk_gadget", "udev-rule"],
                          capture_output=True, text=True, check=True).stdout
    return [_ASSIGNMENT.findall(line) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _value(rule: list[tuple[str, str, str]], key: str, op: str = "=") -> str | None:
    return next((v for k, o, v in rule if k == key and o == op), None)


class FakeUdev:
    """What udev would do with the shipped rule, for the nodes that appear while it runs."""

    def __init__(self) -> None:
        self.rules = rule_lines()
        self.applied: dict[str, tuple[int, int, int]] = {}
        self.failed: dict[str, str] = {}
        self._stop = threading.Event()
        self._seen: set[str] = set()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _matching(self, name: str) -> list[tuple[str, str, str]] | None:
        for rule in self.rules:
            kernel = _value(rule, "KERNEL", "==")
            if kernel is not None and fnmatch.fnmatchcase(name, kernel):
                return rule
        return None

    def control(self) -> None:
        rule = self._matching("ublk-control")
        assert rule is not None, "the rule gives /dev/ublk-control to nobody"
        group, mode = _value(rule, "GROUP"), _value(rule, "MODE")
        assert group in RULE_GROUP_NAMES and mode is not None
        os.chown(CONTROL_PATH, 0, RULE_GROUP_NAMES[group])
        os.chmod(CONTROL_PATH, int(mode, 8))

    def _apply(self, name: str) -> None:
        rule = self._matching(name)
        assert rule is not None, f"no rule for {name}"
        program = _value(rule, "PROGRAM")
        assert program is not None
        done = subprocess.run(shlex.split(program.replace("%k", name)), capture_output=True,
                              text=True, timeout=60)
        if done.returncode != 0:  # a privileged device: the rule does not apply
            self.failed[name] = done.stderr
            return
        fields = done.stdout.split()
        owner_v, group_v, mode_v = _value(rule, "OWNER"), _value(rule, "GROUP"), _value(rule, "MODE")
        assert owner_v == "%c{1}" and group_v == "%c{2}" and mode_v is not None
        uid, gid, mode = int(fields[0]), int(fields[1]), int(mode_v, 8)
        path = f"/dev/{name}"
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        self.applied[name] = (uid, gid, mode)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            names = {os.path.basename(p) for p in glob.glob("/dev/ublk[bc]*")}
            for name in sorted(names - self._seen):
                self._seen.add(name)
                try:
                    self._apply(name)
                except (OSError, subprocess.SubprocessError) as e:
                    self.failed[name] = str(e)
            self._seen &= names  # a number deleted and reused is a new node

    def __enter__(self) -> FakeUdev:
        self.control()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        os.chown(CONTROL_PATH, 0, 0)
        os.chmod(CONTROL_PATH, 0o600)


@pytest.fixture
def udev() -> Iterator[FakeUdev]:
    with FakeUdev() as fake:
        yield fake


def home_of(uid: int) -> str:
    """A private HOME and XDG_RUNTIME_DIR (0700) for ``uid``; /tmp is the guest's tmpfs."""
    path = tempfile.mkdtemp(prefix=f"unpriv-{uid}-", dir="/tmp")
    os.chown(path, uid, uid)
    return path


def as_user(uid: int) -> Callable[[], None]:
    """preexec_fn: become ``uid`` (its own gid, and GROUP for /dev/ublk-control), no caps."""
    def become() -> None:
        os.setgroups([GROUP])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    return become


@functools.cache
def user_lib() -> str:
    """What a user may read of this installation: the packages (linked from the work tree,
    which is world-readable) and liburing-ffi (copied out of root's cache)."""
    lib = tempfile.mkdtemp(prefix="unpriv-lib-", dir="/tmp")
    os.chmod(lib, 0o755)
    os.symlink(REPO / "ublk_bindings", os.path.join(lib, "ublk_bindings"))
    os.symlink(REPO / "gadget_ref", os.path.join(lib, "ublk_gadget"))
    liburing = os.environ["UBLK_BINDINGS_LIBURING"]
    shutil.copy(liburing, os.path.join(lib, os.path.basename(liburing)))
    return lib


def user_env(home: str) -> dict[str, str]:
    lib = user_lib()
    liburing = os.path.join(lib, os.path.basename(os.environ["UBLK_BINDINGS_LIBURING"]))
    return {"HOME": home, "XDG_RUNTIME_DIR": home, "PYTHONPATH": lib,
            "UBLK_BINDINGS_LIBURING": liburing, "PYTHONDONTWRITEBYTECODE": "1"}


class UserGadget(Gadget):
    def __init__(self, uid: int, home: str, *specs: str, state_file: str | None = None) -> None:
        super().__init__(*specs, state_file=state_file, preexec_fn=as_user(uid))
        self.args[:3] = GADGET
        self.env = user_env(home)


def as_user_run(uid: int, home: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          preexec_fn=as_user(uid), env={**os.environ, **user_env(home)})


def wait_owned(path: str, uid: int, timeout: float = 30.0) -> os.stat_result:
    deadline = time.monotonic() + timeout
    while True:
        st = os.stat(path)
        if st.st_uid == uid or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def dev_id_of(g: Gadget) -> int:
    return int(g.devices[0]["dev_id"])


# --- a user serves a device -------------------------------------------------------------------

def test_a_user_serves_an_unprivileged_device_that_fio_verifies(udev: FakeUdev) -> None:
    home = home_of(OWNER)
    with UserGadget(OWNER, home, "mem,size=8M,queues=2,depth=16") as g:
        d = g.devices[0]
        dev_id = dev_id_of(g)
        assert "UBLK_F_UNPRIVILEGED_DEV" in d["flags"] and d["buffers"] == "copy"
        assert "UBLK_F_USER_RECOVERY" not in d["flags"]  # the kernel cleared it (privilege.py)
        for node in (f"/dev/ublkc{dev_id}", f"/dev/ublkb{dev_id}"):
            st = wait_owned(node, OWNER)
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OWNER, OWNER, 0o600), node
        with Control(timeout=30) as ctrl:
            info = ctrl.get_dev_info2(dev_id)
        assert (info.owner_uid, info.owner_gid) == (OWNER, OWNER)
        assert info.flags & UBLK_F_UNPRIVILEGED_DEV and info.state == UBLK_S_DEV_LIVE
        # The owner itself writes and verifies its block device; and lists it.
        fio = as_user_run(OWNER, home, "fio", "--name=verify", f"--filename={g.dev()}",
                          "--ioengine=libaio", "--direct=1", "--rw=randwrite", "--bs=4k",
                          "--iodepth=16", "--size=8M", "--verify=crc32c", "--do_verify=1",
                          "--verify_fatal=1", "--output-format=json")
        assert fio.returncode == 0, fio.stderr
        assert_verified(fio, 8 * MiB)
        listed = as_user_run(OWNER, home, *GADGET, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert dev_id in [row["dev_id"] for row in json.loads(listed.stdout)["devices"]]
    assert not udev.failed, udev.failed
    assert glob.glob("/dev/ublk[bc]*") == []  # its owner stopped and deleted it (SIGTERM)


# --- what the kernel refuses an unprivileged device -------------------------------------------

ADD_DEV_PROBE = """
import json, os, time
from ublk_bindings import (UBLK_F_UNPRIVILEGED_DEV, UBLK_F_USER_RECOVERY,
                           UBLK_F_USER_RECOVERY_REISSUE, UBLK_F_USER_COPY)
from ublk_bindings.ctrl import Control, char_dev_path
from ublk_gadget.device import dev_info_request
from ublk_gadget.spec import parse_spec
out = {}
spec = parse_spec("null,size=1M")
with Control(timeout=30) as c:
    asked = UBLK_F_UNPRIVILEGED_DEV | UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE
    info = c.add_dev(dev_info_request(spec, asked, 1 << 20))
    out["flags"] = int(info.flags)
    out["owner"] = [int(info.owner_uid), int(info.owner_gid)]
    deadline = time.monotonic() + 30
    while not os.access(char_dev_path(info.dev_id), os.R_OK | os.W_OK):  # udev's chown
        assert time.monotonic() < deadline, "the node never became ours"
        time.sleep(0.02)
    c.del_dev(info.dev_id)
    try:
        c.add_dev(dev_info_request(spec, UBLK_F_UNPRIVILEGED_DEV | UBLK_F_USER_COPY, 1 << 20))
        out["user_copy"] = "added"
    except OSError as e:
        out["user_copy"] = str(e)
    try:
        c.add_dev(dev_info_request(spec, 0, 1 << 20))
        out["privileged"] = "added"
    except OSError as e:
        out["privileged"] = str(e)
print(json.dumps(out))
"""


def test_the_kernel_gives_an_unprivileged_device_no_recovery_and_no_user_copy(
        udev: FakeUdev) -> None:
    home = home_of(OWNER)
    probe = as_user_run(OWNER, home, USER_PYTHON, "-c", ADD_DEV_PROBE)
    assert probe.returncode == 0, probe.stderr
    out = json.loads(probe.stdout)
    assert out["owner"] == [OWNER, OWNER]
    assert out["flags"] & UBLK_F_UNPRIVILEGED_DEV
    assert not out["flags"] & UBLK_F_USER_RECOVERY  # asked for, silently cleared
    assert out["user_copy"] == "ADD_DEV failed: EINVAL (Invalid argument)"
    assert out["privileged"] == "ADD_DEV failed: EPERM (Operation not permitted)"
    # The gadget says so before any device exists ...
    refused = as_user_run(OWNER, home, *GADGET, "serve", "--device", "null,size=1M,buffers=user-copy")
    assert refused.returncode == 2
    assert "buffers=user-copy is not available to an unprivileged server" in refused.stderr
    assert "EINVAL" in refused.stderr
    # ... and a state file, which is only there for a handover, is refused once ADD_DEV
    # shows no recovery: the device it made is deleted, nothing is left.
    state = os.path.join(home, "ublk.state")
    handover = as_user_run(OWNER, home, *GADGET, "serve", "--state-file", state,
                           "--device", "mem,size=4M")
    assert handover.returncode == 2, handover.stderr
    assert "--state-file: /dev/ublkb" in handover.stderr
    assert "no user recovery" in handover.stderr and "UBLK_F_USER_RECOVERY" in handover.stderr
    assert not os.path.exists(state)
    assert glob.glob("/dev/shm/ublk-gadget-mem.*") == []
    assert glob.glob("/dev/ublk[bc]*") == []


# --- another user -----------------------------------------------------------------------------

OTHER_USER_PROBE = """
import json, os, sys
from ublk_bindings.ctrl import Control
dev_id = int(sys.argv[1])
out = {}
with Control(timeout=30) as c:
    try:
        c.get_dev_info2(dev_id)
        out["GET_DEV_INFO2"] = "succeeded"
    except OSError as e:
        out["GET_DEV_INFO2"] = str(e)
    c.send_dev_path(dev_id)  # it is unprivileged: ask as its owner would
    for name, command in (("STOP_DEV", c.stop_dev), ("DEL_DEV", c.del_dev),
                          ("START_USER_RECOVERY", c.start_user_recovery)):
        try:
            command(dev_id)
            out[name] = "succeeded"
        except OSError as e:
            out[name] = str(e)
for node in (f"/dev/ublkc{dev_id}", f"/dev/ublkb{dev_id}"):
    try:
        os.close(os.open(node, os.O_RDWR))
        out[node] = "opened"
    except OSError as e:
        out[node] = e.strerror
print(json.dumps(out))
"""


def state_of(g: Gadget, path: str, mode: int) -> None:
    """The state file a handover would need for ``g``'s device, owned by its owner."""
    spec = parse_spec(g.args[g.args.index("--device") + 1]).with_size(int(g.devices[0]["size"]))
    with Control(timeout=30) as ctrl:
        flags = int(ctrl.get_dev_info2(dev_id_of(g)).flags)
    write_state(path, DaemonState(owner=ProcessIdentity.of(g.proc.pid),
                                  devices=(DeviceState.of(dev_id_of(g), spec, flags),)))
    os.chown(path, OWNER, OWNER)
    os.chmod(path, mode)


def test_another_user_can_neither_take_over_nor_stop_the_device(udev: FakeUdev) -> None:
    home, other_home = home_of(OWNER), home_of(OTHER)
    with UserGadget(OWNER, home, "null,size=8M") as g:
        dev_id = dev_id_of(g)
        wait_owned(f"/dev/ublkc{dev_id}", OWNER)
        wait_owned(f"/dev/ublkb{dev_id}", OWNER)
        probe = as_user_run(OTHER, other_home, USER_PYTHON, "-c", OTHER_USER_PROBE,
                            str(dev_id))
        assert probe.returncode == 0, probe.stderr
        out = json.loads(probe.stdout)
        for command in ("GET_DEV_INFO2", "STOP_DEV", "DEL_DEV", "START_USER_RECOVERY"):
            assert out[command] == f"{command} failed: EACCES (Permission denied)", out
        assert out[f"/dev/ublkc{dev_id}"] == out[f"/dev/ublkb{dev_id}"] == "Permission denied"

        # A second process of the owner cannot adopt it either: the kernel would not recover it.
        private = os.path.join(home, "ublk.state")
        state_of(g, private, 0o600)
        same_user = as_user_run(OWNER, home, *GADGET, "serve", "--adopt", "--state-file", private,
                                "--adopt-deadline", "10s")
        assert same_user.returncode == 1, same_user.stderr
        assert "cannot be adopted" in same_user.stderr and "no user recovery" in same_user.stderr

        # The other user, given the owner's state file: not readable, then not trusted.
        refused = as_user_run(OTHER, other_home, *GADGET, "serve", "--adopt", "--state-file",
                              private)
        assert refused.returncode == 2, refused.stderr
        assert "cannot take the adoption lock: Permission denied" in refused.stderr
        readable = f"/tmp/unpriv-state-{dev_id}.json"  # /tmp: sticky, so the lock can be made
        state_of(g, readable, 0o644)
        refused = as_user_run(OTHER, other_home, *GADGET, "serve", "--adopt", "--state-file",
                              readable)
        assert refused.returncode == 2, refused.stderr
        assert f"owned by uid {OWNER}, not by this user ({OTHER})" in refused.stderr

        # Through all of it the owner served on, undisturbed.
        assert g.proc.poll() is None
        with Control(timeout=30) as ctrl:
            info = ctrl.get_dev_info2(dev_id)
        assert info.state == UBLK_S_DEV_LIVE and info.ublksrv_pid == g.proc.pid
        run("dd", "if=/dev/zero", f"of={g.dev()}", "bs=64k", "count=16", "oflag=direct")
        run("dd", f"if={g.dev()}", "of=/dev/null", "bs=64k", "count=16", "iflag=direct")
        os.unlink(readable)
    assert g.proc.returncode == 0
    assert glob.glob("/dev/ublk[bc]*") == []


def test_without_the_udev_rule_the_user_is_told_why() -> None:
    """No rule: /dev/ublk-control is root's, and the message says what to install."""
    home = home_of(OWNER)
    denied = as_user_run(OWNER, home, *GADGET, "serve", "--device", "null,size=1M")
    assert denied.returncode == 1
    assert "not permitted to open /dev/ublk-control (EACCES)" in denied.stderr
    assert "udev-rule" in denied.stderr
