"""Build kublk, the kernel's own C ublk server, as the peer the gadget is measured against.

kublk lives in ``tools/testing/selftests/ublk`` of the kernel tree.  Debian sid's
``linux-source-7.2`` ships that tree as one tarball; only the ublk directory and
``kselftest.h`` are extracted.  It is compiled against sid's 7.2 UAPI headers and sid's static
liburing so the binary runs unchanged in the guest.  Source and binary stay in the cache: they
are never part of the repository.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

from testbed import debian

SOURCE_PACKAGE = "linux-source-7.2"
SELFTESTS = "tools/testing/selftests"
# metadata_size.c is a separate helper program with its own main().
NOT_KUBLK = {"metadata_size.c"}


def _wanted(member: tarfile.TarInfo) -> bool:
    parts = member.name.split("/", 1)
    if len(parts) != 2 or not member.isfile():
        return False
    inner = parts[1]
    return inner.startswith(f"{SELFTESTS}/ublk/") or inner == f"{SELFTESTS}/kselftest.h"


def _extract(tarball: Path, dest: Path) -> Path:
    """Extract the ublk selftests and kselftest.h; returns the ublk directory."""
    with tarfile.open(tarball, "r:xz") as tar:
        members = [m for m in tar if _wanted(m)]  # regular files under known paths only
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4; Debian 12 has 3.11.2
            tar.extractall(dest, members=members, filter="data")
        else:
            tar.extractall(dest, members=members)
    top = members[0].name.split("/", 1)[0]
    return dest / top / SELFTESTS / "ublk"


def build(cache: Path | None = None) -> Path:
    """The path of a kublk binary built from sid's kernel source (cached by version)."""
    version = debian.newest_version(SOURCE_PACKAGE, "sid")
    root = (cache or debian.CACHE / "bench") / f"kublk-{version}"
    binary = root / "kublk"
    if binary.exists():
        return binary
    src_pkg = debian.fetch(SOURCE_PACKAGE, "sid", version)
    uapi = debian.fetch("linux-libc-dev", "sid")
    uring = debian.fetch("liburing-dev", "sid")
    tarball = next((src_pkg / "usr" / "src").glob("linux-source-*.tar.xz"))
    work = root / "src"
    shutil.rmtree(work, ignore_errors=True)
    ublk_dir = _extract(tarball, work)
    sources = sorted(p.name for p in ublk_dir.glob("*.c") if p.name not in NOT_KUBLK)
    cmd = [
        "gcc", "-O2", "-D_GNU_SOURCE",
        f"-I{uapi / 'usr' / 'include'}", f"-I{uring / 'usr' / 'include'}", "-I..",
        *sources,
        str(uring / "usr" / "lib" / "x86_64-linux-gnu" / "liburing.a"),
        "-lpthread", "-lm", "-o", str(binary) + ".tmp",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ublk_dir, check=True)
    Path(str(binary) + ".tmp").rename(binary)
    return binary


if __name__ == "__main__":
    print(build())
