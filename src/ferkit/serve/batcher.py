"""Micro-batching: faces from concurrent requests classified together, in one forward pass per batch.

Each request hands its face crops to ``MicroBatcher.classify`` and awaits its own probabilities. One loop takes the
first waiting request, everything queued behind it, and whatever arrives within ``max_wait_s`` while ``more_coming()``
says other requests are still on their way (a lone request never waits), up to ``max_batch`` faces (a larger request
goes alone), and runs the classifier once for all of them in its own thread; while it runs, the next batch gathers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class MicroBatcher:
    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int = 64, max_wait_s: float = 0.004,
                 enabled: bool = True, on_batch: Callable[[int], None] | None = None,
                 more_coming: Callable[[], bool] = lambda: True):
        self.predict = predict
        self.more_coming = more_coming  # whether faces of other requests may still arrive
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.enabled = enabled
        self.on_batch = on_batch  # called with the number of faces of each forward pass
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ferkit-classify")
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        if self.enabled:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def classify(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) of uint8 faces (N, S, S)."""
        loop = asyncio.get_running_loop()
        if not self.enabled:
            return await loop.run_in_executor(self._executor, self._predict, faces)
        future = loop.create_future()
        self._queue.put_nowait((faces, future))
        return await future

    def _predict(self, faces: np.ndarray) -> np.ndarray:
        if self.on_batch is not None:
            self.on_batch(len(faces))
        return self.predict(faces)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        held = None  # a request that did not fit the last batch opens the next one
        while True:
            items = [held or await self._queue.get()]
            held = None
            size = len(items[0][0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                if self._queue.empty():
                    wait = deadline - loop.time() if self.more_coming() else 0
                    if wait <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), wait)
                    except TimeoutError:
                        break
                else:
                    item = self._queue.get_nowait()
                if size + len(item[0]) > self.max_batch:
                    held = item
                    break
                items.append(item)
                size += len(item[0])
            live = [(faces, fut) for faces, fut in items if not fut.done()]  # a timed-out request gave up
            if not live:
                continue
            batch = np.concatenate([faces for faces, _ in live])
            try:
                probs = await loop.run_in_executor(self._executor, self._predict, batch)
            except Exception as e:  # noqa: BLE001 - handed to every waiting request
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            start = 0
            for faces, fut in live:
                if not fut.done():
                    fut.set_result(probs[start:start + len(faces)])
                start += len(faces)
