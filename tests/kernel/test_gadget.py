"""``ublk-gadget`` on the real driver: what a storage engineer would do to it.

Every test runs the real daemon (``python -m ublk_gadget serve``) and real tools against the
block devices it prints: fio write+verify, mkfs.ext4/mount/fsck, blkdiscard/fallocate on a
file target with its backing file inspected from the outside.  After every test no
``/dev/ublk*`` may remain.  Sizes are small: the VM is software-emulated.
"""

from __future__ import annotations

import glob
import hashlib
import json
import mmap
import os
import random
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import pytest

from ublk_bindings.ctrl import Control
from ublk_gadget.cli import main
from ublk_gadget.fallocate import punch_hole

pytestmark = pytest.mark.ublk

MiB = 1 << 20
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 120.0


def ublk_nodes() -> list[str]:
    return sorted(glob.glob("/dev/ublkb*") + glob.glob("/dev/ublkc*"))


@pytest.fixture(autouse=True)
def no_device_left_behind() -> Iterator[None]:
    """The contract of every test: whatever happened, no ublk device remains afterwards."""
    assert ublk_nodes() == [], "a previous test left a device behind"
    yield
    left = ublk_nodes()
    if left:  # clean up so that the next test starts clean, then fail this one
        with Control(timeout=30) as ctrl:
            for node in left:
                if node.startswith("/dev/ublkc"):
                    dev_id = int(node[len("/dev/ublkc"):])
                    for command in (ctrl.stop_dev, ctrl.del_dev):
                        try:
                            command(dev_id)
                        except OSError:
                            pass
    assert left == [], "the gadget left devices behind"


class Gadget:
    """A ``ublk-gadget serve`` process; entering waits for its ready line."""

    def __init__(self, *specs: str, state_file: str | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        args = [sys.executable, "-m", "ublk_gadget", "serve"]
        for spec in specs:
            args += ["--device", spec]
        if state_file:
            args += ["--state-file", state_file]
        self.args = args
        self.env: dict[str, str] = {}
        """Set for the process on top of ours (a fault to inject: UBLK_GADGET_KILL_AT)."""
        self.preexec_fn = preexec_fn
        self.devices: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        """Every JSON event line the daemon printed on stdout, in order (all of them once it
        stopped)."""
        self.stderr = ""
        self._out = b""  # stdout read but not yet parsed
        self.stopped = False

    def start(self) -> subprocess.Popen[str]:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=self.preexec_fn,
                                     env={**os.environ, **self.env})
        return self.proc

    def __enter__(self) -> Gadget:
        self.start()
        self.next_event("ready")
        return self

    def next_event(self, name: str, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        """Read events until ``{"event": name}`` (kept, with those before it, in ``events``).

        Read with ``os.read``, not the pipe's text wrapper: several events can arrive in one
        chunk, and a line left in the wrapper's buffer is invisible to ``select``.
        """
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" not in self._out:
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                chunk = os.read(fd, 65536) if ready else b""
                if not chunk:
                    self.stop()
                    raise AssertionError(f"no {name} event; exit {self.proc.returncode}; "
                                         f"events {self.events}; stderr:\n{self.stderr}")
                self._out += chunk
            line, self._out = self._out.split(b"\n", 1)
            event: dict[str, Any] = json.loads(line)
            self.events.append(event)
            if event["event"] == name:
                if name == "ready":
                    self.devices = event["devices"]
                return event

    def said(self, name: str) -> list[dict[str, Any]]:
        """The events called ``name`` seen so far."""
        return [e for e in self.events if e["event"] == name]

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the daemon and collect its exit status and stderr (once)."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        out = ""
        try:
            out, self.stderr = self.proc.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            stacks = python_stacks(self.proc.pid)
            self.proc.kill()
            out, self.stderr = self.proc.communicate()
            raise AssertionError(f"the gadget did not stop in {STOP_TIMEOUT}s:\n{self.stderr}\n"
                                 f"where it was:\n{stacks}")
        finally:
            rest = self._out.decode() + (out or "")
            self.events += [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
            self._out = b""
        return self.proc.returncode

    def __exit__(self, *exc: object) -> None:
        status = self.stop()
        if exc[0] is None:
            assert status == 0, self.stderr
            assert "Traceback" not in self.stderr, self.stderr

    def dev(self, i: int = 0) -> str:
        return str(self.devices[i]["block_device"])

    def all_devs(self) -> list[str]:
        return [str(d["block_device"]) for d in self.devices]


def python_stacks(pid: int) -> str:
    """Every thread's Python stack and the kernel's view of it: why a process hangs."""
    spy = Path(sys.executable).parent / "py-spy"
    try:
        dump = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        dump = f"(no py-spy dump: {e})"
    try:
        status = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith(("State", "Sig", "Shd"))]
    except OSError as e:
        status = [str(e)]
    return dump + "\n".join(status)


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: exit {result.returncode}\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def backing_file(tmp_path: Path, size: int, name: str = "backing.img") -> Path:
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(size)
    return path


# --- fio write + verify ----------------------------------------------------------------------

def fio_verify(dev: str, *, size: int, bs: str, iodepth: int, jobs: int,
               verify: Sequence[str] = ("--verify=crc32c",), check: bool = True
               ) -> subprocess.CompletedProcess[str]:
    """Random writes over the whole device, then every block read back and verified.

    Several jobs split the device and run pinned to different CPUs, so that blk-mq sends
    their requests down different hardware queues.
    """
    return run(
        "fio", "--name=verify", f"--filename={dev}", "--ioengine=libaio", "--direct=1",
        "--rw=randwrite", f"--bs={bs}", f"--iodepth={iodepth}", f"--numjobs={jobs}",
        f"--size={size // jobs}", f"--offset_increment={size // jobs}",
        "--cpus_allowed=0-1", "--cpus_allowed_policy=split", "--group_reporting=0",
        *verify, "--do_verify=1", "--verify_fatal=1", "--output-format=json",
        check=check,
    )


def assert_verified(result: subprocess.CompletedProcess[str], size: int) -> None:
    report = json.loads(result.stdout[result.stdout.index("{"):])
    jobs = report["jobs"]
    assert all(job["error"] == 0 for job in jobs)
    assert sum(job["write"]["io_bytes"] for job in jobs) == size
    assert sum(job["read"]["io_bytes"] for job in jobs) == size  # the verify pass read it all


FIO_MATRIX = [
    # target, device keys, fio block size, iodepth, jobs, bytes: each target with 1 and 2
    # queues, depth 1 and 64, 4k and 128k blocks; small, since the VM is emulated
    ("mem", "queues=1,depth=1", "4k", 1, 1, 2 * MiB),
    ("mem", "queues=2,depth=64", "128k", 64, 2, 16 * MiB),
    ("file", "queues=2,depth=64,block_size=4096", "4k", 64, 2, 4 * MiB),
    ("file", "queues=1,depth=1", "128k", 1, 1, 8 * MiB),
    ("null", "queues=2,depth=64", "4k", 64, 2, 4 * MiB),
    ("null", "queues=1,depth=1", "128k", 1, 1, 8 * MiB),
]


def test_fio_write_and_verify_on_every_target(tmp_path: Path) -> None:
    """One daemon serves the whole matrix (starting one per row costs more than the I/O)."""
    specs = []
    for i, (target, keys, _, _, _, size) in enumerate(FIO_MATRIX):
        if target == "file":
            specs.append(f"file,path={backing_file(tmp_path, size, f'backing{i}.img')},{keys}")
        else:
            specs.append(f"{target},size={size},{keys}")
    with Gadget(*specs) as g:
        for device, (target, keys, bs, iodepth, jobs, size) in zip(g.devices, FIO_MATRIX):
            assert device["queues"] == int(keys.split(",")[0].split("=")[1])
            # null keeps nothing, so what it can be verified against is zeroes: fio writes
            # zero blocks and checks that zero blocks come back.
            verify = (("--verify=pattern", "--verify_pattern=0x00") if target == "null"
                      else ("--verify=crc32c",))
            result = fio_verify(device["block_device"], size=size, bs=bs, iodepth=iodepth,
                                jobs=jobs, verify=verify)
            assert_verified(result, size)


def test_fio_verify_catches_a_device_that_loses_data() -> None:
    """The check above can fail: null drops writes, so a checksum verify must report it."""
    with Gadget(f"null,size={MiB}") as g:
        result = fio_verify(g.dev(), size=MiB, bs="4k", iodepth=1, jobs=1, check=False)
    assert result.returncode != 0
    assert "verify" in result.stdout + result.stderr


# --- a file system on it ---------------------------------------------------------------------

def write_files(root: Path) -> dict[str, str]:
    """A tree of files with random content; returns name -> sha256."""
    rng = random.Random(4)
    sums = {}
    (root / "dir" / "sub").mkdir(parents=True)
    names = ["big.bin"] + [f"dir/f{i}" for i in range(20)] + [f"dir/sub/g{i}" for i in range(5)]
    for name in names:
        data = rng.randbytes(4 * MiB if name == "big.bin" else rng.randrange(1, 200_000))
        (root / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    return sums


def read_sums(root: Path, names: dict[str, str]) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in names}


def ext4_round_trip(dev: str, mnt: Path, sums: dict[str, str] | None = None) -> dict[str, str]:
    """Mount, write (or check) the files, unmount, remount, check them, unmount, fsck."""
    mnt.mkdir(exist_ok=True)
    if sums is None:
        run("mkfs.ext4", "-q", "-F", "-b", "4096", dev)  # mountable at either block size
        run("mount", dev, str(mnt))
        try:
            sums = write_files(mnt)
        finally:
            run("umount", str(mnt))
    run("mount", dev, str(mnt))
    try:
        assert read_sums(mnt, sums) == sums
    finally:
        run("umount", str(mnt))
    run("fsck.ext4", "-fn", dev)
    return sums


def test_ext4_on_mem(tmp_path: Path) -> None:
    """Also the issue's "done when": serve mem,size=256M, mkfs.ext4 and mount what it printed."""
    with Gadget("mem,size=256M") as g:
        ext4_round_trip(g.dev(), tmp_path / "mnt")


def test_ext4_on_file_persists_in_the_backing_file(tmp_path: Path) -> None:
    img = backing_file(tmp_path, 128 * MiB)
    with Gadget(f"file,path={img},queues=2") as g:
        sums = ext4_round_trip(g.dev(), tmp_path / "mnt")
    run("fsck.ext4", "-fn", str(img))  # the file itself holds a clean file system
    with Gadget(f"file,path={img},block_size=4096") as g:  # a new daemon finds the files
        ext4_round_trip(g.dev(), tmp_path / "mnt", sums)


# --- FLUSH, DISCARD, WRITE_ZEROES on the backing file ----------------------------------------

def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def sysfs(dev: str, name: str) -> str:
    return Path(f"/sys/block/{os.path.basename(dev)}/{name}").read_text().strip()


def flushes_done(dev: str) -> int:
    return int(sysfs(dev, "stat").split()[15])  # Documentation/block/stat.rst: flush I/Os


def test_flush_discard_and_write_zeroes_reach_the_backing_file(tmp_path: Path) -> None:
    flush_discard_and_write_zeroes(tmp_path)


def flush_discard_and_write_zeroes(tmp_path: Path, keys: str = "") -> None:
    """FLUSH, DISCARD and WRITE_ZEROES (with and without unmap) on a file device (SPEC keys
    ``keys`` added) reach the backing file, and the device reads back what it should."""
    size = 16 * MiB
    img = backing_file(tmp_path, size)
    data = random.Random(7).randbytes(size)
    with Gadget(f"file,path={img},block_size=4096{keys}") as g:
        dev = g.dev()
        assert sysfs(dev, "queue/write_cache") == "write back"  # a volatile cache: FLUSH matters
        assert sysfs(dev, "queue/fua") == "1"
        fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, size)
            buf[:] = data
            assert os.pwritev(fd, [buf], 0) == size
            before = flushes_done(dev)
            os.fsync(fd)  # FLUSH -> fdatasync on the backing file
            assert flushes_done(dev) > before
            assert img.read_bytes() == data
            full = allocated(img)
            assert full >= size

            run("blkdiscard", "-o", "0", "-l", str(4 * MiB), dev)  # DISCARD -> punch hole
            assert allocated(img) <= full - 4 * MiB
            punched = allocated(img)

            punch_hole(fd, 4 * MiB, 4 * MiB)  # on a block device: WRITE_ZEROES, unmap allowed
            assert allocated(img) <= punched - 4 * MiB
            unmapped = allocated(img)

            run("blkdiscard", "-z", "-o", str(8 * MiB), "-l", str(4 * MiB), dev)  # NOUNMAP
            assert allocated(img) == unmapped, "zeroing without unmap keeps the blocks"

            expected = bytes(12 * MiB) + data[12 * MiB:]
            assert os.preadv(fd, [buf], 0) == size
            assert buf[:] == expected, "the device reads back zeroes where it was zeroed"
            buf.close()
        finally:
            os.close(fd)
    assert img.read_bytes() == expected, "and so does the backing file"


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loop device over a file on tmpfs: a block device to back a file target with."""
    img = backing_file(tmp_path, 8 * MiB, "loop.img")
    dev = run("losetup", "--find", "--show", str(img)).stdout.strip()
    try:
        yield dev, img
    finally:
        run("losetup", "--detach", dev)


def test_a_block_device_backs_a_file_target(loop_device: tuple[str, Path]) -> None:
    dev, img = loop_device
    data = random.Random(9).randbytes(MiB)
    with open(dev, "r+b", buffering=0) as f:
        f.write(data)
    with Gadget(f"file,path={dev}") as g:
        assert g.devices[0]["size"] == 8 * MiB, "the size is the block device's"
        with pytest.raises(OSError):  # served exclusively: nobody mounts it meanwhile
            os.open(dev, os.O_RDWR | os.O_EXCL)
        with open(g.dev(), "rb", buffering=0) as f:
            assert f.read(MiB) == data
        assert_verified(fio_verify(g.dev(), size=4 * MiB, bs="64k", iodepth=8, jobs=1),
                        4 * MiB)
        before = allocated(img)
        run("blkdiscard", "-o", "0", "-l", str(4 * MiB), g.dev())  # through to the loop file
        assert allocated(img) <= before - 4 * MiB


# --- what the daemon reports ---------------------------------------------------------------

def test_ready_line_matches_the_block_devices(tmp_path: Path) -> None:
    img = backing_file(tmp_path, 8 * MiB)
    with Gadget("mem,size=32M,block_size=4096", f"file,path={img},read_only=1",
                "null,size=1G,queues=2,depth=128") as g:
        mem, ro, null = g.devices
        assert len({d["dev_id"] for d in g.devices}) == 3
        for d, size, bs in ((mem, 32 * MiB, 4096), (ro, 8 * MiB, 512), (null, 1 << 30, 512)):
            assert os.path.exists(d["block_device"])
            assert d["size"] == size
            assert int(sysfs(d["block_device"], "size")) * 512 == size
            assert int(sysfs(d["block_device"], "queue/logical_block_size")) == bs
        assert (null["queues"], null["depth"]) == (2, 128)
        assert sysfs(ro["block_device"], "ro") == "1"
        try:
            fd = os.open(ro["block_device"], os.O_WRONLY)
        except PermissionError:
            pass  # kernels that refuse to open a read-only disk for writing
        else:
            try:
                with pytest.raises(PermissionError):
                    os.pwrite(fd, bytes(512), 0)
            finally:
                os.close(fd)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``ublk-gadget ARGS`` in this process: same code as the console script, no start-up cost."""
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_list_shows_the_served_devices(capsys: pytest.CaptureFixture[str]) -> None:
    with Gadget("null,size=1M,queues=2,depth=8", "mem,size=1M") as g:
        status, out, _ = cli(capsys, "list", "--json")
        assert status == 0
        rows = {row["dev_id"]: row for row in json.loads(out)["devices"]}
        assert len(rows) == len(g.devices)
        for d in g.devices:
            row = rows[d["dev_id"]]
            assert (row["state"], row["owner_pid"]) == ("LIVE", g.proc.pid)
            assert (row["queues"], row["depth"]) == (d["queues"], d["depth"])
            assert row["flags"] == d["flags"]
        status, out, _ = cli(capsys, "list")
        assert out.splitlines()[0].split()[:3] == ["ID", "STATE", "PID"]
        assert len(out.splitlines()) == 1 + len(g.devices)


def test_features_decodes_what_the_kernel_reports(capsys: pytest.CaptureFixture[str]) -> None:
    with Control() as ctrl:
        features = ctrl.features
    assert features is not None
    status, out, _ = cli(capsys, "features")
    lines = out.splitlines()
    assert status == 0 and lines[0] == f"features {features:#018x}"
    assert len(lines) - 1 == bin(features).count("1")
    assert any(line.endswith("UBLK_F_USER_RECOVERY") for line in lines)


# --- stopping --------------------------------------------------------------------------------

def test_sigterm_under_load_stops_and_deletes_cleanly() -> None:
    with Gadget("mem,size=64M,queues=2") as g:
        fio = subprocess.Popen(
            ["fio", "--name=load", f"--filename={g.dev()}", "--ioengine=libaio", "--direct=1",
             "--rw=randrw", "--bs=4k", "--iodepth=32", "--time_based", "--runtime=60"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        assert g.stop(signal.SIGTERM) == 0, g.stderr
        assert "Traceback" not in g.stderr
        fio.wait(timeout=60)  # its device went away under it: it ends, with errors
        assert ublk_nodes() == []


def test_a_device_held_open_does_not_keep_the_daemon_from_ending() -> None:
    """A holder (an open fd, a forgotten mount) keeps the device's number, not the daemon."""
    with Gadget("mem,size=1M") as g:
        fd = os.open(g.dev(), os.O_RDONLY | os.O_DIRECT)
        try:
            assert g.stop(signal.SIGINT) == 0, g.stderr
            assert ublk_nodes() == [], "both nodes go at once"
            try:  # the holder is left with a dead device: no capacity, or I/O errors
                got = os.preadv(fd, [mmap.mmap(-1, 4096)], 0)
            except OSError:
                got = 0
            assert got == 0
        finally:
            os.close(fd)


# --- bad input and failures during setup -----------------------------------------------------

def gadget_cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ublk_gadget", *args], capture_output=True,
                          text=True, timeout=120, **kwargs)


@pytest.mark.parametrize(
    ("spec", "cause"),
    [
        ("mem,size=16M,color=red", "unknown key 'color'"),
        ("mem,size=1000", "not a multiple of the block size"),
        ("file,path=/nonexistent/disk.img", "no such file"),
        ("TOO_SMALL", "too small"),
        ("null,size=16M,depth=4097", "depth=4097 is out of range"),
    ],
)
def test_bad_input_exits_2_and_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               spec: str, cause: str) -> None:
    if spec == "TOO_SMALL":
        spec = f"file,path={backing_file(tmp_path, MiB)},size=2M"
    # a good device first: the bad one must stop everything before it is made
    status, out, err = cli(capsys, "serve", "--device", "mem,size=16M", "--device", spec)
    assert status == 2, err
    assert len(err.splitlines()) == 1 and cause in err
    assert out == ""


def _few_descriptors() -> None:
    # Enough for the interpreter, the control device and a few devices (3 fds each: the
    # char device, the queue's ring, its wake-up eventfd), not for ten: a device fails
    # half-way through its setup, after ADD_DEV.
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))


def test_a_failure_during_setup_deletes_what_was_created() -> None:
    specs = [arg for _ in range(10) for arg in ("--device", "null,size=1M")]
    result = gadget_cli("serve", *specs, preexec_fn=_few_descriptors)
    assert result.returncode == 1, result.stderr
    assert "Too many open files" in result.stderr.splitlines()[-1]
    assert "deleted" in result.stderr, "some devices were made before it failed"
    said = [json.loads(line)["event"] for line in result.stdout.splitlines()]
    assert set(said) <= {"failed"}, result.stdout  # a queue thread may be what failed; no ready


def test_a_signal_during_setup_deletes_what_was_created() -> None:
    g = Gadget(*["null,size=1M"] * 8)
    proc = g.start()
    deadline = time.monotonic() + READY_TIMEOUT
    while not glob.glob("/dev/ublkb*") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert g.stop() == 0, g.stderr
    assert "serving" not in g.stderr, "the signal came after setup: the test proved nothing"
    assert "deleted" in g.stderr and "Traceback" not in g.stderr
