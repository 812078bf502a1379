"""The file target keeps a queue's depth of backing I/Os in flight, on a disk with latency.

The slow disk is the kernel's own null_blk, memory-backed (so data is kept and verified)
with a timer completion of 2 ms per request (``irqmode=2``, ``completion_nsec``): one
request at a time cannot pass 500 IOPS, so a queue that serves one backing I/O at a time
shows at once.  The file target's reads and writes go on the queue's io_uring
(``gadget_ref.targets.file_ring``); a live handover and a crash with those I/Os in flight lose
nothing under fio verify.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_backing_failures import null_blk
from test_gadget import Gadget, assert_verified, fio_verify, run
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

pytestmark = pytest.mark.ublk

__all__ = ["no_gadget_left_running", "state_file"]  # fixtures, used by name

MiB = 1 << 20
LATENCY_NS = 2_000_000


@pytest.fixture
def slow_disk() -> Iterator[str]:
    """A 64 MiB memory-backed null_blk disk that completes every request after 2 ms."""
    with null_blk("slow", size="64", memory_backed="1", blocksize="4096", irqmode="2",
                  completion_nsec=str(LATENCY_NS), hw_queue_depth="128") as dev:
        yield dev


@pytest.fixture
def virtio_disk() -> str:
    """The test bed's real disk (``testbed run --disk``: virtio-blk over a host file)."""
    disk = os.environ.get("UBLK_TESTBED_DISK")
    if not disk:
        if os.environ.get("UBLK_REQUIRE_DRIVER") == "1":
            pytest.fail("no UBLK_TESTBED_DISK: the VM was booted without --disk")
        pytest.skip("no test-bed disk (python -m testbed run --disk SIZE)")
    return disk


@pytest.mark.parametrize("buffers", ["copy", "auto"])
def test_fio_verify_at_depth_on_the_virtio_disk(virtio_disk: str, buffers: str) -> None:
    with Gadget(f"file,path={virtio_disk},queues=1,depth=64,buffers={buffers}") as g:
        assert_verified(fio_verify(g.dev(), size=32 * MiB, bs="4k", iodepth=32, jobs=1),
                        32 * MiB)


def randread_iops(dev: str, iodepth: int, seconds: int = 3) -> float:
    out = run("fio", "--name=rr", f"--filename={dev}", "--ioengine=io_uring", "--direct=1",
              "--rw=randread", "--bs=4k", f"--iodepth={iodepth}", "--time_based",
              f"--runtime={seconds}", "--size=32M", "--output-format=json").stdout
    return float(json.loads(out[out.index("{"):])["jobs"][0]["read"]["iops"])


def test_a_queue_keeps_its_depth_of_backing_reads_in_flight(
    slow_disk: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run("dd", f"of={slow_disk}", "if=/dev/urandom", "bs=1M", "count=32", "oflag=direct")
    with Gadget(f"file,path={slow_disk},queues=1,depth=64") as g:
        qd1, qd32 = randread_iops(g.dev(), 1), randread_iops(g.dev(), 32)
    disk1 = randread_iops(slow_disk, 1)
    with capsys.disabled():
        print(f"\n  2 ms disk: raw QD1 {disk1:.0f} IOPS; gadget file QD1 {qd1:.0f}, "
              f"QD32 {qd32:.0f} ({qd32 / qd1:.1f}x)")
    # one backing read at a time caps QD32 at the QD1 rate; 32 in flight lift it far above
    assert qd1 < 1e9 / LATENCY_NS * 1.1
    assert qd32 > 8 * qd1, (qd1, qd32)


@pytest.mark.parametrize("bs", ["4k", "128k"])
def test_fio_verify_at_depth_on_the_slow_disk(slow_disk: str, bs: str) -> None:
    with Gadget(f"file,path={slow_disk},queues=2,depth=64,block_size=4096") as g:
        assert_verified(fio_verify(g.dev(), size=16 * MiB, bs=bs, iodepth=32, jobs=2),
                        16 * MiB)


def test_handovers_and_a_crash_with_backing_io_in_flight_lose_nothing(
    slow_disk: str, state_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owner: Gadget = Owner(f"file,path={slow_disk},queues=2,depth=64,block_size=4096",
                          state_file=state_file).__enter__()
    devs = owner.all_devs()
    dmesg = kernel_log()
    fio = Fio(devs, tmp_path)  # 2 jobs x QD16: the disk's 2 ms keep requests in the target
    try:
        for _ in range(2):
            time.sleep(2)
            owner = hand_over(owner, state_file)
            fio.still_running()
        time.sleep(2)
        owner.proc.kill()  # SIGKILL with backing I/O in flight: the kernel reissues it
        assert owner.stop() == -signal.SIGKILL
        owner = Successor(state_file).__enter__()
        assert owner.all_devs() == devs
        fio.still_running()
        fio.finish()
    finally:
        fio.kill()
    finish(owner, state_file)
    assert io_errors(dmesg, devs) == []
