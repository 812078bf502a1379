"""ublk-gadget: the reference ublk server, serving null, memory and file targets.

Built only on ``ublk_bindings``; read it in this order: ``spec`` (what the user asks for),
``targets`` (the backing stores, a module each, and the registry naming them; the file
target's I/O on the queue's ring in ``targets.file_ring``), ``handler`` (one request: served
at once, or started on the ring and completed by its CQEs), ``params`` (what the device
advertises), ``device`` (one device's life: add, queues, start, release, stop), ``daemon``
(several devices, signals, the ready line), ``events`` (what it tells programs on stdout),
then the handover: ``backing`` and ``state`` (what a successor must find again),
``handover`` (the owner's half), ``owner`` and ``adopt`` (the successor's half), ``faults``
(where tests kill either side); then the service: ``notify`` (systemd's sd_notify protocol),
``supervisor`` (what the daemon tells systemd and a waiting ``reload``), ``reload`` (a live
upgrade in the background, systemd's ExecReload=), ``unitfile`` (the shipped unit in
``systemd/``); and ``cli``.
"""
