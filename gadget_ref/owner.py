"""Who owns the devices: a process identity that survives pid reuse, and a safe way to signal it.

A pid alone names "whatever process has this number now".  The successor must never send
SIGHUP to an unrelated process that happens to have inherited the owner's pid, so the owner is
recorded as (pid, start time, boot id, executable, command line) and is signalled only through
a pidfd whose process was checked against that record *while the pidfd was held*: once a pidfd
is open it keeps naming the same process, so a check made through /proc and then confirmed by
"the pidfd's process is still alive" cannot have read a different process.
"""

from __future__ import annotations

import errno
import os
import select
import signal
from dataclasses import dataclass

_DELETED = " (deleted)"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def boot_id() -> str:
    """This boot's random id: start times (clock ticks since boot) only compare within a boot."""
    return _read("/proc/sys/kernel/random/boot_id").decode("ascii").strip()


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    stat = _read(f"/proc/{pid}/stat").decode("utf-8", "replace")
    # Field 2 (comm) is in parentheses and may itself contain spaces and ')': the fields
    # resume after the last ')'. Field 3 is the first one after it, so field 22 is index 19.
    return int(stat[stat.rindex(")") + 1 :].split()[22 - 3])


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as recorded in the state file, precise enough to tell it from a pid's reuser."""

    pid: int
    start_time: int
    boot_id: str
    exe: str
    cmdline: tuple[str, ...]

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        """Read PID's identity from /proc; ProcessLookupError if there is no such process."""
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            raw_cmdline = _read(f"/proc/{pid}/cmdline")
            started = start_time(pid)
        except FileNotFoundError:
            raise ProcessLookupError(errno.ESRCH, f"no process {pid}") from None
        # A package upgrade replaces the interpreter on disk while the owner still runs it:
        # the link then reads "PATH (deleted)", and it is still the same executable.
        exe = exe.removesuffix(_DELETED)
        cmdline = tuple(a.decode("utf-8", "surrogateescape") for a in raw_cmdline.split(b"\0")[:-1])
        return cls(pid=pid, start_time=started, boot_id=boot_id(), exe=exe, cmdline=cmdline)

    @classmethod
    def current(cls) -> ProcessIdentity:
        return cls.of(os.getpid())

    def differences(self, other: ProcessIdentity) -> list[str]:
        """What tells ``other`` apart from this identity, as readable phrases (empty: the same)."""
        diffs = []
        for name in ("pid", "boot_id", "start_time", "exe", "cmdline"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                if name == "cmdline":
                    mine, theirs = " ".join(mine), " ".join(theirs)
                diffs.append(f"{name} {theirs!r} (recorded {mine!r})")
        return diffs


class OwnerMismatch(Exception):
    """The process behind a pid is not the recorded owner: it must not be signalled."""


class Owner:
    """A pidfd on the verified owner process: signals reach that process or nobody.

    ``Owner.verify`` opens a pidfd on ``recorded.pid``, reads the identity of the process behind
    it, and confirms through the pidfd that this process was still alive after the read (so the
    read cannot have been of a later process given the same pid).  Use as a context manager.
    """

    def __init__(self, pidfd: int, identity: ProcessIdentity) -> None:
        self.pidfd = pidfd
        self.identity = identity

    @classmethod
    def verify(cls, recorded: ProcessIdentity) -> Owner:
        """The live owner named by ``recorded``.

        ProcessLookupError: no process has that pid any more (the owner is gone).
        OwnerMismatch: a process has the pid but it is not the recorded owner (pid reused).
        """
        pidfd = os.pidfd_open(recorded.pid)  # ProcessLookupError if the pid is free
        try:
            try:
                live = ProcessIdentity.of(recorded.pid)
            except ProcessLookupError:
                raise ProcessLookupError(errno.ESRCH, f"owner pid {recorded.pid} exited") from None
            # Signal 0 checks existence: the pidfd's process outlived the /proc reads above,
            # so they read that process and no successor of its pid.
            signal.pidfd_send_signal(pidfd, 0)
            diffs = recorded.differences(live)
            if diffs:
                raise OwnerMismatch(
                    f"pid {recorded.pid} is not the recorded owner: " + "; ".join(diffs)
                )
            return cls(pidfd, live)
        except BaseException:
            os.close(pidfd)
            raise

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the verified process; ProcessLookupError if it has exited."""
        signal.pidfd_send_signal(self.pidfd, signum)

    def wait_exit(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the process to exit; True once it has.

        A pidfd polls readable when its process exits (zombies included), which signal 0
        cannot tell: a zombie still accepts signals.
        """
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout_s * 1000))))

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __enter__(self) -> Owner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
