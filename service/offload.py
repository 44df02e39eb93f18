"""When CPU work leaves the event loop: parsing a large body would stall every other request on the loop, and
the hop to a thread and back costs ~0.1-0.3 ms, about what parsing 16 KiB (8 images of JSON pixels) does."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")
INLINE_BYTES = 16 * 1024  # work on a body this small runs on the event loop


async def parse(body: bytes, parser: Callable[..., T], *args: object, inline: bool = True) -> T:
    """`parser(body, *args)`, on the event loop for a small body (unless `inline` is off), else in the
    threadpool. A compressed body is never small: a few kB of gzip can inflate to megabytes."""
    return await call(len(body) if inline else INLINE_BYTES + 1, parser, body, *args)


async def call(size: int, work: Callable[..., T], *args: object) -> T:
    """`work(*args)` on a message of `size` bytes (a gRPC request): on the event loop if it is small."""
    if size <= INLINE_BYTES:
        return work(*args)
    return await run_in_threadpool(work, *args)
