"""Which modules go into the initramfs, in which order, and what is refused."""

from __future__ import annotations

import lzma
import shutil
from pathlib import Path

import pytest

from testbed import TestbedError
from testbed.initramfs import Module, _has_interpreter, decompressed, load_order


def moddir(tmp_path: Path, dep: str, builtin: str = "") -> Path:
    (tmp_path / "modules.dep").write_text(dep)
    (tmp_path / "modules.builtin").write_text(builtin)
    return tmp_path


def names(order: list[tuple[Path, str]]) -> list[str]:
    return [p.name for p, _ in order]


def test_dependencies_load_first_and_once(tmp_path: Path) -> None:
    d = moddir(
        tmp_path,
        (
            "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n"
            "kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz\n"
            "kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n"
            "kernel/fs/netfs/netfs.ko.xz:\n"
        ),
    )
    order = load_order(d, (Module("9pnet_virtio"), Module("9p")))
    assert names(order) == ["netfs.ko.xz", "9pnet.ko.xz", "9pnet_virtio.ko.xz", "9p.ko.xz"]
    assert order[0][0] == d / "kernel/fs/netfs/netfs.ko.xz"


def test_builtin_modules_are_skipped_and_dashes_match_underscores(tmp_path: Path) -> None:
    d = moddir(
        tmp_path,
        "kernel/drivers/block/null_blk/null_blk.ko.zst: kernel/fs/configfs/configfs.ko.zst\n",
        builtin="kernel/fs/configfs/configfs.ko\nkernel/drivers/virtio/virtio-pci.ko\n",
    )
    order = load_order(d, (Module("virtio_pci"), Module("null_blk", "nr_devices=0")))
    assert order == [(d / "kernel/drivers/block/null_blk/null_blk.ko.zst", "nr_devices=0")]


def test_a_missing_module_names_itself_and_who_needs_it(tmp_path: Path) -> None:
    d = moddir(tmp_path, "kernel/drivers/block/ublk_drv.ko.xz: kernel/lib/gone.ko.xz\n")
    with pytest.raises(
        TestbedError,
        match=r"module gone \(needed by ublk_drv\) is neither built in nor in modules.dep",
    ):
        load_order(d, (Module("ublk_drv"),))


def test_a_dependency_cycle_is_refused(tmp_path: Path) -> None:
    d = moddir(tmp_path, "a.ko: b.ko\nb.ko: a.ko\n")
    with pytest.raises(TestbedError, match="cycle a -> b -> a"):
        load_order(d, (Module("a"),))


def test_modules_are_decompressed_for_busybox_insmod(tmp_path: Path) -> None:
    elf = b"\x7fELF" + bytes(60)
    (tmp_path / "m.ko.xz").write_bytes(lzma.compress(elf))
    (tmp_path / "m.ko").write_bytes(elf)
    assert decompressed(tmp_path / "m.ko.xz") == elf
    assert decompressed(tmp_path / "m.ko") == elf


def test_dynamic_executables_are_told_apart_from_static_ones() -> None:
    assert _has_interpreter(Path("/bin/sh").resolve().read_bytes())
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox not installed (make setup installs busybox-static)")
    assert not _has_interpreter(Path(busybox).resolve().read_bytes())
