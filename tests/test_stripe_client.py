"""The Stripe client (shared/stripe_api/client.py) and the shared rate limiter (shared/stripe_api/ratelimit.py),
against a real Redis and the fake Stripe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
import stripe

from fakestripe import FakeStripe
from shared.coordination import Keys
from shared.stripe_api import (
    RateLimiter,
    RateLimitWaitError,
    StripeReader,
    create_client,
    endpoint_of,
)

KEYS = Keys(prefix="rl")


@pytest.mark.parametrize(
    ("method", "url", "endpoint"),
    [
        ("get", "https://api.stripe.com/v1/customers/cus_Abc123?expand[0]=x", "GET /v1/customers/:id"),
        ("get", "http://127.0.0.1:1/v1/subscriptions?customer=cus_1&status=all", "GET /v1/subscriptions"),
        ("get", "https://api.stripe.com/v1/products/prod_X1/features", "GET /v1/products/:id/features"),
        ("get", "https://api.stripe.com/v1/test_helpers/test_clocks/clock_9", "GET /v1/test_helpers/test_clocks/:id"),
        ("get", "https://api.stripe.com/v1/entitlements/active_entitlements", "GET /v1/entitlements/active_entitlements"),
    ],
)
def test_endpoint_names(method: str, url: str, endpoint: str) -> None:
    """Each request is counted against its endpoint's bucket, ids folded away."""
    assert endpoint_of(method, url) == endpoint


async def hammer(limiter: RateLimiter, endpoint: str, seconds: float, times: list[float]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await limiter.acquire(endpoint)
        times.append(time.monotonic())


def max_in_any_second(times: list[float]) -> int:
    times.sort()
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_shared_limit_holds_across_clients(redis_url: str) -> None:
    """Four independent clients (as four workers would be) together never exceed the rate in
    any one-second window, and still use most of it."""
    clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(4)]
    limiters = [RateLimiter(c, KEYS, rate_per_s=20, endpoint_rate_per_s=25) for c in clients]
    times: list[float] = []
    await asyncio.gather(*(hammer(lim, "GET /v1/subscriptions", 3.0, times) for lim in limiters for _ in range(3)))
    for c in clients:
        await c.aclose()
    assert max_in_any_second(times) <= 21  # 20/s; one more at a window's edge
    assert len(times) >= 0.6 * 20 * 3


async def test_a_busy_endpoint_does_not_stall_the_others(redis_client: redis.asyncio.Redis) -> None:
    """One endpoint saturated at its own limit; another endpoint still gets through at once."""
    limiter = RateLimiter(redis_client, KEYS, rate_per_s=100, endpoint_rate_per_s=5)
    busy: list[float] = []
    other: list[float] = []
    hog = asyncio.gather(*(hammer(limiter, "GET /v1/events", 2.0, busy) for _ in range(10)))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    for _ in range(5):
        await limiter.acquire("GET /v1/customers/:id")
        other.append(time.monotonic())
    await hog
    assert max_in_any_second(busy) <= 6
    # Five requests at the other endpoint's own pace (0.8 s at 5/s), not behind the busy
    # endpoint's ten waiters (which would take 2 s and more).
    assert other[-1] - started < 1.3


async def test_waiting_is_bounded(redis_client: redis.asyncio.Redis) -> None:
    """When the budget has no room within max_wait_s, the request gives up (its job retries later)."""
    limiter = RateLimiter(redis_client, KEYS, rate_per_s=1, endpoint_rate_per_s=1, max_wait_s=0.5)
    results = await asyncio.gather(*(limiter.acquire("GET /v1/x") for _ in range(5)), return_exceptions=True)
    assert sum(isinstance(r, RateLimitWaitError) for r in results) >= 3
    assert sum(not isinstance(r, Exception) for r in results) >= 1


@pytest.fixture
async def fake() -> AsyncIterator[FakeStripe]:
    async with FakeStripe(seed=5).running() as running:
        yield running


async def test_retries_429_500_and_resets(fake: FakeStripe, redis_client: redis.asyncio.Redis) -> None:
    """429 (with Stripe-Should-Retry), 500 and reset connections are retried with backoff: every
    read succeeds although a third of the attempts fail."""
    limiter = RateLimiter(redis_client, KEYS, rate_per_s=500, endpoint_rate_per_s=500)
    client, http = create_client("sk_test_fake", fake.base_url, limiter)
    async with fake.control() as ctl:
        customer = await client.v1.customers.create_async({"email": "r@example.com"})
        await ctl.set_api_faults(rate_429=0.15, rate_500=0.1, rate_reset=0.08, methods=["GET"], seed=11)
        await ctl.reset_stats()
        reader = StripeReader(client)
        for _ in range(20):
            got = await reader.customer(customer.id)
            assert got is not None
            assert got["id"] == customer.id
        stats = await ctl.stats()
    await http.close_async()  # type: ignore[no-untyped-call]
    assert stats["total"] > 20  # some attempts failed and were retried
    # Every attempt of ours passed the limiter; aiohttp itself re-sends once when a kept-alive
    # connection turns out reset, which is the only way past it.
    resets = stats["statuses"].get("reset", 0)
    assert stats["total"] - resets <= http.tally["GET /v1/customers/:id"] <= stats["total"]


async def test_missing_objects_are_none_not_errors(fake: FakeStripe, redis_client: redis.asyncio.Redis) -> None:
    """A 404 from Stripe (a deleted customer) is an answer, not a failure to retry."""
    limiter = RateLimiter(redis_client, KEYS, rate_per_s=100, endpoint_rate_per_s=100)
    client, http = create_client("sk_test_fake", fake.base_url, limiter)
    reader = StripeReader(client)
    assert await reader.customer("cus_missing") is None
    assert await reader.subscription("sub_missing") is None
    bad, bad_http = create_client("sk_test_wrong", fake.base_url, limiter)
    with pytest.raises(stripe.AuthenticationError):
        await StripeReader(bad).customer("cus_1")
    await bad_http.close_async()  # type: ignore[no-untyped-call]
    await http.close_async()  # type: ignore[no-untyped-call]
