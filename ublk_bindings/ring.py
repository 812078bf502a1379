"""One io_uring on liburing-ffi: SQEs prepared in place, completions reaped in batches.

The SQE and CQE layouts come only from the generated :mod:`ublk_bindings.io_uring`; this
module adds no offsets of its own. A :class:`Ring` belongs to one thread: io_uring's
``SINGLE_ISSUER``/``DEFER_TASKRUN`` modes and the ublk driver's per-queue daemon task both
tie a ring to the task that submits on it.

Hot-path notes, since every ublk I/O passes through here twice:

* an SQE slot's ctypes view is made once per slot address and reused (no allocation per SQE);
* :meth:`Ring.put` copies a prepared SQE image straight into the mapped SQE array with one
  slice assignment, no foreign call: it bumps liburing's own ``sqe_tail`` (see
  :func:`_find_sqe_tail`), so liburing's submit still flushes and enters as usual;
* :meth:`Ring.reap` reads a whole batch of ``user_data``/``res`` out of the CQ ring with two
  slice operations on a view of the CQE array, not one Python object per CQE; on a
  ``DEFER_TASKRUN`` ring it also reads the kernel's CQ tail and writes its head directly;
* ``memmove``/``memset`` are called through ``PyDLL`` so the GIL stays with the queue thread.

Each foreign call costs more than the Python around it (``python -m bench.hotpath``): a
queue's steady state makes one per batch, the ``io_uring_enter`` that submits and waits.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import time
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from .errors import UblkError, UblkTimeout, check
from .io_uring import (
    IORING_FEAT_SINGLE_MMAP,
    IORING_OP_URING_CMD,
    IORING_SETUP_CQE32,
    IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_CQSIZE,
    IORING_SETUP_SQE128,
    io_uring_buf_reg,
    io_uring_cqe,
    io_uring_params,
    io_uring_sqe,
)
from .liburing import IO_URING_SIZE, KernelTimespec, Liburing, load

__all__ = ["Ring", "SQE_SIZE", "SQE_CMD_OFFSET", "CQE_SIZE"]


def _offset(struct: type[ctypes.Structure], field: str) -> int:
    """A field's byte offset, from the generated struct (its class attribute is the ctypes
    field descriptor; type checkers only know the instance attribute)."""
    return int(getattr(struct, field).offset)


SQE_SIZE = ctypes.sizeof(io_uring_sqe)
"""Bytes of a 64-byte SQE; an ``IORING_SETUP_SQE128`` ring has slots of twice that."""
SQE_CMD_OFFSET = _offset(io_uring_sqe, "cmd")
"""Where a uring_cmd's payload (``sqe->cmd``) starts inside the SQE."""
CQE_SIZE = ctypes.sizeof(io_uring_cqe)
_CQE_USER_DATA = _offset(io_uring_cqe, "user_data")
_CQE_RES = _offset(io_uring_cqe, "res")
_CQE_FLAGS = _offset(io_uring_cqe, "flags")

# A whole 64-byte SQE in one pack_into: the fields every non-command opcode uses, in order,
# then zeroes. The format is checked against the generated struct's offsets right here.
_SQE_FIELDS = (("opcode", "B"), ("flags", "B"), ("ioprio", "H"), ("fd", "i"), ("off", "Q"),
               ("addr", "Q"), ("len", "I"), ("rw_flags", "I"), ("user_data", "Q"),
               ("buf_index", "H"), ("personality", "H"), ("splice_fd_in", "i"),
               ("addr3", "Q"))
_SQE_PACK = struct.Struct("<" + "".join(code for _, code in _SQE_FIELDS) + "8x")
if _SQE_PACK.size != SQE_SIZE or any(
    _offset(io_uring_sqe, name) != struct.calcsize("<" + "".join(c for _, c in _SQE_FIELDS[:i]))
    for i, (name, _) in enumerate(_SQE_FIELDS)
):
    raise ImportError("the generated io_uring_sqe is not laid out as Ring.prep packs it")

# PYFUNCTYPE: the GIL stays held; these are short copies into the mapped rings
_libc = ctypes.PyDLL(None)
_memmove = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
    ("memmove", _libc)
)
_memset = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)(
    ("memset", _libc)
)


# liburing's private ``struct io_uring_sq`` begins with eight pointers (khead, ktail,
# kring_mask, kring_entries, kflags, kdropped, array, sqes) and then ``sqe_head``,
# ``sqe_tail``; frozen for soname .so.2 on LP64. Only trusted once _find_sqe_tail checked it.
_LIBURING_SQES = 7 * 8
_LIBURING_SQE_HEAD = 8 * 8
_LIBURING_SQE_TAIL = _LIBURING_SQE_HEAD + 4


def _find_sqe_tail(
    lib: Liburing, ring: int, mem: memoryview, params: io_uring_params, sqe_size: int
) -> int | None:
    """Check, on a fresh ring, that liburing's SQ state is where this module expects it.

    Pure memory: ``io_uring_sq_ready`` must follow a tail written at the expected place, and
    ``io_uring_get_sqe`` must hand out the slot that tail and the ``sqes`` pointer name and
    advance the tail; then the tail goes back to 0 (nothing reached the kernel).  Returns
    the SQE array's address, or None (the hot path then calls liburing for every SQE).
    """
    words, ptrs = mem.cast("I"), mem.cast("Q")
    tail_at = _LIBURING_SQE_TAIL // 4
    if words[_LIBURING_SQE_HEAD // 4] != 0 or words[tail_at] != 0 or lib.io_uring_sq_ready(ring):
        return None
    if ptrs[1] - ptrs[0] != params.sq_off.tail - params.sq_off.head:  # ktail, khead
        return None
    sqes = ptrs[_LIBURING_SQES // 8]
    try:
        words[tail_at] = 3
        if lib.io_uring_sq_ready(ring) != 3:
            return None
        got = lib.io_uring_get_sqe(ring)
        if got != sqes + 3 * sqe_size or words[tail_at] != 4:
            return None
        return int(sqes)
    finally:
        words[tail_at] = 0


_ORPHANS: list[object] = []
"""Buffers of commands still in flight when their ring went away. The kernel tears a ring
down asynchronously, and a command already running in an io-wq worker may still write to
its buffer, so these are never freed (only commands that timed out end up here)."""


def _queue_exit(
    lib: Liburing, mem: ctypes.Array[ctypes.c_uint64], held: dict[int, tuple[object, ...]]
) -> None:
    lib.io_uring_queue_exit(mem)
    for buffers in held.values():
        _ORPHANS.extend(buffers)
    held.clear()


def _u32_view(word: ctypes.Array[ctypes.c_uint32]) -> memoryview:
    """A plain ``I`` memoryview of a ctypes u32 (whose own format, ``<I``, cannot be indexed)."""
    return memoryview(word).cast("B").cast("I")


def _closed(*args: object) -> Any:
    raise ValueError("io_uring is closed")


class Ring:
    """An io_uring: ``sqe128=True`` for ``/dev/ublk-control``, 64-byte SQEs for queues.

    Not thread-safe: one owner thread, which must also be the thread that created it when
    ``flags`` include ``IORING_SETUP_SINGLE_ISSUER``/``DEFER_TASKRUN``.

    Buffers that an in-flight SQE points to can be handed to :meth:`hold` under the SQE's
    ``user_data``; the ring drops the reference only when that completion is reaped, so the
    kernel never writes freed memory (if the ring closes first, they are kept for good).
    """

    def __init__(
        self, entries: int, *, sqe128: bool = False, flags: int = 0, cq_entries: int = 0
    ) -> None:
        self._lib = lib = load()
        self._mem = (ctypes.c_uint64 * (IO_URING_SIZE // 8))()
        self._ring = ctypes.addressof(self._mem)
        params = io_uring_params()
        params.flags = flags | (IORING_SETUP_SQE128 if sqe128 else 0)
        if cq_entries:
            params.flags |= IORING_SETUP_CQSIZE
            params.cq_entries = cq_entries
        check(
            lib.io_uring_queue_init_params(entries, self._ring, ctypes.byref(params)),
            f"io_uring_queue_init_params(entries={entries}, flags={params.flags:#x})",
        )
        self._held: dict[int, tuple[object, ...]] = {}
        self._finalizer = weakref.finalize(self, _queue_exit, lib, self._mem, self._held)
        self.flags: int = params.flags
        self.features: int = params.features
        self.sq_entries: int = params.sq_entries
        self.cq_entries: int = params.cq_entries
        self.sqe_size = SQE_SIZE * (2 if params.flags & IORING_SETUP_SQE128 else 1)
        cqe_size = CQE_SIZE * (2 if params.flags & IORING_SETUP_CQE32 else 1)
        self._cqe_u64 = cqe_size // 8
        self._cqe_s32 = cqe_size // 4
        self._cq_mask = params.cq_entries - 1
        self._cq_head = 0  # CQEs consumed so far; only this object advances the CQ ring
        self._cq_ud: ctypes.Array[ctypes.c_uint64] | None = None
        self._cq_res: ctypes.Array[ctypes.c_int32] | None = None
        self._cq_flags: ctypes.Array[ctypes.c_uint32] | None = None
        self._cqe_ptrs = (ctypes.c_void_p * params.cq_entries)()
        self._cq_off = params.cq_off
        # The kernel's CQ head and tail, read and written directly only where every CQE is
        # posted by this thread's own io_uring_enter (DEFER_TASKRUN): no memory ordering to
        # get right. Mapped at the first reap (_map_cq).
        self._direct_cq = bool(params.flags & IORING_SETUP_DEFER_TASKRUN
                               and params.features & IORING_FEAT_SINGLE_MMAP)
        self._cq_ktail: memoryview | None = None
        self._cq_khead: memoryview | None = None
        self._sqe_views: dict[int, io_uring_sqe] = {}
        # bound once: attribute lookups are a measurable part of the per-SQE cost
        self._get_sqe = lib.io_uring_get_sqe
        self._peek = lib.io_uring_peek_batch_cqe
        self._advance = lib.io_uring_cq_advance
        self._submit_and_wait = lib.io_uring_submit_and_wait
        # The SQ, for put(): liburing's sqe_tail (ours to advance) and the kernel's SQ head.
        mem = memoryview(self._mem).cast("B")
        sqes = _find_sqe_tail(lib, self._ring, mem, params, self.sqe_size)
        self._sq_mask = params.sq_entries - 1
        self._sq_tail_word: memoryview | None = None
        self._sq_khead: memoryview | None = None
        self._sqe_bytes: memoryview | None = None
        if sqes is not None:
            self._sq_tail_word = mem[_LIBURING_SQE_TAIL:_LIBURING_SQE_TAIL + 4].cast("I")
            self._sq_khead = _u32_view((ctypes.c_uint32 * 1).from_address(mem.cast("Q")[0]))
            self._sqe_bytes = memoryview(
                (ctypes.c_char * (params.sq_entries * self.sqe_size)).from_address(sqes)
            ).cast("B")

    # -- lifetime ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Tear the ring down; the kernel cancels what is still in flight."""
        if self._finalizer.alive:
            self._finalizer()
            # liburing's struct now points at unmapped rings: route the hot-path calls to
            # an error instead of guarding every call with a check
            self._get_sqe = self._peek = self._advance = self._submit_and_wait = _closed
            self._sqe_views.clear()
            self._cq_ud = self._cq_res = self._cq_flags = None
            self._cq_ktail = self._cq_khead = None
            self._sqe_bytes = self._sq_tail_word = self._sq_khead = None

    def __enter__(self) -> Ring:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise ValueError("io_uring is closed")

    # -- submission -------------------------------------------------------------------------

    def _sqe_address(self) -> int:
        addr = self._get_sqe(self._ring)
        if addr is None:
            self.submit()  # the SQ ring is full: hand what is queued to the kernel
            addr = self._get_sqe(self._ring)
            if addr is None:
                raise UblkError(errno.EBUSY, "io_uring_get_sqe")
        return addr

    def get_sqe(self) -> io_uring_sqe:
        """The next free SQE, zeroed: a view into the SQ ring, valid until :meth:`submit`."""
        addr = self._sqe_address()
        _memset(addr, 0, self.sqe_size)
        view = self._sqe_views.get(addr)
        if view is None:
            view = self._sqe_views[addr] = io_uring_sqe.from_address(addr)
        return view

    def put(self, image: memoryview | bytes) -> None:
        """Queue a prepared SQE: ``image`` is its ``sqe_size`` bytes, copied into a slot."""
        self.put_many((image,))

    def put_many(self, images: Sequence[memoryview | bytes]) -> None:
        """Queue prepared SQEs, each copied straight into the mapped SQE array.

        liburing's tail is advanced as ``io_uring_get_sqe`` would, written once at the end;
        only a full SQ (the kernel stopped short of the last batch) submits first.
        """
        sqes, tail_word, khead = self._sqe_bytes, self._sq_tail_word, self._sq_khead
        if sqes is None or tail_word is None or khead is None:  # liburing laid out otherwise
            for image in images:
                self._put_ffi(image)
            return
        size, mask = self.sqe_size, self._sq_mask
        tail = tail_word[0]
        room = mask + 1 - ((tail - khead[0]) & 0xFFFFFFFF)
        for image in images:
            if not room:
                tail_word[0] = tail & 0xFFFFFFFF
                self.submit()
                room = mask + 1 - ((tail - khead[0]) & 0xFFFFFFFF)
                if not room:
                    raise UblkError(errno.EBUSY, "io_uring SQ still full after a submit")
            at = (tail & mask) * size
            sqes[at:at + size] = image
            tail += 1
            room -= 1
        tail_word[0] = tail & 0xFFFFFFFF

    def prep(
        self, opcode: int, fd: int, addr: int, length: int, offset: int, user_data: int, *,
        op_flags: int = 0, sqe_flags: int = 0, ioprio: int = 0, buf_index: int = 0,
    ) -> None:
        """Queue one SQE of a plain opcode (read, write, fsync, fallocate, poll, ...), all of
        it written in one ``pack_into`` with no foreign call: the per-request target I/O path.

        ``op_flags`` is the opcode's flags word (``rw_flags``, ``fsync_flags``,
        ``poll32_events``, ...); the fields a command SQE would use are zeroed.  The
        wrappers in :mod:`ublk_bindings.prep` name each opcode's arguments.
        """
        if self.sqe_size != SQE_SIZE:
            raise ValueError("Ring.prep packs 64-byte SQEs; this ring has SQE128 slots")
        fields = (opcode, sqe_flags, ioprio, fd, offset & 0xFFFFFFFFFFFFFFFF, addr, length,
                  op_flags & 0xFFFFFFFF, user_data, buf_index, 0, 0, 0)
        sqes, tail_word, khead = self._sqe_bytes, self._sq_tail_word, self._sq_khead
        if sqes is None or tail_word is None or khead is None:
            _SQE_PACK.pack_into(memoryview(self.get_sqe()).cast("B"), 0, *fields)
            return
        tail = tail_word[0]
        if (tail - khead[0]) & 0xFFFFFFFF > self._sq_mask:  # full: the kernel takes a batch
            self.submit()
            if (tail - khead[0]) & 0xFFFFFFFF > self._sq_mask:
                raise UblkError(errno.EBUSY, "io_uring SQ still full after a submit")
        _SQE_PACK.pack_into(sqes, (tail & self._sq_mask) * SQE_SIZE, *fields)
        tail_word[0] = (tail + 1) & 0xFFFFFFFF

    def _put_ffi(self, image: memoryview | bytes) -> None:
        addr = self._sqe_address()
        ctypes.memmove(addr, bytes(image), self.sqe_size)

    def prep_uring_cmd(
        self, fd: int, cmd_op: int, payload: ctypes.Structure, user_data: int
    ) -> io_uring_sqe:
        """Queue ``IORING_OP_URING_CMD`` on ``fd`` with ``payload`` copied into ``sqe->cmd``."""
        size = ctypes.sizeof(payload)
        if size > self.sqe_size - SQE_CMD_OFFSET:
            raise ValueError(
                f"{type(payload).__name__} is {size} bytes; a {self.sqe_size}-byte SQE carries "
                f"{self.sqe_size - SQE_CMD_OFFSET} (use sqe128=True)"
            )
        sqe = self.get_sqe()
        sqe.opcode = IORING_OP_URING_CMD
        sqe.fd = fd
        sqe.cmd_op = cmd_op
        sqe.user_data = user_data
        _memmove(ctypes.addressof(sqe) + SQE_CMD_OFFSET, ctypes.addressof(payload), size)
        return sqe

    def register_buffers_sparse(self, nr: int) -> None:
        """An empty table of ``nr`` registered buffers, for buffers the kernel fills in (ublk
        zero copy registers each request's pages at an index of it); from the owner thread."""
        self._check_open()
        check(self._lib.io_uring_register_buffers_sparse(self._ring, nr),
              f"io_uring_register_buffers_sparse({nr})")

    def register_buf_ring(self, ring_addr: int, entries: int, bgid: int) -> None:
        """Register the provided-buffer ring at ``ring_addr`` (``entries`` ``io_uring_buf``,
        a power of two, page-aligned memory the caller keeps alive) as buffer group
        ``bgid``: what an ``IOSQE_BUFFER_SELECT`` SQE with ``buf_group=bgid`` picks from."""
        self._check_open()
        reg = io_uring_buf_reg(ring_addr=ring_addr, ring_entries=entries, bgid=bgid)
        check(self._lib.io_uring_register_buf_ring(self._ring, ctypes.byref(reg), 0),
              f"io_uring_register_buf_ring(entries={entries}, bgid={bgid})")

    def unregister_buf_ring(self, bgid: int) -> None:
        self._check_open()
        check(self._lib.io_uring_unregister_buf_ring(self._ring, bgid),
              f"io_uring_unregister_buf_ring(bgid={bgid})")

    def hold(self, user_data: int, *buffers: object) -> None:
        """Keep ``buffers`` alive until the completion carrying ``user_data`` is reaped."""
        self._held[user_data] = buffers

    def submit(self, wait_nr: int = 0, timeout: float | None = None) -> int:
        """Submit queued SQEs, then wait for ``wait_nr`` completions; the GIL is released.

        Returns how many SQEs the kernel took. With ``timeout`` (seconds) the wait is bounded
        and :class:`UblkTimeout` is raised when it runs out; the SQEs stay submitted.
        Interrupted waits are resumed (PEP 475); signal handlers run in between.
        """
        if timeout is not None:
            return self._submit_timed(wait_nr, timeout)
        while True:
            ret = self._submit_and_wait(self._ring, wait_nr)  # wait_nr 0: just submit
            if ret >= 0:
                return ret
            if ret != -errno.EINTR:
                raise UblkError(-ret, "io_uring_submit_and_wait")

    def _submit_timed(self, wait_nr: int, timeout: float) -> int:
        self._check_open()
        deadline = time.monotonic() + timeout
        cqe = ctypes.c_void_p()
        while True:
            left = max(0.0, deadline - time.monotonic())
            ts = KernelTimespec(int(left), int((left % 1) * 1e9))
            ret = self._lib.io_uring_submit_and_wait_timeout(
                self._ring, ctypes.byref(cqe), wait_nr, ctypes.byref(ts), None
            )
            if ret >= 0:
                return ret
            if ret == -errno.ETIME:
                raise UblkTimeout("io_uring_submit_and_wait_timeout", timeout)
            if ret != -errno.EINTR:
                raise UblkError(-ret, "io_uring_submit_and_wait_timeout")

    # -- completion -------------------------------------------------------------------------

    def _map_cq(
        self, n: int
    ) -> tuple[ctypes.Array[ctypes.c_uint64], ctypes.Array[ctypes.c_int32]]:
        # liburing keeps the CQE array's address to itself; the first completion ever
        # reaped sits at index (head & mask), which gives the array's base.
        size = self._cqe_u64 * 8
        ptrs = [p or 0 for p in self._cqe_ptrs[:n]]
        base = ptrs[0] - (self._cq_head & self._cq_mask) * size
        for i, p in enumerate(ptrs):  # once per ring: check the layout we rely on
            if p != base + ((self._cq_head + i) & self._cq_mask) * size:
                raise RuntimeError(f"liburing returned CQE {i} at {p:#x}, not in a "
                                   f"{self._cq_mask + 1}-entry array at {base:#x}")
        words = (self._cq_mask + 1) * self._cqe_u64
        self._cq_ud = (ctypes.c_uint64 * words).from_address(base)
        self._cq_res = (ctypes.c_int32 * (words * 2)).from_address(base)
        self._cq_flags = (ctypes.c_uint32 * (words * 2)).from_address(base)
        if self._direct_cq:  # the CQ ring's head and tail sit at the kernel's offsets
            rings = base - self._cq_off.cqes
            khead = (ctypes.c_uint32 * 1).from_address(rings + self._cq_off.head)
            ktail = (ctypes.c_uint32 * 1).from_address(rings + self._cq_off.tail)
            if khead[0] == self._cq_head and (ktail[0] - self._cq_head) & 0xFFFFFFFF >= n:
                self._cq_khead, self._cq_ktail = _u32_view(khead), _u32_view(ktail)
        return self._cq_ud, self._cq_res

    def reap(self, max: int = 0) -> tuple[list[int], list[int], list[int]]:
        """Take up to ``max`` (default: all) ready completions: ``(user_data, res, flags)``.

        Three lists per batch, read with strided slices of the CQ ring; the CQ head advances
        once per batch.
        """
        limit = min(max, self.cq_entries) if max > 0 else self.cq_entries
        ktail = self._cq_ktail
        if ktail is not None:
            n = min((ktail[0] - self._cq_head) & 0xFFFFFFFF, limit)
        else:
            n = self._peek(self._ring, self._cqe_ptrs, limit)
        if not n:
            return [], [], []
        ud_view, res_view = self._cq_ud, self._cq_res
        if ud_view is None or res_view is None:
            ud_view, res_view = self._map_cq(n)
        step64, step32 = self._cqe_u64, self._cqe_s32
        first = self._cq_head & self._cq_mask
        run = min(n, self._cq_mask + 1 - first)  # CQEs before the ring wraps
        u0 = first * step64 + _CQE_USER_DATA // 8
        r0 = first * step32 + _CQE_RES // 4
        f0 = first * step32 + _CQE_FLAGS // 4
        user_data: list[int] = ud_view[u0 : u0 + run * step64 : step64]
        res: list[int] = res_view[r0 : r0 + run * step32 : step32]
        fl_view = self._cq_flags
        assert fl_view is not None
        flags: list[int] = fl_view[f0 : f0 + run * step32 : step32]
        if run < n:
            u0, r0, f0 = _CQE_USER_DATA // 8, _CQE_RES // 4, _CQE_FLAGS // 4
            user_data += ud_view[u0 : u0 + (n - run) * step64 : step64]
            res += res_view[r0 : r0 + (n - run) * step32 : step32]
            flags += fl_view[f0 : f0 + (n - run) * step32 : step32]
        self._cq_head = head = (self._cq_head + n) & 0xFFFFFFFF
        khead = self._cq_khead
        if khead is not None:
            khead[0] = head
        else:
            self._advance(self._ring, n)
        if self._held:
            pop = self._held.pop
            for ud in user_data:
                pop(ud, None)
        return user_data, res, flags
