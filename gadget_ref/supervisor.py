"""Who watches the daemon besides its stdout, and what each is told.

Two watchers: the service manager, through sd_notify (``notify.py``; absent outside a unit),
and, for a successor started by ``ublk-gadget reload``, that command, waiting on a pipe
(``--ready-fd``) for the ready line.  The order of :meth:`Supervisor.serving` is the point:
the manager hears ``MAINPID=``/``READY=1`` before ``reload`` is told, so by the time systemd's
ExecReload= process exits, systemd already knows the new main process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from .notify import Notifier

log = logging.getLogger("ublk_gadget.supervisor")


def _devices(block_devices: Sequence[str]) -> str:
    return ", ".join(block_devices) or "no devices"


class Supervisor:
    """The daemon's reports to the service manager and to a waiting ``reload``."""

    def __init__(self, notifier: Notifier, ready_fd: int | None = None) -> None:
        self.notifier = notifier
        self._ready_fd = ready_fd

    @classmethod
    def from_environment(cls, ready_fd: int | None = None) -> Supervisor:
        return cls(Notifier.from_environment(), ready_fd)

    def serving(self, ready_line: str, block_devices: Sequence[str]) -> None:
        """Every device is live (the ready line was printed): READY=1 and MAINPID= to the
        manager, then the ready line to ``--ready-fd``, which is closed."""
        self.notifier.ready(f"serving {_devices(block_devices)}")
        if self._ready_fd is None:
            return
        fd, self._ready_fd = self._ready_fd, None
        try:
            os.write(fd, ready_line.encode() + b"\n")
        except OSError as e:  # the reader gave up: serving goes on regardless
            log.warning("--ready-fd %d: %s", fd, e)
        finally:
            os.close(fd)

    def standing_by(self, owner_pid: int, dev_ids: Sequence[int]) -> None:
        """A standby loaded everything: it is started, as a unit of its own."""
        self.notifier.ready(f"standing by to adopt devices {', '.join(map(str, dev_ids))} "
                            f"from pid {owner_pid}")

    def handing_over(self, block_devices: Sequence[str]) -> None:
        """SIGHUP: a status only.  STOPPING=1 here would make the manager stop the unit and
        refuse the successor's READY=1."""
        self.notifier.status(f"handing {_devices(block_devices)} over to a successor")

    def stopping(self, what: str) -> None:
        """Leaving on purpose (SIGTERM/SIGINT, a failed queue, a standby sent away)."""
        self.notifier.stopping(what)
