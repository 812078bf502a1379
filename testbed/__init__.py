"""The test bed: a VM that boots a Debian kernel with ublk_drv and runs a command in it.

No machine of this project has ublk in its own kernel, so the project brings one.  Modules:
``debian`` (private apt), ``kernel`` (which packages make a suite's kernel), ``initramfs``
(busybox, modules, /init), ``qemu`` (the machine and the run), ``__main__`` (the CLI).
"""


class TestbedError(Exception):
    """The test bed itself failed (not the command it runs): message says what and where."""

    __test__ = False  # a name starting with "Test" is not a pytest test class
