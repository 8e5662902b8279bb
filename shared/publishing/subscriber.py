"""Consume `access-changed` from another service (docs/contract.md §6).

Durable, with a consumer group on the stream::

    async for change in StreamSubscriber(redis, group="billing-ui", consumer="pod-1"):
        await apply(change)          # acked when you ask for the next one

Live only (no history, nothing while disconnected), on the pub/sub channel::

    async for change in channel_messages(redis):
        ...

`StreamSubscriber` acks a message once the loop body that received it finishes (when the next
one is asked for), reclaims messages that a dead consumer of the group left pending
(XAUTOCLAIM), and yields each change once: it drops repeated message ids (delivery is at least
once) and versions at or below the last one applied for that customer. Pass `versions` (any
mutable mapping, e.g. one backed by your database) to keep that across restarts.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import redis.exceptions
import structlog
from redis.asyncio import Redis

from shared.coordination import ACCESS_CHANGED
from shared.publishing.messages import AccessChanged, MessageError

log = structlog.get_logger(__name__)


class _Dedupe:
    """Remembers the last `size` message ids and the last version applied per customer."""

    def __init__(self, versions: MutableMapping[str, int] | None, size: int) -> None:
        self.versions: MutableMapping[str, int] = versions if versions is not None else {}
        self.ids: OrderedDict[str, None] = OrderedDict()
        self.size = size

    def is_new(self, change: AccessChanged) -> bool:
        if change.id in self.ids:
            return False
        return change.version > self.versions.get(change.customer_id, 0)

    def applied(self, change: AccessChanged) -> None:
        self.ids[change.id] = None
        if len(self.ids) > self.size:
            self.ids.popitem(last=False)
        self.versions[change.customer_id] = max(change.version, self.versions.get(change.customer_id, 0))


class StreamSubscriber:
    def __init__(
        self,
        redis: Redis,
        group: str,
        consumer: str,
        *,
        stream: str = ACCESS_CHANGED,
        start_id: str = "0",
        batch: int = 100,
        block_ms: int = 2000,
        claim_idle_ms: int = 30_000,
        versions: MutableMapping[str, int] | None = None,
        remember_ids: int = 100_000,
    ) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.stream = stream
        self.start_id = start_id
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self._dedupe = _Dedupe(versions, remember_ids)
        self.skipped = 0

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id=self.start_id, mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _claim(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Take over messages another consumer of the group left pending for too long."""
        reply = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_time=self.claim_idle_ms, start_id="0-0", count=self.batch
        )
        entries: list[tuple[bytes, dict[bytes, bytes]]] = [e for e in reply[1] if e[1] is not None]
        if entries:
            log.info("subscriber.reclaimed", count=len(entries), consumer=self.consumer)
        return entries

    async def _read(self, last_id: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: last_id}, count=self.batch, block=self.block_ms
        )
        # An entry trimmed by MAXLEN while pending comes back without fields.
        return [e for _stream, entries in reply for e in entries if e[1] is not None] if reply else []

    async def __aiter__(self) -> AsyncIterator[AccessChanged]:
        await self.ensure_group()
        # First what this consumer already received but never acked (it restarted), then new ones.
        backlog = True
        last_claim = 0.0
        while True:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = []
            if time.monotonic() - last_claim >= self.claim_idle_ms / 3000:
                last_claim = time.monotonic()
                entries = await self._claim()
            if not entries:
                entries = await self._read("0" if backlog else ">")
                if backlog and not entries:
                    backlog = False
                    continue
            for entry_id, fields in entries:
                change = self._parse(entry_id, fields)
                if change is not None and self._dedupe.is_new(change):
                    yield change
                    self._dedupe.applied(change)
                elif change is not None:
                    self.skipped += 1
                await self.redis.xack(self.stream, self.group, entry_id)

    def _parse(self, entry_id: bytes, fields: dict[bytes, Any]) -> AccessChanged | None:
        try:
            return AccessChanged.from_json(fields[b"data"])
        except (KeyError, MessageError) as exc:
            # A malformed entry would block the group forever if left pending: ack and report it.
            log.error("subscriber.bad_message", entry_id=entry_id.decode(), error=str(exc))
            return None


async def channel_messages(
    redis: Redis,
    *,
    channel: str = ACCESS_CHANGED,
    versions: MutableMapping[str, int] | None = None,
) -> AsyncIterator[AccessChanged]:
    """Live changes from the pub/sub channel: nothing is kept while you are not listening."""
    dedupe = _Dedupe(versions, 100_000)
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    try:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                change = AccessChanged.from_json(message["data"])
            except MessageError as exc:
                log.error("subscriber.bad_message", channel=channel, error=str(exc))
                continue
            if dedupe.is_new(change):
                yield change
                dedupe.applied(change)
    finally:
        await pubsub.unsubscribe(channel)
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 5
