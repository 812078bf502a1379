"""``ublk-gadget reload``: a live upgrade run in the background, the way ExecReload= runs it.

It starts ``serve --adopt --state-file PATH --ready-fd N`` as a new process (so: the code
installed now), which takes the devices over from their owner as any successor does, waits
for that process's ready line on the pipe, and exits 0; if the successor exits first, it
exits 1 (the successor's own message, on the same stderr, says why).  Under systemd three
things make this right:

* The successor outlives this command: it gets a session of its own (no terminal's SIGHUP,
  which would mean "hand over", ever reaches it) and is started through an intermediate
  process that exits at once, so it is orphaned from the start and adopted by the service
  manager, a subreaper.  When it names itself MAINPID=, systemd supervises its own child,
  rather than warning of an "alien" main process whose exit it might not see.
* systemd knows the new main process before this command exits: the successor sends
  MAINPID= and READY=1 before it writes the ready line (``supervisor.py``), and systemd
  reads notifications ahead of the SIGCHLD of its reload process.  The old owner exits
  earlier still, once it let go; systemd waits that out while a reload command runs.
* What the successor prints goes where ours goes: under systemd, the unit's journal.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .state import read_state

log = logging.getLogger("ublk_gadget.reload")

EXIT_FAILURE = 1


def successor_argv(state_file: str, deadline_s: float, ready_fd: int,
                   verbose: bool = False) -> list[str]:
    """The successor's command line: the gadget as installed now, adopting ``state_file``."""
    return [sys.executable, "-m", "ublk_gadget", *(["-v"] if verbose else []), "serve",
            "--adopt", "--state-file", state_file, "--adopt-deadline", f"{deadline_s:g}s",
            "--ready-fd", str(ready_fd)]


@dataclass(frozen=True)
class Started:
    """A process started by :func:`start_detached`: its pid, and its ready line (None: it
    closed the pipe without one, which means it exited)."""

    pid: int
    ready_line: str | None


def _read_line(fd: int) -> str | None:
    """Bytes up to the first newline, or None if the writer closed the pipe before one."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data


def _intermediate(argv: list[str], ready_w: int, pid_w: int) -> None:
    """In the forked intermediate: start the process in a new session, send its pid, exit."""
    status = 127
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, pass_fds=(ready_w,),
                                start_new_session=True)
        os.write(pid_w, str(proc.pid).encode())
        status = 0
    except BaseException as e:  # nothing may unwind past the fork: report and exit
        print(f"ublk-gadget: reload: cannot start {argv[0]}: {e}", file=sys.stderr, flush=True)
    finally:
        os._exit(status)


def start_detached(argv_for: Callable[[int], list[str]]) -> Started:
    """Run ``argv_for(fd)``, orphaned and in a session of its own, with ``fd`` the write end
    of a pipe; return once it wrote a line there or closed it (by exiting)."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    argv = argv_for(ready_w)
    try:
        child = os.fork()
        if child == 0:
            os.close(ready_r)
            os.close(pid_r)
            _intermediate(argv, ready_w, pid_w)
        os.close(ready_w)
        os.close(pid_w)
        ready_w = pid_w = -1
        _, status = os.waitpid(child, 0)
        pid_text = _read_all(pid_r)
        if os.waitstatus_to_exitcode(status) != 0 or not pid_text:
            raise OSError(f"could not start {argv[0]}")
        return Started(pid=int(pid_text), ready_line=_read_line(ready_r))
    finally:
        for fd in (ready_r, ready_w, pid_r, pid_w):
            if fd >= 0:
                os.close(fd)


def reload(state_file: str, deadline_s: float, verbose: bool = False) -> int:
    """``ublk-gadget reload``: 0 once a new process serves the devices of ``state_file``."""
    state = read_state(state_file)  # nothing to reload (StateError: exit 2) before any process
    dev_ids = ", ".join(str(d.dev_id) for d in state.devices)
    log.info("reload: starting a successor to take devices %s over from pid %d",
             dev_ids, state.owner.pid)
    started = start_detached(lambda fd: successor_argv(state_file, deadline_s, fd, verbose))
    if started.ready_line is None:
        print(f"ublk-gadget: reload: the successor (pid {started.pid}) exited before serving "
              f"devices {dev_ids}; see its message above", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    served = [d.get("block_device") for d in json.loads(started.ready_line).get("devices", [])]
    log.info("reload: pid %d serves %s now", started.pid, ", ".join(map(str, served)))
    return 0
