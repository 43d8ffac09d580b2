"""Dynamic batching with a bounded queue, exactly as the simulator models it: K replicas; one batch
forms at a time: the earliest-free replica waits for a first query, then takes queued queries until
it holds B or W ms have passed since it took the first, hands the turn on and runs the batch; a
query finding `queue_limit` queries waiting is refused at once.

The batcher reads time only through its event loop (`loop.time()`, the wait's timeout), so on a loop with a
virtual clock it runs in virtual time: tests/test_batching_agreement.py drives it and the simulator's model
(simulator/batching.py) from one clock and finds the same batches, except at two exact ties it names."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .engine import Outcome, Processor, Query


class DynamicBatcher:
    """Owns the queue and the replicas' loops; `submit` never waits."""

    def __init__(self, processors: Sequence[Processor], max_batch_size: int, max_batch_delay_ms: float,
                 queue_limit: int, on_batch: Callable[[list[Query], list[Outcome]], None] | None = None) -> None:
        if max_batch_size < 1 or queue_limit < 1 or max_batch_delay_ms < 0 or not processors:
            raise ValueError("need max_batch_size >= 1, queue_limit >= 1, max_batch_delay_ms >= 0, 1+ replica")
        self.processors = list(processors)
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_ms / 1000.0
        self.queue_limit = queue_limit
        self._queue: asyncio.Queue[Query] = asyncio.Queue()
        # One batch forms at a time (FIFO among free replicas): two idle replicas never split a burst.
        self._forming = asyncio.Lock()
        self._on_batch = on_batch
        self._tasks: list[asyncio.Task] = []

    @property
    def queue_len(self) -> int:
        return self._queue.qsize()

    def submit(self, queries: list[Query]) -> bool:
        """Queues all the queries, or none when they do not all fit (the caller answers overload)."""
        if any(q.future is None for q in queries):
            raise ValueError("a query submitted to the batcher needs a future for its outcome")
        if self._queue.qsize() + len(queries) > self.queue_limit:
            return False
        for q in queries:
            self._queue.put_nowait(q)
        return True

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._replica_loop(p), name=f"replica-{i}")
                       for i, p in enumerate(self.processors)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._queue.empty():
            q = self._queue.get_nowait()
            if not q.future.done():
                q.future.cancel()

    async def _collect(self) -> list[Query]:
        """Returns the next batch: the first query, then more until B or W after the first was taken."""
        batch = [await self._queue.get()]
        try:
            return await self._fill(batch)
        except asyncio.CancelledError:  # stopping: nobody will run these
            for q in batch:
                if q.future is not None and not q.future.done():
                    q.future.cancel()
            raise

    async def _fill(self, batch: list[Query]) -> list[Query]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_batch_delay_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            getter = asyncio.ensure_future(self._queue.get())
            await asyncio.wait({getter}, timeout=remaining)
            if not getter.done():
                getter.cancel()
                await asyncio.wait({getter})
            if getter.cancelled():
                break
            batch.append(getter.result())
        return batch

    async def _replica_loop(self, processor: Processor) -> None:
        while True:
            async with self._forming:
                batch = await self._collect()
            try:
                outcomes = await processor.run(batch)
            except Exception as exc:  # a failed run answers its queries and the replica carries on
                for q in batch:
                    if not q.future.done():
                        q.future.set_exception(exc)
                continue
            for q, outcome in zip(batch, outcomes, strict=True):
                if not q.future.done():
                    q.future.set_result(outcome)
            if self._on_batch is not None:
                self._on_batch(batch, outcomes)
