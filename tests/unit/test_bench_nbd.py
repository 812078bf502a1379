"""bench.nbd: the NBD table's clients, server, ratios, goal and record."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench import gadget, goals, guest, nbd, peers, publish, rounds
from bench.fio import Result, Workload
from ublk_gadget import spec as gadget_spec

G = peers.Geometry(256 << 20, 1, 64, "")
TCP = nbd.Server("tcp", "nbd://127.0.0.1:4567/", ("127.0.0.1", "4567"), 10, ("nbdkit", "..."))
UNIX = nbd.Server("unix", "nbd+unix:///?socket=/run/s.sock", ("-unix", "/run/s.sock"), 11, ("nbdkit", "..."))


def res(iops: float, cpu: float | None = None, rounds_iops: tuple[float, ...] = ()) -> Result:
    return Result(iops=iops, bw_bytes=iops * 4096, lat_p50_ns=1000, lat_p99_ns=2000, lat_max_ns=3000, ios=10,
                  rounds_iops=rounds_iops, server_cpu_us_per_io=cpu)  # fmt: skip


def client(iops: float, cpu: float | None = None) -> dict[str, Result | str]:
    return {w.name: res(iops / (1 if w.bs == 4096 else 8), cpu) for w in nbd.WORKLOADS}


RESULTS: dict[str, dict[str, Result | str]] = {
    "kernel-nbd": client(4000),
    "gadget-nbd": {**client(5000, cpu=80), "4k-randwrite-qd32": res(3000, cpu=90)},
}
ORDER = ["kernel-nbd", "gadget-nbd"]


# --- what the table runs ---------------------------------------------------------------------

def test_the_asked_workloads_both_128k_directions_included() -> None:
    assert [w.name for w in nbd.WORKLOADS] == [
        "4k-randread-qd1", "4k-randread-qd32", "4k-randwrite-qd1", "4k-randwrite-qd32",
        "128k-read-qd32", "128k-write-qd32"]  # fmt: skip
    assert set(nbd.GOAL_WORKLOADS) <= {w.name for w in nbd.WORKLOADS}


def test_peers_are_named_by_client_and_transport_tcp_unsuffixed() -> None:
    assert nbd.peer_order(["tcp"]) == ["kernel-nbd", "gadget-nbd"]
    assert nbd.peer_order(["tcp", "unix"]) == ["kernel-nbd", "gadget-nbd", "kernel-nbd-unix", "gadget-nbd-unix"]
    assert set(nbd.all_peers({"tcp": TCP, "unix": UNIX}, Path("/logs"))) == set(nbd.peer_order(["tcp", "unix"]))


def test_transports_are_checked_and_put_tcp_first() -> None:
    assert nbd.parse_transports("unix,tcp") == ("tcp", "unix")
    assert nbd.parse_transports("tcp") == ("tcp",)
    for bad in ("udp", "", "tcp,rdma"):
        with pytest.raises(ValueError, match="the transports are tcp, unix"):
            nbd.parse_transports(bad)


def test_a_bad_transport_is_a_usage_error_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        guest.main(["--kublk", "/k", "--out", str(tmp_path / "out"), "--nbd-transports", "udp"])
    assert e.value.code == 2 and not (tmp_path / "out").exists()


def test_nbd_is_a_table_of_its_own() -> None:
    assert guest.TABLES[-1] == "nbd"


# --- the server ------------------------------------------------------------------------------

def test_nbdkit_serves_a_locked_memory_export_in_the_foreground() -> None:
    cmd = nbd.nbdkit_command("tcp", "4567", 256 << 20, Path("/run/p.pid"))
    assert cmd[1:] == ["-f", "--exit-with-parent", "-P", "/run/p.pid", "-i", "127.0.0.1", "-p", "4567",
                       "memory", str(256 << 20), "allocator=malloc,mlock=true"]  # fmt: skip
    unix = nbd.nbdkit_command("unix", "/run/s.sock", 1 << 20, Path("/run/p.pid"))
    assert unix[unix.index("-U") + 1] == "/run/s.sock" and "-p" not in unix


def test_both_clients_find_the_same_default_export() -> None:
    assert nbd.uri_of("tcp", "4567") == "nbd://127.0.0.1:4567/"
    assert nbd.address_of("tcp", "4567") == ("127.0.0.1", "4567")
    assert nbd.uri_of("unix", "/run/s.sock") == "nbd+unix:///?socket=/run/s.sock"
    assert nbd.address_of("unix", "/run/s.sock") == ("-unix", "/run/s.sock")


needs_nbdkit = pytest.mark.skipif(shutil.which("nbdkit") is None, reason="nbdkit is not installed")


@pytest.fixture
def run() -> Iterator[Path]:
    """A short directory for the pid file and socket (a unix socket's path has 107 bytes at most)."""
    with tempfile.TemporaryDirectory(prefix="bench-nbd-") as d:
        yield Path(d)


@needs_nbdkit
@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_a_real_nbdkit_listens_once_served_and_is_gone_after(
    transport: str, run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nbd, "RUN", run)
    with nbd.serve(transport, 1 << 20, run / "logs", "t") as server:
        family = socket.AF_INET if transport == "tcp" else socket.AF_UNIX
        where: Any = ("127.0.0.1", int(server.address[1])) if transport == "tcp" else server.address[1]
        with socket.socket(family) as s:
            s.connect(where)
            assert s.recv(8) == b"NBDMAGIC"  # the newstyle handshake's first word
        assert (run / f"ublk-bench-nbdkit-t-{transport}.pid").exists()
    assert not (run / f"ublk-bench-nbdkit-t-{transport}.pid").exists()
    with pytest.raises(OSError), socket.socket(family) as s:
        s.connect(where)


@needs_nbdkit
def test_a_server_that_does_not_start_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nbd, "RUN", tmp_path)
    monkeypatch.setattr(nbd, "ALLOCATOR", "allocator=nonesuch")
    with pytest.raises(RuntimeError, match=r"exit \d+; log .*nbdkit-t-tcp.log:\n.*nonesuch"):
        with nbd.serve("tcp", 1 << 20, tmp_path, "t"):
            pass  # pragma: no cover


# --- the clients -----------------------------------------------------------------------------

def test_nbd_client_connects_as_the_gadget_does() -> None:
    cmd = nbd.nbd_client_command(TCP, "/dev/nbd3", 2)
    assert shlex.join(cmd[1:]) == "127.0.0.1 4567 /dev/nbd3 -N '' -b 512 -C 2 -t 30"
    unix = nbd.nbd_client_command(UNIX, "/dev/nbd0", 1)
    assert unix[1:4] == ["-unix", "/run/s.sock", "/dev/nbd0"] and unix[unix.index("-C") + 1] == "1"


@pytest.mark.parametrize("server", [TCP, UNIX], ids=["tcp", "unix"])
def test_the_gadget_spec_matches_the_kernel_clients_geometry_and_parses(server: nbd.Server) -> None:
    text = nbd.gadget_spec(server.uri, peers.Geometry(1 << 30, 2, 64, ""))
    parsed = gadget_spec.parse_spec(text)
    assert (parsed.target, parsed.uri, parsed.queues, parsed.depth) == ("nbd", server.uri, 2, 64)
    assert parsed.block_size == nbd.BLOCK_SIZE == 512 and parsed.buffers == "copy"
    assert parsed.size is None  # the export's own size
    assert parsed.reconnect == nbd.TIMEOUT_S  # the window nbd-client -t gives the kernel client


def fake_sys(root: Path, devices: dict[int, int], scheduler: str = "[mq-deadline] none") -> None:
    """/sys/block/nbdN for each N -> its size in sectors (0: not connected)."""
    for n, size in devices.items():
        d = root / f"nbd{n}"
        (d / "mq" / "0").mkdir(parents=True)
        (d / "mq" / "0" / "nr_tags").write_text("128\n")
        (d / "queue").mkdir()
        (d / "queue" / "scheduler").write_text(scheduler + "\n")
        (d / "size").write_text(f"{size}\n")


def test_the_first_unconnected_nbd_device_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nbd, "SYS_BLOCK", tmp_path)
    fake_sys(tmp_path, {0: 2048, 1: 0, 2: 0, 10: 0})
    (tmp_path / "nbd1" / "pid").write_text("77\n")  # configured, not sized yet
    assert nbd.free_device() == "/dev/nbd2"
    assert nbd.connected("/dev/nbd0") and nbd.connected("/dev/nbd1") and not nbd.connected("/dev/nbd10")
    assert nbd.queue_of("/dev/nbd0") == "1 hw queue(s) x 128 tags, scheduler mq-deadline"


def test_without_nbd_ko_or_free_devices_it_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nbd, "SYS_BLOCK", tmp_path)
    with pytest.raises(RuntimeError, match="nbd.ko is not loaded"):
        nbd.free_device()
    fake_sys(tmp_path, {0: 8})
    with pytest.raises(RuntimeError, match="every one of the 1 nbd devices is connected"):
        nbd.free_device()
    assert nbd.queue_of("/dev/nbd9").startswith("queueing unknown")


class FakeNbdClient:
    """``nbd._run`` for nbd-client: connecting sizes the device, ``-d`` unsizes it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[list[str]] = []

    def __call__(self, cmd: list[str]) -> None:
        self.calls.append(cmd)
        dev = cmd[cmd.index("-d") + 1] if "-d" in cmd else next(a for a in cmd if a.startswith("/dev/nbd"))
        (self.root / Path(dev).name / "size").write_text("0\n" if "-d" in cmd else "524288\n")


def test_the_kernel_client_is_connected_then_disconnected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nbd, "SYS_BLOCK", tmp_path)
    fake_sys(tmp_path, {0: 0, 1: 0}, scheduler="none [mq-deadline]")
    fake = FakeNbdClient(tmp_path)
    monkeypatch.setattr(nbd, "_run", fake)
    with nbd.kernel_nbd(TCP)(G) as dev:
        assert dev.path == "/dev/nbd0" and dev.server_pid is None  # nothing of ours to charge CPU to
        assert "-C 1" in dev.detail and dev.detail.endswith("(1 hw queue(s) x 128 tags, scheduler mq-deadline)")
    assert fake.calls[0][1:4] == ["127.0.0.1", "4567", "/dev/nbd0"]
    assert fake.calls[-1][1:] == ["-d", "/dev/nbd0"] and not nbd.connected("/dev/nbd0")


def test_a_device_that_never_sizes_is_disconnected_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nbd, "SYS_BLOCK", tmp_path)
    fake_sys(tmp_path, {0: 0})
    calls: list[list[str]] = []
    monkeypatch.setattr(nbd, "_run", calls.append)
    monkeypatch.setattr(nbd, "_wait", lambda check, timeout_s: check())
    with pytest.raises(RuntimeError, match="has no size"):
        with nbd.kernel_nbd(TCP)(G):
            pass  # pragma: no cover
    assert calls[-1][1:] == ["-d", "/dev/nbd0"]


class FakeGadget:
    served: list[FakeGadget] = []

    def __init__(self, devices: list[str], log: Path) -> None:
        self.devices, self.log, self.pid, self.stopped = devices, log, 99, False
        self.ready = {"event": "ready", "devices": [{"block_device": "/dev/ublkb3", "buffers": "copy"}]}
        self.block_devices = ["/dev/ublkb3"]
        FakeGadget.served.append(self)

    def stop(self) -> int:
        self.stopped = True
        return 0


def test_the_gadget_serves_the_servers_uri_in_copy_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGadget.served = []
    monkeypatch.setattr(gadget.Gadget, "serve", staticmethod(FakeGadget))
    monkeypatch.setattr(nbd, "SYS_BLOCK", tmp_path)
    made = nbd.all_peers({"tcp": TCP, "unix": UNIX}, Path("/logs"))
    with made["gadget-nbd-unix"](G) as dev:
        assert dev.path == "/dev/ublkb3" and dev.server_pid == 99  # pinned and CPU-probed like any gadget
        assert "queueing unknown" in dev.detail  # no such sysfs here
    served = FakeGadget.served[0]
    assert served.devices == [f"nbd,uri={UNIX.uri},queues=1,depth=64,block_size=512,buffers=copy"]
    assert served.log == Path("/logs/gadget-nbd-unix.log") and served.stopped


# --- the figures -----------------------------------------------------------------------------

def rows_of(text: str) -> dict[str, list[list[str]]]:
    rows: dict[str, list[list[str]]] = {}
    for line in text.splitlines()[1:]:
        if line.split():
            rows.setdefault(line.split()[0], []).append(line.split()[1:])
    return rows


def test_the_table_divides_the_gadget_by_the_kernel_client() -> None:
    text = nbd.table(RESULTS, ORDER, "nbd: heading")
    lines = text.splitlines()
    assert lines[0] == "nbd: heading" and lines[1].split() == ["IOPS", "kernel-nbd", "gadget-nbd", "xkernel"]
    rows = rows_of(text)
    iops, cpu = rows["4k-randread-qd32"]
    assert iops == ["4000", "5000", "1.25x"]
    assert cpu == ["-", "80"]  # the kernel client runs in no process of its own
    assert rows["4k-randwrite-qd32"][0] == ["4000", "3000", "0.75x"]
    assert rows["128k-write-qd32"][0] == ["500", "625", "1.25x"]
    assert "failed" not in text


def test_columns_line_up_under_their_headers() -> None:
    lines = nbd.table(RESULTS, ORDER, "h").splitlines()
    header, row = lines[1], next(line for line in lines if line.strip().startswith("4k-randread-qd32"))
    for word in ("kernel-nbd", "gadget-nbd", "xkernel"):
        end = header.index(word) + len(word)
        assert row[end - 1] != " " and (end == len(row) or row[end] == " ")


def test_a_unix_pair_gets_its_own_ratio_column() -> None:
    both = {**RESULTS, "kernel-nbd-unix": client(6000), "gadget-nbd-unix": client(3000, cpu=70)}
    order = nbd.peer_order(["tcp", "unix"])
    text = nbd.table(both, order, "h")
    assert text.splitlines()[1].split() == ["IOPS", *order, "xkernel", "xkernel-unix"]
    assert rows_of(text)["4k-randread-qd1"][0] == ["4000", "5000", "6000", "3000", "1.25x", "0.50x"]
    s = nbd.summary(both, order)["by_transport"]
    assert s["unix"]["gadget_over_kernel"]["4k-randread-qd1"] == pytest.approx(0.5)
    assert s["unix"]["gadget_cpu_us_per_io"]["128k-read-qd32"] == 70


def test_a_kernel_client_that_did_not_start_is_named_once_and_leaves_no_ratio() -> None:
    gone = {w.name: "failed to start: RuntimeError: nbd-client ...: exit 1: Socket failed" for w in nbd.WORKLOADS}
    text = nbd.table({**RESULTS, "kernel-nbd": gone}, ORDER, "h")
    assert rows_of(text)["4k-randread-qd1"][0] == ["failed", "5000", "-"]
    assert text.count("Socket failed") == 1 and "failed: kernel-nbd (every workload)" in text


def test_the_summary_pairs_rounds() -> None:
    r = {"kernel-nbd": {"4k-randread-qd32": res(4000, rounds_iops=(4000, 2000, 4400))},
         "gadget-nbd": {"4k-randread-qd32": res(4400, cpu=50, rounds_iops=(4400, 2200, 4400))}}  # fmt: skip
    s = nbd.summary(r, ORDER)["by_transport"]["tcp"]
    assert (s["gadget"], s["kernel"]) == ("gadget-nbd", "kernel-nbd")
    assert s["gadget_over_kernel"]["4k-randread-qd32"] == pytest.approx(1.1)  # the busy round divides out
    assert s["gadget_over_kernel"]["128k-read-qd32"] is None
    assert nbd.summary(r, ["gadget-nbd"]) == {"by_transport": {}}


def test_the_heading_names_the_server_and_geometry() -> None:
    running = {"tcp": TCP}
    d = nbd.detail(G, running, "nbdkit 1.32.5", None)
    h = nbd.heading(d)
    assert h.startswith("nbd: nbdkit 1.32.5 memory plugin (256 MiB, allocator=malloc,mlock=true) over TCP on "
                        "127.0.0.1, one server per transport for both clients, unpinned; ")
    assert h.endswith("each client 1 connection(s)/queue(s), gadget depth 64, block size 512")
    assert "clients, on vCPU 1;" in nbd.heading(nbd.detail(G, running, "nbdkit 1.32.5", 1))


# --- the goal --------------------------------------------------------------------------------

def by_goal(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(c["goal"]): c for c in checks}


def test_the_goal_is_the_gadget_at_least_the_kernel_client_at_qd32() -> None:
    c = by_goal(goals.checks({}, {}, {}, None, RESULTS))
    read, write = c["nbd: gadget-nbd 4k-randread-qd32 >= 1.0x kernel-nbd"], c[
        "nbd: gadget-nbd 4k-randwrite-qd32 >= 1.0x kernel-nbd"]
    assert (read["value"], read["met"]) == (1.25, True)
    assert (write["value"], write["met"]) == (0.75, False)
    assert list(c).index("nbd: gadget-nbd 4k-randread-qd32 >= 1.0x kernel-nbd") < list(c).index(
        "handover stall < 0.5 s")


def test_without_the_nbd_table_its_goal_is_not_measured() -> None:
    c = by_goal(goals.checks({}, {}, {}, None))
    assert c["nbd: gadget-nbd 4k-randread-qd32 >= 1.0x kernel-nbd"]["met"] is None
    unix_only = {"kernel-nbd-unix": client(1), "gadget-nbd-unix": client(2)}
    assert all(x["met"] is None for x in goals.nbd_checks(unix_only))  # judged over TCP only


# --- the record ------------------------------------------------------------------------------

def measured(order: list[str], workloads: tuple[Workload, ...], results: dict[str, dict[str, Result | str]]
             ) -> rounds.Measured:
    m = rounds.Measured(order, workloads)
    m.details = {n: f"made {n}" for n in order}
    m.cells = {n: {w.name: rounds.Cell([r]) if isinstance(r := results[n][w.name], Result) else rounds.Cell(error=r)
                   for w in workloads} for n in order}  # fmt: skip
    return m


def args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(out=tmp_path, fio_cpu=0, server_cpu=1, runtime=2.0, ramp=0.0, rounds=1)


STALL = {"workload": "4k-randrw-qd32", "ios": 1000, "steady_p99_ms": 1.5, "worst_live_handover_stall_ms": 120.0,
         "windows": [{"kind": "handover", "window_ms": 300.0, "longest_spanning_io_ms": 120.0, "spanning_ios": 32}],
         "picture": "/out/nbd/handover-latency.png", "notes": []}  # fmt: skip


def record(tmp_path: Path, nbd_table: guest.Table, nbd_stall: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    main = measured([], (), {})
    skipped = guest.Table(why_not="skipped (--tables)")
    text = guest.record(args(tmp_path), G, main, skipped, skipped, None, {}, "", nbd_table, nbd_stall)
    return text, json.loads((tmp_path / "results.json").read_text())


def test_the_nbd_table_and_its_stall_are_in_the_record_and_the_text(tmp_path: Path) -> None:
    d = nbd.detail(G, {"tcp": TCP}, "nbdkit 1.32.5", None)
    t = guest.Table(measured(ORDER, nbd.WORKLOADS, RESULTS), detail=d)
    text, doc = record(tmp_path, t, STALL)
    assert doc["nbd"]["server"] == "nbdkit 1.32.5" and set(doc["nbd"]["peers"]) == set(ORDER)
    assert doc["nbd"]["by_transport"]["tcp"]["gadget_over_kernel"]["4k-randread-qd32"] == 1.25
    assert doc["nbd_handover_stall"]["worst_live_handover_stall_ms"] == 120.0
    assert text.index("shared-CPU table: not measured") < text.index("nbd: nbdkit 1.32.5") < text.index(
        "nbd handover stall (4k-randrw-qd32") < text.index("\nhandover stall: not measured (yet)")
    assert "picture: /out/nbd/handover-latency.png\n  worst live handover stall: 120.0 ms\n" in text
    goal = next(line for line in text.splitlines() if "nbd: gadget-nbd 4k-randwrite-qd32" in line)
    assert goal.split()[-3:] == ["0.750", "NOT", "met"]


def test_before_the_stall_and_without_the_table_it_says_so(tmp_path: Path) -> None:
    d = nbd.detail(G, {"tcp": TCP}, "nbdkit 1.32.5", None)
    text, _ = record(tmp_path, guest.Table(measured(ORDER, nbd.WORKLOADS, RESULTS), detail=d), None)
    assert "nbd handover stall: not measured (yet)" in text
    text, doc = record(tmp_path, guest.Table(why_not="RuntimeError: nbdkit: exit 1"), {"error": "skipped"})
    assert "nbd table: not measured: RuntimeError: nbdkit: exit 1" in text and "nbd handover" not in text
    assert doc["nbd"] == {"error": "RuntimeError: nbdkit: exit 1"}


def test_the_table_is_measured_on_the_servers_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    @contextmanager
    def servers(transports: tuple[str, ...], size: int, log_dir: Path, cpu: int | None) -> Iterator[dict[str, Any]]:
        seen["servers"] = (transports, size, log_dir, cpu)
        yield {"tcp": TCP}
        seen["stopped"] = True

    def measure(available: dict[str, peers.Peer], order: list[str], g: peers.Geometry, *rest: Any,
                label: str = "") -> rounds.Measured:
        seen["measure"] = (sorted(available), order, g, rest[0], label, "stopped" in seen)
        return measured(order, nbd.WORKLOADS, RESULTS)

    monkeypatch.setattr(nbd, "servers", servers)
    monkeypatch.setattr(nbd, "version", lambda: "nbdkit 1.32.5")
    monkeypatch.setattr(rounds, "measure", measure)
    a = argparse.Namespace(out=tmp_path, size=64 << 20, queues=2, depth=32, nbd_transports=("tcp",), nbdkit_cpu=None)
    t = guest.measure_nbd(a, rounds.Schedule(1, 2, 0, 0, 1), tmp_path / "logs")
    assert seen["servers"] == (("tcp",), 64 << 20, tmp_path / "logs" / "nbd", None) and seen["stopped"]
    assert seen["measure"] == (["gadget-nbd", "kernel-nbd"], ORDER, peers.Geometry(64 << 20, 2, 32, ""),
                               nbd.WORKLOADS, "nbd ", False)  # fmt: skip
    assert t.measured is not None and t.detail["queues"] == 2 and t.detail["servers"] == {"tcp": "nbdkit ..."}


# --- publishing ------------------------------------------------------------------------------

ENV = {"date": "2026-12-02T00:00:00+0000", "kernel": "7.2", "cpus": 2, "fio": "fio-3.33", "rounds": 3,
       "runtime_s": 3.0, "ramp_s": 1.0, "geometry": {"queues": 1, "depth": 64}}  # fmt: skip


def test_the_nbd_table_and_picture_are_published(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "nbd").mkdir(parents=True)
    doc = {"environment": ENV, "nbd": {**nbd.detail(G, {"tcp": TCP}, "nbdkit 1.32.5", None), "peers": {}}}
    (out / "results.json").write_text(json.dumps(doc))
    (out / "results.txt").write_text(f"nbd handover stall\n  picture: {out}/nbd/handover-latency.png\n")
    (out / "nbd" / "handover-latency.png").write_bytes(b"\x89PNG")
    readme = tmp_path / "README.md"
    readme.write_text(f"{publish.START}\n{publish.END}\n")
    publish.publish(out, tmp_path / "results", readme)
    text = readme.read_text()
    assert "The NBD table: nbdkit 1.32.5's memory plugin over TCP on the guest's loopback" in text
    assert "picture: bench/results/nbd/handover-latency.png" in text
    assert "![I/O latency across gadget-nbd handovers](bench/results/nbd/handover-latency.png)" in text
    assert "![I/O latency across gadget handovers]" not in text  # the file device's was not measured
    assert (tmp_path / "results" / "nbd" / "handover-latency.png").read_bytes() == b"\x89PNG"
