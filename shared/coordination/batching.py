"""Auto-pipelining of one Lua script: concurrent calls share one Redis round trip.

Under load the receiver makes hundreds of `accept` calls at once; sending each as its own
EVALSHA costs a round trip and redis-py's per-command overhead every time. Calls that arrive
while a batch is in flight wait for the next one and go together in one pipeline. An idle
receiver sends each call alone, at once, so this adds no latency. Each caller still gets its
own result only after Redis has executed its script, so "answer 200 only once the event is in
Redis" holds.

`timeout_s` bounds each call (enqueued to answered) with one timer per batch, not one per call:
a batch's deadline is its oldest call's, so no call waits longer than its own bound, and under
load a receiver no longer arms and cancels a timer per request (docs/benchmarks.md, "Receiver
profile"). A call that times out may still have run, as with any client-side timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import redis.exceptions
from redis.asyncio import Redis

# keys, args, the caller's future, and the loop time it was enqueued at
Call = tuple[Sequence[Any], Sequence[Any], "asyncio.Future[Any]", float]


class ScriptBatcher:
    def __init__(self, redis: Redis, source: str, *, max_batch: int = 256, timeout_s: float | None = None) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # Redis names scripts by SHA-1
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._queue: list[Call] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None  # a reference, so the task is not collected

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((keys, args, future, loop.time()))
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                deadline = None if self.timeout_s is None else batch[0][3] + self.timeout_s  # oldest first
                try:
                    async with asyncio.timeout_at(deadline):
                        results = await self._send(batch)
                except Exception as exc:
                    for _, _, future, _ in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future, _), result in zip(batch, results, strict=True):
                    if future.done():  # its caller gave up (timeout); the script ran anyway
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._flushing = False

    async def _send(self, batch: list[Call]) -> list[Any]:
        results = await self._pipeline(batch)
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
            # Redis restarted (or never saw the script): load it, and run the batch again. The
            # calls that failed with NOSCRIPT did nothing, and no call here ran twice.
            await self.redis.script_load(self.source)
            retry = [i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)]
            again = await self._pipeline([batch[i] for i in retry])
            for i, result in zip(retry, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, batch: list[Call]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args, _, _ in batch:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results
