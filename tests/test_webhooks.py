"""Outbound webhooks (docs/contract.md §10): endpoints, durable deliveries, order, retries, isolation.

Real Postgres; changes are committed through the worker's own write path (`worker.store.write`),
so the outbox trigger makes the deliveries exactly as in production; the real `Deliverer` POSTs
them to real HTTP servers (tests/support/receiver.py) that verify every signature with the
`standardwebhooks` package. Time-dependent behaviour (an hour down, three days of retries) runs
on a clock the test advances; nothing here waits for wall-clock time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from shared import db
from shared.access import Access, Customer, CustomerFacts, Grant
from shared.publishing import Deliverer, DeliveryPolicy, endpoints
from shared.publishing.delivery import Claimed, housekeeping, judge, retry_delay_s
from tests.support.receiver import Receiver
from worker import store

FAR = 4_000_000_000
FAST = DeliveryPolicy(timeout_s=2.0, idle_poll_s=0.05, endpoints_poll_s=0.05, concurrency=8)


class Clock:
    """A wall clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url)
    yield p
    await p.close()


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        await r.close()


async def change(pool: asyncpg.Pool, cid: str, n: int) -> str:
    """The customer's n-th change (features {f<n>}), committed as a sync commits it; its message id."""
    fence = await store.bump_fence(pool, cid)
    facts = CustomerFacts(cid, Customer(cid), (), None, frozenset())
    access = Access(grants={f"f{n}": Grant(f"f{n}", FAR, "sub_1")}, user_id="u_" + cid,
                    user_id_source="customer_metadata", next_check=None)
    written = await store.write(pool, fence=fence, facts=facts, access=access, offset_s=0,
                                events=[], reason="test")
    assert written.message is not None
    return written.message.id


async def until(predicate: Callable[[], Awaitable[bool] | bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def delivering(database_url: str, policy: DeliveryPolicy = FAST, clock: Any = None) -> AsyncIterator[Deliverer]:
    deliverer = Deliverer(database_url, policy=policy, **({"clock": clock} if clock else {}))
    task = asyncio.create_task(deliverer.run_forever())
    try:
        yield deliverer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def receiver(made: list[Receiver], pool: asyncpg.Pool, **kwargs: Any) -> tuple[Receiver, endpoints.Endpoint]:
    r = await Receiver(**kwargs).start()
    made.append(r)
    ep = await endpoints.add(pool, r.url)
    r.secret = ep.secret
    return r, ep


async def settled(pool: asyncpg.Pool, clock: Clock) -> bool:
    """Nothing due at the clock's time is waiting or in flight (a customer's later versions wait
    for its first: they do not count)."""
    n = await pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries d WHERE status = 'pending'"
        " AND (next_attempt_at <= $1 OR leased_until IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM"
        " webhook_deliveries e WHERE e.endpoint_id = d.endpoint_id AND e.customer_id = d.customer_id"
        " AND e.status = 'pending' AND e.version < d.version)", clock())
    return bool(n == 0)


def test_retries_back_off_from_within_30_s_to_an_hour_with_jitter() -> None:
    """The first retry comes within 30 s; waits double with jitter up to the cap; a failure at
    or after 3 days is final, and before it the last try is scheduled on the deadline."""
    policy = DeliveryPolicy()
    firsts = [retry_delay_s(1, policy) for _ in range(200)]
    assert all(5.0 <= d <= 10.0 for d in firsts)
    assert len(set(firsts)) > 100
    assert all(1800.0 <= retry_delay_s(40, policy) <= 3600.0 for _ in range(50))
    created = datetime(2026, 1, 1, tzinfo=UTC)
    row = Claimed(1, "m", "cus_1", 1, "{}", 10, created)
    late = judge(row, 500, None, created + timedelta(days=3) - timedelta(seconds=1), policy)
    assert (late.status, late.next_at) == ("pending", created + timedelta(days=3))
    assert judge(row, 503, None, created + timedelta(days=3), policy).status == "failed"
    assert judge(row, 204, None, created + timedelta(days=5), policy).status == "delivered"
    assert judge(row, None, "timeout after 10s", created, policy).status == "pending"
    for redirect in (301, 302, 307, 308):
        assert judge(row, redirect, None, created, policy).status == "pending"


async def test_every_endpoint_gets_every_message_signed_and_in_order(
    pool: asyncpg.Pool, database_url: str, receivers: list[Receiver]
) -> None:
    """Two endpoints each get each message once: the body is the message JSON, webhook-id its
    id, the signature verifies with the endpoint's secret, versions arrive in order."""
    a, ep_a = await receiver(receivers, pool)
    b, _ = await receiver(receivers, pool)
    assert ep_a.secret.startswith("whsec_")
    ids = {cid: [await change(pool, cid, n) for n in range(1, 6)] for cid in ("cus_a", "cus_b")}
    async with delivering(database_url):
        await until(lambda: len(a.delivered()) == 10 and len(b.delivered()) == 10, "10 deliveries each")
    for r in (a, b):
        assert all(x.verified for x in r.received)
        for cid, mids in ids.items():
            assert r.versions(cid) == [1, 2, 3, 4, 5]
            assert [x.message_id for x in r.delivered() if x.customer_id == cid] == mids
    messages = {row["message"] for row in await pool.fetch("SELECT message FROM outbox")}
    assert {x.body for x in a.received} == messages


async def test_an_endpoint_down_for_an_hour_gets_everything_afterwards_in_order(
    pool: asyncpg.Pool, database_url: str, receivers: list[Receiver]
) -> None:
    """An endpoint answering 503 for an hour of (advanced) time is retried with backoff, only
    ever for each customer's oldest message; once it is back, everything arrives, in order."""
    up = False
    r, _ = await receiver(receivers, pool, answer=lambda _b: 200 if up else 503)
    healthy, _ = await receiver(receivers, pool)
    clock = Clock()
    for n in range(1, 4):
        for cid in ("cus_1", "cus_2"):
            await change(pool, cid, n)
    async with delivering(database_url, clock=clock) as deliverer:
        await until(lambda: len(healthy.delivered()) == 6, "the healthy endpoint's 6")
        await until(lambda: len(r.received) >= 2, "first attempts")
        for _ in range(12):  # an hour, five minutes at a time
            clock.advance(300)
            deliverer.poke()
            await until(lambda: settled(pool, clock), "due retries tried")
        attempts = len(r.received)
        assert attempts >= 2 * 8, attempts  # retried all along: 5-10 s, 10-20 s, ... doubling
        assert {x.version for x in r.received} == {1}, "a later version was sent before the first"
        first = await pool.fetchrow("SELECT attempts, status, last_status FROM webhook_deliveries"
                                    " WHERE endpoint_id = (SELECT id FROM webhook_endpoints WHERE url = $1)"
                                    " AND customer_id = 'cus_1' AND version = 1", r.url)
        assert (first["status"], first["last_status"]) == ("pending", 503)
        up = True
        clock.advance(3600)
        deliverer.poke()
        await until(lambda: len(r.delivered()) == 6, "everything after the outage")
    assert r.versions("cus_1") == [1, 2, 3]
    assert r.versions("cus_2") == [1, 2, 3]


async def test_a_delivery_is_failed_after_three_days_and_the_next_one_goes(
    pool: asyncpg.Pool, database_url: str, receivers: list[Receiver]
) -> None:
    """An endpoint that refuses one message for 3 days: the first retry is due within 30 s, the
    delivery is marked failed at 3 days (listed, counted in the metric), and the customer's
    next message is delivered after it."""
    refused: set[str] = set()
    r, ep = await receiver(receivers, pool, answer=lambda b: 500 if b["id"] in refused else 200)
    refused.add(await change(pool, "cus_1", 1))
    await change(pool, "cus_1", 2)
    clock = Clock()
    async with delivering(database_url, clock=clock) as deliverer:
        await until(lambda: len(r.received) == 1, "the first attempt")
        await until(lambda: settled(pool, clock), "its outcome written")
        row = await pool.fetchrow("SELECT next_attempt_at, last_attempt_at FROM webhook_deliveries WHERE version = 1")
        assert row["next_attempt_at"] - row["last_attempt_at"] <= timedelta(seconds=30)
        assert r.versions("cus_1") == []
        clock.advance(3 * 86400)
        deliverer.poke()
        await until(lambda: r.versions("cus_1") == [2], "the next version after the give-up")
    failed = await endpoints.failed_deliveries(pool, 10)
    assert [(f["endpoint_id"], f["version"], f["last_status"]) for f in failed] == [(ep.id, 1, 500)]
    await housekeeping(pool)
    assert REGISTRY.get_sample_value("entitled_webhook_deliveries_failed") == 1.0
    assert [s.failed for s in await endpoints.stats(pool)] == [1]


async def test_a_slow_or_dead_endpoint_never_delays_another(
    pool: asyncpg.Pool, database_url: str, receivers: list[Receiver]
) -> None:
    """One endpoint holds every request (it never answers while the test runs), another refuses
    connections: the third gets all 100 messages meanwhile, and the slow one's requests time out
    and are retried rather than waited for."""
    gate = asyncio.Event()
    slow, _ = await receiver(receivers, pool, gate=gate)
    fast, _ = await receiver(receivers, pool)
    await endpoints.add(pool, "http://127.0.0.1:9/refused")  # the discard port: nothing listens
    for n in range(1, 5):
        for c in range(25):
            await change(pool, f"cus_{c}", n)
    policy = DeliveryPolicy(timeout_s=1.0, idle_poll_s=0.05, endpoints_poll_s=0.05, concurrency=4)
    async with delivering(database_url, policy=policy):
        await until(lambda: len(fast.delivered()) == 100, "the fast endpoint's 100")
        assert slow.received == []
        await until(lambda: pool.fetchval(
            "SELECT count(*) > 0 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
            " WHERE e.url = $1 AND d.last_error LIKE 'timeout%'", slow.url), "the slow endpoint's timeouts")
    assert all(fast.versions(f"cus_{c}") == [1, 2, 3, 4] for c in range(25))


async def test_redirects_are_not_followed(pool: asyncpg.Pool, database_url: str, receivers: list[Receiver]) -> None:
    """A 307 is a failed attempt (retried later); the place it points to is never called."""
    target, _ = await receiver(receivers, pool)
    await pool.execute("DELETE FROM webhook_endpoints")

    def routes(app: web.Application) -> None:
        async def moved(_request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(target.url)
        app.router.add_post("/moved", moved)

    mover = await Receiver().start(routes)
    receivers.append(mover)
    await endpoints.add(pool, f"http://127.0.0.1:{mover.port}/moved")
    await change(pool, "cus_1", 1)
    async with delivering(database_url):
        await until(lambda: pool.fetchval("SELECT last_status = 307 FROM webhook_deliveries"), "the 307")
    assert target.received == []
    assert await pool.fetchval("SELECT status FROM webhook_deliveries") == "pending"


async def test_two_workers_never_send_one_delivery_at_once(
    pool: asyncpg.Pool, database_url: str, receivers: list[Receiver]
) -> None:
    """Two delivery loops on one database: each message reaches the endpoint exactly once (no
    failure, so no retry), never twice at the same time, and in order per customer."""
    r, _ = await receiver(receivers, pool)
    for n in range(1, 6):
        for c in range(20):
            await change(pool, f"cus_{c}", n)
    async with delivering(database_url), delivering(database_url):
        await until(lambda: len(r.received) >= 100, "100 deliveries")
        await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one
    assert sorted(x.message_id for x in r.received) == sorted(
        row["message_id"] for row in await pool.fetch("SELECT message_id FROM webhook_deliveries"))
    assert r.overlaps == []
    assert all(r.versions(f"cus_{c}") == [1, 2, 3, 4, 5] for c in range(20))


async def test_removed_endpoints_get_nothing_more_and_new_ones_only_new_messages(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    """An endpoint added later is owed only later messages; a removed one's owed deliveries
    are canceled, and it is owed nothing new."""
    first, ep1 = await receiver(receivers, pool)
    await change(pool, "cus_1", 1)
    second, ep2 = await receiver(receivers, pool)
    await change(pool, "cus_1", 2)
    await endpoints.remove(pool, ep1.id)
    await change(pool, "cus_1", 3)
    rows = await pool.fetch("SELECT endpoint_id, version, status FROM webhook_deliveries ORDER BY endpoint_id, version")
    assert sorted((r["endpoint_id"], r["version"], r["status"]) for r in rows) == sorted([
        (ep1.id, 1, "canceled"), (ep1.id, 2, "canceled"),
        (ep2.id, 2, "pending"), (ep2.id, 3, "pending"),
    ])
    with pytest.raises(endpoints.EndpointError):
        await endpoints.remove(pool, ep1.id)
    with pytest.raises(endpoints.EndpointError):
        await endpoints.add(pool, "ftp://example.com/x")
    assert [s.endpoint.id for s in await endpoints.stats(pool)] == [ep2.id]
    del first, second
