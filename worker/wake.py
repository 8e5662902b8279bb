"""An idle worker picks a job made due for a waiting caller at once, not at its next poll.

arq polls its queue every `poll_delay`: on average half of it is added to every
`POST /v1/sync` (docs/contract.md §10). `Coordinator.expedite` publishes on `Keys.jobs_due`;
`follow` sets the worker's event on each message, and `_Worker._poll_iteration` (worker/main.py)
waits on that event, or the poll interval, between polls. Pub/sub is not durable: a message
lost while the subscription reconnects costs one poll interval, no more.
"""

from __future__ import annotations

import asyncio
import contextlib

import redis.exceptions
import structlog
from redis.asyncio import Redis

log = structlog.get_logger(__name__)

LISTEN_S = 1.0
RETRY_MAX_S = 5.0


async def follow(client: Redis, channel: str, due: asyncio.Event) -> None:
    """Set `due` on every message of `channel`, for ever; resubscribe when Redis goes away."""
    backoff = 0.2
    while True:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel)
            backoff = 0.2
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_S)
                if message is not None and message.get("type") == "message":
                    due.set()
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("wake.reconnecting", error=type(exc).__name__, in_s=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped


async def until_due(due: asyncio.Event, poll_s: float) -> None:
    """Until a job was made due, or `poll_s` passed."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(due.wait(), poll_s)
