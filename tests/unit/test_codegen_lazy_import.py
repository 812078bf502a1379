"""``import ublk_bindings`` loads the generated UAPI module only; the runtime comes on use."""

from __future__ import annotations

import subprocess
import sys

from codegen_support import REPO


def loaded_after(code: str) -> set[str]:
    """The ``ublk_bindings`` modules (and heavy stdlib ones) a fresh interpreter has loaded."""
    probe = (f"{code}\nimport sys\nprint(' '.join(m for m in sys.modules "
             "if m.startswith('ublk_bindings') or m in ('dataclasses', 'inspect')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO)
    return set(out.stdout.split())


def test_import_loads_only_the_uapi_module() -> None:
    assert loaded_after("import ublk_bindings") == {"ublk_bindings", "ublk_bindings.ublk_cmd"}
    assert loaded_after("from ublk_bindings import UBLK_F_QUIESCE") == {
        "ublk_bindings", "ublk_bindings.ublk_cmd"}


def test_every_runtime_name_and_submodule_still_resolves() -> None:
    import ublk_bindings
    from ublk_bindings import Control, Device, Ring, TargetOps, UblkError
    from ublk_bindings.io import Device as io_device

    assert Device is io_device is ublk_bindings.io.Device is ublk_bindings.device.Device
    assert TargetOps is ublk_bindings.queue.TargetOps
    assert Control.__module__ == "ublk_bindings.ctrl" and Ring.__module__ == "ublk_bindings.ring"
    assert issubclass(UblkError, OSError)
    assert {"Device", "Control", "UBLK_F_QUIESCE", "ublksrv_ctrl_cmd"} <= set(ublk_bindings.__all__)
    assert "Queue" in dir(ublk_bindings)


def test_the_runtime_loads_on_first_use() -> None:
    loaded = loaded_after("import ublk_bindings\nublk_bindings.Device")
    assert {"ublk_bindings.device", "ublk_bindings.queue"} <= loaded
    assert "ublk_bindings.aio" not in loaded  # asyncio only for those who ask
