"""Serve a queue from asyncio: each request is an ``async def`` handler's task.

For backends that wait on the network or on other processes.  The queue thread hands each
request to an event loop running in its own thread (:class:`LoopThread`) and goes back to
its ring at once; the handler's result is committed through the queue's thread-safe
:meth:`~ublk_bindings.queue.Queue.complete`.  Many requests of one queue are in flight at
once, up to its depth.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType

from .queue import Queue
from .ublk_cmd import ublksrv_io_desc

__all__ = ["AsyncHandler", "AsyncioTarget", "LoopThread"]

AsyncHandler = Callable[[int, ublksrv_io_desc, memoryview], Awaitable[int]]
"""``await handler(tag, desc, buf) -> bytes done, or -errno``, as a synchronous
:data:`~ublk_bindings.queue.Handler` but awaited on the loop."""


class AsyncioTarget:
    """A queue's target whose every request runs ``handler`` as a task on ``loop``.

    An exception in the handler fails that request with EIO (and reaches the queue's
    ``on_error``), as for a synchronous handler.
    """

    def __init__(self, handler: AsyncHandler, loop: asyncio.AbstractEventLoop) -> None:
        self.handler = handler
        self.loop = loop
        # the loop keeps only weak references to tasks: a pending request's task is ours
        self._tasks: set[asyncio.Task[None]] = set()

    def queue_io(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> None:
        # call_soon_threadsafe, not run_coroutine_threadsafe: no concurrent Future per request
        self.loop.call_soon_threadsafe(self._start, queue, tag, desc)

    def io_done(self, queue: Queue, tag: int, sub: int, res: int, flags: int) -> None:
        raise RuntimeError(f"tag {tag}: a CQE for an asyncio target, which queues no SQE")

    def _start(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> None:
        task = self.loop.create_task(self._serve(queue, tag, desc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, queue: Queue, tag: int, desc: ublksrv_io_desc) -> None:
        try:
            result = await self.handler(tag, desc, queue.buffers[tag])
        except Exception as e:
            queue.fail(tag, e)
            return
        queue.complete(tag, result)


class LoopThread:
    """An asyncio event loop running in a daemon thread, for as long as the ``with`` lasts."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ublk-asyncio",
                                        daemon=True)

    def __enter__(self) -> asyncio.AbstractEventLoop:
        self._thread.start()
        return self.loop

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
