"""Every integer macro and enumerator has the value gcc computes for it.

Values are printed by a C program compiled against the same include path the generator
parsed (our stand-in <linux/ioctl.h> and <linux/errno.h> supply _IOWR and ENODEV, as the
headers' users' includes would), for the ublk_cmd.h of 6.1, 6.12, the bundled one (7.2) and io_uring.h.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from codegen_support import (ALL_HEADERS, defined_enumerators, defined_macros,
                             load_generated, requires_gcc, run_c)

pytestmark = requires_gcc


@pytest.mark.parametrize("header", ALL_HEADERS.values(), ids=ALL_HEADERS.keys())
def test_every_macro_and_enumerator_is_exported(header: Path, tmp_path: Path) -> None:
    module = load_generated(header, tmp_path)
    names = defined_macros(header) | defined_enumerators(header)
    assert names  # the oracle found something
    assert not {name for name in names if name not in module.__all__}


@pytest.mark.parametrize("header", ALL_HEADERS.values(), ids=ALL_HEADERS.keys())
def test_every_constant_has_its_c_value(header: Path, tmp_path: Path) -> None:
    module = load_generated(header, tmp_path)
    names = sorted(defined_macros(header) | defined_enumerators(header))
    measured = run_c(header, "\n".join(f"PRINT_INT({name});" for name in names), tmp_path)
    assert len(measured) == len(names)
    wrong = {name: (int(c), getattr(module, name)) for name, c in zip(names, measured)
             if int(c) != getattr(module, name)}
    assert not wrong


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="values measured on x86_64")
def test_ioctl_opcodes_match_the_running_kernel() -> None:
    """Values seen on a real 7.2 kernel and in the issue (x86_64, asm-generic encoding)."""
    import ublk_bindings as u

    assert u.UBLK_U_CMD_ADD_DEV == 0xC0207504
    assert u.UBLK_U_CMD_GET_FEATURES == 0x80207513
    assert u.UBLK_IO_RES_ABORT == -errno.ENODEV == -19
    assert u.ublksrv_io_cmd.zone_append_lba.offset == 8


def test_stand_in_ioctl_encoding_agrees_with_the_system_header(tmp_path: Path) -> None:
    """Our <linux/ioctl.h> stand-in against the machine's, where one is installed."""
    system = Path("/usr/include/asm-generic/ioctl.h")
    if not system.is_file():
        pytest.skip("no system asm-generic/ioctl.h to compare with")
    import ublk_bindings.ublk_cmd as m

    source = tmp_path / "sys.c"
    source.write_text("#include <stdio.h>\n#include <sys/ioctl.h>\n"
                      "struct s { char c[32]; };\nint main(void) { printf(\"%u %u %u %u\\n\","
                      " _IO('u', 1), _IOR('u', 2, struct s), _IOW('u', 3, struct s),"
                      " _IOWR('u', 4, struct s)); return 0; }\n")
    import subprocess

    subprocess.run(["gcc", str(source), "-o", str(tmp_path / "sys")], check=True)
    out = subprocess.run([str(tmp_path / "sys")], capture_output=True, text=True, check=True)
    ours = [m._IO(0x75, 1), m._IOR(0x75, 2, 32), m._IOW(0x75, 3, 32), m._IOWR(0x75, 4, 32)]
    assert [int(v) for v in out.stdout.split()] == ours
