"""The VM: qemu's command line, the files that tell the guest's init what to run, and the run.

Software emulation only: KVM on these hosts fails on modern guest kernels (see
docs and the team's kernel-testbed notes).  The host's ``/`` is the guest's root, read-only over
9p, so the guest runs this machine's Python, venv and tools unchanged.  Three 9p shares:
``hostroot`` (/, read-only), ``testbedout`` (the checkout's .out/, writable, at the same path),
``testbedctl`` (a per-run host directory: the command in, its exit status out; the command
never sees it).  The serial console is qemu's stdout, so the command's output streams live.
With ``disk``, a host file is the guest's ``/dev/vda`` (testbed.disk).
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

from . import TestbedError
from . import disk as disks
from .kernel import Kernel

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_TESTBED = 125  # the test bed failed, not the command

# The guest's /tmp, /run and /dev/shm are fresh tmpfs: host paths there are hidden in the guest,
# except the working directory, which the guest binds back over its tmpfs (a CI clone may live
# in /tmp).
GUEST_TMPFS = (Path("/tmp"), Path("/run"), Path("/dev/shm"))


def _virtfs(path: Path, tag: str, readonly: bool = False) -> list[str]:
    opts = f"local,path={path},mount_tag={tag},security_model=passthrough,multidevs=remap"
    return ["-virtfs", opts + (",readonly=on" if readonly else "")]


def command(
    kernel: Kernel, initramfs: Path, out: Path, ctl: Path, disk: Path | None = None
) -> list[str]:
    """qemu's argv: 2 vCPUs under TCG, 3 GiB, no devices but the console, the shares and
    ``disk`` (a host file, as virtio-blk) if given."""
    return [
        "qemu-system-x86_64",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "3G",
        "-kernel", str(kernel.vmlinuz),
        "-initrd", str(initramfs),
        # panic=-1: a guest panic reboots, which -no-reboot turns into qemu's exit;
        # no_timer_check: under a loaded TCG host the IO-APIC timer check fails spuriously.
        "-append", "console=ttyS0 quiet panic=-1 no_timer_check",
        "-chardev", "stdio,id=console,signal=off",
        "-serial", "chardev:console",
        *_virtfs(Path("/"), "hostroot", readonly=True),
        *_virtfs(out, "testbedout"),
        *_virtfs(ctl, "testbedctl"),
        *(disks.qemu_args(disk) if disk else []),
    ]  # fmt: skip


def guest_script(
    cwd: Path, env: Mapping[str, str], argv: Sequence[str], disk: str = ""
) -> str:
    """The shell script the guest runs chrooted: ``argv`` in ``cwd`` with exactly ``env``;
    with ``disk``, only once that block device is there (the test bed promised it)."""
    assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
    cd = f"cd {shlex.quote(str(cwd))} || exit {EXIT_TESTBED}"
    check = ""
    if disk:
        q = shlex.quote(disk)
        why = shlex.quote(f"testbed: no block device {disk} although a disk is attached")
        check = f"[ -b {q} ] || {{ echo {why} >&2; exit {EXIT_TESTBED}; }}\n"
    return f"{check}{cd}\nexec env -i {assigns} {shlex.join(argv)}\n"


def under_guest_tmpfs(path: Path) -> Path | None:
    """The guest tmpfs mount that hides ``path``, if any."""
    for hidden in GUEST_TMPFS:
        if path == hidden or hidden in path.parents:
            return hidden
    return None


def check_visible(path: Path, what: str, cwd: Path) -> None:
    """Refuse, before a slow boot, a host path the guest cannot see: one under its tmpfs
    mounts, unless inside the working directory ``cwd``, which the guest's init binds back
    (a tmpfs mount point itself cannot be: the guest needs it writable)."""
    hidden = under_guest_tmpfs(path)
    if hidden is None:
        return
    if cwd != hidden and under_guest_tmpfs(cwd) is not None and (path == cwd or cwd in path.parents):
        return
    raise TestbedError(f"{what} {path} is under {hidden}, which is a fresh tmpfs in the guest")


def boot_env(out: Path, cwd: Path) -> str:
    """Variables for the guest's init: the writable share's path, and the working directory to
    bind back over the guest's tmpfs when it lives there."""
    keep = cwd if under_guest_tmpfs(cwd) is not None else ""
    return f"TESTBED_OUT={shlex.quote(str(out))}\nTESTBED_KEEP={shlex.quote(str(keep))}\n"


def run(
    kernel: Kernel,
    initramfs: Path,
    out: Path,
    cwd: Path,
    env: Mapping[str, str],
    argv: Sequence[str],
    timeout: float,
    disk: Path | None = None,
) -> int:
    """Boot, run ``argv`` in the guest, return its exit status (or EXIT_TIMEOUT, EXIT_TESTBED).
    ``disk``: a host file (testbed.disk.image) the guest gets as ``/dev/vda``."""
    check_visible(cwd, "working directory", cwd)
    check_visible(out, "output directory", cwd)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="testbed-ctl-") as tmp:
        ctl = Path(tmp)
        (ctl / "boot.env").write_text(boot_env(out, cwd))
        (ctl / "cmd.sh").write_text(guest_script(cwd, env, argv, disks.GUEST_PATH if disk else ""))
        with disks.in_use(disk) if disk else nullcontext():
            sys.stdout.flush()
            argv_qemu = command(kernel, initramfs, out, ctl, disk)
            qemu = subprocess.Popen(argv_qemu, stdin=subprocess.DEVNULL)
            try:
                rc = qemu.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"\ntestbed: timed out after {timeout:g} s: killed qemu", file=sys.stderr)
                return EXIT_TIMEOUT
            finally:
                if qemu.poll() is None:
                    qemu.send_signal(signal.SIGKILL)
                    qemu.wait()
        status = ctl / "status"
        if rc != 0:
            print(f"testbed: qemu exited with status {rc}", file=sys.stderr)
            return EXIT_TESTBED
        if not status.exists():
            print(
                "testbed: the guest stopped without running the command to its end (console above)",
                file=sys.stderr,
            )
            return EXIT_TESTBED
        return int(status.read_text())
