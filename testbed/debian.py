"""Fetch Debian packages of other suites without touching the machine's own apt state.

The test bed boots kernels from sid (7.2), trixie (6.12) and bookworm (6.1), and the codegen
fixtures are those suites' ``linux-libc-dev`` headers.  apt runs with a private sources list,
state and cache under ``CACHE``; sid moves, so versions are resolved at run time and every
extracted package is cached under its exact version.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

SUITES = ("sid", "trixie", "bookworm")
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
CACHE = Path(os.environ.get("UBLK_TESTBED_CACHE", Path.home() / ".cache" / "ublk-bindings-testbed"))


def _apt_dir() -> Path:
    return CACHE / "apt"


def _apt_opts() -> list[str]:
    root = _apt_dir()
    return [
        f"-o Dir::Etc::sourcelist={root / 'sources.list'}",
        "-o Dir::Etc::sourceparts=-",
        f"-o Dir::State::Lists={root / 'lists'}",
        f"-o Dir::State::status={root / 'status'}",
        f"-o Dir::Cache::archives={root / 'archives'}",
        f"-o Dir::Cache={root / 'cache'}",
        "-o APT::Architecture=amd64",
        "-o Debug::NoLocking=1",
    ]


def _apt(tool: str, *args: str, capture: bool = False) -> str:
    cmd = [tool, *" ".join(_apt_opts()).split(), *args]
    done = subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE if capture else None)
    return done.stdout or ""


def update(max_age_s: float = 6 * 3600) -> None:
    """Refresh the private package lists, at most every ``max_age_s`` seconds."""
    root = _apt_dir()
    for sub in ("lists/partial", "archives/partial", "cache"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "status").touch()
    sources = "".join(f"deb [signed-by={KEYRING}] {MIRROR} {s} main\n" for s in SUITES)
    (root / "sources.list").write_text(sources)
    stamp = root / "updated"
    import time

    if stamp.exists() and time.time() - stamp.stat().st_mtime < max_age_s:
        return
    _apt("apt-get", "update", "-q")
    stamp.touch()


def newest_version(package: str, suite: str) -> str:
    """The newest version of ``package`` that ``suite`` offers (apt-cache madison)."""
    update()
    out = _apt("apt-cache", "madison", package, capture=True)
    for line in out.splitlines():
        name, version, source = (f.strip() for f in line.split("|"))
        if name == package and f" {suite}/" in f" {source.split()[1]}" and "Sources" not in source:
            return version
    raise LookupError(f"{package}: no version in Debian {suite}")


def fetch(package: str, suite: str, version: str | None = None) -> Path:
    """Download ``package`` from ``suite`` and return the directory it is extracted in."""
    version = version or newest_version(package, suite)
    dest = CACHE / "pkgs" / f"{package}_{version}"
    if (dest / ".done").exists():
        return dest
    dl = CACHE / "debs"
    dl.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["apt-get", *" ".join(_apt_opts()).split(), "download", "-q", f"{package}={version}"],
        check=True,
        cwd=dl,
    )
    deb = next(dl.glob(f"{package}_*{version.split(':')[-1]}*_*.deb"))
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    (dest / ".done").write_text(f"{package} {version} {suite}\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("package")
    p.add_argument("--suite", default="sid", choices=SUITES)
    p.add_argument("--version")
    a = p.parse_args(argv)
    print(fetch(a.package, a.suite, a.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
