"""The systemd unit shipped with the gadget (``gadget_ref/systemd/``), as a user installs it.

The file names ``/usr/bin/ublk-gadget``; :func:`render` puts this installation's command in
its place (the interpreter running this code, ``-m ublk_gadget``), so that the unit printed by
``ublk-gadget systemd-unit`` runs the code installed here, a virtual environment included,
and a reload after an upgrade starts the upgraded code.
"""

from __future__ import annotations

import re
import sys
from importlib import resources

UNIT = "ublk-gadget@.service"
EXAMPLE_CONFIG = "example.conf"
SHIPPED_COMMAND = "/usr/bin/ublk-gadget"
"""How the shipped unit names the gadget; :func:`render` replaces it."""

_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def text(name: str) -> str:
    """A file of ``gadget_ref/systemd/`` (installed as package data)."""
    return resources.files("ublk_gadget").joinpath("systemd", name).read_text(encoding="utf-8")


def _quote(word: str) -> str:
    """A word as systemd's command-line parser reads it back: ``%`` and ``$`` doubled (else
    a specifier or a variable), and anything unusual in double quotes."""
    if _PLAIN.fullmatch(word):
        return word
    escaped = word.replace("%", "%%").replace("$", "$$")
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command(executable: str = sys.executable) -> str:
    """This installation's ``ublk-gadget``, as a unit's command line starts."""
    return " ".join(_quote(word) for word in (executable, "-m", "ublk_gadget"))


def render(unit: str, executable: str = sys.executable) -> str:
    """``unit`` with its ``Exec*=`` commands naming this installation."""
    ours = command(executable)
    return "".join(line.replace(f"={SHIPPED_COMMAND} ", f"={ours} ", 1)
                   if line.startswith("Exec") else line
                   for line in unit.splitlines(keepends=True))
