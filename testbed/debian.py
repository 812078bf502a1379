"""Fetch Debian packages of other suites without touching the machine's own apt state.

The test bed boots kernels from sid (7.2), trixie (6.12) and bookworm (6.1), and the codegen
fixtures are those suites' ``linux-libc-dev`` headers.  apt runs with a private sources list,
state and cache under ``CACHE``; sid moves, so versions are resolved at run time and every
extracted package is cached under its exact version.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
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
        # Docker-style images disable apt's binary cache; without it every query takes seconds.
        "-o Dir::Cache::pkgcache=pkgcache.bin",
        "-o Dir::Cache::srcpkgcache=srcpkgcache.bin",
        "-o APT::Architecture=amd64",
        "-o Debug::NoLocking=1",
        "-o APT::Sandbox::User=root",  # root-owned cache: no "_apt cannot access" warning
    ]


def _apt(tool: str, *args: str, capture: bool = False) -> str:
    # apt's progress goes to stderr: stdout may be a command's output (``testbed run``).
    cmd = [tool, *" ".join(_apt_opts()).split(), *args]
    out = subprocess.PIPE if capture else sys.stderr
    done = subprocess.run(cmd, check=True, text=True, stdout=out)
    return done.stdout or ""


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialise processes sharing ``CACHE`` (engineers and CI run the test bed concurrently)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"debian: waiting for another process holding {CACHE}/.{name}.lock", file=sys.stderr
            )
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def update(max_age_s: float = 6 * 3600) -> None:
    """Refresh the private package lists, at most every ``max_age_s`` seconds."""
    root = _apt_dir()
    for sub in ("lists/partial", "archives/partial", "cache"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # Rewriting these would bump their mtimes, which makes apt rebuild pkgcache.bin (seconds).
    status, sources = root / "status", root / "sources.list"
    if not status.exists():
        status.touch()
    lines = "".join(f"deb [signed-by={KEYRING}] {MIRROR} {s} main\n" for s in SUITES)
    if not sources.exists() or sources.read_text() != lines:
        sources.write_text(lines)
    stamp = root / "updated"
    with locked("apt"):
        if stamp.exists() and time.time() - stamp.stat().st_mtime < max_age_s:
            return
        # --error-on=any: offline, apt would warn, exit 0 and keep stale lists; callers must know.
        _apt("apt-get", "update", "-q", "--error-on=any")
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


def pinned_depends(package: str, version: str) -> dict[str, str]:
    """The dependencies of ``package`` pinned to one version (``name (= version)``).

    Those are the parts of one build, e.g. a kernel image's modules and vmlinuz packages.
    """
    update()
    out = _apt("apt-cache", "show", "--no-all-versions", f"{package}={version}", capture=True)
    field = next(
        (line.split(":", 1)[1] for line in out.splitlines() if line.startswith("Depends:")), ""
    )
    pinned = {}
    for group in field.split(","):
        first = group.split("|")[0].strip()
        if "(=" in first:
            name, relation = first.split("(", 1)
            pinned[name.strip()] = relation.strip(" =)")
    return pinned


def newest(versions: Iterable[str]) -> str:
    """The highest of Debian ``versions`` (dpkg's ordering, not string order: 6.12 > 6.9)."""

    def cmp(a: str, b: str) -> int:
        if a == b:
            return 0
        lower = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
        return -1 if lower else 1

    return max(versions, key=functools.cmp_to_key(cmp))


def cached_newest(package: str) -> tuple[str, Path] | None:
    """The newest already extracted version of ``package``: what is usable offline."""
    found = {
        d.name[len(package) + 1 :]: d
        for d in (CACHE / "pkgs").glob(f"{package}_*")
        if (d / ".done").exists()
    }
    if not found:
        return None
    version = newest(found)
    return version, found[version]


def fetch(package: str, suite: str, version: str | None = None) -> Path:
    """Download ``package`` from ``suite`` and return the directory it is extracted in."""
    version = version or newest_version(package, suite)
    dest = CACHE / "pkgs" / f"{package}_{version}"
    if (dest / ".done").exists():
        return dest
    with locked("fetch"):
        if not (dest / ".done").exists():
            _download(package, suite, version, dest)
    return dest


def _download(package: str, suite: str, version: str, dest: Path) -> None:
    dl = CACHE / "debs"
    dl.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["apt-get", *" ".join(_apt_opts()).split(), "download", "-q", f"{package}={version}"],
        check=True,
        cwd=dl,
        stdout=sys.stderr,
    )
    deb = next(dl.glob(f"{package}_*{version.split(':')[-1]}*_*.deb"))
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    (dest / ".done").write_text(f"{package} {version} {suite}\n")


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
