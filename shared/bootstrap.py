"""The composition root: every long-lived dependency is built here, once, from the settings.

ingest, the worker, the CLI and the API all start from `bootstrap()`; none of them builds a
Redis client, a pool, a rate limiter, a Stripe client or a coordinator of its own. Each asks
only for what it uses (ingest never touches Postgres or Stripe), and everything opened is closed
when the context ends, in reverse order.

    async with bootstrap(settings, postgres=True, stripe=True) as services:
        await services.reader.customer("cus_...")
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import stripe
import structlog
from redis.asyncio import Redis

from shared import db, tracing
from shared.access import PolicyConfig
from shared.coordination import Coordinator, Keys, RunWaiter
from shared.settings import Settings
from shared.stripe_api import LimitedAIOHTTPClient, RateLimiter, StripeReader, create_client

log = structlog.get_logger(__name__)


class NotBuiltError(RuntimeError):
    """A process asked for a dependency it did not ask `bootstrap()` to build."""


@dataclass(frozen=True)
class StripeParts:
    client: stripe.StripeClient
    http: LimitedAIOHTTPClient
    reader: StripeReader
    limiter: RateLimiter


@dataclass
class Services:
    """What a process holds open. `pool` and the Stripe parts exist only when asked for."""

    settings: Settings
    keys: Keys
    redis: Redis
    coordinator: Coordinator
    policy: PolicyConfig
    _pool: asyncpg.Pool | None = None
    _stripe: StripeParts | None = None
    _waiter: RunWaiter | None = None
    # set by a sync that wrote an outbox row, so that the relay publishes at once
    outbox_ready: asyncio.Event = field(default_factory=asyncio.Event)
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise NotBuiltError("this process was bootstrapped without Postgres")
        return self._pool

    @property
    def stripe_parts(self) -> StripeParts:
        if self._stripe is None:
            raise NotBuiltError("this process was bootstrapped without a Stripe client")
        return self._stripe

    @property
    def waiter(self) -> RunWaiter:
        if self._waiter is None:
            raise NotBuiltError("this process was bootstrapped without a run waiter")
        return self._waiter

    @property
    def stripe(self) -> stripe.StripeClient:
        return self.stripe_parts.client

    @property
    def http(self) -> LimitedAIOHTTPClient:
        return self.stripe_parts.http

    @property
    def reader(self) -> StripeReader:
        return self.stripe_parts.reader


def policy_config(settings: Settings) -> PolicyConfig:
    return PolicyConfig(
        renewal_grace_s=settings.renewal_grace.whole_s,
        past_due_grace_s=settings.past_due_grace.whole_s,
        revoke_disputed=settings.dispute_policy == "revoke",
    )


def keys_for(settings: Settings) -> Keys:
    return Keys(prefix=settings.redis_prefix)


async def open_pool(settings: Settings, *, max_size: int, wait_s: float, light_reset: bool = False) -> asyncpg.Pool:
    """A pool; with `wait_s` > 0 it waits while Postgres is (re)starting, as arq waits for Redis,
    rather than exiting and leaving the restart to a process manager."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await db.create_pool(settings.database_url, min_size=1, max_size=max_size,
                                        light_reset=light_reset)
        except (OSError, asyncpg.CannotConnectNowError) as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("bootstrap.waiting_for_postgres", error=type(exc).__name__)
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def bootstrap(
    settings: Settings,
    *,
    postgres: bool = False,
    stripe_client: bool = False,
    keys: Keys | None = None,
    redis_timeout_s: float = 10.0,
    accept_timeout_s: float | None = None,
    pool_size: int = 4,
    postgres_wait_s: float = 0.0,
    coalesce: bool = True,
    run_waiter: bool = False,
    light_reset: bool = False,
) -> AsyncIterator[Services]:
    """Build the dependencies this process needs; close them all when the context ends.

    `coalesce=False` queues work with no coalescing delay (the CLI and the API: someone waits
    for it). `accept_timeout_s`: the bound on one `Coordinator.accept` (the receiver's).
    `run_waiter=True` subscribes to the ends of runs (`POST /v1/sync` waits on them).
    `light_reset=True`: the pool's users leave no session state (`db.create_pool`).
    """
    keys = keys or keys_for(settings)
    tracing.configure(settings)  # once per process; off unless OTEL_EXPORTER_OTLP_ENDPOINT
    async with contextlib.AsyncExitStack() as stack:
        redis = Redis.from_url(
            settings.redis_url, socket_timeout=redis_timeout_s, socket_connect_timeout=min(redis_timeout_s, 3.0)
        )
        stack.push_async_callback(redis.aclose)
        coordinator = Coordinator(
            redis,
            keys,
            coalesce_ms=settings.coalesce_window.ms if coalesce else 0,
            lease_ms=settings.sync_lease.ms,
            accept_timeout_s=accept_timeout_s,
        )
        services = Services(
            settings=settings, keys=keys, redis=redis, coordinator=coordinator, policy=policy_config(settings)
        )
        if postgres:
            services._pool = await open_pool(settings, max_size=pool_size, wait_s=postgres_wait_s,
                                             light_reset=light_reset)
            stack.push_async_callback(services._pool.close)
        if stripe_client:
            limiter = RateLimiter(
                redis,
                keys,
                rate_per_s=settings.stripe_rate_limit,
                endpoint_rate_per_s=settings.stripe_endpoint_rate_limit,
            )
            client, http = create_client(
                settings.api_key, settings.stripe_api_base, limiter,
                endpoint_concurrency=settings.stripe_endpoint_concurrency,
            )
            stack.push_async_callback(http.close_async)
            services._stripe = StripeParts(client=client, http=http, reader=StripeReader(client), limiter=limiter)
        if run_waiter:
            services._waiter = RunWaiter(redis, keys)
            services._waiter.start()
            stack.push_async_callback(services._waiter.close)
        yield services
