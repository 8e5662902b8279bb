"""The whole service, for end-to-end tests: the fake Stripe and the real ingest in this event
loop, real worker processes (`python -m worker`), this test's own Postgres database and Redis.

Tests drive Stripe the way an app does (the SDK against the fake, the fake's control API for
what a customer would do in a browser) and assert on the `active_entitlements` view and the
`access-changed` stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import orjson
import redis.asyncio
import stripe
from aiohttp import web
from fakestripe.buyer import buy
from stripe.params import CustomerCreateParams, SubscriptionCreateParams

from fakestripe import EndpointFaults, FakeStripe, FakeStripeControl
from fakestripe import Settings as FakeSettings
from ingest.app import create_app
from shared import db
from shared.coordination import Keys
from shared.publishing import AccessChanged
from shared.settings import Settings
from tests.support.redis_server import free_port
from tests.support.stripe_requests import RECORDED, SERVICE_KEY, SHAPE_PROBLEMS

API_KEY = "sk_test_fake"
DAY = 86_400


@dataclass
class Stack:
    database_url: str
    redis_url: str
    fake: FakeStripe
    ctl: FakeStripeControl
    stripe: stripe.StripeClient
    endpoint_id: str
    ingest_url: str
    pool: asyncpg.Pool
    redis: redis.asyncio.Redis
    worker_env: dict[str, str]
    log_dir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    keys: Keys = field(default_factory=Keys)
    # feature lookup key -> feature id, for features created through `feature()`
    _features: dict[str, str] = field(default_factory=dict)

    # --- processes -------------------------------------------------------------------------

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        log = open(self.log_dir / f"worker-{n}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env={**os.environ, **self.worker_env, **env},
            stdout=log,
            stderr=log,
        )
        self.workers.append(proc)
        return proc

    def worker_logs(self) -> list[dict[str, Any]]:
        """Every JSON log line of every worker so far."""
        lines = []
        for path in sorted(self.log_dir.glob("worker-*.log")):
            for raw in path.read_bytes().splitlines():
                with contextlib.suppress(orjson.JSONDecodeError):
                    record = orjson.loads(raw)
                    if isinstance(record, dict):
                        record["_file"] = path.name
                        lines.append(record)
        return lines

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # --- reading what the service says ------------------------------------------------------

    async def view(self, customer_id: str) -> dict[str, datetime]:
        rows = await self.pool.fetch(
            "SELECT feature, valid_until FROM active_entitlements WHERE customer_id = $1", customer_id
        )
        return {r["feature"]: r["valid_until"] for r in rows}

    async def features(self, customer_id: str) -> set[str]:
        return set(await self.view(customer_id))

    async def user_of(self, customer_id: str) -> str | None:
        value: str | None = await self.pool.fetchval(
            "SELECT user_id FROM customers WHERE customer_id = $1", customer_id
        )
        return value

    async def messages(self, customer_id: str | None = None) -> list[AccessChanged]:
        entries = await self.redis.xrange(self.keys.stream)
        found = [AccessChanged.from_json(fields[b"data"]) for _id, fields in entries]
        return [m for m in found if customer_id is None or m.customer_id == customer_id]

    async def syncs_started(self, customer_id: str) -> int:
        """Every sync bumps the customer's fence once when it starts."""
        value = await self.pool.fetchval("SELECT fence FROM customer_sync WHERE customer_id = $1", customer_id)
        return int(value or 0)

    async def wait_for(
        self, check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not await check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            await asyncio.sleep(0.1)

    async def wait_features(self, customer_id: str, expected: set[str], timeout_s: float = 30.0) -> None:
        async def check() -> bool:
            return await self.features(customer_id) == expected

        try:
            await self.wait_for(check, timeout_s, f"{customer_id} to have {sorted(expected)}")
        except AssertionError:
            raise AssertionError(
                f"{customer_id}: view has {sorted(await self.features(customer_id))}, expected {sorted(expected)}"
            ) from None

    async def settle(self, timeout_s: float = 60.0) -> None:
        """Until every webhook was delivered, every job ran, and every message was published."""
        await self.ctl.wait_idle(timeout_s=timeout_s)

        async def quiet() -> bool:
            queued = await self.redis.zcard(self.keys.queue)
            running = await self.redis.zcard(self.keys.leases)
            unpublished = await self.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            return bool(queued == 0 and running == 0 and unpublished == 0)

        await self.wait_for(quiet, timeout_s, "the workers to go quiet")
        await asyncio.sleep(0.3)
        await self.wait_for(quiet, timeout_s, "the workers to go quiet")

    # --- driving Stripe ---------------------------------------------------------------------

    async def product(self, name: str, features: list[str], *, metadata_features: str | None = None,
                      interval: str = "month") -> tuple[str, str]:
        """A product with these Product Features attached, and a recurring price: (product, price)."""
        metadata = {"features": metadata_features} if metadata_features is not None else {}
        product = await self.stripe.v1.products.create_async({"name": name, "metadata": metadata})
        for lookup_key in features:
            feature = await self.feature(lookup_key)
            await self.stripe.v1.products.features.create_async(product.id, {"entitlement_feature": feature})
        price = await self.stripe.v1.prices.create_async(
            {"product": product.id, "unit_amount": 1000, "currency": "usd", "recurring": {"interval": interval}}
        )
        return product.id, price.id

    async def feature(self, lookup_key: str) -> str:
        if lookup_key not in self._features:
            created = await self.stripe.v1.entitlements.features.create_async(
                {"name": lookup_key.title(), "lookup_key": lookup_key}
            )
            self._features[lookup_key] = created.id
        return self._features[lookup_key]

    async def clock(self, frozen_time: int | None = None) -> tuple[str, int]:
        now = int(time.time()) if frozen_time is None else frozen_time
        clock = await self.stripe.v1.test_helpers.test_clocks.create_async({"frozen_time": now})
        return clock.id, now

    async def advance(self, clock_id: str, to: int) -> None:
        """Advance a test clock and wait until it is ready and its webhooks delivered."""
        await self.stripe.v1.test_helpers.test_clocks.advance_async(clock_id, {"frozen_time": to})
        await self.ctl.wait_idle(timeout_s=30)

    async def customer(self, *, clock: str | None = None, card: str | None = "pm_card_visa",
                       metadata: Mapping[str, str] | None = None) -> str:
        params: dict[str, Any] = {"email": "buyer@example.com", "metadata": dict(metadata or {})}
        if clock:
            params["test_clock"] = clock
        if card:
            params["payment_method"] = card
            params["invoice_settings"] = {"default_payment_method": card}
        created = await self.stripe.v1.customers.create_async(cast(CustomerCreateParams, params))
        return created.id

    async def subscribe(self, customer: str, *prices: str, **extra: Any) -> str:
        params = {"customer": customer, "items": [{"price": p} for p in prices], **extra}
        sub = await self.stripe.v1.subscriptions.create_async(cast(SubscriptionCreateParams, params))
        return sub.id

    async def checkout(self, price: str, *, user: str, clock: str | None = None, card: str | None = "pm_card_visa",
                       trial_days: int | None = None, missing_payment_method: str | None = None,
                       payment_link: str | None = None) -> dict[str, Any]:
        """A Checkout Session completed by the buyer; returns the completed session."""
        return await buy(self.stripe, self.ctl, price, user=user, card=card, clock=clock, trial_days=trial_days,
                         missing_payment_method=missing_payment_method, payment_link=payment_link)

    async def set_faults(self, **faults: Any) -> None:
        await self.ctl.set_webhook_faults(self.endpoint_id, **faults)


@contextlib.asynccontextmanager
async def running_stack(
    database_url: str,
    redis_url: str,
    *,
    workers: int = 2,
    faults: EndpointFaults | None = None,
    fake_settings: FakeSettings | None = None,
    worker_env: Mapping[str, str] | None = None,
    ingest_overrides: Mapping[str, Any] | None = None,
    thin: bool = False,
) -> AsyncIterator[Stack]:
    log_dir = Path(tempfile.mkdtemp(prefix="entitled-e2e-"))
    # The workers use a key of their own, so that what the service asks of Stripe can be told
    # from what the test does (tests/support/stripe_requests.py checks it at the session's end).
    fake = FakeStripe(api_keys=(API_KEY, SERVICE_KEY), settings=fake_settings, tick_interval_s=0.1,
                      check_shapes=True)
    async with fake.running() as running:
        ingest_port = free_port()
        ingest_url = f"http://127.0.0.1:{ingest_port}/webhooks/stripe"
        # `thin`: the endpoint gets `v2.core.event` notifications (`v1.`-prefixed types).
        endpoint = running.add_webhook_endpoint(ingest_url, faults=faults, thin=thin)
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            stripe_api_key=API_KEY,
            stripe_webhook_secret=[endpoint.secret],
            log_format="json",
            **dict(ingest_overrides or {}),
        )
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", ingest_port).start()
        http = stripe.AIOHTTPClient()
        client = stripe.StripeClient(API_KEY, base_addresses={"api": running.base_url}, http_client=http)
        pool = await db.create_pool(database_url)
        r = redis.asyncio.Redis.from_url(redis_url)
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "STRIPE_API_KEY": SERVICE_KEY,
            "STRIPE_API_BASE": running.base_url,
            "STRIPE_RATE_LIMIT": "200",
            "STRIPE_ENDPOINT_RATE_LIMIT": "200",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "WORKER_CONCURRENCY": "8",
            **dict(worker_env or {}),
        }
        stack = Stack(database_url, redis_url, running, running.control(), client, endpoint.id, ingest_url, pool,
                      r, env, log_dir)
        try:
            for _ in range(workers):
                stack.start_worker()
            yield stack
        finally:
            stack.stop_workers()
            RECORDED.extend(running.fake.requests.to_json())
            if running.core.shape_log is not None:
                SHAPE_PROBLEMS.update(running.core.shape_log.problems)
            await stack.ctl.close()
            await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
            await pool.close()
            await r.aclose()
            await runner.cleanup()
            if os.environ.get("ENTITLED_KEEP_LOGS"):
                print(f"worker logs kept in {log_dir}", file=sys.stderr)
