"""bench.modes and the peers built from it: every userspace peer states its buffer mode, is
named for it, and is paired with the kublk peer of the same mode; the rows in another mode
than copy run only the workloads they are given."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench import disk, fio, gadget, guest, modes, peers, report, rounds, shared
from bench.fio import Result, Workload
from ublk_bindings.ublk_cmd import (
    UBLK_F_AUTO_BUF_REG,
    UBLK_F_BATCH_IO,
    UBLK_F_SUPPORT_ZERO_COPY,
    UBLK_F_USER_COPY,
)
from ublk_gadget import spec as gadget_spec

G = peers.Geometry(256 << 20, 1, 64, "/tmp/bench-backing.img")


def test_peer_names_carry_the_mode_and_copy_keeps_the_old_names() -> None:
    assert [p.gadget for p in modes.MAIN_PAIRS] == [
        "gadget-null", "gadget-mem", "gadget-file", "gadget-null-autozc", "gadget-file-autozc",
        "gadget-file-zc", "gadget-null-usercopy", "gadget-null-batch"]  # fmt: skip
    assert [p.kublk for p in modes.MAIN_PAIRS] == [
        "kublk-null", "kublk-null", "kublk-loop", "kublk-null-autozc", "kublk-loop-autozc",
        "kublk-loop-z", "kublk-null-u", "kublk-null-b"]  # fmt: skip
    assert [(p.gadget, p.kublk) for p in modes.DISK_PAIRS] == [
        ("gadget-file", "kublk-loop"), ("gadget-file-autozc", "kublk-loop-autozc")]  # fmt: skip


def test_each_gadget_is_paired_with_kublk_in_its_own_mode() -> None:
    assert report.KUBLK_PEER == {
        "gadget-null": "kublk-null", "gadget-mem": "kublk-null", "gadget-file": "kublk-loop",
        "gadget-null-autozc": "kublk-null-autozc", "gadget-file-autozc": "kublk-loop-autozc",
        "gadget-file-zc": "kublk-loop-z", "gadget-null-usercopy": "kublk-null-u",
        "gadget-null-batch": "kublk-null-b",
    }  # fmt: skip
    for p in modes.MAIN_PAIRS:
        assert modes.mode_of(p.gadget) == modes.mode_of(p.kublk) == p.mode


def test_mode_and_base_name_of_a_peer() -> None:
    assert modes.mode_of("gadget-file-autozc") == "auto-zc" and modes.mode_of("kublk-null-u") == "user-copy"
    assert modes.mode_of("gadget-mem") == "copy" and modes.mode_of("loop") is None
    assert modes.base_name("gadget-null-usercopy") == "gadget-null"
    assert modes.base_name("kublk-loop-autozc", modes.DISK_PAIRS) == "kublk-loop"
    assert modes.base_name("disk", modes.DISK_PAIRS) == "disk"
    assert modes.not_copy(modes.MAIN_PAIRS) == [
        "kublk-null-autozc", "gadget-null-autozc", "kublk-loop-autozc", "gadget-file-autozc",
        "kublk-loop-z", "gadget-file-zc", "kublk-null-u", "gadget-null-usercopy", "kublk-null-b",
        "gadget-null-batch"]  # fmt: skip


def test_the_main_table_has_every_pair_and_knows_how_to_make_each_peer() -> None:
    assert guest.PEER_ORDER[:7] == ("null_blk", "loop", "kublk-null", "kublk-loop", "gadget-null", "gadget-mem",
                                    "gadget-file")  # fmt: skip
    names = {n for p in modes.MAIN_PAIRS for n in (p.gadget, p.kublk)} | {"null_blk", "loop"}
    assert set(guest.PEER_ORDER) == names == set(guest.all_peers("/kublk", Path("/logs")))
    # a pair's two rows run next to each other in every round
    for p in modes.MAIN_PAIRS:
        if p.mode != modes.COPY:
            assert guest.PEER_ORDER.index(p.gadget) == guest.PEER_ORDER.index(p.kublk) + 1


@pytest.mark.parametrize("pair", modes.MAIN_PAIRS, ids=lambda p: p.gadget)
def test_every_gadget_spec_states_its_mode_and_the_gadget_accepts_it(pair: modes.Pair) -> None:
    text = peers.gadget_spec(pair.target, G, pair.mode)
    assert f"buffers={pair.mode}" in text.split(",")
    parsed = gadget_spec.parse_spec(text)
    assert parsed.buffers == pair.mode and parsed.target == pair.target


def test_kublk_options_match_the_gadget_modes() -> None:
    assert modes.KUBLK_OPTIONS == {"copy": (), "user-copy": ("-u",), "zero-copy": ("-z",),
                                   "auto-zc": ("--auto_zc",), "batch": ("-b",)}
    assert peers.served_mode(0) == "copy"
    assert peers.served_mode(UBLK_F_AUTO_BUF_REG) == "auto-zc"
    assert peers.served_mode(UBLK_F_USER_COPY) == "user-copy"
    assert peers.served_mode(UBLK_F_SUPPORT_ZERO_COPY) == "zero-copy"  # kublk -z
    assert peers.served_mode(UBLK_F_BATCH_IO) == "batch"  # kublk -b: paired with buffers=batch


class FakeKublk:
    """``peers._run`` for kublk: records the commands, lists the device with ``flags``."""

    def __init__(self, flags: int | None) -> None:
        self.flags = flags
        self.calls: list[list[str]] = []

    def __call__(self, cmd: list[str]) -> str:
        self.calls.append(cmd)
        if cmd[1] == "add":
            return "dev id 7: nr_hw_queues 1 queue_depth 64 block size 512 dev_capacity 0\n"
        if cmd[1] == "list":
            flags = "" if self.flags is None else f" flags {self.flags:#x}"
            return f"dev id 7: ...\n\tmax rq size 524288 daemon pid 4242{flags} state LIVE\n"
        return ""


@pytest.mark.parametrize(("target", "mode", "flags", "args"), [
    ("null", "copy", 0, ["-t", "null", "-q", "1", "-d", "64"]),
    ("null", "auto-zc", UBLK_F_AUTO_BUF_REG, ["-t", "null", "-q", "1", "-d", "64", "--auto_zc"]),
    ("null", "user-copy", UBLK_F_USER_COPY, ["-t", "null", "-q", "1", "-d", "64", "-u"]),
    ("loop", "auto-zc", UBLK_F_AUTO_BUF_REG, ["-t", "loop", "-q", "1", "-d", "64", "--auto_zc", G.backing_file]),
    ("null", "batch", UBLK_F_BATCH_IO, ["-t", "null", "-q", "1", "-d", "64", "-b"]),
])  # fmt: skip
def test_kublk_is_added_with_its_modes_option_and_says_its_mode(
    monkeypatch: pytest.MonkeyPatch, target: str, mode: str, flags: int, args: list[str]
) -> None:
    fake = FakeKublk(flags)
    monkeypatch.setattr(peers, "_run", fake)
    waited: list[int] = []
    monkeypatch.setattr(peers, "_wait_gone", waited.append)
    with peers.kublk("/kublk", target, mode)(G) as dev:
        assert dev.path == "/dev/ublkb7" and dev.server_pid == 4242
        assert dev.detail == f"kublk add {' '.join(args)} (buffers: {mode})"
    assert fake.calls[0] == ["/kublk", "add", *args]
    assert fake.calls[-1] == ["/kublk", "del", "-n", "7"]
    assert waited == [4242]  # its daemon is gone before the next peer opens the backing file


def test_a_kublk_device_in_another_mode_fails_to_start_and_is_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKublk(0)  # asked for --auto_zc, the driver gave copy
    monkeypatch.setattr(peers, "_run", fake)
    monkeypatch.setattr(peers, "_wait_gone", lambda pid: None)
    with pytest.raises(RuntimeError, match="asked for buffer mode auto-zc, the device is served in copy"):
        with peers.kublk_null("/kublk", modes.AUTO_ZC)(G):
            pass  # pragma: no cover
    assert fake.calls[-1] == ["/kublk", "del", "-n", "7"]


def test_a_kublk_listing_without_flags_is_taken_on_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "_run", FakeKublk(None))
    monkeypatch.setattr(peers, "_wait_gone", lambda pid: None)
    with peers.kublk_loop("/kublk", modes.AUTO_ZC)(G) as dev:
        assert dev.detail.endswith("(buffers: auto-zc?)")


class FakeGadget:
    """What ``Gadget.serve`` returns: a ready line whose device carries ``buffers``."""

    served: list[FakeGadget] = []

    def __init__(self, devices: list[str], log: Path, buffers: str | None) -> None:
        self.devices, self.log, self.pid, self.stopped = devices, log, 99, False
        entry: dict[str, Any] = {"block_device": "/dev/ublkb3"}
        if buffers is not None:
            entry["buffers"] = buffers
        self.ready = {"event": "ready", "devices": [entry]}
        self.block_devices = ["/dev/ublkb3"]
        FakeGadget.served.append(self)

    def stop(self) -> int:
        self.stopped = True
        return 0


def fake_serve(monkeypatch: pytest.MonkeyPatch, buffers: str | None) -> list[FakeGadget]:
    FakeGadget.served = []
    monkeypatch.setattr(gadget.Gadget, "serve", staticmethod(lambda d, log: FakeGadget(d, log, buffers)))
    return FakeGadget.served


def test_a_gadget_peer_passes_its_mode_and_checks_the_ready_line(monkeypatch: pytest.MonkeyPatch) -> None:
    served = fake_serve(monkeypatch, "copy")
    with peers.gadget("null", Path("/logs"), modes.COPY)(G) as dev:
        assert dev.detail == ("ublk-gadget serve --device null,queues=1,depth=64,buffers=copy,size=268435456 "
                              "(buffers: copy)")  # fmt: skip
    assert served[0].devices == ["null,queues=1,depth=64,buffers=copy,size=268435456"]
    assert served[0].log == Path("/logs/gadget-null.log") and served[0].stopped


def test_a_gadget_served_in_another_mode_fails_to_start_and_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    served = fake_serve(monkeypatch, "copy")  # asked for auto-zc: say a 6.12 kernel gave copy
    with pytest.raises(RuntimeError, match="asked for buffer mode auto-zc, the device is served in copy"):
        with peers.gadget("file", Path("/logs"), modes.AUTO_ZC)(G):
            pass  # pragma: no cover
    assert served[0].stopped and served[0].log == Path("/logs/gadget-file-autozc.log")


def test_every_gadget_peer_of_every_table_is_in_copy_or_its_named_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    served = fake_serve(monkeypatch, None)
    tables = [guest.all_peers("/k", Path("/l")), disk.all_peers("/k", Path("/l")), shared.all_peers("/k", Path("/l"))]
    for made in tables:
        for name, peer in made.items():
            if name.startswith("gadget-"):
                with peer(G):
                    pass
    specs = [g.devices[0] for g in served]
    assert all("buffers=" in s for s in specs)
    by_log = {g.log.name: g.devices[0] for g in served}
    assert "buffers=copy" in by_log["gadget-null.log"] and "buffers=auto-zc" in by_log["gadget-null-autozc.log"]
    assert "buffers=user-copy" in by_log["gadget-null-usercopy.log"]
    assert "buffers=batch" in by_log["gadget-null-batch.log"]
    # the shared table's two gadgets (1 and 2 queues) are up at once: each has its own log, in copy mode
    assert "buffers=copy" in by_log["gadget-null-q1.log"] and "buffers=copy" in by_log["gadget-null-q2.log"]
    assert "buffers=zero-copy" in by_log["gadget-file-zc.log"]
    assert len(served) == 8 + 2 + 2  # main, disk, shared
    assert len(by_log) == len(served) - 2  # the disk table's names are the main table's (in their own log dir)


def test_the_rows_in_another_mode_run_the_mode_workloads_only() -> None:
    wanted = guest.parse_mode_workloads("4k-randread-qd32,128k-read-qd32")
    assert wanted == guest.MODE_WORKLOADS
    subsets = guest.workloads_of(list(guest.PEER_ORDER), modes.MAIN_PAIRS, wanted)
    assert set(subsets) == set(modes.not_copy(modes.MAIN_PAIRS))
    assert all(v == ("4k-randread-qd32", "128k-read-qd32") for v in subsets.values())
    assert guest.workloads_of(["gadget-null", "gadget-null-autozc"], modes.MAIN_PAIRS, wanted) == {
        "gadget-null-autozc": wanted}  # fmt: skip
    assert guest.parse_mode_workloads("all") is None and guest.workloads_of(["gadget-null-autozc"],
                                                                             modes.MAIN_PAIRS, None) == {}  # fmt: skip
    assert set(guest.workloads_of(list(disk.PEER_ORDER), modes.DISK_PAIRS, wanted)) == {
        "kublk-loop-autozc", "gadget-file-autozc"}  # fmt: skip


def test_unknown_mode_workloads_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        guest.main(["--kublk", "/k", "--out", str(tmp_path / "out"), "--mode-workloads", "4k-nope"])
    assert not (tmp_path / "out").exists()


def test_measure_runs_each_peer_on_its_own_workloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ran: dict[str, list[tuple[str, ...]]] = {}

    def one_round(dev: peers.Device, workloads: tuple[Workload, ...], *_: object) -> dict[str, Result | str]:
        ran.setdefault(dev.path, []).append(tuple(w.name for w in workloads))
        return {w.name: Result(100, 100, 1, 2, 3, 10) for w in workloads}

    made: list[str] = []

    def peer(name: str) -> peers.Peer:
        @contextmanager
        def up(g: peers.Geometry) -> Iterator[peers.Device]:
            made.append(name)
            yield peers.Device(name, f"made {name}")

        return up

    monkeypatch.setattr(rounds, "_one_round", one_round)
    w = fio.WORKLOADS
    schedule = rounds.Schedule(rounds=2, runtime_s=1, ramp_s=0, fio_cpu=None, server_cpu=None)
    subsets = {"b": ("128k-read-qd32",), "c": ("no-such-workload",)}
    m = rounds.measure({n: peer(n) for n in "abc"}, ["a", "b", "c"], G, w, schedule, tmp_path, workloads_of=subsets)
    assert ran["a"] == [tuple(x.name for x in w)] * 2 and ran["b"] == [("128k-read-qd32",)] * 2
    assert made == ["a", "b"] and m.order == ["a", "b"]  # c has nothing to run: not made
    assert m.notes == ["c: not measured: none of its workloads was selected"]
    results = m.results()
    assert set(results["b"]) == {"128k-read-qd32"} and len(results["a"]) == len(w)
    assert set(m.peers_json()["b"]["workloads"]) == {"128k-read-qd32"}


def test_the_batch_pair_runs_beside_kublk_b_on_the_4k_and_128k_qd32_workloads() -> None:
    """``make bench`` prints batch beside kublk -b: the pair is in the main table, next to
    each other in every round, on the mode workloads (4k randread and 128k read, QD32)."""
    [pair] = [p for p in modes.MAIN_PAIRS if p.mode == modes.BATCH]
    assert (pair.target, pair.gadget, pair.kublk) == ("null", "gadget-null-batch", "kublk-null-b")
    assert guest.PEER_ORDER.index(pair.gadget) == guest.PEER_ORDER.index(pair.kublk) + 1
    assert guest.workloads_of(list(guest.PEER_ORDER), modes.MAIN_PAIRS, guest.MODE_WORKLOADS)[
        pair.gadget] == ("4k-randread-qd32", "128k-read-qd32")
    workloads = {w.name: w for w in fio.WORKLOADS}
    assert {(workloads[n].bs, workloads[n].iodepth) for n in guest.MODE_WORKLOADS} == {
        (4096, 32), (131072, 32)}
    assert peers.gadget_spec("null", G, modes.BATCH).startswith("null,queues=1,depth=64,buffers=batch")
