"""``python -m testbed``: run a command on a real ublk driver, in a VM unless the host has one.

    python -m testbed run [--kernel sid|trixie|bookworm] [--timeout S] [--env K=V ...]
                          [--disk SIZE] [--] CMD...
    python -m testbed prepare [--kernel K ...]    # download and build, no boot (make setup)
    python -m testbed liburing                    # path of sid's liburing-ffi.so.2

``run`` exits with CMD's status; 124 when --timeout killed the VM, 125 when the test bed failed.
``--disk 512M`` gives the guest a real disk, ``/dev/vda`` (``$UBLK_TESTBED_DISK``): virtio-blk
over a host file full of data, cached by size, uncached by the host (testbed.disk).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from . import TestbedError, debian, describe, disk, initramfs, kernel, qemu

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".out"  # the writable share: results the guest leaves for the host
CONTROL = Path("/dev/ublk-control")
LIBURING_SO = "usr/lib/x86_64-linux-gnu/liburing-ffi.so.2"


def liburing() -> Path:
    """sid's liburing-ffi.so.2: the newest, and it needs only glibc 2.4 so it loads everywhere."""
    try:
        pkg = debian.fetch("liburing2", "sid")
    except (subprocess.CalledProcessError, LookupError, OSError) as e:
        cached = debian.cached_newest("liburing2")
        if cached is None:
            raise TestbedError(
                f"cannot fetch sid's liburing2 and none is cached: {describe(e)}"
            ) from e
        print(
            f"testbed: cannot reach Debian's archive ({describe(e)}); "
            f"using the cached liburing2 {cached[0]}",
            file=sys.stderr,
        )
        pkg = cached[1]
    so = pkg / LIBURING_SO
    if not so.exists():
        raise TestbedError(f"{so} missing from {pkg.name}")
    return so


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise TestbedError(f"--env {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


def _run(args: argparse.Namespace) -> int:
    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not argv:
        raise TestbedError("run: no command given")
    disk_size = disk.parse_size(args.disk) if args.disk else None
    lib = os.environ.get("UBLK_BINDINGS_LIBURING") or str(liburing())
    common = {
        "UBLK_REQUIRE_DRIVER": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "UBLK_BINDINGS_LIBURING": lib,
    }
    extra = _parse_env(args.env)
    if CONTROL.exists():  # the host's own kernel has the driver: no VM needed
        print(
            f"testbed: {CONTROL} exists on this host: running {argv[0]} here, not in a VM"
            + (" (--disk ignored: no VM, no disk)" if disk_size else ""),
            file=sys.stderr,
        )
        try:
            return subprocess.run(
                argv, env={**os.environ, **common, **extra}, timeout=args.timeout
            ).returncode
        except subprocess.TimeoutExpired:
            print(f"testbed: timed out after {args.timeout:g} s", file=sys.stderr)
            return qemu.EXIT_TIMEOUT
    k = kernel.prepare(args.kernel)
    image = initramfs.build(k, disk=disk_size is not None)
    disk_image = disk.image(disk_size) if disk_size else None
    # The guest starts from an empty environment: only what the tests rely on, then --env.
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": "/tmp",
        "TERM": "dumb",
    }
    if "VIRTUAL_ENV" in os.environ:
        env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
    env |= {**common, "UBLK_TESTBED_SUITE": k.suite, "UBLK_TESTBED_KERNEL": k.version}
    if disk_image:
        env["UBLK_TESTBED_DISK"] = disk.GUEST_PATH
    env |= extra
    print(
        f"testbed: booting Debian {k.suite}'s kernel {k.release} "
        f"({kernel.META} {k.version}) under qemu TCG",
        file=sys.stderr,
    )
    return qemu.run(k, image, OUT, Path.cwd(), env, argv, args.timeout, disk_image)


def _prepare(args: argparse.Namespace) -> int:
    for suite in args.kernel or ["sid"]:
        k = kernel.prepare(suite)
        print(f"{suite}: {k.release} ({kernel.META} {k.version}) {initramfs.build(k)}")
    print(f"liburing: {liburing()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="run CMD as root on a real ublk driver (exit status: CMD's)")
    r.add_argument("--kernel", default="sid", choices=debian.SUITES)
    r.add_argument(
        "--timeout", type=float, default=1800, help="seconds for the whole run (default 1800)"
    )
    r.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="extra guest environment"
    )
    r.add_argument(
        "--disk",
        metavar="SIZE",
        help="attach a real disk of SIZE (e.g. 512M) as the guest's /dev/vda ($UBLK_TESTBED_DISK)",
    )
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    pr = sub.add_parser(
        "prepare", help="download and build kernels, initramfs and liburing; no boot"
    )
    pr.add_argument("--kernel", action="append", choices=debian.SUITES)
    sub.add_parser("liburing", help="print the path of sid's liburing-ffi.so.2")
    args = p.parse_args(argv)
    try:
        if args.action == "run":
            return _run(args)
        if args.action == "prepare":
            return _prepare(args)
        print(liburing())
        return 0
    except TestbedError as e:
        print(f"testbed: {e}", file=sys.stderr)
        return qemu.EXIT_TESTBED
    except subprocess.CalledProcessError as e:
        print(f"testbed: {describe(e)}", file=sys.stderr)
        return qemu.EXIT_TESTBED


if __name__ == "__main__":
    sys.exit(main())
