"""The shared rate limiter reserves slots (shared/stripe_api/ratelimit.py and gcra.lua): a backlog is
served first come first served with one Redis round trip per request, and a request that gives
up takes no slot from those after it. Real Redis; nothing here measures speed."""

from __future__ import annotations

import asyncio

import redis.asyncio

from shared.coordination import Keys
from shared.stripe_api import RateLimiter, RateLimitWaitError

KEYS = Keys(prefix="rlr")


async def script_calls(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


async def test_a_backlog_is_served_in_order_one_round_trip_each(redis_client: redis.asyncio.Redis) -> None:
    """Twelve requests at once: each asks Redis once (the limiter no longer polls), and they
    go in the order they asked, each with a later slot than the one before."""
    limiter = RateLimiter(redis_client, KEYS, rate_per_s=40, endpoint_rate_per_s=40)
    await limiter.acquire("GET /v1/warm-up")  # loads the script
    await redis_client.config_resetstat()
    done: list[int] = []
    waits: dict[int, float] = {}

    async def one(n: int) -> None:
        waits[n] = await limiter.acquire("GET /v1/subscriptions")
        done.append(n)

    tasks = []
    for n in range(12):
        tasks.append(asyncio.create_task(one(n)))
        await asyncio.sleep(0)  # ask in this order
    await asyncio.gather(*tasks)
    assert await script_calls(redis_client) == 12
    assert done == list(range(12))
    assert [waits[n] for n in range(12)] == sorted(waits.values())


async def test_giving_up_takes_no_slot(redis_client: redis.asyncio.Redis) -> None:
    """At 1 request/s with 0.5 s of patience, of five requests at once one goes and four give
    up; the four reserved nothing, so the next request (more patient) waits for one slot, not
    five."""
    impatient = RateLimiter(redis_client, KEYS, rate_per_s=1, endpoint_rate_per_s=1, max_wait_s=0.5)
    results = await asyncio.gather(*(impatient.acquire("GET /v1/x") for _ in range(5)), return_exceptions=True)
    assert sum(isinstance(r, RateLimitWaitError) for r in results) == 4
    patient = RateLimiter(redis_client, KEYS, rate_per_s=1, endpoint_rate_per_s=1, max_wait_s=10)
    waited = await patient.acquire("GET /v1/x")
    assert waited <= 1.0
