"""Benchmarks: the gadget against null_blk, the kernel loop driver and kublk, in one VM boot.

``__main__`` builds kublk (``kublk``) and boots the VM; ``guest`` runs there: ``peers`` makes
and removes each device (``gadget`` drives ``ublk-gadget serve``), ``fio`` runs the jobs and
reads fio's JSON, ``cpu`` measures the server's CPU per request, ``handover`` and ``latlog``
measure the handover stall, ``plot`` draws it, ``report`` computes the ratios and the table;
``publish`` writes a run into the README.  Host-only tools: ``profile`` (py-spy stacks) and
``hotpath`` (the queue loop's Python steps).  ``bench_codegen`` is the generator's benchmark.
"""
