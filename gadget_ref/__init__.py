"""ublk-gadget: the reference ublk server, serving null, memory and file targets.

Built only on ``ublk_bindings``; read it in this order: ``spec`` (what the user asks for),
``targets`` (the backing stores, a module each, and the registry naming them), ``handler``
(one request), ``params`` (what the device advertises), ``device`` (one device's life: add,
queues, start, stop, delete), ``daemon`` (several devices, signals, the ready line) and
``cli``.
"""
