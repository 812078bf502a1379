"""``ublk-gadget``: serve, reload, features, list, systemd-unit, udev-rule, udev-owner.

Exit status is the contract scripts rely on: 0 done, 2 bad usage (the command line or what
it names on the host: a SPEC, a missing or too small file), 1 a runtime failure (no driver,
no liburing-ffi, not permitted, a command the kernel refused).  Either way stderr gets one
line naming the cause.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from ublk_bindings.ctrl import Control
from ublk_bindings.errors import LiburingUnavailable, errno_name

from . import daemon, faults, reload, udev, unitfile
from .adopt import DEFAULT_DEADLINE_S, AdoptError
from .backing import DEFAULT_MEMORY_DIR
from .handover import parse_duration
from .spec import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_DEPTH,
    DEFAULT_QUEUES,
    DEFAULT_RECONNECT_S,
    KEYS,
    SpecError,
    parse_spec,
)
from .state import StateError
from .targets import KINDS, TargetError

PROG = "ublk-gadget"
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Each SPEC key for ``--help``: how it is written and what it means.
KEY_HELP = {
    "size": ("size=N", "bytes, with K/M/G/T suffixes"),
    "path": ("path=P", "the file or block device"),
    "uri": ("uri=U", "nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, ..."),
    "reconnect": ("reconnect=S", "seconds lost requests are retried on new connections "
                  f"before EIO (default {DEFAULT_RECONNECT_S})"),
    "queues": ("queues=N", f"hardware queues, one thread each         (default {DEFAULT_QUEUES})"),
    "depth": ("depth=N", f"requests in flight per queue, 1..4096    (default {DEFAULT_DEPTH})"),
    "block_size": ("block_size=N",
                   f"logical block size, 512 or 4096          (default {DEFAULT_BLOCK_SIZE})"),
    "read_only": ("read_only=1", "a read-only device"),
    "buffers": ("buffers=M", "auto (the fastest the kernel and target allow), copy, "
                "user-copy, zero-copy, auto-zc (zero copy: the data never enters the process), "
                "batch (copy, with batch commands: Linux 7.0+)"),
}


def spec_help() -> str:
    """The SPEC part of ``serve --help``, from the registry: each target, then every key
    (naming the targets that take it, where not all do)."""
    lines = [f"SPEC is TARGET[,key=value...] with TARGET one of {', '.join(KINDS)}:"]
    for kind in KINDS.values():
        needs = f"(needs {', '.join(f'{key}=' for key in kind.required)})" if kind.required else ""
        lines.append(f"  {kind.name:<8}{kind.summary:<45}{needs}".rstrip())
        lines += [f"  {'':<8}{detail}" for detail in kind.details]
    lines.append("keys:")
    for key, (written, meaning) in KEY_HELP.items():
        takers = [name for name, keys in KEYS.items() if key in keys]
        if not takers:
            continue
        if len(takers) < len(KEYS):
            meaning += f" ({', '.join(takers)})"
        lines.append(f"  {written:<14}{meaning}")
    lines.append("example: ublk-gadget serve --device mem,size=256M "
                 "--device file,path=/srv/disk.img,queues=2")
    return "\n".join(lines) + "\n"


def _names(names: Sequence[str]) -> str:
    """``a, b and c``: the targets in a sentence."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _inherited_fd(text: str) -> int:
    """``--ready-fd``: a file descriptor this process was given, open and not stdin/out/err."""
    try:
        fd = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file descriptor number") from None
    if fd < 3:
        raise argparse.ArgumentTypeError(f"{fd} is stdin, stdout or stderr")
    try:
        os.fstat(fd)
    except OSError:
        raise argparse.ArgumentTypeError(f"{fd} is not an open file descriptor") from None
    return fd


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="The reference ublk server: "
                     f"{_names(list(KINDS))} targets on /dev/ublkbN.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser(
        "serve", help="serve devices until SIGTERM or SIGINT",
        description="Create the devices, print one JSON line {\"event\": \"ready\", ...} on "
        "stdout once all are live, serve them until SIGTERM or SIGINT, then stop and delete them.",
        epilog=spec_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--device", metavar="SPEC", action="append",
                       help="a device to serve (repeatable; required unless --adopt)")
    serve.add_argument("--state-file", metavar="PATH",
                       help="keep the owned devices' state here (JSON, replaced atomically); "
                       "SIGHUP then hands them over to a successor started with --adopt")
    serve.add_argument("--memory-dir", metavar="DIR", default=DEFAULT_MEMORY_DIR,
                       help="with --state-file: where mem devices keep their memory, a file each "
                       "on this tmpfs that outlives the process for a successor (default "
                       f"{DEFAULT_MEMORY_DIR}); a clean stop removes them")
    serve.add_argument("--adopt", action="store_true",
                       help="take over the devices of --state-file from the gadget serving them "
                       "(asked to hand over with SIGHUP) or from one that died")
    serve.add_argument("--standby", action="store_true",
                       help="with --adopt: load and check everything, print {\"event\": "
                       "\"standby\"}, then wait; adopt the moment the owner exits (a crash "
                       "costs no start-up time) or at once on SIGHUP (a live handover); "
                       "SIGTERM/SIGINT leave without touching anything")
    serve.add_argument("--adopt-deadline", metavar="DURATION", type=_duration,
                       default=DEFAULT_DEADLINE_S,
                       help="give up adopting after this long (e.g. 30s, 2m; default "
                       f"{DEFAULT_DEADLINE_S:g}s): whatever was taken is let go again, the "
                       "devices keep their I/O queued, the state file stays for a later --adopt")
    serve.add_argument("--adopt-or-create", action="store_true",
                       help="with --state-file and --device: if the state file exists, adopt "
                       "its devices (from the gadget serving them, or after a crash) and ignore "
                       "--device; else create the --device devices. What a systemd unit's "
                       "ExecStart= runs, so that a restart after a crash adopts")
    serve.add_argument("--ready-fd", metavar="FD", type=_inherited_fd,
                       help="also write the ready line to this inherited file descriptor, then "
                       "close it (how 'reload' learns that its successor serves)")

    reloading = sub.add_parser(
        "reload", help="live upgrade: hand the devices over to a new process, in the background",
        description="Start 'ublk-gadget serve --adopt --state-file PATH' (the code installed "
        "now) as a new process detached from this one, wait until it serves the devices of "
        "PATH, which the running owner hands over to it, and exit 0 (1 if the successor exits "
        "first: its message says why). What a systemd unit's ExecReload= runs: the successor "
        "tells systemd it is the main process now (MAINPID=).")
    reloading.add_argument("--state-file", metavar="PATH", required=True,
                           help="the state file of the gadget serving the devices")
    reloading.add_argument("--adopt-deadline", metavar="DURATION", type=_duration,
                           default=DEFAULT_DEADLINE_S,
                           help=f"the successor's --adopt-deadline (default {DEFAULT_DEADLINE_S:g}s)")

    sub.add_parser("features", help="print this kernel's decoded UBLK_U_CMD_GET_FEATURES")
    listing = sub.add_parser("list", help="list the ublk devices on this host")
    for p in (sub.choices["features"], listing):
        p.add_argument("--json", action="store_true", help="print JSON instead of text")
    unit = sub.add_parser(
        "systemd-unit", help="print the systemd unit that runs the gadget as a service",
        description="Print ublk-gadget@.service with its commands naming this installation: "
        "ublk-gadget systemd-unit > /etc/systemd/system/ublk-gadget@.service")
    unit.add_argument("--example-config", action="store_true",
                      help="print an example of the instance configuration instead "
                      "(/etc/ublk-gadget/INSTANCE.conf)")
    sub.add_parser(
        "udev-rule", help="print the udev rule that lets users without root serve devices",
        description="Print 70-ublk-gadget.rules with its PROGRAM= naming this installation: "
        "ublk-gadget udev-rule > /etc/udev/rules.d/70-ublk-gadget.rules (see README, "
        "\"Running without root\")")
    owner = sub.add_parser(
        "udev-owner", help="print the owner uid and gid of an unprivileged device (for udev)",
        description="Print 'UID GID' that ADD_DEV recorded for the device of NODE (GET_DEV_INFO2), "
        "what the udev rule's OWNER= and GROUP= take; exit 1 for a privileged device, whose "
        "nodes stay root's.")
    owner.add_argument("node", metavar="NODE", help="ublkcN or ublkbN (udev's %%k)")
    return parser


def udev_owner(node: str) -> int:
    """``ublk-gadget udev-owner``: one line for the rule's PROGRAM=, or exit 1."""
    try:
        udev.dev_id_of(node)
    except ValueError as e:
        raise daemon.UsageError(str(e)) from None
    try:
        with Control() as ctrl:
            uid, gid = udev.owner(ctrl, node)
    except udev.NotUnprivileged as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    print(uid, gid)
    return 0


def explain(e: BaseException) -> str:
    """One line naming the cause of a runtime failure."""
    if isinstance(e, FileNotFoundError) and e.filename == daemon.CONTROL_PATH:
        return f"ublk_drv is not loaded: {daemon.CONTROL_PATH} does not exist (modprobe ublk_drv)"
    if isinstance(e, LiburingUnavailable):
        return f"liburing-ffi missing: {e}"
    if (isinstance(e, PermissionError) and e.filename == daemon.CONTROL_PATH):
        return (f"not permitted to open {daemon.CONTROL_PATH} ({errno_name(e.errno or 0)}): without "
                "root, the udev rule must give it to a group of yours (README, \"Running "
                "without root\"; ublk-gadget udev-rule)")
    if isinstance(e, OSError) and e.errno in (errno.EPERM, errno.EACCES):
        return (f"not permitted: {e} (a device is controlled by root, or by the user who added "
                "it without root, through its /dev/ublkcN)")
    return str(e) or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        faults.kill_at()
    except ValueError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format=f"{PROG}[%(process)d]: %(message)s")
    try:
        if args.command == "serve":
            if args.adopt_or_create:
                if args.adopt or args.standby or not args.state_file or not args.device:
                    raise daemon.UsageError("--adopt-or-create needs --state-file PATH and "
                                            "--device (and neither --adopt nor --standby)")
                specs = [parse_spec(text) for text in args.device]  # a typo fails even now
                return daemon.adopt_or_serve(specs, args.state_file, args.adopt_deadline,
                                             memory_dir=args.memory_dir, ready_fd=args.ready_fd)
            if args.adopt:
                if args.device or not args.state_file:
                    raise daemon.UsageError("--adopt takes its devices from --state-file PATH "
                                            "(and no --device)")
                return daemon.adopt(args.state_file, args.adopt_deadline, standby=args.standby,
                                    ready_fd=args.ready_fd)
            if args.standby:
                raise daemon.UsageError("--standby waits to adopt: it needs --adopt")
            if not args.device:
                raise daemon.UsageError("the following arguments are required: --device "
                                        "(or --adopt --state-file PATH)")
            specs = [parse_spec(text) for text in args.device]
            return daemon.serve(specs, state_file=args.state_file, memory_dir=args.memory_dir,
                                ready_fd=args.ready_fd)
        if args.command == "reload":
            return reload.reload(args.state_file, args.adopt_deadline, verbose=args.verbose)
        if args.command == "systemd-unit":
            if args.example_config:
                sys.stdout.write(unitfile.text(unitfile.EXAMPLE_CONFIG))
            else:
                sys.stdout.write(unitfile.render(unitfile.text(unitfile.UNIT)))
            return 0
        if args.command == "udev-rule":
            sys.stdout.write(udev.render(udev.text()))
            return 0
        if args.command == "udev-owner":
            return udev_owner(args.node)
        if args.command == "features":
            return daemon.print_features(as_json=args.json)
        return daemon.print_devices(as_json=args.json)
    except (SpecError, TargetError, StateError, daemon.UsageError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, LiburingUnavailable, daemon.GadgetError, AdoptError) as e:
        print(f"{PROG}: {explain(e)}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
