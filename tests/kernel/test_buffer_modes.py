"""Every buffer mode the gadget serves, on the real driver: data verified, handed over, and
refused clearly where the kernel lacks it.

``copy``: the driver copies to and from the gadget's buffers.  ``user-copy``
(UBLK_F_USER_COPY, Linux 6.5+): the gadget copies with pread/pwrite on /dev/ublkcN.
``auto-zc`` (UBLK_F_AUTO_BUF_REG, 6.16+): the driver registers each request's pages in the
queue ring's buffer table and the file target reads and writes them with fixed-buffer SQEs;
the data never enters the process.  ``batch`` (UBLK_F_BATCH_IO, 7.0+): copy-mode data, but
the tags travel in per-queue batch commands (PREP/FETCH/COMMIT_IO_CMDS, the batch engine).
Linux 7.2 has them all; 6.12 has copy and user copy, and must refuse zero copy, auto-zc and
batch before any device exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_gadget import (
    Gadget,
    assert_verified,
    backing_file,
    ext4_round_trip,
    fio_verify,
    flush_discard_and_write_zeroes,
    run,
)
from test_handover import (
    Fio,
    Owner,
    Successor,
    finish,
    hand_over,
    io_errors,
    kernel_log,
    no_gadget_left_running,
    state_file,
)

from ublk_bindings.ctrl import Control
from ublk_bindings.ublk_cmd import (
    UBLK_F_AUTO_BUF_REG,
    UBLK_F_BATCH_IO,
    UBLK_F_SUPPORT_ZERO_COPY,
    UBLK_F_USER_COPY,
)

pytestmark = pytest.mark.ublk

__all__ = ["no_gadget_left_running", "state_file"]  # fixtures, used by name

MiB = 1 << 20
MODES = ("copy", "user-copy", "zero-copy", "auto-zc", "batch")
_FLAG = {"copy": 0, "user-copy": UBLK_F_USER_COPY, "zero-copy": UBLK_F_SUPPORT_ZERO_COPY,
         "auto-zc": UBLK_F_AUTO_BUF_REG, "batch": UBLK_F_BATCH_IO}
SINCE = {"copy": (0, 0), "user-copy": (6, 5), "zero-copy": (6, 15), "auto-zc": (6, 16),
         "batch": (7, 0)}


def kernel_has(mode: str) -> bool:
    with Control() as ctrl:
        return bool((ctrl.features or 0) & _FLAG[mode] == _FLAG[mode])


def assert_refused(mode: str, target: str = "null,size=8M") -> None:
    """The gadget refuses ``mode`` on this kernel: exit 2, the missing flag named, no device."""
    done = subprocess.run([sys.executable, "-m", "ublk_gadget", "serve", "--device",
                           f"{target},buffers={mode}"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    flag = {"user-copy": "UBLK_F_USER_COPY", "zero-copy": "UBLK_F_SUPPORT_ZERO_COPY",
            "auto-zc": "UBLK_F_AUTO_BUF_REG", "batch": "UBLK_F_BATCH_IO"}[mode]
    assert f"buffers={mode} needs {flag}, which this kernel does not offer" in done.stderr
    assert done.stdout == ""
    assert not list(Path("/dev").glob("ublk[bc]*"))


def served_here(mode: str) -> bool:
    """Whether this kernel has ``mode``.  Where it has not, the test becomes the proof that
    the gadget refuses it clearly (and the caller returns)."""
    if kernel_has(mode):
        return True
    assert_refused(mode)
    return False


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bs", ["4k", "128k"])
def test_fio_verify_on_a_file_in_each_mode(tmp_path: Path, mode: str, bs: str) -> None:
    if not served_here(mode):
        return
    img = backing_file(tmp_path, 32 * MiB)
    with Gadget(f"file,path={img},queues=2,depth=32,buffers={mode}") as g:
        assert g.devices[0]["buffers"] == mode
        assert_verified(fio_verify(g.dev(), size=16 * MiB, bs=bs, iodepth=32, jobs=2), 16 * MiB)


@pytest.mark.parametrize("mode", ["copy", "user-copy", "batch"])
def test_fio_verify_on_mem_in_the_modes_that_keep_its_data(mode: str) -> None:
    if not served_here(mode):
        return
    with Gadget(f"mem,size=32M,queues=2,buffers={mode}") as g:
        assert g.devices[0]["buffers"] == mode
        assert_verified(fio_verify(g.dev(), size=16 * MiB, bs="64k", iodepth=16, jobs=2), 16 * MiB)


@pytest.mark.parametrize("mode", MODES)
def test_flush_discard_write_zeroes_and_ext4_in_each_mode(tmp_path: Path, mode: str) -> None:
    if not served_here(mode):
        return
    flush_discard_and_write_zeroes(tmp_path, f",buffers={mode}")
    img = backing_file(tmp_path, 64 * MiB, "ext4.img")
    with Gadget(f"file,path={img},block_size=4096,buffers={mode}") as g:
        ext4_round_trip(g.dev(), tmp_path / "mnt")


@pytest.mark.parametrize("mode", MODES)
def test_a_null_device_serves_every_mode(mode: str) -> None:
    if not served_here(mode):
        return
    with Gadget(f"null,size=64M,buffers={mode}") as g:
        dev = g.dev()
        run("fio", "--name=rw", f"--filename={dev}", "--ioengine=io_uring", "--direct=1",
            "--rw=randrw", "--bs=128k", "--iodepth=16", "--size=32M", "--io_size=64M")


def test_auto_picks_zero_copy_where_the_target_allows_it(tmp_path: Path) -> None:
    img = backing_file(tmp_path, 8 * MiB)
    zc = "auto-zc" if kernel_has("auto-zc") else "copy"
    with Gadget(f"file,path={img}", "null,size=8M", "mem,size=8M") as g:
        assert [d["buffers"] for d in g.devices] == [zc, zc, "copy"]


def test_the_kernel_offers_the_modes_its_version_should() -> None:
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    expected = [m for m in MODES if (major, minor) >= SINCE[m]]
    assert [m for m in MODES if kernel_has(m)] == expected
    for mode in set(MODES) - set(expected):
        assert_refused(mode)


def test_mem_refuses_zero_copy_at_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "ublk_gadget", "serve", "--device",
                           "mem,size=8M,buffers=auto-zc"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "target mem needs the data in userspace" in done.stderr


@pytest.mark.parametrize("mode", MODES)
def test_a_handover_and_a_crash_keep_the_mode_and_lose_nothing(
    tmp_path: Path, state_file: str, mode: str
) -> None:
    if not served_here(mode):
        return
    img = backing_file(tmp_path, 64 * MiB)
    owner: Gadget = Owner(f"file,path={img},queues=2,buffers={mode}",
                          state_file=state_file).__enter__()
    devs = owner.all_devs()
    dmesg = kernel_log()
    fio = Fio(devs, tmp_path)
    try:
        time.sleep(2)
        owner = hand_over(owner, state_file)
        assert owner.devices[0]["buffers"] == mode  # the mode belongs to the device
        fio.still_running()
        time.sleep(2)
        owner.proc.kill()
        assert owner.stop() == -signal.SIGKILL
        owner = Successor(state_file).__enter__()
        assert owner.devices[0]["buffers"] == mode
        fio.still_running()
        fio.finish()
    finally:
        fio.kill()
    finish(owner, state_file)
    assert io_errors(dmesg, devs) == []


@pytest.mark.parametrize("bs", ["4k", "128k"])
def test_batch_serves_reads_and_writes_on_null_and_mem_with_four_queues(bs: str) -> None:
    """The batch engine's own shapes: several queues, a depth past one fetch buffer's 128
    tags, the synchronous mem handler and the null target."""
    if not served_here("batch"):
        return
    with Gadget("mem,size=64M,queues=2,depth=160,buffers=batch",
                "null,size=64M,queues=2,depth=160,buffers=batch") as g:
        assert [d["buffers"] for d in g.devices] == ["batch", "batch"]
        mem, null = g.all_devs()
        assert_verified(fio_verify(mem, size=32 * MiB, bs=bs, iodepth=128, jobs=2), 32 * MiB)
        run("fio", "--name=rw", f"--filename={null}", "--ioengine=io_uring", "--direct=1",
            "--rw=randrw", f"--bs={bs}", "--iodepth=128", "--numjobs=2", "--size=32M",
            "--io_size=64M", "--group_reporting")


def test_batch_is_refused_where_the_kernel_lacks_it() -> None:
    """Where UBLK_F_BATCH_IO is missing (6.12) the refusal names it; on 7.x it is offered."""
    if kernel_has("batch"):
        assert int(os.uname().release.split(".")[0]) >= 7
        return
    for target in ("null,size=8M", "mem,size=8M"):
        assert_refused("batch", target)
