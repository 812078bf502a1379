"""Buffer modes: where a request's data lives, and which kublk peer serves in the same mode.

A gadget device is told its mode with the SPEC key ``buffers=`` (``copy``, ``user-copy``,
``zero-copy``, ``auto-zc``, ``batch``; without it, ``auto`` picks zero copy where the kernel
and target allow); kublk takes it as an option of ``kublk add`` (none, ``-u``, ``-z``,
``--auto_zc``, ``-b``).  Every peer of ours states its mode, so a gadget row is always
divided by the kublk row of the same mode: copy against copy, zero copy against zero copy,
batch (copy-mode data, UBLK_F_BATCH_IO commands) against kublk ``-b``.

Peer names: the copy rows keep their old names (``gadget-null``, ``kublk-loop``); the other
modes add a suffix (``gadget-null-autozc``, ``gadget-file-zc``, ``gadget-null-usercopy``,
``gadget-null-batch``, ``kublk-null-autozc``, ``kublk-loop-z``, ``kublk-null-u``,
``kublk-null-b``).
"""

from __future__ import annotations

from dataclasses import dataclass

COPY, USER_COPY, ZERO_COPY, AUTO_ZC = "copy", "user-copy", "zero-copy", "auto-zc"
BATCH = "batch"
#: The modes both servers have, in the order tables list them.
MODES = (COPY, USER_COPY, ZERO_COPY, AUTO_ZC, BATCH)
#: ``kublk add`` options of each mode (before the backing file).
KUBLK_OPTIONS: dict[str, tuple[str, ...]] = {COPY: (), USER_COPY: ("-u",), ZERO_COPY: ("-z",),
                                             AUTO_ZC: ("--auto_zc",), BATCH: ("-b",)}
KUBLK_SUFFIX = {COPY: "", USER_COPY: "-u", ZERO_COPY: "-z", AUTO_ZC: "-autozc", BATCH: "-b"}
GADGET_SUFFIX = {COPY: "", USER_COPY: "-usercopy", ZERO_COPY: "-zc", AUTO_ZC: "-autozc",
                 BATCH: "-batch"}
#: The kublk target doing the same job as each gadget target.
KUBLK_TARGET = {"null": "null", "mem": "null", "file": "loop"}


def kublk_name(target: str, mode: str) -> str:
    """``target``: kublk's own (null, loop)."""
    return f"kublk-{target}{KUBLK_SUFFIX[mode]}"


def gadget_name(target: str, mode: str) -> str:
    return f"gadget-{target}{GADGET_SUFFIX[mode]}"


@dataclass(frozen=True)
class Pair:
    """A gadget peer and the kublk peer doing the same job in the same buffer mode."""

    target: str  # the gadget's: null, mem, file
    mode: str

    @property
    def gadget(self) -> str:
        return gadget_name(self.target, self.mode)

    @property
    def kublk_target(self) -> str:
        return KUBLK_TARGET[self.target]

    @property
    def kublk(self) -> str:
        return kublk_name(self.kublk_target, self.mode)


#: The main (tmpfs) table's pairs: every copy row as before, then zero copy, then user copy,
#: then batch.
MAIN_PAIRS = (
    Pair("null", COPY), Pair("mem", COPY), Pair("file", COPY),
    Pair("null", AUTO_ZC), Pair("file", AUTO_ZC),
    Pair("file", ZERO_COPY),
    Pair("null", USER_COPY),
    Pair("null", BATCH),
)  # fmt: skip
#: The disk table's: the file servers in copy and zero-copy mode.
DISK_PAIRS = (Pair("file", COPY), Pair("file", AUTO_ZC))


def mode_of(peer: str, pairs: tuple[Pair, ...] = MAIN_PAIRS) -> str | None:
    """The buffer mode of a userspace peer of ``pairs``; None for the in-kernel ones."""
    for p in pairs:
        if peer in (p.gadget, p.kublk):
            return p.mode
    return None


def base_name(peer: str, pairs: tuple[Pair, ...] = MAIN_PAIRS) -> str:
    """The peer's name without its mode suffix (``gadget-file-autozc`` -> ``gadget-file``)."""
    for p in pairs:
        if peer == p.gadget:
            return gadget_name(p.target, COPY)
        if peer == p.kublk:
            return kublk_name(p.kublk_target, COPY)
    return peer


def not_copy(pairs: tuple[Pair, ...]) -> list[str]:
    """The peers of ``pairs`` that serve in another mode than copy (gadget and kublk, once each)."""
    names: list[str] = []
    for p in pairs:
        if p.mode != COPY:
            names += [n for n in (p.kublk, p.gadget) if n not in names]
    return names
