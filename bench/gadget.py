"""Drive ``ublk-gadget serve`` as a child process: start, wait for ready, hand over, stop.

The gadget announces itself with one JSON line on stdout (``{"event": "ready", "devices":
[...]}``); everything after it is drained by a thread so a chatty gadget never blocks on a
full pipe.  stderr lines are stamped with the time they arrived (a handover's moments are
read from them) and written to a log file whose tail is quoted when the gadget fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any


class GadgetError(RuntimeError):
    """The gadget did not come up or did not go away as asked; carries its log's tail."""


def executable() -> str:
    """The ``ublk-gadget`` console script of the running interpreter's environment."""
    beside = Path(sys.executable).parent / "ublk-gadget"
    if beside.exists():
        return str(beside)
    found = shutil.which("ublk-gadget")
    if found is None:
        raise GadgetError("ublk-gadget is not installed (pip install -e .)")
    return found


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Gadget:
    """One running ``ublk-gadget serve`` process and the devices it announced."""

    def __init__(self, argv: list[str], log: Path, ready_timeout_s: float = 120.0,
                 until: str = "ready") -> None:
        """Start ``argv`` and wait for its ``until`` event (``standby`` for a standby)."""
        self.argv = argv
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(log, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[tuple[float, str]] = []
        """(time.time() when it arrived, line) of everything the gadget logged."""
        self._seen: dict[str, threading.Event] = {"ready": threading.Event(), until: threading.Event()}
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._read_log, args=(self.proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.ready: dict[str, Any] = {}
        self.wait_event(until, ready_timeout_s)

    def wait_event(self, name: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """Wait for the gadget's ``{"event": name}`` line; it is also kept in ``ready``."""
        deadline = time.monotonic() + timeout_s
        while not self._seen[name].wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = "exited with %s" % self.proc.returncode if self.proc.poll() is not None else "timed out"
                self.kill()
                raise GadgetError(f"{' '.join(self.argv)}: {why} before {name}; log {self.log}:\n{_tail(self.log)}")
        event = next(e for e in self.events if e.get("event") == name)
        if name == "ready":
            self.ready = event
        return event

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").strip()
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "text", "text": line}
            if not isinstance(event, dict):
                event = {"event": "text", "text": line}
            event.setdefault("t", time.time())
            self.events.append(event)
            seen = self._seen.get(str(event.get("event")))
            if seen is not None:
                seen.set()

    def _read_log(self, stream: IO[bytes]) -> None:
        for raw in stream:
            now = time.time()
            line = raw.decode(errors="replace").rstrip("\n")
            self.stderr.append((now, line))
            stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
            self._log_file.write(f"{stamp} {line}\n")
            self._log_file.flush()

    def logged(self, text: str) -> float | None:
        """When the gadget first logged a line containing ``text``, or None."""
        return next((t for t, line in self.stderr if text in line), None)

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(5)
        self._log_file.close()

    @classmethod
    def serve(
        cls,
        devices: list[str],
        log: Path,
        state_file: str | None = None,
    ) -> Gadget:
        """Start a gadget serving ``devices`` (SPECs), recording its state for a successor."""
        argv = [executable(), "serve"]
        for spec in devices:
            argv += ["--device", spec]
        if state_file:
            argv += ["--state-file", state_file]
        return cls(argv, log)

    @classmethod
    def adopt(cls, state_file: str, log: Path, standby: bool = False) -> Gadget:
        """Start a successor that adopts the devices named in ``state_file`` (returns once it
        is ready), or with ``standby`` one that waits for the owner to go (returns once it
        stands by; then :meth:`wait_event` ``("ready")``)."""
        argv = [executable(), "serve", "--adopt", "--state-file", state_file]
        if standby:
            return cls([*argv, "--standby"], log, until="standby")
        return cls(argv, log)

    @property
    def block_devices(self) -> list[str]:
        return [str(d["block_device"]) for d in self.ready["devices"]]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_exit(self, timeout_s: float) -> int:
        """Wait for the process to end by itself (after a handover); its exit status."""
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise GadgetError(f"gadget {self.pid} still running after {timeout_s:g} s; log {self.log}") from None
        self._join_readers()
        return code

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the clean shutdown that deletes the devices."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout_s)

    def kill(self) -> None:
        """SIGKILL: the crash a successor must recover from."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._join_readers()
