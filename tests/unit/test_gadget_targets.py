"""The backing stores as plain objects: what each one does with reads, writes and the rest."""

from __future__ import annotations

import errno
import mmap
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from ublk_gadget import targets
from ublk_gadget.spec import parse_spec
from ublk_gadget.backing import Backing
from ublk_gadget.targets import (
    FileTarget,
    MemTarget,
    NullTarget,
    TargetError,
    open_target,
    reopen_target,
)

MiB = 1 << 20


def pattern(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def aligned(data: bytes) -> memoryview:
    """``data`` in a page-aligned buffer, as the runtime's tag buffers are (O_DIRECT needs it)."""
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    return memoryview(buf)


def read(target: targets.Target, offset: int, n: int) -> bytes:
    buf = mmap.mmap(-1, n)
    assert target.read(offset, memoryview(buf)) == n
    return bytes(buf)


# --- null -----------------------------------------------------------------------------------

def test_null_reads_zeroes_whatever_was_written() -> None:
    t = NullTarget(MiB, 512, False)
    assert t.write(0, aligned(pattern(4096)), fua=False) == 4096
    buf = bytearray(pattern(4096))  # a reused tag buffer still holds the write's data
    assert t.read(0, memoryview(buf)) == 4096
    assert buf == bytes(4096)


def test_null_zeroes_reads_larger_than_its_zero_chunk() -> None:
    buf = bytearray(b"\xff" * (targets.ZERO_CHUNK + 512))
    NullTarget(4 * MiB, 512, False).read(0, memoryview(buf))
    assert buf == bytes(len(buf))


# --- mem ------------------------------------------------------------------------------------

@pytest.fixture(params=["memfd", "memory file"])
def mem(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemTarget]:
    """A mem target both ways: a memfd (no state file) and a file in a memory directory."""
    t = MemTarget.create(parse_spec("mem,size=4M"),
                         None if request.param == "memfd" else str(tmp_path))
    yield t
    t.close()


def test_mem_reads_back_what_was_written(mem: MemTarget) -> None:
    mem.write(8192, aligned(pattern(128 << 10)), fua=True)
    assert read(mem, 8192, 128 << 10) == pattern(128 << 10)
    assert read(mem, 0, 8192) == bytes(8192), "a write touches only its own range"


def test_mem_larger_than_this_host_can_hold_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"mem target: size=\d+ bytes is more than RAM and "
                                          r"swap can hold \(\d+ bytes\)"):
        MemTarget.create(parse_spec("mem,size=1T"), None)
    with pytest.raises(TargetError, match=rf"more than {tmp_path} can hold"):
        MemTarget.create(parse_spec("mem,size=1024T"), str(tmp_path))
    assert list(tmp_path.iterdir()) == [], "nothing is created for a refused size"


def test_mem_in_a_missing_memory_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"memory directory .*/nowhere: no such directory"):
        MemTarget.create(parse_spec("mem,size=1M"), str(tmp_path / "nowhere"))


# --- mem across a handover: the memory outlives its process, and only it is served ----------

def memory_file(tmp_path: Path, data: bytes = b"") -> tuple[MemTarget, Backing]:
    t = MemTarget.create(parse_spec("mem,size=1M"), str(tmp_path))
    if data:
        t.write(0, aligned(data), fua=False)
    backing = t.backing()
    assert backing is not None and backing.path.startswith(str(tmp_path))
    return t, backing


def test_a_memory_file_is_private_sparse_and_named_by_the_backing(tmp_path: Path) -> None:
    t, backing = memory_file(tmp_path)
    st = os.stat(backing.path)
    assert (st.st_mode & 0o777, st.st_size, st.st_blocks) == (0o600, MiB, 0)
    assert (st.st_dev, st.st_ino) == (backing.dev, backing.ino)
    t.close()


def test_a_successor_reopens_the_same_memory_after_its_writer_closed_it(tmp_path: Path) -> None:
    t, backing = memory_file(tmp_path, pattern(8192))
    t.close()  # the owner handed over (or died): the file stays
    again = reopen_target(parse_spec("mem,size=1M"), backing, "device 3")
    assert read(again, 0, 8192) == pattern(8192)
    again.remove()  # the device was deleted: the memory goes with it
    assert not os.path.exists(backing.path)
    again.close()


def test_a_memory_file_that_is_gone_is_a_loss_said_out_loud(tmp_path: Path) -> None:
    t, backing = memory_file(tmp_path)
    t.remove()
    t.close()
    with pytest.raises(TargetError, match="is gone: the data of this device is lost"):
        reopen_target(parse_spec("mem,size=1M"), backing, "device 3")


def test_a_replaced_memory_file_is_refused(tmp_path: Path) -> None:
    t, backing = memory_file(tmp_path)
    t.close()
    os.rename(backing.path, tmp_path / "moved-away")
    make_file(Path(backing.path), MiB)  # same name, another file
    with pytest.raises(TargetError, match="is not the file the device was served with"):
        reopen_target(parse_spec("mem,size=1M"), backing, "device 3")


@pytest.mark.parametrize("tamper", ["symlink", "group-writable", "resized"])
def test_a_memory_file_someone_could_have_changed_is_refused(tmp_path: Path, tamper: str) -> None:
    t, backing = memory_file(tmp_path)
    t.close()
    expected = {"symlink": "a symlink; refusing to follow it",
                "group-writable": r"writable by others \(mode 0620\)",
                "resized": "is 2097152 bytes, the device 1048576"}[tamper]
    if tamper == "symlink":
        os.rename(backing.path, tmp_path / "real")
        os.symlink(tmp_path / "real", backing.path)
    elif tamper == "group-writable":
        os.chmod(backing.path, 0o620)
    else:
        os.truncate(backing.path, 2 * MiB)
    with pytest.raises(TargetError, match=expected):
        reopen_target(parse_spec("mem,size=1M"), backing, "device 3")


def test_a_mem_device_recorded_without_its_memory_is_refused() -> None:
    with pytest.raises(TargetError, match="device 3: its memory belonged to the server that "
                                          "wrote the state file .* adopting would serve zeroes"):
        reopen_target(parse_spec("mem,size=1M"), None, "device 3")


def test_mem_starts_zeroed(mem: MemTarget) -> None:
    assert read(mem, 4 * MiB - 4096, 4096) == bytes(4096)


@pytest.mark.parametrize(("offset", "length"), [(0, 4 * MiB), (512, 512), (1536, 3 * 4096 + 1024),
                                                (4096, 8192)])
def test_mem_discard_zeroes_exactly_its_range(mem: MemTarget, offset: int, length: int) -> None:
    mem.write(0, aligned(pattern(4 * MiB)), fua=False)
    mem.discard(offset, length)
    after = read(mem, 0, 4 * MiB)
    assert after[:offset] == pattern(4 * MiB)[:offset]
    assert after[offset : offset + length] == bytes(length)
    assert after[offset + length :] == pattern(4 * MiB)[offset + length :]


def test_mem_write_zeroes_zeroes_whether_or_not_it_may_unmap(mem: MemTarget) -> None:
    for unmap in (True, False):
        mem.write(0, aligned(pattern(65536)), fua=False)
        mem.write_zeroes(512, 8192, unmap=unmap)
        assert read(mem, 512, 8192) == bytes(8192)
        assert read(mem, 0, 512) == pattern(512)


# --- file -----------------------------------------------------------------------------------

def make_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def file_target(path: Path, extra: str = "") -> FileTarget:
    t = open_target(parse_spec(f"file,path={path}{extra}"))
    assert isinstance(t, FileTarget)
    return t


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.fixture(params=["disk", "tmpfs"])
def backing_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A directory on the test's own file system, and one on tmpfs (/dev/shm)."""
    if request.param == "disk":
        yield tmp_path
        return
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    d = Path(f"/dev/shm/gadget-test-{os.getpid()}")
    d.mkdir()
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def test_file_writes_land_in_the_file_and_read_back(backing_dir: Path) -> None:
    path = make_file(backing_dir / "disk.img", 4 * MiB)
    t = file_target(path)
    try:
        assert t.write(MiB, aligned(pattern(65536)), fua=False) == 65536
        assert t.write(2 * MiB, aligned(pattern(4096, seed=9)), fua=True) == 4096
        t.flush()
        assert read(t, MiB, 65536) == pattern(65536)
    finally:
        t.close()
    data = path.read_bytes()
    assert data[MiB : MiB + 65536] == pattern(65536)
    assert data[2 * MiB : 2 * MiB + 4096] == pattern(4096, seed=9)


def test_file_discard_punches_a_hole(backing_dir: Path) -> None:
    path = make_file(backing_dir / "disk.img", 4 * MiB)
    t = file_target(path)
    try:
        assert t.can_discard
        t.write(0, aligned(pattern(4 * MiB)), fua=False)
        t.flush()
        before = allocated(path)
        t.discard(MiB, 2 * MiB)
        assert allocated(path) <= before - 2 * MiB
        assert read(t, MiB, 2 * MiB) == bytes(2 * MiB)
        assert read(t, 0, MiB) == pattern(4 * MiB)[:MiB]
    finally:
        t.close()


def test_file_write_zeroes_unmaps_only_when_allowed(tmp_path: Path) -> None:
    path = make_file(tmp_path / "disk.img", 4 * MiB)
    t = file_target(path)
    try:
        t.write(0, aligned(pattern(4 * MiB)), fua=False)
        t.flush()
        full = allocated(path)
        t.write_zeroes(0, MiB, unmap=False)  # NOUNMAP: zero, stay allocated
        assert read(t, 0, MiB) == bytes(MiB)
        assert allocated(path) == full
        t.write_zeroes(MiB, MiB, unmap=True)
        assert read(t, MiB, MiB) == bytes(MiB)
        assert allocated(path) <= full - MiB
    finally:
        t.close()


def test_file_write_zeroes_writes_zeroes_where_zero_range_is_unsupported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "no zero range here")

    monkeypatch.setattr(targets.file, "zero_range", unsupported)
    path = make_file(tmp_path / "disk.img", 4 * MiB)
    t = file_target(path)
    try:
        t.write(0, aligned(pattern(4 * MiB)), fua=False)
        t.write_zeroes(512, 2 * MiB + 512, unmap=False)
        assert read(t, 0, 4 * MiB) == (
            pattern(4 * MiB)[:512] + bytes(2 * MiB + 512) + pattern(4 * MiB)[2 * MiB + 1024 :]
        )
    finally:
        t.close()


def test_file_falls_back_to_buffered_io_where_o_direct_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_direct(path: str, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # what tmpfs used to answer
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    path = make_file(tmp_path / "disk.img", MiB)
    t = file_target(path)
    try:
        assert not t.direct
        t.write(512, aligned(pattern(512)), fua=True)
        t.flush()
        assert read(t, 512, 512) == pattern(512)
    finally:
        t.close()


def test_file_uses_o_direct_where_the_file_system_takes_it(tmp_path: Path) -> None:
    t = file_target(make_file(tmp_path / "disk.img", MiB), ",block_size=4096")
    try:
        assert t.direct
        assert t.write(4096, aligned(pattern(8192)), fua=False) == 8192
        assert read(t, 4096, 8192) == pattern(8192)
    finally:
        t.close()


def test_file_size_defaults_to_the_file_rounded_down_to_blocks(tmp_path: Path) -> None:
    t = file_target(make_file(tmp_path / "disk.img", 10 * 4096 + 100), ",block_size=4096")
    assert t.size == 10 * 4096
    t.close()


def test_file_size_may_use_less_than_the_file(tmp_path: Path) -> None:
    t = file_target(make_file(tmp_path / "disk.img", 4 * MiB), ",size=1M")
    assert t.size == MiB
    t.close()


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"disk\.img: no such file"):
        file_target(tmp_path / "disk.img")


def test_a_file_smaller_than_size_is_a_usage_error(tmp_path: Path) -> None:
    path = make_file(tmp_path / "disk.img", MiB)
    with pytest.raises(TargetError, match=r"too small: 1048576 bytes, size=2097152 needed"):
        file_target(path, ",size=2M")


def test_a_file_smaller_than_one_block_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="smaller than one block of 4096"):
        file_target(make_file(tmp_path / "disk.img", 4000), ",block_size=4096")


def test_a_directory_is_not_a_backing_file(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="neither a regular file nor a block device"):
        file_target(tmp_path)


def test_a_read_only_file_target_opens_read_only_and_does_not_discard(tmp_path: Path) -> None:
    path = make_file(tmp_path / "disk.img", MiB)
    path.chmod(0o444)
    t = file_target(path, ",read_only=1")
    try:
        assert not t.can_discard
        with pytest.raises(OSError) as caught:
            t.write(0, aligned(pattern(512)), fua=False)
        assert caught.value.errno == errno.EBADF
    finally:
        t.close()


def test_file_flush_is_fdatasync_and_fua_is_a_dsync_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two durability points of a volatile cache, seen at the system call boundary."""
    calls: list[tuple[str, int]] = []
    real_pwritev = os.pwritev
    monkeypatch.setattr(os, "fdatasync", lambda fd: calls.append(("fdatasync", fd)))

    def pwritev(fd: int, buffers: list[memoryview], offset: int, flags: int = 0) -> int:
        calls.append(("pwritev", flags))
        return real_pwritev(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "pwritev", pwritev)
    t = file_target(make_file(tmp_path / "disk.img", MiB))
    try:
        t.write(0, aligned(pattern(4096)), fua=False)
        t.write(4096, aligned(pattern(4096)), fua=True)
        t.flush()
        assert calls == [("pwritev", 0), ("pwritev", os.RWF_DSYNC), ("fdatasync", t.fd)]
    finally:
        t.close()


# --- file across a handover: the same file, by identity -----------------------------------

def test_a_file_is_recorded_by_its_absolute_path_and_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_file(tmp_path / "disk.img", MiB)
    monkeypatch.chdir(tmp_path)
    t = open_target(parse_spec("file,path=disk.img"))
    st = os.stat(tmp_path / "disk.img")
    assert t.backing() == Backing(str(tmp_path / "disk.img"), st.st_dev, st.st_ino)
    t.close()


def test_a_backing_file_replaced_under_its_name_is_refused(tmp_path: Path) -> None:
    path = make_file(tmp_path / "disk.img", MiB)
    t = open_target(parse_spec(f"file,path={path}"))
    backing = t.backing()
    t.close()
    path.rename(tmp_path / "old.img")
    make_file(path, MiB)
    with pytest.raises(TargetError, match=f"device 3: {path} is not the file the device was "
                                          "served with"):
        reopen_target(parse_spec(f"file,path={path}"), backing, "device 3")
    same = reopen_target(parse_spec(f"file,path={tmp_path / 'old.img'}"),
                         Backing(str(tmp_path / "old.img"), backing.dev, backing.ino)
                         if backing else None, "device 3")
    same.close()
