"""``ublk-bindings-gen``: writing, --check, determinism, the module header, exit codes."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from codegen_support import BUNDLED, REPO, UBLK_HEADERS
from ublk_bindings_codegen import __version__
from ublk_bindings_codegen.cli import main


@pytest.mark.parametrize("name", ["ublk_cmd", "io_uring"])
def test_checked_in_modules_are_current(name: str) -> None:
    assert main(["--check", str(REPO / "ublk_bindings" / f"{name}.py")]) == 0


def test_check_fails_on_drift_and_says_how_to_fix(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "ublk_cmd.py"
    assert main(["--header", str(BUNDLED["ublk_cmd.h"]), "--output", str(module)]) == 0
    assert main(["--check", str(module)]) == 0
    module.write_text(module.read_text().replace("UBLK_F_ZONED = 0x100", "UBLK_F_ZONED = 0x200"))
    assert main(["--check", str(module)]) == 1
    err = capsys.readouterr().err
    assert "-UBLK_F_ZONED = 0x200" in err and "+UBLK_F_ZONED = 0x100" in err
    assert "is out of date; regenerate with" in err


def test_check_against_another_header_fails(tmp_path: Path) -> None:
    module = tmp_path / "ublk_cmd.py"
    assert main(["--header", str(UBLK_HEADERS["6.12"]), "--output", str(module)]) == 0
    assert main(["--check", str(module), "--header", str(UBLK_HEADERS["bundled"])]) == 1


def test_output_is_deterministic_and_independent_of_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = []
    for index, cwd in enumerate([REPO, tmp_path]):
        monkeypatch.chdir(cwd)
        target = tmp_path / f"out{index}" / "io_uring.py"
        target.parent.mkdir()
        assert main(["--header", str(BUNDLED["io_uring.h"]), "--output", str(target)]) == 0
        outputs.append(target.read_text())
    assert outputs[0] == outputs[1]


def test_header_records_source_sha256_kernel_and_version_but_no_time(tmp_path: Path) -> None:
    header = tmp_path / "ublk_cmd.h"
    shutil.copy(UBLK_HEADERS["6.1"], header)
    (tmp_path / "PROVENANCE").write_text("kernel: 6.1.176\n")
    module = tmp_path / "out.py"
    assert main(["--header", str(header), "--output", str(module)]) == 0
    text = module.read_text()
    digest = hashlib.sha256(header.read_bytes()).hexdigest()
    assert f'__header_sha256__ = "{digest}"' in text
    assert '__header__ = "ublk_cmd.h"' in text
    assert '__kernel__ = "6.1.176"' in text
    assert f'__generator__ = "ublk-bindings-gen {__version__}"' in text
    assert not re.search(r"20\d\d-\d\d-\d\d|\d\d:\d\d:\d\d", text)
    assert str(tmp_path) not in text  # relative paths only


def test_errors_exit_1_with_file_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header = tmp_path / "bad.h"
    header.write_text("#include <linux/types.h>\nstruct s {\n\tchar *name;\n};\n")
    assert main(["--header", str(header), "--output", str(tmp_path / "bad.py")]) == 1
    assert f"{header}:3: error: pointer members are not supported" in capsys.readouterr().err
    assert not (tmp_path / "bad.py").exists()


def test_console_script_is_declared() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert 'ublk-bindings-gen = "ublk_bindings_codegen.cli:main"' in text


def test_c_syntax_errors_and_missing_includes_are_reported_clearly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header = tmp_path / "syntax.h"
    header.write_text("#include <linux/types.h>\nstruct s {\n\t__u32 a\n};\n")
    assert main(["--header", str(header), "--output", str(tmp_path / "out.py")]) == 1
    assert f"{header}:4: error: C syntax error" in capsys.readouterr().err
    header.write_text("#include <linux/blkzoned.h>\n")
    assert main(["--header", str(header), "--output", str(tmp_path / "out.py")]) == 1
    err = capsys.readouterr().err
    assert "linux/blkzoned.h: No such file or directory" in err
    assert "pass -I DIR" in err
