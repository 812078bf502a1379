"""The one ``user_data`` encoding of a queue's io_uring.

A queue's ring carries three kinds of SQE: the ublk commands of each tag (FETCH_REQ,
COMMIT_AND_FETCH_REQ, NEED_GET_DATA), the I/O a target queues on behalf of a tag (a backing
file's read, an fsync, a poll on a socket), and the queue's own wake-up read.  Their
completions come back mixed; this encoding says which is which::

    bits  0-15  tag            (UBLK_MAX_QUEUE_DEPTH is 4096)
    bits 16-31  sub-index      (the target's own number for one of a tag's I/Os)
    bit  32     target I/O
    bit  33     the queue's wake-up (kick, completions from other threads)

A ublk command's ``user_data`` is its bare tag, so the hot path tells it from everything
else with one comparison (``user_data < TARGET_IO``).

A batch queue (``UBLK_F_BATCH_IO``) has no per-tag commands; its per-queue commands keep
``user_data < TARGET_IO`` with the command in the sub-index (``BATCH_FETCH``,
``BATCH_COMMIT``, ``BATCH_PREP``) and, for a commit, the element array's number in the tag
bits (:func:`batch_cmd`).
"""

from __future__ import annotations

__all__ = ["TAG_MASK", "SUB_SHIFT", "SUB_MASK", "TARGET_IO", "WAKE", "ublk_cmd", "target_io",
           "is_target_io", "tag_of", "sub_of", "BATCH_FETCH", "BATCH_COMMIT", "BATCH_PREP",
           "batch_cmd"]

TAG_MASK = 0xFFFF
SUB_SHIFT = 16
SUB_MASK = 0xFFFF
TARGET_IO = 1 << 32
WAKE = 1 << 33
BATCH_FETCH = 1
BATCH_COMMIT = 2
BATCH_PREP = 3


def ublk_cmd(tag: int) -> int:
    """The ``user_data`` of a tag's ublk command."""
    return tag


def target_io(tag: int, sub: int = 0) -> int:
    """The ``user_data`` of target I/O ``sub`` of ``tag``."""
    if not 0 <= tag <= TAG_MASK or not 0 <= sub <= SUB_MASK:
        raise ValueError(f"tag {tag} / sub-index {sub} out of range (16 bits each)")
    return TARGET_IO | sub << SUB_SHIFT | tag


def is_target_io(user_data: int) -> bool:
    return bool(user_data & TARGET_IO)


def tag_of(user_data: int) -> int:
    return user_data & TAG_MASK


def sub_of(user_data: int) -> int:
    return user_data >> SUB_SHIFT & SUB_MASK


def batch_cmd(kind: int, index: int = 0) -> int:
    """The ``user_data`` of a batch queue's command ``kind`` (``BATCH_*``); ``index``: which
    element array a commit carries."""
    return kind << SUB_SHIFT | index
