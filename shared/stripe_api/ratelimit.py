"""One Stripe request budget for the whole deployment, shared through Redis.

Stripe allows 100 requests/s in live mode (25 in a sandbox) and, by default, 25/s per endpoint.
Every request of every worker asks `RateLimiter.acquire` first; a single-round-trip GCRA script
(`gcra.lua` beside it) checks the overall bucket and the endpoint's bucket together, with
Redis' clock, so the budget holds across processes and hosts. The request reserves the next
free slot and sleeps until it: one round trip per request, first come first served, and a
backlog uses the whole budget. (It used to poll: every waiter asked again when the next slot
came, all of them, and the one that won took it a few milliseconds late, which the algorithm
cannot give back. In the workers benchmark that left 4-6% of the budget unused, was three
quarters of a sync's CPU in the worker and two thirds of the commands Redis ran:
docs/benchmarks.md, "Profiling".)
Only a request held back by its endpoint's own budget still asks again, so that a busy
endpoint never holds overall slots the others could use.
Waiting is bounded: past `max_wait_s` the caller gets `RateLimitWaitError` and its job is
retried later, rather than a backlog on one endpoint stalling everything else.
"""

from __future__ import annotations

import asyncio
import random
from importlib import resources

from prometheus_client import Counter, Histogram
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shared.coordination import Keys

WAIT_SECONDS = Histogram(
    "entitled_stripe_rate_wait_seconds",
    "Time a Stripe request waited for the shared rate limit.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WAIT_EXCEEDED = Counter(
    "entitled_stripe_rate_wait_exceeded_total",
    "Stripe requests that gave up waiting for the rate limit (their job is retried).",
)


class RateLimitWaitError(Exception):
    """The shared Stripe budget had no room for this request within the allowed wait."""


def _gcra() -> str:
    return (resources.files("shared.stripe_api") / "gcra.lua").read_text(encoding="utf-8")


class RateLimiter:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        rate_per_s: float,
        endpoint_rate_per_s: float,
        max_wait_s: float = 30.0,
    ) -> None:
        self._script: AsyncScript = redis.register_script(_gcra())
        self._keys = keys
        self._overall_interval_us = int(1_000_000 / rate_per_s)
        self._endpoint_interval_us = int(1_000_000 / min(endpoint_rate_per_s, rate_per_s))
        self.max_wait_s = max_wait_s

    async def acquire(self, endpoint: str) -> float:
        """Wait until the request may go; return how long it waited (seconds).

        A slot reserved and then not used (the caller was cancelled while it slept) is lost."""
        waited = 0.0
        while True:
            wait_us, reserved = await self._script(
                keys=[self._keys.rate("all"), self._keys.rate(endpoint)],
                # No burst tolerance: at most `rate` requests in any one-second window, which is
                # how Stripe counts.
                args=[
                    self._overall_interval_us,
                    self._endpoint_interval_us,
                    max(0, int((self.max_wait_s - waited) * 1_000_000)),
                ],
            )
            wait_s = int(wait_us) / 1_000_000
            if int(reserved):
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                waited += wait_s
                WAIT_SECONDS.observe(waited)
                return waited
            if waited + wait_s > self.max_wait_s:
                WAIT_EXCEEDED.inc()
                raise RateLimitWaitError(
                    f"no room in the Stripe rate limit for {endpoint} within {self.max_wait_s:.0f}s"
                )
            # Held back by the endpoint's own budget: ask again when it frees up, with a little
            # jitter so that its waiters do not all ask in the same millisecond.
            pause = wait_s + random.uniform(0, min(wait_s, 0.005))
            await asyncio.sleep(pause)
            waited += pause
