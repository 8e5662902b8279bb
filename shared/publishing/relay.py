"""The outbox relay: publishes committed `access-changed` messages (docs/contract.md §6).

A sync writes its message into `outbox` in the same transaction as the change, so a change that
committed is published even if Redis was down at the time. One relay at a time, across all
workers, holds a Postgres advisory lock and publishes rows in id order, which is version order
for each customer (a customer's syncs are serialized by the row lock on `customer_sync`). Each
row goes to the stream (XADD, approximate MAXLEN) and the channel (PUBLISH), then is marked
published. A crash between the two publishes it again: delivery is at least once, and
consumers dedupe by `id`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import redis.exceptions
import structlog
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

from shared import tracing
from shared.coordination import Keys
from shared.publishing.outbox import OUTBOX_CHANNEL

log = structlog.get_logger(__name__)

PUBLISHED = Counter("entitled_outbox_published_total", "access-changed messages published.")
BACKLOG = Gauge("entitled_outbox_backlog", "Outbox rows not yet published, at the last drain.")

_RELAY_LOCK = 0x656E745F72656C61  # "ent_rela"
BATCH = 500
IDLE_POLL_S = 1.0
KEEP_PUBLISHED = "7 days"


class Relay:
    def __init__(self, database_url: str, redis: Redis, keys: Keys, *, maxlen: int, wake: asyncio.Event) -> None:
        self.database_url = database_url
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self.wake = wake

    async def run_forever(self) -> None:
        """Hold the relay lock when free and publish; survive Postgres and Redis outages."""
        backoff = 0.2
        while True:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, redis.exceptions.RedisError) as exc:
                log.warning("relay.retrying", error=type(exc).__name__, detail=str(exc)[:200], in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.2

    async def _serve(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self.database_url)
        try:
            await conn.add_listener(OUTBOX_CHANNEL, self._notified)
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _RELAY_LOCK):
                # Another worker relays; stand by (and notice if it dies: its lock goes with it).
                await self._wait(IDLE_POLL_S * 5)
            log.info("relay.active")
            drains = 0
            while True:
                published = await self.drain(conn)
                drains += 1
                if drains % 600 == 0:
                    await conn.execute(
                        f"DELETE FROM outbox WHERE published_at < now() - interval '{KEEP_PUBLISHED}'"
                    )
                if published < BATCH:
                    await self._wait(IDLE_POLL_S)
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _notified(self, *_args: Any) -> None:
        self.wake.set()

    async def _wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout_s)
        self.wake.clear()

    async def drain(self, conn: asyncpg.Connection) -> int:
        """Publish one batch of unpublished rows; return how many."""
        rows = await conn.fetch(
            "SELECT id, message FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1", BATCH
        )
        BACKLOG.set(len(rows))
        if not rows:
            return 0
        async with tracing.publish_span(r["message"] for r in rows), self.redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.xadd(self.keys.stream, {"data": row["message"]}, maxlen=self.maxlen, approximate=True)
                pipe.publish(self.keys.channel, row["message"])
            await pipe.execute()
        await conn.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
        )
        PUBLISHED.inc(len(rows))
        log.debug("relay.published", count=len(rows))
        return len(rows)
