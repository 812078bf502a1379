"""What the daemon prints on stdout: decoded features, the device table, the ready line.

Names come from the generated UAPI module, so a flag the bundled header knows is printed by
its C name and a bit it does not know is still shown, as a bare bit number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ublk_bindings

STATE_NAMES = {
    ublk_bindings.UBLK_S_DEV_DEAD: "DEAD",
    ublk_bindings.UBLK_S_DEV_LIVE: "LIVE",
    ublk_bindings.UBLK_S_DEV_QUIESCED: "QUIESCED",
    ublk_bindings.UBLK_S_DEV_FAIL_IO: "FAIL_IO",
}


def _feature_bits() -> dict[int, str]:
    """bit number -> UBLK_F_* name, for every single-bit UBLK_F_ macro of the bundled header."""
    bits: dict[int, str] = {}
    for name in dir(ublk_bindings):
        value = getattr(ublk_bindings, name)
        if name.startswith("UBLK_F_") and isinstance(value, int) and value > 0:
            if value & (value - 1) == 0:
                bits.setdefault(value.bit_length() - 1, name)
    return bits


FEATURE_BITS = _feature_bits()


def feature_names(mask: int) -> list[str]:
    """The UBLK_F_* names set in ``mask``, lowest bit first; unknown bits as ``bit N``."""
    names = []
    for bit in range(64):
        if mask >> bit & 1:
            names.append(FEATURE_BITS.get(bit, f"bit {bit}"))
    return names


def format_features(mask: int) -> str:
    """``ublk-gadget features``: the raw mask, then one line per bit that is set."""
    lines = [f"features {mask:#018x}"]
    for bit in range(64):
        if mask >> bit & 1:
            lines.append(f"  bit {bit:2}  {FEATURE_BITS.get(bit, '(not in the bundled header)')}")
    return "\n".join(lines)


def device_row(info: Any) -> dict[str, Any]:
    """One ``ublksrv_ctrl_dev_info`` as the plain fields ``list`` shows."""
    return {
        "dev_id": int(info.dev_id),
        "state": STATE_NAMES.get(int(info.state), f"state {info.state}"),
        "owner_pid": int(info.ublksrv_pid),
        "queues": int(info.nr_hw_queues),
        "depth": int(info.queue_depth),
        "max_io_bytes": int(info.max_io_buf_bytes),
        "flags": feature_names(int(info.flags)),
    }


_COLUMNS = (("ID", "dev_id"), ("STATE", "state"), ("PID", "owner_pid"), ("QUEUES", "queues"),
            ("DEPTH", "depth"), ("MAX_IO", "max_io_bytes"))


def format_device_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``ublk-gadget list``: one line per device, flags without their UBLK_F_ prefix."""
    if not rows:
        return "no ublk devices"
    table = [[title for title, _ in _COLUMNS] + ["FLAGS"]]
    for row in rows:
        flags = "|".join(name.removeprefix("UBLK_F_") for name in row["flags"]) or "-"
        table.append([str(row[key]) for _, key in _COLUMNS] + [flags])
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1]
        for line in table
    )


def ready_line(devices: Iterable[Mapping[str, Any]]) -> str:
    """The one JSON line printed when every device is live."""
    return json.dumps({"event": "ready", "devices": list(devices)}, separators=(", ", ": "))


def standby_line(owner_pid: int, dev_ids: Iterable[int]) -> str:
    """The one JSON line printed by ``serve --adopt --standby`` once it is ready to adopt."""
    return json.dumps({"event": "standby", "owner_pid": owner_pid, "dev_ids": list(dev_ids)},
                      separators=(", ", ": "))
