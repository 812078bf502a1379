"""The service manager's notification protocol (sd_notify(3)), both ends.

systemd learns from it that a Type=notify service is ready (``READY=1``), what it is doing
(``STATUS=``), that it is stopping (``STOPPING=1``) and which process is the service now
(``MAINPID=``): the last is what lets a live handover replace the main process under a running
unit.  A notification is one datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket that
``$NOTIFY_SOCKET`` names, a path or ``@name`` in the abstract namespace; the manager reads who
sent it from the socket's credentials (SO_PASSCRED), so no pid is ever trusted from the text.
Without ``$NOTIFY_SOCKET`` the sender does nothing, and the gadget behaves the same outside a
unit.  A notification that cannot be delivered is logged, never fatal: serving the devices
matters more than telling the manager about it.

The receiving end (:class:`Listener`) is what the manager runs; the gadget's tests use it to
stand in for systemd.  Hand-written, not a dependency: see docs/DESIGN.md, "Dependencies".
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger("ublk_gadget.notify")

SOCKET_ENV = "NOTIFY_SOCKET"
MAX_DATAGRAM = 4096
"""What :class:`Listener` reads of one message; systemd itself takes up to a page (and fds)."""
_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid, uid_t uid, gid_t gid


class NotifyError(ValueError):
    """A ``$NOTIFY_SOCKET`` or a message that this implementation cannot send."""


def socket_address(value: str) -> str | bytes:
    """The sockaddr of a ``$NOTIFY_SOCKET`` value: a path as it is, ``@name`` as the abstract
    name (a leading NUL byte).  Anything else (systemd 254's ``vsock:`` addresses) is refused."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode("utf-8", "surrogateescape")
    if value.startswith("/"):
        return value
    raise NotifyError(f"${SOCKET_ENV}={value!r}: not a socket path or @abstract name")


def encode(fields: Mapping[str, object]) -> bytes:
    """``KEY=VALUE`` lines, in order.  A value must be one line: the manager splits at newlines,
    so a newline in STATUS= would smuggle in a second assignment."""
    lines = []
    for key, value in fields.items():
        text = str(value)
        if not key or not key.replace("_", "").isalnum() or not key.isupper():
            raise NotifyError(f"{key!r} is not a notification field name")
        if "\n" in text or "\0" in text:
            raise NotifyError(f"{key}={text!r}: a value must be one line")
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode("utf-8", "surrogateescape")


class Notifier:
    """Sends notifications to the manager named by ``$NOTIFY_SOCKET``; a no-op without one."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sockaddr = socket_address(address) if address else None
        self._warned = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The manager this process was started under, if any; an address this implementation
        cannot use is logged once and treated as none (the daemon still serves)."""
        value = environ.get(SOCKET_ENV) or None
        try:
            return cls(value)
        except NotifyError as e:
            log.warning("%s: not notifying the service manager", e)
            return cls(None)

    @property
    def enabled(self) -> bool:
        return self._sockaddr is not None

    def send(self, **fields: object) -> bool:
        """One datagram with ``fields``; whether it was sent (False: no manager, or it failed)."""
        if self._sockaddr is None:
            return False
        data = encode(fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(data, self._sockaddr)
        except OSError as e:
            if not self._warned:  # once: a manager that went away would otherwise fill the log
                log.warning("cannot notify the service manager at %s: %s", self.address, e)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """Serving: READY=1, with this process as the main one.  MAINPID= is what makes a
        successor started by ``reload`` the unit's main process; from the process the
        manager started, it names the main process it already knows, and changes nothing."""
        return self.send(MAINPID=os.getpid(), READY=1, STATUS=status)

    def stopping(self, status: str) -> bool:
        """Going away on purpose: STOPPING=1.  Never sent for a handover, since the manager
        then takes the unit as stopping and refuses the successor's READY=1."""
        return self.send(STOPPING=1, STATUS=status)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)


@dataclass(frozen=True)
class Notification:
    """One message as the manager sees it: who sent it (from the kernel, not the text) and what."""

    pid: int
    uid: int
    fields: dict[str, str]


def decode(data: bytes) -> dict[str, str]:
    """The assignments of a message (lines without ``=`` are ignored, as systemd does)."""
    fields = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


class Listener:
    """A notification socket, bound as the manager binds its own: datagrams, SO_PASSCRED.

    ``address`` is what to put in ``$NOTIFY_SOCKET`` for the processes it should hear; it is a
    path (removed on close) or ``@name``.  Use as a context manager.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._sock.bind(socket_address(address))
        except BaseException:
            self._sock.close()
            raise

    def receive(self, timeout: float | None = None) -> Notification | None:
        """The next message, or None once ``timeout`` seconds passed without one."""
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return None
        data, ancillary, _, _ = self._sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_UCRED.size))
        pid = uid = -1
        for level, kind, payload in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                pid, uid, _gid = _UCRED.unpack(payload[:_UCRED.size])
        return Notification(pid=pid, uid=uid, fields=decode(data))

    def close(self) -> None:
        self._sock.close()
        if self.address.startswith("/"):
            try:
                os.unlink(self.address)
            except FileNotFoundError:
                pass

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
