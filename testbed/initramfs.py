"""The VM's initramfs: a static busybox, the modules the test bed needs, and ``init.sh``.

Modules come with their dependencies in load order (from the kernel's modules.dep) and are
decompressed, because busybox's insmod takes plain ELF only.  The archive's name is a hash of
everything in it: an edited init.sh or module list rebuilds it, an unchanged one is reused.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import TestbedError
from .kernel import Kernel

INIT = Path(__file__).with_name("init.sh")


@dataclass(frozen=True)
class Module:
    name: str
    params: str = ""
    optional: bool = False  # loaded where this kernel has it as a module, else left out


# What the guest needs; dependencies (netfs, 9pnet, ...) come from modules.dep.
MODULES = (
    Module("virtio_pci"),  # the 9p transport's bus; built in on Debian, then skipped
    Module("9pnet_virtio"),
    Module("9p"),  # root file system, .out share, control share
    Module("configfs"),  # mounted at /sys/kernel/config for null_blk
    Module("ublk_drv"),
    Module("null_blk", "nr_devices=0"),  # none until a test or benchmark makes one in configfs
    Module("loop"),
    Module("nbd"),  # the kernel's NBD client: the bench's peer of the gadget's nbd target
    Module("ext4"),  # mkfs.ext4 + mount on gadget devices (tests/kernel/test_gadget.py)
    # ext4's checksums before Linux 6.15 go through the crypto API's "crc32c" (later kernels
    # call the crc32c library, built in): without it mount fails with "Cannot load crc32c".
    Module("crc32c_generic", optional=True),
)
# With ``run --disk``: the guest's /dev/vda (no module dependencies; built in on some kernels).
DISK_MODULES = (Module("virtio_blk"),)


def _name(path: str) -> str:
    """Module name of a modules.dep path: dashes and underscores are the same to the kernel."""
    return Path(path).name.split(".ko")[0].replace("-", "_")


def load_order(moddir: Path, wanted: tuple[Module, ...] = MODULES) -> list[tuple[Path, str]]:
    """(module file, parameters) to insmod in this order: each after its dependencies."""
    builtin = {_name(line) for line in (moddir / "modules.builtin").read_text().split()}
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[_name(path)] = (path, [_name(d) for d in rest.split()])
    params = {m.name: m.params for m in wanted}
    order: list[tuple[Path, str]] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done or name in builtin:
            return
        if name not in deps:
            why = f" (needed by {' -> '.join(chain)})" if chain else ""
            raise TestbedError(
                f"{moddir}: module {name}{why} is neither built in nor in modules.dep: "
                "this kernel was built without it"
            )
        if name in chain:
            raise TestbedError(
                f"{moddir}/modules.dep: dependency cycle {' -> '.join((*chain, name))}"
            )
        path, needs = deps[name]
        for dep in needs:
            visit(dep, (*chain, name))
        done.add(name)
        order.append((moddir / path, params.get(name, "")))

    for m in wanted:
        if m.optional and m.name not in deps:
            continue
        visit(m.name, ())
    return order


def decompressed(ko: Path) -> bytes:
    if ko.suffix == ".xz":
        return lzma.decompress(ko.read_bytes())
    if ko.suffix == ".gz":
        return gzip.decompress(ko.read_bytes())
    if ko.suffix == ".zst":  # no zstd in the standard library before Python 3.14
        return subprocess.run(["zstd", "-dcq", str(ko)], check=True, stdout=subprocess.PIPE).stdout
    return ko.read_bytes()


def static_busybox() -> Path:
    """The host's busybox, which must be static: the initramfs has no libc."""
    found = shutil.which("busybox")
    if found is None:
        raise TestbedError("busybox not found: apt-get install busybox-static (make setup does)")
    path = Path(found).resolve()
    if _has_interpreter(path.read_bytes()):
        raise TestbedError(f"{path} is dynamically linked: apt-get install busybox-static")
    return path


def _has_interpreter(elf: bytes) -> bool:
    """Whether an ELF64 little-endian file has a PT_INTERP program header (is dynamic)."""
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def build(kernel: Kernel, disk: bool = False) -> Path:
    """The initramfs for ``kernel``, built unless an identical one is cached; ``disk``: with
    the virtio-blk driver too (a run without a disk keeps the image it always had)."""
    busybox = static_busybox().read_bytes()
    init = INIT.read_bytes()
    wanted = MODULES + DISK_MODULES if disk else MODULES
    modules = [
        (f"{i:02d}-{ko.name.split('.ko')[0]}.ko", ko, params)
        for i, (ko, params) in enumerate(load_order(kernel.moddir, wanted))
    ]
    digest = hashlib.sha256(init + busybox)
    for name, ko, params in modules:
        digest.update(f"{name} {ko.stat().st_size} {params}\n".encode())
    out = kernel.dir / f"initramfs-{digest.hexdigest()[:16]}.cpio"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(dir=kernel.dir) as tmp:
        root = Path(tmp) / "root"
        for d in ("bin", "modules", "proc", "sys", "dev", "ctl", "newroot"):
            (root / d).mkdir(parents=True)
        (root / "init").write_bytes(init)
        (root / "init").chmod(0o755)
        (root / "bin" / "busybox").write_bytes(busybox)
        (root / "bin" / "busybox").chmod(0o755)
        for name, ko, _ in modules:
            (root / "modules" / name).write_bytes(decompressed(ko))
        (root / "modules" / "order").write_text(
            "".join(f"{name} {params}\n" for name, _, params in modules)
        )
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        with open(Path(tmp) / "initramfs.cpio", "wb") as f:
            subprocess.run(
                ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
                input="\n".join(names).encode(),
                stdout=f,
                cwd=root,
                check=True,
            )
        (Path(tmp) / "initramfs.cpio").rename(out)
    return out
