"""Benchmarks: the gadget against null_blk, the kernel loop driver and kublk, in one VM boot.

Modules: ``fio`` (run a job, parse its JSON), ``peers`` (make and remove each device),
``gadget`` (drive ``ublk-gadget serve``), ``kublk`` (build the C peer), ``latlog`` and
``handover`` (the handover stall), ``plot`` (the picture), ``report`` (ratios, table),
``guest`` (the run inside the VM) and ``__main__`` (boot the VM).
"""
