"""A request answered while the batching queue is held. One request waits in the queue for its batch to fill
(on a server whose MNIST_MAX_BATCH_WAIT_MS it spends waiting, as its batch size is never reached) while a
probe is sent. The probe's answer says something about a full queue only if the held request was still
waiting when that answer came: on a machine too busy to get there within the hold, the attempt is made again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from tests.support.liveserver import metric_sum

T = TypeVar("T")
Probe = Callable[[httpx.AsyncClient], Awaitable[T]]


@dataclass(frozen=True)
class Held:
    """The request that holds the queue, and how many items it queues."""

    path: str
    body: bytes
    headers: dict[str, str]
    items: int


async def _while_held(url: str, held: Held, probe: Probe[T]) -> tuple[T, bool] | None:
    """The probe's answer and whether the held request was still waiting when it came; None if the held
    request finished before it was seen in the queue."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        holding = asyncio.create_task(client.post(held.path, content=held.body, headers=held.headers))
        deadline = time.monotonic() + 10
        while metric_sum((await client.get("/metrics")).text, "mnist_queue_depth") < held.items:
            assert time.monotonic() < deadline, "the held request never queued"
            if holding.done():
                break
            await asyncio.sleep(0.01)
        outcome = None if holding.done() else (await probe(client), not holding.done())
        assert (await holding).status_code == 200
        return outcome


def answer_while_held(url: str, held: Held, probe: Probe[T], attempts: int = 3) -> T:
    """What `probe` got while `held` was queued (the hold lasts MNIST_MAX_BATCH_WAIT_MS)."""
    for _ in range(attempts):
        outcome = asyncio.run(_while_held(url, held, probe))
        if outcome is not None and outcome[1]:
            return outcome[0]
    raise AssertionError(f"the held request finished before the answer came, {attempts} times")
