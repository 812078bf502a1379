"""The one-command demo: ext4 on a ublk-gadget file device, live handover and crash adoption
under I/O, files checked afterwards (``make demo``, or ``python -m demo``)."""
