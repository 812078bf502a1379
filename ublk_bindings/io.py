"""The data plane in one namespace: the per-queue engine and the device that runs it.

:mod:`ublk_bindings.queue` is the engine (one thread, ring and target per queue; the
target contract), :mod:`ublk_bindings.batch` its batch-command sibling, :mod:`ublk_bindings.device` the orchestration (queue threads, START_DEV,
recovery, teardown), :mod:`ublk_bindings.aio` the asyncio adapter.  This module gathers
their public names, as earlier releases had them here.
"""

from __future__ import annotations

from .batch import BatchQueue
from .device import (
    ADOPT_STEPS,
    STEP_AFTER_START,
    STEP_BEFORE_END,
    STEP_BEFORE_START,
    STEP_QUEUE_FETCHED,
    STEP_RESUMED,
    Device,
)
from .queue import (
    QUEUE_RING_FLAGS,
    Handler,
    Queue,
    Served,
    SyncHandler,
    TargetOps,
    desc_array_offset,
    desc_array_size,
)

__all__ = ["Handler", "TargetOps", "Served", "SyncHandler", "Queue", "BatchQueue", "Device",
           "desc_array_offset", "desc_array_size", "QUEUE_RING_FLAGS", "ADOPT_STEPS",
           "STEP_BEFORE_START", "STEP_RESUMED", "STEP_AFTER_START", "STEP_QUEUE_FETCHED",
           "STEP_BEFORE_END"]
