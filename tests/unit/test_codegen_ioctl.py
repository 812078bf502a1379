"""The generated module encodes ioctl opcodes for the architecture it runs on.

Expected values follow each architecture's include/uapi/asm/ioctl.h: asm-generic
(x86, arm, riscv, s390...): 14 size bits, READ=2 WRITE=1 in bits 30-31; alpha, mips,
powerpc, sparc: 13 size bits, NONE=1 READ=2 WRITE=4 in bits 29-31; parisc: asm-generic
bits with READ=1 WRITE=2.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

from codegen_support import REPO

GENERATED = REPO / "ublk_bindings" / "ublk_cmd.py"

# (machine, GET_FEATURES = _IOR('u', 0x13, 32 bytes), ADD_DEV = _IOWR('u', 0x04, 32 bytes))
ENCODINGS = [
    ("x86_64", 0x80207513, 0xC0207504),
    ("aarch64", 0x80207513, 0xC0207504),
    ("riscv64", 0x80207513, 0xC0207504),
    ("ppc64le", 0x40207513, 0xC0207504),
    ("mips64", 0x40207513, 0xC0207504),
    ("sparc64", 0x40207513, 0xC0207504),
    ("alpha", 0x40207513, 0xC0207504),
    ("parisc64", 0x40207513, 0xC0207504),
]


def load_on(machine: str, monkeypatch: pytest.MonkeyPatch, path: Path = GENERATED) -> ModuleType:
    real = os.uname()
    fake = os.uname_result((real.sysname, real.nodename, real.release, real.version, machine))
    monkeypatch.setattr(os, "uname", lambda: fake)
    spec = importlib.util.spec_from_file_location(f"ublk_cmd_on_{machine}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("machine, get_features, add_dev", ENCODINGS,
                         ids=[e[0] for e in ENCODINGS])
def test_opcodes_use_the_running_architectures_encoding(
        machine: str, get_features: int, add_dev: int, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_on(machine, monkeypatch)
    assert module.UBLK_U_CMD_GET_FEATURES == get_features
    assert module.UBLK_U_CMD_ADD_DEV == add_dev


def test_direction_none_differs_on_powerpc_and_write_on_parisc(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_on("ppc64", monkeypatch)._IO(0x75, 1) == 0x20007501
    assert load_on("x86_64", monkeypatch)._IO(0x75, 1) == 0x00007501
    assert load_on("parisc", monkeypatch)._IOW(0x75, 1, 8) == 0x80087501
    assert load_on("x86_64", monkeypatch)._IOW(0x75, 1, 8) == 0x40087501


def test_an_argument_too_large_for_the_size_field_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_on("ppc64le", monkeypatch)
    with pytest.raises(ValueError, match="does not fit 13 bits"):
        module._IOR(0x75, 1, 1 << 13)
