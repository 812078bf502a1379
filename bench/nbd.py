"""The NBD table: the gadget's nbd target against the kernel's own NBD client, on one server.

Both clients serve the same export as a block device: ``kernel-nbd`` is nbd.ko configured by
``nbd-client`` (over netlink: it negotiates, hands the sockets to the kernel and exits, so the
client's work runs in the kernel, in fio's submissions, kernel workers and nbd.ko's receive
workqueue, in no process to charge it to: its CPU per request is ``-``), ``gadget-nbd`` is
``ublk-gadget serve --device nbd,uri=...`` (copy mode: the data crosses a socket), its threads
pinned like every userspace server's.  Each has the table's queues as connections (nbd-client
``-C``: one hardware queue per connection, like the gadget's one connection per queue), block
size 512 and a 30 s window before a lost request fails (nbd-client ``-t``, the gadget's
``reconnect=`` default).  nbd.ko's tags are its fixed 128 per connection, the gadget's the
table's depth (64): fio never has more than 32 in flight, so neither runs out; each device's
queueing (hardware queues, tags, scheduler) is in its row's detail.

The server is nbdkit's memory plugin with ``allocator=malloc,mlock=true``: every byte of the
export is real memory from the start, so neither client reads holes (the default sparse
allocator answers a read of a never-written block without touching data, and the peer that
ran first would have read more of them), and it locks less (nbdkit-memory-plugin(1)).  One
server process per transport serves both clients of it for the whole table, both connected:
the rounds alternate between them minutes apart at most, so whatever the server's threads,
memory or host do over the run they do to both alike, which one fresh server per peer would
not promise.  nbdkit is left to the scheduler (``--nbdkit-cpu`` pins it): pinned beside fio it
would slow the kernel client's submissions, beside the gadget the gadget.  TCP on the guest's
loopback by default; ``--nbd-transports tcp,unix`` adds a unix-socket pair (the goal is
judged over TCP).

The stall of a live handover of a gadget-nbd device under fio is bench.handover's, on a server
of its own (the table's is gone by then: the record is written before the stall runs).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import disk, fio, handover, modes, peers, report, rounds
from .fio import Result
from .report import Results

TCP, UNIX = "tcp", "unix"
TRANSPORTS = (TCP, UNIX)
KERNEL, GADGET = "kernel-nbd", "gadget-nbd"  # the TCP pair: the goals'
BLOCK_SIZE = 512
TIMEOUT_S = 30  # nbd-client -t: as the gadget's reconnect= default, EIO after 30 s without a server
ALLOCATOR = "allocator=malloc,mlock=true"
RUN = Path("/run")  # pid files and sockets (tmpfs in the VM)
SYS_BLOCK = Path("/sys/block")
WORKLOADS = tuple(
    w for w in fio.WORKLOADS
    if w.name in ("4k-randread-qd1", "4k-randread-qd32", "4k-randwrite-qd1", "4k-randwrite-qd32",
                  "128k-read-qd32", "128k-write-qd32")
)  # fmt: skip
#: The workloads of the goal: the gadget at least as fast as the kernel client at QD32.
GOAL_WORKLOADS = ("4k-randread-qd32", "4k-randwrite-qd32")


def name(client: str, transport: str) -> str:
    """A peer's name: the client (``kernel-nbd``, ``gadget-nbd``), suffixed unless TCP."""
    return client if transport == TCP else f"{client}-{transport}"


def peer_order(transports: Sequence[str]) -> list[str]:
    """Each transport's kernel client then gadget: a pair's rounds run side by side."""
    return [name(c, t) for t in transports for c in (KERNEL, GADGET)]


def parse_transports(text: str) -> tuple[str, ...]:
    """``--nbd-transports``: comma-separated, TCP first whatever the order given."""
    asked = {t for t in text.split(",") if t}
    unknown = asked - set(TRANSPORTS)
    if unknown or not asked:
        raise ValueError(f"{text!r}: the transports are {', '.join(TRANSPORTS)}, comma-separated")
    return tuple(t for t in TRANSPORTS if t in asked)


# --- the server ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Server:
    """A running nbdkit: where each client finds it."""

    transport: str
    uri: str  # the gadget's uri=
    address: tuple[str, ...]  # nbd-client's: HOST PORT, or -unix SOCKET
    pid: int
    argv: tuple[str, ...]


def _tool(command: str) -> str:
    """``command`` on PATH, else where Debian puts it (the guest has the host's PATH, which
    may lack /usr/sbin)."""
    found = shutil.which(command)
    if found:
        return found
    for where in (Path("/usr/sbin"), Path("/usr/bin")):
        if (where / command).exists():
            return str(where / command)
    return command


def nbdkit() -> str:
    return _tool("nbdkit")


def nbd_client() -> str:
    return _tool("nbd-client")


def uri_of(transport: str, where: str) -> str:
    """The export's URI (the default export: nbd-client's ``-N ''``) at a port or socket path."""
    return f"nbd://127.0.0.1:{where}/" if transport == TCP else f"nbd+unix:///?socket={where}"


def address_of(transport: str, where: str) -> tuple[str, ...]:
    return ("127.0.0.1", where) if transport == TCP else ("-unix", where)


def nbdkit_command(transport: str, where: str, size: int, pidfile: Path) -> list[str]:
    """nbdkit in the foreground (the bench stops it), writing ``pidfile`` once it listens."""
    listen = ["-i", "127.0.0.1", "-p", where] if transport == TCP else ["-U", where]
    return [nbdkit(), "-f", "--exit-with-parent", "-P", str(pidfile), *listen, "memory", str(size), ALLOCATOR]


def version() -> str:
    """nbdkit's version line (``nbdkit 1.32.5``), for the record."""
    done = subprocess.run([nbdkit(), "--version"], capture_output=True, text=True)
    return done.stdout.strip() or f"nbdkit --version: exit {done.returncode}: {done.stderr.strip()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(proc: subprocess.Popen[bytes], argv: list[str], pidfile: Path, log: Path,
                timeout_s: float = 30.0) -> None:
    """Until nbdkit has written its pid file (it listens then); its log's tail if it exits."""
    deadline = time.monotonic() + timeout_s
    while not (pidfile.exists() and pidfile.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exit {proc.returncode}" if proc.poll() is not None else f"not listening after {timeout_s:g} s"
            raise RuntimeError(f"{shlex.join(argv)}: {why}; log {log}:\n{_tail(log)}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def serve(transport: str, size: int, log_dir: Path, tag: str, cpu: int | None = None) -> Iterator[Server]:
    """An nbdkit memory export of ``size`` bytes on ``transport``, logging to ``log_dir``;
    ``tag`` names its files; ``cpu``: the one CPU its threads run on (None: unpinned)."""
    pidfile = RUN / f"ublk-bench-nbdkit-{tag}-{transport}.pid"
    where = str(free_port()) if transport == TCP else str(RUN / f"ublk-bench-nbdkit-{tag}.sock")
    pidfile.unlink(missing_ok=True)
    if transport == UNIX:
        Path(where).unlink(missing_ok=True)
    argv = nbdkit_command(transport, where, size, pidfile)
    log = log_dir / f"nbdkit-{tag}-{transport}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, argv, pidfile, log)
        if cpu is not None:
            rounds.pin(proc.pid, cpu)  # the threads it starts later inherit the mask
        yield Server(transport, uri_of(transport, where), address_of(transport, where), proc.pid, tuple(argv))
    finally:
        _stop(proc)
        pidfile.unlink(missing_ok=True)


@contextmanager
def servers(transports: Sequence[str], size: int, log_dir: Path, cpu: int | None = None) -> Iterator[dict[str, Server]]:
    """One server per transport, all up for the whole table."""
    with ExitStack() as stack:
        yield {t: stack.enter_context(serve(t, size, log_dir, "table", cpu)) for t in transports}


# --- the clients -----------------------------------------------------------------------------

def nbd_client_command(server: Server, device: str, connections: int) -> list[str]:
    """nbd-client 3.24 connecting ``device`` to the server's default export."""
    return [nbd_client(), *server.address, device, "-N", "", "-b", str(BLOCK_SIZE), "-C", str(connections),
            "-t", str(TIMEOUT_S)]  # fmt: skip


def gadget_spec(uri: str, g: peers.Geometry) -> str:
    """The gadget's ``--device`` SPEC for the export at ``uri``, its geometry and block size
    as the kernel client's, its buffer mode stated (the nbd target serves in copy only)."""
    return f"nbd,uri={uri},queues={g.queues},depth={g.depth},block_size={BLOCK_SIZE},buffers={modes.COPY}"


def _sys(device: str) -> Path:
    return SYS_BLOCK / Path(device).name


def connected(device: str) -> bool:
    """Whether an nbd device is in use: a size, or the pid file nbd.ko keeps while configured."""
    sys_block = _sys(device)
    return (sys_block / "pid").exists() or int((sys_block / "size").read_text()) > 0


def free_device() -> str:
    """The first /dev/nbdN nobody has connected (nbd.ko makes 16 at load)."""
    found = sorted((int(p.name[3:]) for p in SYS_BLOCK.glob("nbd*") if p.name[3:].isdigit()))
    if not found:
        raise RuntimeError(f"no {SYS_BLOCK}/nbd*: nbd.ko is not loaded (the test bed loads it at boot)")
    for index in found:
        if not connected(f"/dev/nbd{index}"):
            return f"/dev/nbd{index}"
    raise RuntimeError(f"every one of the {len(found)} nbd devices is connected")


def queue_of(device: str) -> str:
    """How the block layer queues for ``device``: what the two clients should share."""
    sys_block = _sys(device)
    try:
        hctxs = sorted(p for p in (sys_block / "mq").iterdir() if p.name.isdigit())
        tags = (hctxs[0] / "nr_tags").read_text().strip() if hctxs else "?"
        chosen = re.search(r"\[(\S+)\]", (sys_block / "queue" / "scheduler").read_text())
    except OSError as e:
        return f"queueing unknown ({e.strerror})"
    return f"{len(hctxs)} hw queue(s) x {tags} tags, scheduler {chosen.group(1) if chosen else 'none'}"


def _wait(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)}: exit {done.returncode}: {done.stdout.strip()}")


def kernel_nbd(server: Server) -> peers.Peer:
    """nbd.ko on a free /dev/nbdN, one connection per queue of the geometry."""

    @contextmanager
    def peer(g: peers.Geometry) -> Iterator[peers.Device]:
        device = free_device()
        cmd = nbd_client_command(server, device, g.queues)
        _run(cmd)
        try:
            if not _wait(lambda: int((_sys(device) / "size").read_text()) > 0, 10):
                raise RuntimeError(f"{shlex.join(cmd)}: {device} has no size 10 s later")
            yield peers.Device(device, f"{shlex.join(cmd)} ({queue_of(device)})")
        finally:
            _run([nbd_client(), "-d", device])
            if not _wait(lambda: not connected(device), 30):
                raise RuntimeError(f"{device} still connected 30 s after nbd-client -d")

    return peer


def with_queueing(peer: peers.Peer) -> peers.Peer:
    """``peer`` with its device's queueing added to its detail."""

    @contextmanager
    def made(g: peers.Geometry) -> Iterator[peers.Device]:
        with peer(g) as d:
            yield dataclasses.replace(d, detail=f"{d.detail} ({queue_of(d.path)})")

    return made


def gadget_nbd(server: Server, log: Path) -> peers.Peer:
    return with_queueing(peers.served_gadget(lambda g: gadget_spec(server.uri, g), log, modes.COPY))


def all_peers(running: Mapping[str, Server], log_dir: Path) -> dict[str, peers.Peer]:
    """Both clients of every running server."""
    made: dict[str, peers.Peer] = {}
    for t, server in running.items():
        made[name(KERNEL, t)] = kernel_nbd(server)
        made[name(GADGET, t)] = gadget_nbd(server, log_dir / f"{name(GADGET, t)}.log")
    return made


# --- the figures -----------------------------------------------------------------------------

def pairs(order: Sequence[str]) -> list[tuple[str, str, str]]:
    """(transport, gadget, kernel client) of each transport both clients of are in ``order``."""
    return [(t, name(GADGET, t), name(KERNEL, t)) for t in TRANSPORTS
            if name(GADGET, t) in order and name(KERNEL, t) in order]  # fmt: skip


def _cpu_of(r: Result | str | None) -> float | None:
    return r.server_cpu_us_per_io if isinstance(r, Result) else None


def summary(results: Results, order: Sequence[str]) -> dict[str, Any]:
    """Per transport: gadget over the kernel client per workload, and the gadget's CPU per request."""
    out: dict[str, Any] = {}
    for t, g, k in pairs(order):
        mine, theirs = results.get(g, {}), results.get(k, {})
        out[t] = {
            "gadget": g, "kernel": k,
            "gadget_over_kernel": {w.name: report.ratio_of(mine.get(w.name), theirs.get(w.name)) for w in WORKLOADS},
            "gadget_cpu_us_per_io": {w.name: _cpu_of(mine.get(w.name)) for w in WORKLOADS},
        }  # fmt: skip
    return {"by_transport": out}


_FIRST, _COL, _RATIO = 20, 17, 14


def _row(label: str, cells: Sequence[str], ratios: Sequence[str] = ()) -> str:
    return (f"  {label:<{_FIRST - 2}}" + "".join(f"{c:>{_COL}}" for c in cells)
            + "".join(f"{r:>{_RATIO}}" for r in ratios)).rstrip()  # fmt: skip


def ratio_name(transport: str) -> str:
    return "xkernel" if transport == TCP else f"xkernel-{transport}"


def table(results: Results, order: Sequence[str], heading: str) -> str:
    """IOPS per workload and client, each gadget over the kernel client on the same transport
    (an ``xkernel`` column per transport), and the gadget's CPU per request."""
    both = pairs(order)
    lines = [heading, f"{'IOPS':<{_FIRST}}" + "".join(f"{p:>{_COL}}" for p in order)
             + "".join(f"{ratio_name(t):>{_RATIO}}" for t, _, _ in both)]  # fmt: skip
    for w in WORKLOADS:
        ratios = [report.fmt_ratio(report.ratio(results, g, k, w.name)) for _, g, k in both]
        lines.append(_row(w.name, [report.fmt_iops(results.get(p, {}).get(w.name)) for p in order], ratios))
    lines.append("cpu us/IO")
    for w in WORKLOADS:
        cells = [report.fmt_cpu(results.get(p, {}).get(w.name)) if p.startswith(GADGET) else "-" for p in order]
        lines.append(_row(w.name, cells))
    lines += disk.failures(results, order, WORKLOADS)
    return "\n".join(lines)


def detail(g: peers.Geometry, running: Mapping[str, Server], nbdkit_version: str,
           nbdkit_cpu: int | None) -> dict[str, Any]:
    """What the table's heading and record say about its server and clients."""
    return {
        "server": nbdkit_version, "plugin": f"memory {g.size} {ALLOCATOR}",
        "servers": {t: " ".join(s.argv) for t, s in running.items()},
        "transports": list(running), "size": g.size, "queues": g.queues, "depth": g.depth,
        "block_size": BLOCK_SIZE, "nbdkit_cpu": nbdkit_cpu,
    }  # fmt: skip


def heading(d: Mapping[str, Any]) -> str:
    """The table's first line: the server, where, and the clients' geometry."""
    where = " and ".join("TCP on 127.0.0.1" if t == TCP else "a unix socket" for t in d["transports"])
    pinned = "unpinned" if d["nbdkit_cpu"] is None else f"on vCPU {d['nbdkit_cpu']}"
    return (f"nbd: {d['server']} memory plugin ({d['size'] >> 20} MiB, {ALLOCATOR}) over {where}, one server "
            f"per transport for both clients, {pinned}; each client {d['queues']} connection(s)/queue(s), "
            f"gadget depth {d['depth']}, block size {d['block_size']}")  # fmt: skip


# --- the handover stall ----------------------------------------------------------------------

STALL_TITLE = "I/O latency across ublk-gadget handovers (fio 4k randrw QD32 on an nbd device, nbdkit over TCP)"


def measure_stall(g: peers.Geometry, out_dir: Path, handovers: int, interval_s: float) -> handover.StallResult:
    """bench.handover's stall run on a gadget-nbd device of a fresh server (TCP): its picture,
    logs and fio report go to ``out_dir``, beside none of the file device's."""
    with serve(TCP, g.size, out_dir / "logs", "stall") as server:
        return handover.measure(gadget_spec(server.uri, g), out_dir, handovers=handovers, interval_s=interval_s,
                                title=STALL_TITLE)  # fmt: skip
