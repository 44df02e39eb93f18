"""Giving memory back to the OS after a big image or a retired model: glibc keeps freed heap otherwise, so a
worker's resident size would stay at its peak. Both are no-ops off glibc."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)  # None: symbols of the running process
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def mmap_large_allocations(threshold: int) -> None:
    """Make glibc mmap() every allocation of `threshold` bytes or more, for good: by default it raises the
    threshold to the largest block freed (up to 32 MB), and after one big image the next ones' buffers come
    from the heap, which keeps hundreds of MB resident."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, threshold)


def trim() -> None:
    """Hand freed heap pages of every malloc arena back to the OS (glibc malloc_trim)."""
    malloc_trim = getattr(_LIBC, "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)


def release() -> None:
    """Give what a dropped model held back to the OS (blocking: run it in a thread). Its objects sit in
    reference cycles (batcher and model, a refusal's traceback frames holding the candidate's session) that
    only a full collection frees, and glibc keeps freed heap in its per-thread arenas. Without this a
    worker's RSS grew by about 7 MiB per reload under load (bench/reload.py) until a full collection
    happened to run."""
    gc.collect()
    trim()
