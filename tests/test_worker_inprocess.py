"""The worker's pieces in this process: timers and reconciliation queue work, and the
arq worker (burst mode: it stops once the queue is empty) carries it out against the fake
Stripe, real Redis and real Postgres. No webhook endpoint is registered: whatever reaches the
database came through the piece under test. The end-to-end tests run worker processes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import stripe

from fakestripe import FakeStripe
from shared.bootstrap import Services, bootstrap
from shared.coordination import EVENTS_POLL, Keys, Unit
from shared.settings import Duration, Settings
from tests.conftest import API_KEY
from worker import reconcile, timers
from worker.main import build_worker


@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    async with FakeStripe(api_keys=(API_KEY,), tick_interval_s=0.1).running() as running:
        yield running


@pytest.fixture
def worker_settings(settings: Settings, fake: Any) -> Settings:
    return settings.model_copy(update={"stripe_api_base": fake.base_url, "coalesce_window": Duration(0.05),
                                       "stripe_rate_limit": 200.0, "stripe_endpoint_rate_limit": 200.0})


@pytest.fixture
async def deps(worker_settings: Settings) -> AsyncIterator[Services]:
    async with bootstrap(worker_settings, postgres=True, stripe_client=True,
                         keys=Keys(prefix=worker_settings.redis_prefix)) as services:
        yield services


async def drain(settings: Settings) -> None:
    """Run an arq worker in burst mode until no job is left (deferred ones included)."""
    worker = build_worker(settings, burst=True)
    try:
        await worker.main()
    finally:
        await worker.close()


@pytest.fixture
async def client(fake: Any) -> AsyncIterator[stripe.StripeClient]:
    http = stripe.AIOHTTPClient()
    yield stripe.StripeClient(API_KEY, base_addresses={"api": fake.base_url}, http_client=http)
    await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped


async def subscribed_customer(client: stripe.StripeClient, features: list[str]) -> str:
    product = await client.v1.products.create_async({"name": "Pro"})
    for key in features:
        found = await client.v1.entitlements.features.list_async({"lookup_key": key})
        feature = found.data[0] if found.data else await client.v1.entitlements.features.create_async(
            {"name": key, "lookup_key": key})
        await client.v1.products.features.create_async(product.id, {"entitlement_feature": feature.id})
    price = await client.v1.prices.create_async(
        {"product": product.id, "unit_amount": 1000, "currency": "usd", "recurring": {"interval": "month"}})
    customer = await client.v1.customers.create_async(
        {"metadata": {"user_id": "u_1"}, "payment_method": "pm_card_visa",
         "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    await client.v1.subscriptions.create_async({"customer": customer.id, "items": [{"price": price.id}]})
    return customer.id


async def features(deps: Services, customer_id: str) -> set[str]:
    rows = await deps.pool.fetch("SELECT feature FROM active_entitlements WHERE customer_id = $1", customer_id)
    return {r["feature"] for r in rows}


async def test_a_due_recheck_syncs_its_customer(deps: Services, worker_settings: Settings, client: stripe.StripeClient) -> None:
    """The timer's tick turns a due re-check into a sync; one not yet due waits."""
    due = await subscribed_customer(client, ["pro"])
    later = await subscribed_customer(client, ["pro"])
    now_ms = int(time.time() * 1000)
    await deps.coordinator.set_recheck(due, now_ms - 1)
    await deps.coordinator.set_recheck(later, now_ms + 3_600_000)
    rechecked, revived = await deps.coordinator.fire_due()
    assert (rechecked, revived) == ([Unit.customer(due)], [])
    await drain(worker_settings)
    assert await features(deps, due) == {"pro"}
    assert await features(deps, later) == set()


async def test_the_backstop_queues_customers_whose_recheck_redis_lost(
    deps: Services, worker_settings: Settings, client: stripe.StripeClient
) -> None:
    """Redis lost the re-check (restarted empty): Postgres still says it is overdue, and the
    backstop queues that customer, and only that one."""
    cid = await subscribed_customer(client, ["pro"])
    await deps.pool.execute(
        "INSERT INTO customer_sync (customer_id, next_check_at) VALUES ($1, now() - interval '1 hour'),"
        " ('cus_notdue', now() + interval '1 hour')", cid)
    assert await timers.backstop(deps) == 1
    await drain(worker_settings)
    assert await features(deps, cid) == {"pro"}


async def test_the_events_poll_finds_events_no_webhook_delivered(
    deps: Services, worker_settings: Settings, client: stripe.StripeClient
) -> None:
    """The Events API poll (an internal unit) feeds each event like a webhook: the customer is
    synced, and the events are in the ledger with their source."""
    await deps.pool.execute(
        "INSERT INTO reconcile_state (name, cursor, info, updated_at) VALUES ('events', $1, '{}', now())",
        str(int(time.time()) - 60))
    cid = await subscribed_customer(client, ["pro", "export"])
    assert await deps.coordinator.accept(EVENTS_POLL, reason="reconcile", delay_ms=0) == "scheduled"
    await drain(worker_settings)
    assert await features(deps, cid) == {"pro", "export"}
    sources = {r["source"] for r in await deps.pool.fetch(
        "SELECT source FROM event_ledger WHERE customer_id = $1", cid)}
    assert sources == {"events_api"}


async def test_the_sweep_queues_customers_that_differ(deps: Services, worker_settings: Settings, client: stripe.StripeClient) -> None:
    cid = await subscribed_customer(client, ["pro"])
    result = await reconcile.sweep(deps)
    assert result["queued"] == 1
    await drain(worker_settings)
    assert await features(deps, cid) == {"pro"}
    assert (await reconcile.sweep(deps))["queued"] == 0


async def test_an_event_naming_an_internal_unit_is_refused_by_the_poller(deps: Services) -> None:
    """Internal units, on the Events API path: `"customer": "__events__"` queues nothing."""
    event = {"id": "evt_x1", "object": "event", "type": "invoice.paid", "created": int(time.time()),
             "livemode": False, "data": {"object": {"id": "in_1", "object": "invoice", "customer": "__events__"}}}
    assert await reconcile.feed_event(deps, event, "events_api") == "refused"
    assert await deps.redis.zcard(deps.keys.queue) == 0
