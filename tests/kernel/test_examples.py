"""The README's example server (examples/ramdisk.py) serves real I/O and stops cleanly."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_gadget import READY_TIMEOUT, STOP_TIMEOUT, assert_verified, fio_verify

pytestmark = pytest.mark.ublk

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ramdisk.py"
MiB = 1 << 20


def test_the_ramdisk_example_keeps_what_fio_writes_and_deletes_its_device() -> None:
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "16M"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        dev = proc.stdout.readline().strip() if ready else ""
        assert dev.startswith("/dev/ublkb"), proc.stderr.read() if proc.poll() is not None else dev
        assert_verified(fio_verify(dev, size=8 * MiB, bs="64k", iodepth=16, jobs=1), 8 * MiB)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=STOP_TIMEOUT)
        assert proc.returncode == 0, err
        assert not os.path.exists(dev)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
