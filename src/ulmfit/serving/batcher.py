"""Dynamic batching: requests that arrive together go through the model as one batch.

Each request puts (texts, future) on a bounded queue; one consumer task takes what is waiting, up to
`max_batch` texts, waits at most `max_wait_ms` for more while the batch is not full, runs the model
once on all of them in a worker thread (so the event loop keeps accepting requests meanwhile) and
hands each request its own rows. While the model runs, new requests queue up and form the next
batch, so under load the batches grow by themselves and throughput approaches the bulk figure; an
idle server answers a lone request after at most `max_wait_ms`. A full queue refuses at once
(`QueueFull`, the server's 503) instead of letting latency grow without bound.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


class QueueFull(Exception):
    """The batcher's queue holds `max_queue` requests already."""


@dataclass
class _Item:
    texts: Sequence[str]
    future: asyncio.Future


class Batcher:
    def __init__(self, predict: Callable[[list[str]], np.ndarray], max_batch: int = 64, max_wait_ms: float = 2.0,
                 max_queue: int = 256, on_batch: Callable[[int, float], None] | None = None):
        """predict: texts -> probabilities [n, C], rows in order. on_batch(n_texts, seconds) after each call."""
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait_ms / 1000
        self.max_queue, self.on_batch = max_queue, on_batch
        self.queue: asyncio.Queue[_Item] | None = None
        self._held: _Item | None = None  # an item that did not fit the last batch: first in the next
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ulmfit-model")  # one model call at a time

    def start(self) -> None:
        self.queue = asyncio.Queue(self.max_queue)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def depth(self) -> int:
        return 0 if self.queue is None else self.queue.qsize()

    async def submit(self, texts: Sequence[str]) -> np.ndarray:
        """The probabilities of `texts` (raises QueueFull when the queue is full)."""
        assert self.queue is not None, "Batcher.start() first"
        fut = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Item(texts, fut))
        except asyncio.QueueFull:
            raise QueueFull from None
        return await fut

    async def _next_batch(self) -> list[_Item]:
        q = self.queue
        first = self._held or await q.get()
        self._held = None
        items, n = [first], len(first.texts)
        deadline = time.monotonic() + self.max_wait
        while n < self.max_batch:
            try:
                item = q.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(q.get(), left)
                except asyncio.TimeoutError:
                    break
            if n + len(item.texts) > self.max_batch:
                self._held = item
                break
            items.append(item)
            n += len(item.texts)
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._next_batch()
            items = [it for it in items if not it.future.done()]  # clients that gave up
            if not items:
                continue
            texts = [t for it in items for t in it.texts]
            t0 = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._pool, self.predict, texts)
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error, the loop goes on
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            if self.on_batch:
                self.on_batch(len(texts), time.perf_counter() - t0)
            i = 0
            for it in items:
                if not it.future.done():
                    it.future.set_result(probs[i:i + len(it.texts)])
                i += len(it.texts)
