"""The block devices under test, each made and torn down by a context manager.

Every device gets the same geometry: ``queues`` hardware queues of ``depth`` tags and
``size`` bytes (file-backed ones take the backing file's size).  The in-kernel peers
(null_blk, loop) bound what the block layer itself costs in this VM; kublk, the kernel's own
C server, is the bar a userspace server is held to.  On a real disk, the disk itself (``raw``)
is the bound.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ublk_bindings.buffers import buffer_mode

from . import modes
from .gadget import Gadget

CONFIGFS = Path("/sys/kernel/config")
NULLB = CONFIGFS / "nullb"


@dataclass(frozen=True)
class Geometry:
    size: int  # bytes
    queues: int
    depth: int
    backing_file: str  # for the file-backed peers: loop, kublk loop, gadget file (or a disk)


@dataclass(frozen=True)
class Device:
    path: str  # the block device fio runs on
    detail: str  # how it was made, for the record
    server_pid: int | None = None  # the userspace server behind it, if ours (for py-spy)


Peer = Callable[[Geometry], AbstractContextManager[Device]]


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@contextmanager
def null_blk(g: Geometry) -> Iterator[Device]:
    """A null_blk device made through configfs with our geometry (no memory backing)."""
    if not NULLB.is_dir():
        if not os.path.ismount(CONFIGFS):
            _run(["mount", "-t", "configfs", "configfs", str(CONFIGFS)])
        if not NULLB.is_dir():
            raise RuntimeError(f"{NULLB} missing: null_blk is not loaded")
    node = NULLB / "bench_nullb"
    node.mkdir()
    try:
        settings = {
            "size": str(g.size >> 20),  # MiB
            "submit_queues": str(g.queues),
            "hw_queue_depth": str(g.depth),
            "memory_backed": "0",
            "power": "1",  # last: the device appears with the settings above
        }
        for key, value in settings.items():
            (node / key).write_text(value)
        # Since Linux 6.0 the disk takes the configfs directory's name; before, nullb<index>.
        name = node.name if Path(f"/sys/block/{node.name}").exists() else f"nullb{(node / 'index').read_text().strip()}"
        detail = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "power")
        yield Device(f"/dev/{name}", f"null_blk configfs {detail}")
    finally:
        (node / "power").write_text("0")
        node.rmdir()


@contextmanager
def loop(g: Geometry) -> Iterator[Device]:
    """The kernel loop driver over the backing file, direct I/O on (as kublk and the gadget)."""
    dev = _run(["losetup", "--find", "--show", "--direct-io=on", g.backing_file]).strip()
    try:
        dio = Path(f"/sys/block/{Path(dev).name}/loop/dio").read_text().strip()
        yield Device(dev, f"losetup --direct-io=on {g.backing_file} (dio={dio})")
    finally:
        _run(["losetup", "--detach", dev])


@contextmanager
def raw(g: Geometry) -> Iterator[Device]:
    """The backing block device itself, no driver of ours in between: what the disk can do."""
    sys_block = Path("/sys/block") / Path(g.backing_file).name
    if not sys_block.is_dir():
        raise RuntimeError(f"{g.backing_file} is not a whole block device (no {sys_block})")
    hw_queues = len(list((sys_block / "mq").iterdir())) if (sys_block / "mq").is_dir() else 0
    nr_requests = (sys_block / "queue" / "nr_requests").read_text().strip()
    yield Device(g.backing_file, f"{g.backing_file} itself ({hw_queues} hw queue(s), nr_requests {nr_requests})")


def with_queues(peer: Peer, queues: int) -> Peer:
    """``peer`` with ``queues`` hardware queues whatever the table's geometry says."""

    def made(g: Geometry) -> AbstractContextManager[Device]:
        return peer(dataclasses.replace(g, queues=queues))

    return made


_DEV_ID = re.compile(r"dev id (\d+):")
_DAEMON_PID = re.compile(r"daemon pid (\d+)")
_FLAGS = re.compile(r"flags (0x[0-9a-fA-F]+)")


def served_mode(flags: int) -> str:
    """The buffer mode a device with ``flags`` (as the driver has them) is served in."""
    try:
        return buffer_mode(flags).value
    except ValueError as e:  # e.g. -b (batch): a mode ublk_bindings does not serve
        return f"other ({e})"


def check_mode(who: str, asked: str, served: str | None) -> None:
    """A peer must serve in the mode its row is named for: a device the driver or server
    quietly put in another mode would compare unlike with like.  ``served`` None: the server
    did not say (it is then taken on trust)."""
    if served is not None and served != asked:
        raise RuntimeError(f"{who}: asked for buffer mode {asked}, the device is served in {served}")


def _kublk(binary: str, args: list[str], mode: str) -> AbstractContextManager[Device]:
    @contextmanager
    def made() -> Iterator[Device]:
        out = _run([binary, "add", *args])
        m = _DEV_ID.search(out)
        if not m:
            raise RuntimeError(f"kublk add {' '.join(args)}: no 'dev id' in its output:\n{out}")
        dev_id = m.group(1)
        pid = None
        try:
            listing = _run([binary, "list", "-n", dev_id])
            pid = _DAEMON_PID.search(listing)
            flags = _FLAGS.search(listing)
            served = served_mode(int(flags.group(1), 16)) if flags else None
            check_mode(f"kublk add {' '.join(args)}", mode, served)
            yield Device(f"/dev/ublkb{dev_id}", f"kublk add {' '.join(args)} (buffers: {served or mode + '?'})",
                         int(pid.group(1)) if pid else None)  # fmt: skip
        finally:
            _run([binary, "del", "-n", dev_id])
            if pid:  # its daemon lets go of the backing file (O_EXCL on a disk) as it exits
                _wait_gone(int(pid.group(1)))

    return made()


def _wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    """Wait until process ``pid`` has exited (the next peer may need what it held)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"kublk daemon {pid} still running {timeout_s:g} s after kublk del")


def kublk_null(binary: str, mode: str = modes.COPY) -> Peer:
    """kublk's null target in buffer ``mode`` (bench.modes)."""

    def peer(g: Geometry) -> AbstractContextManager[Device]:
        args = ["-t", "null", "-q", str(g.queues), "-d", str(g.depth), *modes.KUBLK_OPTIONS[mode]]
        return _kublk(binary, args, mode)

    return peer


def kublk_loop(binary: str, mode: str = modes.COPY) -> Peer:
    """kublk's loop target over the backing file in buffer ``mode`` (bench.modes)."""

    def peer(g: Geometry) -> AbstractContextManager[Device]:
        args = ["-t", "loop", "-q", str(g.queues), "-d", str(g.depth), *modes.KUBLK_OPTIONS[mode], g.backing_file]
        return _kublk(binary, args, mode)

    return peer


def kublk(binary: str, target: str, mode: str = modes.COPY) -> Peer:
    """kublk's ``target`` (null or loop) in buffer ``mode``."""
    return {"null": kublk_null, "loop": kublk_loop}[target](binary, mode)


def gadget_spec(target: str, g: Geometry, buffers: str) -> str:
    """The ``--device`` SPEC of a gadget of ``target`` (null, mem or file) in buffer mode
    ``buffers``: always stated, so ``auto`` never picks a mode behind the table's back."""
    spec = f"{target},queues={g.queues},depth={g.depth},buffers={buffers}"
    return spec + (f",path={g.backing_file}" if target == "file" else f",size={g.size}")


def gadget(target: str, log_dir: Path, buffers: str, name: str | None = None) -> Peer:
    """A gadget device of ``target`` (null, mem or file) in buffer mode ``buffers``
    (bench.modes), logging to ``log_dir/<name>.log`` (default: the gadget peer's name)."""
    log = log_dir / f"{name or modes.gadget_name(target, buffers)}.log"
    return served_gadget(lambda g: gadget_spec(target, g, buffers), log, buffers)


def served_gadget(spec_of: Callable[[Geometry], str], log: Path, buffers: str) -> Peer:
    """A gadget serving the SPEC ``spec_of(geometry)``, which states buffer mode ``buffers``
    (checked against the ready line), logging to ``log``: any target, its SPEC made by the
    table that measures it (bench.nbd's carries its server's URI)."""

    @contextmanager
    def peer(g: Geometry) -> Iterator[Device]:
        spec = spec_of(g)
        served = Gadget.serve([spec], log)
        try:
            mode = served.ready["devices"][0].get("buffers")
            check_mode(f"gadget {spec}", buffers, None if mode is None else str(mode))
            yield Device(served.block_devices[0], f"ublk-gadget serve --device {spec} (buffers: {mode or '?'})",
                         served.pid)  # fmt: skip
        finally:
            code = served.stop()
            if code != 0:
                raise RuntimeError(f"gadget {spec} exited {code} on SIGTERM; log {served.log}")

    return peer


def _beside_python(tool: str) -> str:
    """A console script of the running interpreter's environment (the VM has no venv on PATH)."""
    beside = Path(sys.executable).parent / tool
    return str(beside) if beside.exists() else tool


@contextmanager
def profiled(pid: int | None, out: Path | None) -> Iterator[None]:
    """Sample ``pid``'s Python stacks with py-spy into ``out``, idle samples included (a queue
    thread waiting in io_uring_enter is the kernel's share), as collapsed stacks: one line per
    distinct stack with its sample count (``python -m bench.profile`` reads them)."""
    if out is None:
        yield
        return
    if pid is None:
        raise RuntimeError(f"cannot profile into {out}: the device has no userspace server of ours")
    cmd = [_beside_python("py-spy"), "record", "--pid", str(pid), "--threads", "--idle", "--rate", "100", "--nonblocking",
           "--format", "raw", "--output", str(out)]  # fmt: skip
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        _, err = spy.communicate(timeout=60)
        if not out.exists():
            raise RuntimeError(f"{' '.join(cmd)}: no profile written: {err.strip()}")
