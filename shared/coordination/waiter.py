"""Waiting for a unit's run to end, by subscription: what `POST /v1/sync` blocks on.

Every run announces its end on one pub/sub channel (`Coordinator.announce`, `Keys.syncs_done`)
with the unit, the `seq` it covered and the customer it settled. A `RunWaiter` holds one
subscription per process and hands each announcement to the local watchers of that unit, so a
waiting request costs no Redis round trips and Postgres is never polled. Pub/sub is not
durable: an announcement lost while the subscription reconnects only makes the waiter time out
(the API then answers 202, and the run's result is in the view anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import redis.exceptions
import structlog
from redis.asyncio import Redis

from shared.coordination.keys import Keys

log = structlog.get_logger(__name__)

POLL_S = 1.0
RETRY_MAX_S = 5.0


@dataclass(frozen=True)
class RunDone:
    unit: str
    seq: int
    ok: bool
    customer_id: str | None


def parse(data: bytes | str) -> RunDone | None:
    try:
        raw = orjson.loads(data)
        customer = raw.get("customer_id")
        return RunDone(unit=str(raw["unit"]), seq=int(raw["seq"]), ok=bool(raw["ok"]),
                       customer_id=str(customer) if customer is not None else None)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


class RunWaiter:
    """One subscription to the run announcements, shared by every waiting request."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._watchers: dict[str, set[asyncio.Queue[RunDone]]] = {}
        self._task: asyncio.Task[None] | None = None
        # set while the subscription is live: a request must not wait on a dead one
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="run-waiter")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def watch(self, unit: str) -> Iterator[asyncio.Queue[RunDone]]:
        """Every run of `unit` that ends while the block runs lands in the queue. Enter it before
        asking for the run, so that its end cannot slip by."""
        queue: asyncio.Queue[RunDone] = asyncio.Queue()
        self._watchers.setdefault(unit, set()).add(queue)
        try:
            yield queue
        finally:
            watchers = self._watchers.get(unit)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del self._watchers[unit]

    def _deliver(self, data: bytes | str) -> None:
        done = parse(data)
        if done is None:
            return
        for queue in self._watchers.get(done.unit, ()):
            queue.put_nowait(done)

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.syncs_done)
                self.listening.set()
                backoff = 0.2
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
                    if message is not None and message.get("type") == "message":
                        self._deliver(message["data"])
            except (redis.exceptions.RedisError, OSError) as exc:
                self.listening.clear()
                log.warning("waiter.reconnecting", error=type(exc).__name__, in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
