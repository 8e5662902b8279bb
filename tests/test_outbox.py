"""access-changed (docs/contract.md §6): the outbox, the relay, the subscriber helpers, the schema.

Real Postgres and real Redis; changes are committed through the worker's own write path
(`worker.store.write`), and published by the real relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import jsonschema
import pytest
import redis.asyncio

from shared import db
from shared.access import Access, Customer, CustomerFacts, Grant
from shared.coordination import Keys
from shared.publishing import AccessChanged, Relay, StreamSubscriber, channel_messages
from tests.support.aio import aw
from tests.support.redis_server import RedisServer
from worker import store

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "access-changed.schema.json").read_text())
KEYS = Keys()
FAR = 4_000_000_000


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url)
    yield p
    await p.close()


async def commit_change(pool: asyncpg.Pool, cid: str, features: set[str], user: str = "u_1") -> store.Written:
    """One sync's write, through the worker's fenced write path."""
    fence = await store.bump_fence(pool, cid)
    facts = CustomerFacts(cid, Customer(cid), (), None, frozenset())
    access = Access(
        grants={f: Grant(f, FAR, "sub_1") for f in features}, user_id=user, user_id_source="customer_metadata",
        next_check=None,
    )
    return await store.write(pool, fence=fence, facts=facts, access=access, offset_s=0,
                             events=[], reason="test")


async def stream_messages(r: redis.asyncio.Redis) -> list[AccessChanged]:
    return [AccessChanged.from_json(f[b"data"]) for _id, f in await r.xrange(KEYS.stream)]


async def wait_for(predicate: object, timeout_s: float = 15.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_relay(database_url: str, r: redis.asyncio.Redis) -> AsyncIterator[Relay]:
    relay = Relay(database_url, r, KEYS, maxlen=10_000, wake=asyncio.Event())
    task = asyncio.create_task(relay.run_forever())
    try:
        yield relay
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_sync_that_changes_nothing_publishes_nothing(pool: asyncpg.Pool) -> None:
    """Same features, same user: no version bump, no outbox row."""
    first = await commit_change(pool, "cus_1", {"pro"})
    second = await commit_change(pool, "cus_1", {"pro"})
    assert (first.changed, first.version) == (True, 1)
    assert (second.changed, second.version) == (False, 1)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_messages_follow_the_schema(pool: asyncpg.Pool) -> None:
    """Every message we build validates against docs/access-changed.schema.json."""
    await commit_change(pool, "cus_1", {"pro", "export"})
    await commit_change(pool, "cus_1", {"basic"}, user="u_2")
    rows = await pool.fetch("SELECT message FROM outbox ORDER BY id")
    for row in rows:
        jsonschema.validate(json.loads(row["message"]), SCHEMA)
    last = json.loads(rows[-1]["message"])
    assert (last["added"], last["removed"], last["features"], last["version"]) == (
        ["basic"], ["export", "pro"], ["basic"], 2
    )


async def test_redis_down_while_changes_commit(database_url: str, pool: asyncpg.Pool) -> None:
    """Changes committed while Redis is down are all published once it is back: none lost, and
    each customer's versions in order, contiguous, from 1."""
    server = RedisServer()
    server.start()
    r = redis.asyncio.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=0.5)
    try:
        server.stop()
        async with running_relay(database_url, r):
            for version in range(5):
                for cid in ("cus_a", "cus_b", "cus_c"):
                    await commit_change(pool, cid, {f"f{version}"})
            await asyncio.sleep(1.0)  # the relay is failing meanwhile
            server.start()

            async def all_published() -> bool:
                # the relay adds to the stream, then marks the rows: wait for both
                return int(await aw(r.xlen(KEYS.stream))) >= 15 and not await pool.fetchval(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL")

            await wait_for(all_published)
        messages = await stream_messages(r)
        assert len({m.id for m in messages}) == 15
        for cid in ("cus_a", "cus_b", "cus_c"):
            assert [m.version for m in messages if m.customer_id == cid] == [1, 2, 3, 4, 5]
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    finally:
        await r.aclose()
        server.close()


async def test_consumer_killed_mid_batch_hands_over(
    database_url: str, pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    """A consumer that dies holding unacked messages: another consumer of the group reclaims them."""
    async with running_relay(database_url, redis_client):
        for n in range(6):
            await commit_change(pool, f"cus_{n}", {"pro"})
        await wait_for(lambda: _xlen_at_least(redis_client, 6))
    dying = StreamSubscriber(redis_client, "svc", "dying", batch=3, claim_idle_ms=200)
    got_by_dying = []
    async for change in dying:
        got_by_dying.append(change.customer_id)
        if len(got_by_dying) == 2:
            break  # crashed while handling its second message: it is never acked
    survivor = StreamSubscriber(redis_client, "svc", "survivor", claim_idle_ms=200, block_ms=100)
    got: list[str] = []
    await asyncio.sleep(0.3)

    async def collect() -> None:
        async for change in survivor:
            got.append(change.customer_id)
            if len(set(got)) == 6 - 1:
                return

    await asyncio.wait_for(collect(), 10)
    # The first message the dying consumer finished was acked; everything else reached the survivor.
    assert set(got) == {f"cus_{n}" for n in range(6)} - {got_by_dying[0]}
    pending = await redis_client.xpending(KEYS.stream, "svc")
    assert pending["pending"] <= 1  # at most the survivor's last, acked when it asks for more


async def _xlen_at_least(r: redis.asyncio.Redis, n: int) -> bool:
    return int(await aw(r.xlen(KEYS.stream))) >= n


async def test_subscriber_drops_repeats_and_old_versions(redis_client: redis.asyncio.Redis) -> None:
    """Consumers dedupe by id and ignore a version at or below the last applied."""
    v1 = AccessChanged.build(customer_id="cus_1", user_id="u", before=frozenset(), after=frozenset({"a"}),
                             version=1, reason="t", livemode=False)
    v2 = AccessChanged.build(customer_id="cus_1", user_id="u", before=frozenset({"a"}), after=frozenset({"b"}),
                             version=2, reason="t", livemode=False)
    for message in (v1, v1, v2, v1):
        await redis_client.xadd(KEYS.stream, {"data": message.to_json()})
    await redis_client.xadd(KEYS.stream, {"data": "not json"})
    sub = StreamSubscriber(redis_client, "g", "c", block_ms=100)
    seen = []

    async def collect() -> None:
        async for change in sub:
            seen.append(change.version)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(collect(), 1.0)
    assert seen == [1, 2]
    assert sub.skipped == 2
    assert (await redis_client.xpending(KEYS.stream, "g"))["pending"] == 0


async def test_live_channel(database_url: str, pool: asyncpg.Pool, redis_client: redis.asyncio.Redis) -> None:
    """The same messages reach live listeners on the pub/sub channel."""
    received: list[AccessChanged] = []

    async def listen() -> None:
        async for change in channel_messages(redis_client):
            received.append(change)
            return

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)
    async with running_relay(database_url, redis_client):
        await commit_change(pool, "cus_live", {"pro"})
        await asyncio.wait_for(listener, 10)
    assert [(m.customer_id, m.features) for m in received] == [("cus_live", ("pro",))]
