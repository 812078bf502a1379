"""The queue data plane on the real driver: dd and fio against a tiny in-memory handler.

Data is checked two ways: what a write put into the handler's memory, and what a read of the
block device returns; so a bug cannot hide by corrupting both directions the same way.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from ublk_bindings.ctrl import NEW_DEV_ID, Control, block_dev_path, char_dev_path
from ublk_bindings.errors import UblkError
from ublk_bindings.io import Device, Handler
from ublk_bindings.ublk_cmd import (
    UBLK_F_NEED_GET_DATA,
    UBLK_F_QUIESCE,
    UBLK_F_USER_RECOVERY,
    UBLK_F_USER_RECOVERY_REISSUE,
    UBLK_IO_OP_FLUSH,
    UBLK_IO_OP_READ,
    UBLK_IO_OP_WRITE,
    UBLK_PARAM_TYPE_BASIC,
    UBLK_S_DEV_LIVE,
    UBLK_S_DEV_QUIESCED,
    ublk_params,
    ublksrv_ctrl_dev_info,
    ublksrv_io_desc,
)

pytestmark = pytest.mark.ublk

TIMEOUT = 60.0
MiB = 1 << 20
SIZE = 16 * MiB


def dev_info(*, flags: int = 0, depth: int = 16, queues: int = 1,
             max_io: int = 256 * 1024) -> ublksrv_ctrl_dev_info:
    info = ublksrv_ctrl_dev_info()
    info.nr_hw_queues, info.queue_depth, info.max_io_buf_bytes = queues, depth, max_io
    info.dev_id, info.flags = NEW_DEV_ID, flags
    return info


def basic_params(size: int = SIZE, max_io: int = 256 * 1024) -> ublk_params:
    p = ublk_params()
    p.types = UBLK_PARAM_TYPE_BASIC
    p.basic.logical_bs_shift = p.basic.physical_bs_shift = 9
    p.basic.io_min_shift, p.basic.io_opt_shift = 9, 12
    p.basic.max_sectors = max_io >> 9
    p.basic.dev_sectors = size >> 9
    return p


class Memory:
    """The target: a bytearray; one handler per queue, all sharing the bytes."""

    def __init__(self, size: int = SIZE) -> None:
        self.data = bytearray(size)
        self.queues_used: set[int] = set()
        self.fail_sector: int | None = None

    def handlers(self, q_id: int) -> Handler:
        data = self.data

        def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
            self.queues_used.add(q_id)
            op = desc.op_flags & 0xFF
            start, n = desc.start_sector << 9, desc.nr_sectors << 9
            if self.fail_sector is not None and desc.start_sector <= self.fail_sector < (
                    desc.start_sector + desc.nr_sectors):
                raise RuntimeError(f"handler fails sector {self.fail_sector}")
            if op == UBLK_IO_OP_READ:
                buf[:n] = data[start:start + n]
            elif op == UBLK_IO_OP_WRITE:
                data[start:start + n] = buf[:n]
            elif op != UBLK_IO_OP_FLUSH:
                return -errno.EOPNOTSUPP
            return n

        return handler


@pytest.fixture
def ctrl() -> Iterator[Control]:
    with Control(timeout=TIMEOUT) as c:
        yield c


def dd(*args: str, cpu: int | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = ["dd", *args, "status=none"]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    return subprocess.run(cmd, capture_output=True, timeout=TIMEOUT)


def write_and_read_back(dev: Device, mem: Memory, tmp_path: Path, offset: int,
                        length: int) -> None:
    """dd ``length`` random bytes at 64 KiB block ``offset``; check memory, then read back."""
    block = 64 * 1024
    pattern = os.urandom(length)
    src, back = tmp_path / "pattern", tmp_path / "back"
    src.write_bytes(pattern)
    done = dd(f"if={src}", f"of={dev.block_path}", f"bs={block}", "oflag=direct",
              f"seek={offset}")
    assert done.returncode == 0, done.stderr.decode()
    assert mem.data[offset * block:offset * block + length] == pattern
    done = dd(f"if={dev.block_path}", f"of={back}", f"bs={block}", "iflag=direct",
              f"skip={offset}", f"count={length // block}")
    assert done.returncode == 0, done.stderr.decode()
    assert back.read_bytes() == pattern


def assert_gone(ctrl: Control, dev_id: int) -> None:
    assert not os.path.exists(block_dev_path(dev_id))
    assert not os.path.exists(char_dev_path(dev_id))
    with pytest.raises(UblkError) as e:
        ctrl.get_dev_info(dev_id)
    assert e.value.errno == errno.ENODEV


def test_dd_writes_and_reads_back(ctrl: Control, tmp_path: Path) -> None:
    mem = Memory()
    with Device(ctrl, mem.handlers).create(dev_info(), basic_params()) as dev:
        dev_id = dev.dev_id
        assert ctrl.get_dev_info(dev_id).state == UBLK_S_DEV_LIVE
        write_and_read_back(dev, mem, tmp_path, offset=3, length=2 * MiB)
        # the last 64 KiB of the device, and a read past its end
        write_and_read_back(dev, mem, tmp_path, offset=SIZE // (64 * 1024) - 1, length=64 * 1024)
        past = dd(f"if={dev.block_path}", "of=/dev/null", "bs=64k", "iflag=direct",
                  f"skip={SIZE // (64 * 1024)}", "count=1")
        assert past.returncode == 0  # dd reads 0 bytes at the end of a block device
    assert_gone(ctrl, dev_id)


def test_fio_verifies_random_writes(ctrl: Control, tmp_path: Path) -> None:
    mem = Memory()
    with Device(ctrl, mem.handlers).create(dev_info(depth=32), basic_params()) as dev:
        out = subprocess.run(
            ["fio", "--name=verify", f"--filename={dev.block_path}", "--rw=randwrite",
             "--bs=4k", "--size=8M", "--direct=1", "--ioengine=io_uring", "--iodepth=16",
             "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--randrepeat=0",
             "--output-format=json"],
            capture_output=True, timeout=300)
        assert out.returncode == 0, out.stderr.decode() + out.stdout.decode()[-2000:]
        job = json.loads(out.stdout)["jobs"][0]
        assert job["error"] == 0
        assert job["write"]["io_bytes"] == 8 * MiB
        assert job["read"]["io_bytes"] == 8 * MiB  # the verify pass read everything back
        dev_id = dev.dev_id
    assert_gone(ctrl, dev_id)


def test_need_get_data(ctrl: Control, tmp_path: Path) -> None:
    mem = Memory()
    dev = Device(ctrl, mem.handlers).create(dev_info(flags=UBLK_F_NEED_GET_DATA),
                                            basic_params())
    with dev:
        assert dev.info is not None
        assert dev.info.flags & UBLK_F_NEED_GET_DATA, "kept by the kernel in copy mode"
        write_and_read_back(dev, mem, tmp_path, offset=5, length=1 * MiB)


def test_a_failing_handler_fails_its_request_not_the_device(ctrl: Control,
                                                             tmp_path: Path) -> None:
    mem = Memory()
    mem.data[:SIZE] = os.urandom(SIZE)
    dev = Device(ctrl, mem.handlers).create(dev_info(), basic_params())
    try:
        mem.fail_sector = 2048
        bad = dd(f"if={dev.block_path}", "of=/dev/null", "bs=4k", "iflag=direct",
                 "skip=256", "count=1")  # sector 2048
        assert bad.returncode != 0
        assert b"Input/output error" in bad.stderr
        good = dd(f"if={dev.block_path}", f"of={tmp_path / 'ok'}", "bs=4k", "iflag=direct",
                  "count=1")
        assert good.returncode == 0
        assert (tmp_path / "ok").read_bytes() == bytes(mem.data[:4096])
    finally:
        with pytest.raises(RuntimeError, match="handler fails sector 2048"):
            dev.stop()  # the handler's exception is not swallowed


def test_start_failure_leaves_no_device(ctrl: Control) -> None:
    before = set(os.listdir("/dev"))
    bad = basic_params()
    bad.basic.max_sectors = 4 * MiB >> 9  # more than max_io_buf_bytes: SET_PARAMS EINVAL
    with pytest.raises(UblkError, match="^SET_PARAMS failed: EINVAL"):
        Device(ctrl, Memory().handlers).create(dev_info(), bad)
    assert {n for n in set(os.listdir("/dev")) - before if n.startswith("ublk")} == set()


def refuse_one_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make queue 0's FETCH of tag 0 name a tag the driver does not have: it fails (EINVAL),
    that tag never fetches, so the device can never become ready."""
    from ublk_bindings import io as ublk_io
    from ublk_bindings.ring import SQE_CMD_OFFSET
    from ublk_bindings.ublk_cmd import ublksrv_io_cmd

    prepare = ublk_io.Queue._prepare_sqes

    def prepare_one_bad(self: ublk_io.Queue, fd: int, base: int, ops: tuple[int, int, int]) -> None:
        prepare(self, fd, base, ops)
        if self.q_id == 0:
            ublksrv_io_cmd.from_buffer(self._fetch_sqe[0], SQE_CMD_OFFSET).tag = 4000

    monkeypatch.setattr(ublk_io.Queue, "_prepare_sqes", prepare_one_bad)


def test_a_fetch_the_driver_refuses_fails_start_with_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # START_DEV waits for every tag's FETCH; one refused would keep it waiting for good (the
    # gadget's Control has no timeout; this one's only turns a regression into UblkTimeout):
    # Device gives up when the queue thread dies, names the FETCH's error, leaves no device.
    refuse_one_fetch(monkeypatch)
    before = set(os.listdir("/dev"))
    with Control(timeout=TIMEOUT) as ctrl:
        dev = Device(ctrl, Memory().handlers)
        with pytest.raises(UblkError, match=r"^FETCH/COMMIT_AND_FETCH_REQ \(queue 0, tag 0\) "
                                            r"failed: EINVAL"):
            dev.create(dev_info(queues=2), basic_params())
        assert ctrl.get_features()  # the Control still works, the START_DEV left behind it
    # closing the Control cancelled that START_DEV, which held the deleted device
    deadline = time.monotonic() + TIMEOUT
    while {n for n in set(os.listdir("/dev")) - before if n.startswith("ublk")}:
        assert time.monotonic() < deadline, "the device outlived its Control"
        time.sleep(0.1)


def test_every_queue_serves(ctrl: Control, tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    mem = Memory()
    queues = min(2, len(cpus))
    with Device(ctrl, mem.handlers).create(dev_info(queues=queues), basic_params()) as dev:
        assert dev.info is not None and dev.info.nr_hw_queues == queues
        pattern = os.urandom(64 * 1024)
        (tmp_path / "p").write_bytes(pattern)
        for q, cpu in enumerate(cpus[:queues]):
            # submitted from each CPU, the I/O goes to that CPU's queue
            done = dd(f"if={tmp_path / 'p'}", f"of={dev.block_path}", "bs=64k", "oflag=direct",
                      f"seek={q}", cpu=cpu)
            assert done.returncode == 0, done.stderr.decode()
        affinity = [ctrl.get_queue_affinity(dev.dev_id, q) for q in range(queues)]
        assert mem.queues_used == set(range(queues)), (mem.queues_used, affinity)
        for q in range(queues):
            assert mem.data[q * 64 * 1024:(q + 1) * 64 * 1024] == pattern


def wait_state(ctrl: Control, dev_id: int, state: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while (got := ctrl.get_dev_info(dev_id).state) != state:
        assert time.monotonic() < deadline, f"state {got}, waiting for {state}"
        time.sleep(0.02)


@pytest.mark.parametrize("quiesce", [False, True], ids=["server-gone", "quiesce"])
def test_user_recovery_hands_the_device_over_with_io_in_flight(
        ctrl: Control, tmp_path: Path, quiesce: bool) -> None:
    mem = Memory()
    flags = UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE
    if quiesce:
        flags |= UBLK_F_QUIESCE
    first = Device(ctrl, mem.handlers).create(dev_info(flags=flags), basic_params())
    dev_id = first.dev_id
    try:
        assert first.info is not None
        write_and_read_back(first, mem, tmp_path, offset=7, length=256 * 1024)
        if quiesce:
            assert ctrl.features is not None
            if not ctrl.features & UBLK_F_QUIESCE:
                # the kernel dropped the flag it does not know, and has no such command
                assert not first.info.flags & UBLK_F_QUIESCE
                with pytest.raises(UblkError) as e:
                    ctrl.quiesce_dev(dev_id, 1000)
                assert e.value.errno == errno.EOPNOTSUPP
                first.stop()
                return
            assert first.info.flags & UBLK_F_QUIESCE
            ctrl.quiesce_dev(dev_id, 10_000)
        first.release()  # the server goes away; the device stays
        wait_state(ctrl, dev_id, UBLK_S_DEV_QUIESCED)
        # I/O issued while nobody serves waits for the successor
        reader = subprocess.Popen(
            ["dd", f"if={block_dev_path(dev_id)}", f"of={tmp_path / 'during'}", "bs=64k",
             "iflag=direct", "skip=7", "count=4", "status=none"], stderr=subprocess.PIPE)
        time.sleep(0.2)
        assert reader.poll() is None, "a read completed with no server"
        heir = Device(ctrl, mem.handlers, ready_timeout=TIMEOUT).adopt(dev_id)
        with heir:
            assert ctrl.get_dev_info(dev_id).state == UBLK_S_DEV_LIVE
            assert reader.wait(TIMEOUT) == 0, reader.stderr.read() if reader.stderr else ""
            assert (tmp_path / "during").read_bytes() == mem.data[7 * 64 * 1024:][:256 * 1024]
            write_and_read_back(heir, mem, tmp_path, offset=11, length=128 * 1024)
    finally:
        remove(ctrl, dev_id)
    assert_gone(ctrl, dev_id)


def test_quiesce_dev_lets_requests_in_the_server_complete(ctrl: Control) -> None:
    # ublk_wait_for_idle_io counts only requests not yet started as busy: requests the
    # server holds do not delay QUIESCE_DEV, and their commits still complete them
    release = threading.Event()
    held = {4 * MiB >> 9, (4 * MiB + 4096) >> 9}  # far from what a partition scan reads

    def holding(q_id: int) -> Handler:
        def handler(tag: int, desc: ublksrv_io_desc, buf: memoryview) -> int:
            if desc.start_sector in held:
                release.wait(TIMEOUT)
            return desc.nr_sectors << 9
        return handler

    flags = UBLK_F_USER_RECOVERY | UBLK_F_QUIESCE
    dev = Device(ctrl, holding).create(dev_info(flags=flags, depth=2), basic_params())
    dev_id = dev.dev_id
    try:
        assert dev.info is not None
        if not features_of(ctrl) & UBLK_F_QUIESCE:
            assert not dev.info.flags & UBLK_F_QUIESCE  # dropped by ADD_DEV
            return
        readers = [subprocess.Popen(["dd", f"if={dev.block_path}", "of=/dev/null", "bs=4k",
                                     "iflag=direct", f"skip={(4 * MiB >> 12) + i}", "count=1",
                                     "status=none"])
                   for i in range(2)]
        try:
            inflight = Path(f"/sys/block/ublkb{dev_id}/inflight")
            deadline = time.monotonic() + TIMEOUT
            while sum(map(int, inflight.read_text().split())) < 2:
                assert time.monotonic() < deadline, "the reads never reached the server"
                time.sleep(0.01)
            ctrl.quiesce_dev(dev_id, 5_000)  # both tags busy in the server, yet no EBUSY
            assert [r.poll() for r in readers] == [None, None]
        finally:
            release.set()
            assert [r.wait(TIMEOUT) for r in readers] == [0, 0]
        dev.release()
        wait_state(ctrl, dev_id, UBLK_S_DEV_QUIESCED)
    finally:
        release.set()
        dev.stop(raise_errors=False)  # nothing left to do if released
        remove(ctrl, dev_id)
    assert_gone(ctrl, dev_id)


def remove(ctrl: Control, dev_id: int) -> None:
    """STOP_DEV and DEL_DEV a device this process no longer serves, if it still exists."""
    for step in (ctrl.stop_dev, ctrl.del_dev):
        try:
            step(dev_id)
        except UblkError as e:
            if e.errno != errno.ENODEV:
                raise


def features_of(ctrl: Control) -> int:
    assert ctrl.features is not None
    return int(ctrl.features)
