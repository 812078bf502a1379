"""Which Debian packages make a suite's kernel, assembled into one tree keyed by exact version.

The kernel is the one the meta package ``linux-image-amd64`` pins: the generic flavour, since
``cloud-amd64`` has no 9p.  Since 7.x Debian splits the image into ``linux-binary-*`` (vmlinuz),
``linux-modules-*`` and ``linux-base-*`` (modules.builtin); older images hold everything.  Both
layouts are found by following the pinned Depends, not by suite.  Debian ships no modules.dep
(depmod writes it at install time), so busybox's depmod writes it here once per kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import TestbedError, debian, describe

META = "linux-image-amd64"


@dataclass(frozen=True)
class Kernel:
    suite: str
    version: str  # Debian version of linux-image-amd64, e.g. "7.2.13-1"
    release: str  # what ``uname -r`` says in the guest, e.g. "7.2.13+deb14-amd64"
    dir: Path

    @property
    def vmlinuz(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def moddir(self) -> Path:
        return self.dir / "lib" / "modules" / self.release


def _kernels() -> Path:
    return debian.CACHE / "kernels"


def prepare(suite: str) -> Kernel:
    """The newest kernel of ``suite``, downloaded and assembled; offline, the newest cached one."""
    try:
        version = debian.newest_version(META, suite)
        kdir = _kernels() / version
        if (kdir / ".done").exists():
            return _load(kdir, suite)
        parts = _fetch_parts(suite, version)
    except (subprocess.CalledProcessError, LookupError, OSError) as e:
        fallback = cached(suite)
        if fallback is None:
            raise TestbedError(
                f"cannot fetch Debian {suite}'s kernel and none is cached: {describe(e)}"
            ) from e
        print(
            f"testbed: cannot reach Debian's archive ({describe(e)}); "
            f"using the cached {suite} kernel {fallback.version} (maybe not {suite}'s newest)",
            file=sys.stderr,
        )
        return fallback
    with debian.locked("kernels"):
        if not (kdir / ".done").exists():
            _assemble(kdir, version, *parts)
    return _load(kdir, suite)


def cached(suite: str) -> Kernel | None:
    """The newest assembled kernel once resolved for ``suite``, without touching the network."""
    seen = {}
    for meta in _kernels().glob("*/kernel.json"):
        if (meta.parent / ".done").exists() and suite in json.loads(meta.read_text())["suites"]:
            seen[meta.parent.name] = meta.parent
    if not seen:
        return None
    return _load(seen[debian.newest(seen)], suite)


def _fetch_parts(suite: str, version: str) -> tuple[str, list[Path]]:
    """(release, extracted package dirs) of the kernel linux-image-amd64 ``version`` pins."""
    images = [n for n in debian.pinned_depends(META, version) if n.startswith("linux-image-")]
    if len(images) != 1:
        raise LookupError(f"{META} {version}: expected one pinned linux-image-*, found {images}")
    image = images[0]
    release = image.removeprefix("linux-image-")
    wanted = {image: version}
    todo = [image]
    while todo:  # follow pinned parts of the same build: linux-binary/-modules/-base-<release>
        for name, v in debian.pinned_depends(todo.pop(), wanted[image]).items():
            if name.endswith(f"-{release}") and name not in wanted:
                wanted[name] = v
                todo.append(name)
    return release, [debian.fetch(name, suite, v) for name, v in sorted(wanted.items())]


def _assemble(kdir: Path, version: str, release: str, pkgs: list[Path]) -> None:
    """Merge the packages' modules into ``kdir/lib/modules/<release>``, find vmlinuz, run depmod."""
    stage = kdir.with_name(kdir.name + ".tmp")
    shutil.rmtree(stage, ignore_errors=True)
    moddir = stage / "lib" / "modules" / release
    moddir.mkdir(parents=True)
    for pkg in pkgs:
        for src in (pkg / "usr" / "lib" / "modules" / release, pkg / "lib" / "modules" / release):
            if src.is_dir():  # hard links: the merged tree costs no space
                subprocess.run(["cp", "-al", f"{src}/.", str(moddir)], check=True)
        boot = pkg / "boot" / f"vmlinuz-{release}"
        if boot.exists():
            (stage / "vmlinuz").hardlink_to(boot)
    if (moddir / "vmlinuz").exists():
        (moddir / "vmlinuz").rename(stage / "vmlinuz")
    if not (stage / "vmlinuz").exists():
        raise TestbedError(f"no vmlinuz for {release} in {', '.join(map(str, pkgs))}")
    print(f"testbed: depmod {release} (once per kernel)", file=sys.stderr)
    subprocess.run(["busybox", "depmod", "-b", str(stage), release], check=True)
    meta = {
        "version": version,
        "release": release,
        "packages": [p.name for p in pkgs],
        "suites": [],
    }
    _write_json(stage / "kernel.json", meta)
    shutil.rmtree(kdir, ignore_errors=True)
    stage.rename(kdir)
    (kdir / ".done").touch()


def _load(kdir: Path, suite: str) -> Kernel:
    path = kdir / "kernel.json"
    meta = json.loads(path.read_text())
    if suite not in meta["suites"]:  # remembered so that offline runs can find it by suite
        meta["suites"].append(suite)
        _write_json(path, meta)
    return Kernel(suite=suite, version=meta["version"], release=meta["release"], dir=kdir)


def _write_json(path: Path, data: object) -> None:
    """Replace ``path`` atomically: a concurrent run may be reading it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
