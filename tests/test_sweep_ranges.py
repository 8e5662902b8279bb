"""Listing by `created` ranges side by side (worker/listing.py, docs/contract.md §12): every object once,
however the objects are spread in time (many in one second included), within the shared rate
limit and the per-endpoint bound on requests in flight. Against the fake Stripe, real Redis."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from fakestripe import FakeStripe
from shared.coordination import Keys
from shared.stripe_api import RateLimiter, StripeReader, create_client
from tests.conftest import API_KEY
from worker.listing import (
    EPOCH,
    MAX_EVEN_PARTS,
    PAGE,
    PART_PAGES,
    Part,
    boundaries,
    list_by_created,
    next_parts,
)

RATE = 30.0
IN_FLIGHT = 3


@pytest.fixture
async def fake() -> AsyncIterator[FakeStripe]:
    async with FakeStripe(api_keys=(API_KEY,), seed=3).running() as running:
        yield running


def test_the_parts_cover_the_remainder_exactly() -> None:
    """After a full page, the parts tile `[lo, oldest]` with no gap and no overlap, the newest
    part continuing from the page's last object; a lone second is continued by its cursor."""
    for lo, oldest, newest in [(EPOCH, 1_700_000_000, 1_700_000_000), (1000, 5000, 5100), (1000, 1001, 1400),
                               (0, 99, 100), (10, 10, 50)]:
        page = [{"id": f"o{i}", "created": newest - (newest - oldest) * i // 99} for i in range(100)]
        parts = next_parts(Part(lo, None), page, has_more=True)
        assert parts[0].after == "o99"
        assert all(p.after is None for p in parts[1:])
        if oldest == lo:
            assert parts == [Part(lo, None, "o99")]
            continue
        assert parts[0].hi == oldest + 1
        assert parts[-1].lo == lo
        assert all(a.lo == b.hi for a, b in itertools.pairwise(parts))
        assert all(p.hi is not None and p.lo < p.hi for p in parts)
    # The first page of an account: few parts for the years before it, not one per page-width.
    assert len(boundaries(EPOCH, 1_800_000_000, 100.0)) <= MAX_EVEN_PARTS + 2
    assert next_parts(Part(0, None), [{"id": "a", "created": 5}], has_more=False) == []


async def _spread(fake: FakeStripe, reader: StripeReader, now: int) -> set[str]:
    """350 customers: 230 created in one second three years ago (more than two pages), 60 over the
    three years since, 60 over the last hour. Created through the API, then dated as an old account's would be
    (the fake's own store: what Stripe holds)."""
    sem = asyncio.Semaphore(16)

    async def one(n: int) -> str:
        async with sem:
            created = await reader.client.v1.customers.create_async({"email": f"r{n}@example.com"})
            return created.id

    ids = await asyncio.gather(*(one(n) for n in range(350)))
    for n, cid in enumerate(ids):
        if n < 230:
            at = now - 3 * 365 * 86400
        elif n < 290:
            at = now - 3 * 365 * 86400 + (n - 229) * 1_500_000
        else:
            at = now - 3600 + (n - 290) * 60
        fake.core.store.customers[cid].created = at
    return set(ids)


async def test_every_object_once_within_the_limits(fake: FakeStripe, redis_client: redis.asyncio.Redis) -> None:
    limiter = RateLimiter(redis_client, Keys(prefix="ranges"), rate_per_s=RATE, endpoint_rate_per_s=RATE)
    client, http = create_client(API_KEY, fake.base_url, limiter, endpoint_concurrency=IN_FLIGHT)
    reader = StripeReader(client)
    expected = await _spread(fake, reader, int(time.time()))
    async with fake.control() as ctl:
        # Stripe's own limit a little above ours: any burst past ours is a 429 here.
        await ctl.set_api_faults(latency_ms=60, rps_limit=RATE + 2)
        await ctl.reset_stats()
        http.peak_in_flight.clear()
        found = [c["id"] async for c in list_by_created(lambda p: reader.page("/v1/customers", p), {})]
        stats = await ctl.stats()
    await http.close_async()  # type: ignore[no-untyped-call]
    assert len(found) == len(set(found))
    assert set(found) == expected
    assert stats["statuses"].get("429", 0) == 0
    assert stats["max_rps"] <= RATE + 1
    assert http.peak_in_flight["GET /v1/customers"] <= IN_FLIGHT
    # 4 pages of objects at the least; the rest is the few ranges of empty years.
    print("requests", stats["total"])
    assert stats["total"] <= 45


async def test_a_floor_leaves_out_nothing_newer(fake: FakeStripe, redis_client: redis.asyncio.Redis) -> None:
    """From the oldest `created` of the last sweep, the same objects, with fewer requests."""
    limiter = RateLimiter(redis_client, Keys(prefix="ranges"), rate_per_s=500, endpoint_rate_per_s=500)
    client, http = create_client(API_KEY, fake.base_url, limiter)
    reader = StripeReader(client)
    expected = await _spread(fake, reader, int(time.time()))
    oldest = min(fake.core.store.customers[c].created for c in expected)
    found = {c["id"] async for c in list_by_created(lambda p: reader.page("/v1/customers", p), {}, floor=oldest)}
    await http.close_async()  # type: ignore[no-untyped-call]
    assert found == expected


def test_a_full_sized_part_keeps_its_cursor() -> None:
    """A part a split sized (for a few pages) that comes back full is continued from its last
    object over the same range, not split again; the rest of a long range is split by its own
    first page."""
    page = [{"id": f"o{i}", "created": 5000 - i} for i in range(100)]
    assert next_parts(Part(1000, 6000, sized=True), page, has_more=True) == [Part(1000, 6000, "o99", sized=True)]
    assert next_parts(Part(1000, 6000, "x", sized=True), page, has_more=False) == []
    recent = [{"id": f"o{i}", "created": 1_700_000_000 - i} for i in range(100)]
    parts = next_parts(Part(EPOCH, None), recent, has_more=True)
    assert len(parts) == MAX_EVEN_PARTS + 1
    assert all(p.sized for p in parts[:-1])
    assert not parts[-1].sized
    # Sized by the page's density (one object a second) for PART_PAGES pages each.
    few = next_parts(Part(3000, None), page, has_more=True)
    assert all(p.sized for p in few)
    assert len(few) == math.ceil((4901 - 3000) / (PAGE * PART_PAGES / 1.0))


async def test_objects_created_in_bursts_once_each_in_few_requests(
        fake: FakeStripe, redis_client: redis.asyncio.Redis) -> None:
    """1,000 customers created in bursts (a few each second, some seconds busier): every one once,
    in ≤ 1.5 requests per 100 objects plus the empty ranges past the oldest (at most
    MAX_EVEN_PARTS + 1). (At this size parts of 1 or 4 pages cost the same; the saving shows
    from ~10,000 objects: worker/listing.py's PART_PAGES.)"""
    limiter = RateLimiter(redis_client, Keys(prefix="ranges"), rate_per_s=500, endpoint_rate_per_s=500)
    client, http = create_client(API_KEY, fake.base_url, limiter, endpoint_concurrency=IN_FLIGHT)
    reader = StripeReader(client)
    sem = asyncio.Semaphore(16)

    async def one(n: int) -> str:
        async with sem:
            return (await reader.client.v1.customers.create_async({"email": f"e{n}@example.com"})).id

    ids = await asyncio.gather(*(one(n) for n in range(1000)))
    now = int(time.time())
    for n, cid in enumerate(ids):
        fake.core.store.customers[cid].created = now - n // 4 - (n % 7 == 0) * 3
    async with fake.control() as ctl:
        await ctl.reset_stats()
        found = {c["id"] async for c in list_by_created(lambda p: reader.page("/v1/customers", p), {})}
        stats = await ctl.stats()
    await http.close_async()  # type: ignore[no-untyped-call]
    assert found == set(ids)
    print("requests", stats["total"])
    assert stats["total"] <= 1000 / PAGE * 1.5 + MAX_EVEN_PARTS + 1
