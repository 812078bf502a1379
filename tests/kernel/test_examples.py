"""The README's example servers serve real I/O and stop cleanly: examples/ramdisk.py (a
synchronous handler) and examples/remote_disk.py (asyncio, many requests in flight)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from test_gadget import READY_TIMEOUT, STOP_TIMEOUT, assert_verified, fio_verify, run

pytestmark = pytest.mark.ublk

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "ramdisk.py"
MiB = 1 << 20


@contextmanager
def example(*args: str) -> Iterator[str]:
    """Run an example server; yield its device; SIGINT must end it with the device gone."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        dev = proc.stdout.readline().strip() if ready else ""
        assert dev.startswith("/dev/ublkb"), proc.stderr.read() if proc.poll() is not None else dev
        yield dev
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=STOP_TIMEOUT)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        assert not os.path.exists(dev)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def randread_iops(dev: str, iodepth: int) -> float:
    out = run("fio", "--name=rr", f"--filename={dev}", "--ioengine=io_uring", "--direct=1",
              "--rw=randread", "--bs=4k", f"--iodepth={iodepth}", "--time_based",
              "--runtime=3", "--output-format=json").stdout
    return float(json.loads(out[out.index("{"):])["jobs"][0]["read"]["iops"])


def test_the_asyncio_example_serves_a_queue_s_depth_of_requests_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 5 ms per request: one at a time would stay under 200 IOPS at any queue depth
    with example(str(EXAMPLES / "remote_disk.py"), "16M", "5ms") as dev:
        qd1, qd16 = randread_iops(dev, 1), randread_iops(dev, 16)
        assert_verified(fio_verify(dev, size=4 * MiB, bs="64k", iodepth=16, jobs=1), 4 * MiB)
    with capsys.disabled():
        print(f"\n  asyncio example, 5 ms per request: QD1 {qd1:.0f} IOPS, QD16 {qd16:.0f}")
    assert qd1 < 200
    assert qd16 > 6 * qd1, (qd1, qd16)


def test_the_ramdisk_example_keeps_what_fio_writes_and_deletes_its_device() -> None:
    with example(str(EXAMPLE), "16M") as dev:
        assert_verified(fio_verify(dev, size=8 * MiB, bs="64k", iodepth=16, jobs=1), 8 * MiB)
