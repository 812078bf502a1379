"""``mypy --strict`` accepts the generator and what it generates (users type-check too)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codegen_support import REPO, UBLK_HEADERS
from ublk_bindings_codegen.generate import generate

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed (pip install -e .[dev])")


def test_generator_and_generated_modules_pass_mypy_strict(tmp_path: Path) -> None:
    # The repository folder codegen/ is imported as ublk_bindings_codegen; give mypy that
    # name without relying on how (or whether) the package is installed.
    (tmp_path / "ublk_bindings_codegen").symlink_to(REPO / "codegen")
    generated = [REPO / "ublk_bindings" / "ublk_cmd.py", REPO / "ublk_bindings" / "io_uring.py"]
    for version, header in UBLK_HEADERS.items():
        target = tmp_path / f"ublk_cmd_{version.replace('.', '_')}.py"
        target.write_text(generate(header, target))
        generated.append(target)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--strict", "--follow-imports=silent", "--cache-dir", str(tmp_path / ".mypy_cache"),
         str(tmp_path / "ublk_bindings_codegen"), *map(str, generated)],
        cwd=tmp_path, env={**os.environ, "MYPYPATH": str(tmp_path)},
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
