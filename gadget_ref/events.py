"""What the daemon tells tools and tests on stdout: one JSON object per line, as it happens.

``ready`` (every device live), ``standby`` (a standby loaded and waiting), and the steps of
a handover: ``handing-over`` (the owner took SIGHUP), ``released`` per device with ``how``
(``quiesce`` or ``drain``), ``adopting`` and ``adopted`` per device on the successor's side;
``failed`` when a queue stopped serving.  Logs on stderr say the same for people; these are
the contract for programs, so their names and fields only ever grow.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

_lock = threading.Lock()  # queue threads report failures too: one line never splits


def line(event: str, **fields: Any) -> str:
    return json.dumps({"event": event, **fields}, separators=(", ", ": "))


def emit(event: str, **fields: Any) -> None:
    """Print one event line on stdout and flush it (a reader waits on it)."""
    text = line(event, **fields)
    with _lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
