"""The real disk: its size option, its cached image (data, no holes), qemu's drive, the guest."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

import pytest

import testbed.__main__ as cli
from testbed import TestbedError, debian, disk, qemu
from testbed.initramfs import DISK_MODULES, MODULES, load_order


def test_sizes_are_whole_mebibytes() -> None:
    assert disk.parse_size("512M") == 512 << 20
    assert disk.parse_size("2g") == 2 << 30
    assert disk.parse_size("1024K") == 1 << 20
    assert disk.parse_size("64MiB") == 64 << 20
    for bad in ("", "12x", "1000K", "0M", "-1M"):
        with pytest.raises(TestbedError, match="--disk"):
            disk.parse_size(bad)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(debian, "CACHE", tmp_path)
    return tmp_path


def test_the_image_is_written_once_with_data_and_no_holes(cache: Path) -> None:
    path = disk.image(2 << 20)
    assert path == cache / "disks" / "disk-2M.img"
    st = path.stat()
    assert st.st_size == 2 << 20 and st.st_blocks * 512 >= 2 << 20
    data = path.read_bytes()
    assert data[: 1 << 20] != data[1 << 20 :] and data.count(0) < len(data) // 100  # random, not repeated
    mtime = st.st_mtime_ns
    assert disk.image(2 << 20) == path and path.stat().st_mtime_ns == mtime  # cached
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_a_sparse_or_short_image_is_rewritten(cache: Path) -> None:
    path = disk.image_path(1 << 20)
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        f.truncate(1 << 20)  # all hole
    assert not disk.is_complete(path, 1 << 20)
    disk.image(1 << 20)
    assert disk.is_complete(path, 1 << 20)


def test_the_drive_is_raw_virtio_uncached_with_qemus_thread_pool() -> None:
    args = disk.qemu_args(Path("/c/disk,1.img"))
    assert args == ["-drive", "file=/c/disk,,1.img,if=virtio,format=raw,cache=none,aio=threads"]


def test_the_guest_script_insists_on_the_disk(tmp_path: Path) -> None:
    script = qemu.guest_script(tmp_path, {}, ["true"], disk=str(tmp_path / "vda"))
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert done.returncode == qemu.EXIT_TESTBED and "no block device" in done.stderr
    assert qemu.guest_script(tmp_path, {}, ["true"]) == qemu.guest_script(tmp_path, {}, ["true"], disk="")


def test_a_disk_run_also_inserts_virtio_blk(tmp_path: Path) -> None:
    deps = "".join(f"kernel/{m.name}.ko:\n" for m in (*MODULES, *DISK_MODULES))
    (tmp_path / "modules.dep").write_text(deps + "kernel/9pnet.ko:\nkernel/netfs.ko:\n")
    (tmp_path / "modules.builtin").write_text("")
    plain = [p.name for p, _ in load_order(tmp_path)]
    with_disk = [p.name for p, _ in load_order(tmp_path, MODULES + DISK_MODULES)]
    assert "virtio_blk.ko" not in plain and with_disk == [*plain, "virtio_blk.ko"]


def test_a_disk_is_held_for_the_whole_run_and_let_go_after(tmp_path: Path) -> None:
    img = tmp_path / "d.img"
    img.touch()
    lock = tmp_path / "d.img.lock"
    with disk.in_use(img):
        with open(lock) as other:  # another open file: flock conflicts as another process would
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock) as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_bad_disk_size_is_a_testbed_error_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "liburing", lambda: pytest.fail("fetched liburing before checking --disk"))
    assert cli.main(["run", "--disk", "12x", "--", "true"]) == qemu.EXIT_TESTBED
    assert "--disk '12x': not a size" in capsys.readouterr().err


def test_on_a_host_with_the_driver_the_disk_is_ignored_and_said_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "CONTROL", Path("/dev/null"))  # exists: stands in for ublk-control
    monkeypatch.setenv("UBLK_BINDINGS_LIBURING", "/opt/liburing-ffi.so.2")  # no fetch
    assert cli.main(["run", "--disk", "512M", "--", "sh", "-c", '[ -z "$UBLK_TESTBED_DISK" ] && exit 3']) == 3
    assert "--disk ignored" in capsys.readouterr().err
