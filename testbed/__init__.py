"""The test bed: a VM that boots a Debian kernel with ublk_drv and runs a command in it.

No machine of this project has ublk in its own kernel, so the project brings one.  Modules:
``debian`` (private apt), ``kernel`` (which packages make a suite's kernel), ``initramfs``
(busybox, modules, /init), ``qemu`` (the machine and the run), ``__main__`` (the CLI).
"""


class TestbedError(Exception):
    """The test bed itself failed (not the command it runs): message says what and where."""

    __test__ = False  # a name starting with "Test" is not a pytest test class


def describe(e: BaseException) -> str:
    """One line for a failure: a subprocess by its tool and action, not its 20 apt options."""
    import subprocess

    if isinstance(e, subprocess.CalledProcessError) and isinstance(e.cmd, (list, tuple)):
        args = [str(a) for a in e.cmd]
        words = [
            a for i, a in enumerate(args[1:], 1) if not a.startswith("-") and args[i - 1] != "-o"
        ]
        return f"{' '.join([args[0], *words[:3]])} exited with status {e.returncode}"
    return str(e)
