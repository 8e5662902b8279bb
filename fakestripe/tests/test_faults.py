"""Injected faults behave as described: webhook duplicates (same id and new id), drops,
reordering, delay and retries; API 429 / 500 / latency / connection resets / a requests-per-second
limit, each seen by the official SDK as it would see Stripe's; request counts in `/_fake/stats`.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import stripe
from fake_helpers import Receiver, close_http, make_catalog

from fakestripe import FakeStripe, FakeStripeControl


async def burst(client: stripe.StripeClient, ctl: FakeStripeControl) -> None:
    """One paid checkout: eleven events within a second."""
    catalog = await make_catalog(client)
    session = await client.v1.checkout.sessions.create_async(
        {"mode": "subscription", "line_items": [{"price": catalog.price.id, "quantity": 1}]}
    )
    await ctl.complete_checkout(session.id, payment_method="pm_card_visa")


async def emitted_ids(client: stripe.StripeClient) -> list[str]:
    page = await client.v1.events.list_async({"limit": 100})
    return [e.id async for e in page.auto_paging_iter()][::-1]


async def test_duplicates_with_the_same_id(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """`duplicate_rate=1` sends every event twice with the same id."""
    await burst(client, ctl)
    endpoint = await ctl.add_webhook_endpoint(
        receiver.url, faults={"duplicate_rate": 1.0, "seed": 1}
    )
    await client.v1.customers.create_async({})
    await ctl.wait_idle()
    assert receiver.types() == ["customer.created", "customer.created"]
    assert receiver.ids()[0] == receiver.ids()[1]
    deliveries = (await ctl.deliveries(endpoint_id=endpoint["id"]))["deliveries"]
    assert sorted(str(d["duplicate"]) for d in deliveries) == ["None", "same_id"]


async def test_duplicates_with_a_new_id(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """`duplicate_new_id_rate=1` also sends a second event, with a new id, for the same change;
    both are in `GET /v1/events`, as Stripe's own duplicates would be."""
    await ctl.add_webhook_endpoint(receiver.url, faults={"duplicate_new_id_rate": 1.0, "seed": 1})
    customer = await client.v1.customers.create_async({})
    await ctl.wait_idle()
    first, second = receiver.events()
    assert first["id"] != second["id"]
    assert first["type"] == second["type"] == "customer.created"
    assert first["data"] == second["data"]
    assert first["data"]["object"]["id"] == customer.id
    assert set(await emitted_ids(client)) == {first["id"], second["id"]}


async def test_drops_leave_the_event_listed(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """A dropped event is never delivered (absent from deliveries, listed as dropped) but is
    still in `GET /v1/events`, so reconciliation can find it."""
    endpoint = await ctl.add_webhook_endpoint(receiver.url, faults={"drop_rate": 1.0})
    customer = await client.v1.customers.create_async({})
    await ctl.wait_idle()
    assert receiver.received == []
    report = await ctl.deliveries(endpoint_id=endpoint["id"])
    assert report["deliveries"] == []
    [dropped] = report["dropped"]
    events = await client.v1.events.list_async({"type": "customer.created"})
    assert events.data[0].id == dropped["event_id"]
    assert events.data[0].data.object["id"] == customer.id


async def test_shuffle_reorders_a_burst(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """`shuffle_window_s` delivers the events of a burst in a random (seeded) order, all of them."""
    await ctl.add_webhook_endpoint(receiver.url, faults={"shuffle_window_s": 0.3, "seed": 3})
    await burst(client, ctl)
    await ctl.wait_idle()
    emitted = await emitted_ids(client)
    assert len(emitted) == 13  # catalog (2: product, price; Stripe has no feature events) + checkout (11)
    assert sorted(receiver.ids()) == sorted(emitted)
    assert receiver.ids() != emitted


async def test_delay(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """`delay_s` holds each delivery back by that long (a `[min, max]` range is also accepted)."""
    await ctl.add_webhook_endpoint(receiver.url, faults={"delay_s": 0.3})
    started = time.time()
    await client.v1.customers.create_async({})
    await ctl.wait_idle()
    assert receiver.received[0].at - started >= 0.3
    with pytest.raises(Exception, match="delay_s"):
        await ctl.add_webhook_endpoint(receiver.url, faults={"delay_s": [2, 1]})


async def test_a_delay_holds_back_only_later_events(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """A delivery's time is fixed when its event happens: a delay set while an event is queued
    (here held by another delay) does not move it; the next event waits the new delay."""
    endpoint = await ctl.add_webhook_endpoint(receiver.url, faults={"delay_s": 0.3})
    started = time.time()
    await client.v1.customers.create_async({})
    await ctl.set_webhook_faults(endpoint["id"], delay_s=1.5)
    await client.v1.customers.create_async({})
    await ctl.wait_idle()
    first, second = (r.at - started for r in receiver.received)
    assert 0.3 <= first < 1.0
    assert second >= 1.5


async def test_retries_after_a_500(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """A non-2xx answer is retried with Stripe's backoff (compressed by `retry_backoff_scale`):
    the same event arrives again until it is accepted; each attempt is recorded."""
    endpoint = await ctl.add_webhook_endpoint(receiver.url, faults={"retry_backoff_scale": 0.002})
    receiver.statuses = [500, 503]
    await client.v1.customers.create_async({})
    await ctl.wait_idle(timeout_s=10)
    assert len(set(receiver.ids())) == 1
    assert len(receiver.ids()) == 3
    attempts = [
        (d["attempt"], d["status"])
        for d in (await ctl.deliveries(endpoint_id=endpoint["id"]))["deliveries"]
    ]
    assert attempts == [(1, 500), (2, 503), (3, 200)]
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    assert gaps[0] >= 60 * 0.002
    assert gaps[1] >= 300 * 0.002


async def test_unreachable_endpoint_and_wait_idle(
    client: stripe.StripeClient, ctl: FakeStripeControl
) -> None:
    """A connection error is a failed attempt; while its retry is pending `wait_idle` times
    out, unless retries are ignored; with `retry: false` nothing more is tried."""
    endpoint = await ctl.add_webhook_endpoint(
        "http://127.0.0.1:9/nowhere", faults={"retry_backoff_scale": 1.0}
    )
    await client.v1.customers.create_async({})
    with pytest.raises(TimeoutError):
        await ctl.wait_idle(timeout_s=0.3)
    await ctl.wait_idle(timeout_s=5, include_retries=False)
    [attempt] = (await ctl.deliveries(endpoint_id=endpoint["id"]))["deliveries"]
    assert attempt["status"] is None
    assert attempt["error"]
    await ctl.set_webhook_faults(endpoint["id"], retry=False)
    await client.v1.customers.create_async({})
    await ctl.wait_idle(timeout_s=5, include_retries=False)


async def test_api_faults_seen_by_the_sdk(
    fake: FakeStripe, client: stripe.StripeClient, ctl: FakeStripeControl
) -> None:
    """429 (`Stripe-Should-Retry: true`) -> RateLimitError, 500 -> APIError, a reset
    connection -> APIConnectionError, latency slows answers; `methods` limits faults to reads."""
    await client.v1.customers.create_async({})
    await ctl.set_api_faults(rate_429=1.0, methods=["GET"])
    await client.v1.customers.create_async({})
    with pytest.raises(stripe.RateLimitError):
        await client.v1.customers.list_async()
    async with (
        aiohttp.ClientSession(headers={"Authorization": "Bearer sk_test_fake"}) as session,
        session.get(f"{fake.base_url}/v1/customers") as resp,
    ):
        assert resp.status == 429
        assert resp.headers["Stripe-Should-Retry"] == "true"
        assert (await resp.json())["error"]["code"] == "rate_limit"
    await ctl.set_api_faults(rate_500=1.0)
    with pytest.raises(stripe.APIError):
        await client.v1.customers.list_async()
    await ctl.set_api_faults(rate_reset=1.0)
    with pytest.raises(stripe.APIConnectionError):
        await client.v1.customers.list_async()
    await ctl.set_api_faults(latency_ms=150)
    started = time.monotonic()
    await client.v1.customers.list_async()
    assert time.monotonic() - started >= 0.15
    await ctl.clear_api_faults()


async def test_sdk_retries_through_flaky_api(fake: FakeStripe, ctl: FakeStripeControl) -> None:
    """With `max_network_retries`, the SDK gets through seeded 500s and resets (the fake's
    counts show the failed attempts)."""
    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(
        "sk_test_fake",
        base_addresses={"api": fake.base_url},
        http_client=http,
        max_network_retries=5,
    )
    try:
        await ctl.set_api_faults(rate_500=0.3, rate_reset=0.1, seed=15)
        await ctl.reset_stats()
        for _ in range(3):
            await client.v1.customers.list_async()
    finally:
        await close_http(http)
    stats = await ctl.stats()
    route = stats["routes"]["GET /v1/customers"]
    assert route.get("200") == 3
    assert route["count"] == 5
    assert (route.get("500"), route.get("reset")) == (1, 1)


async def test_rps_limit_and_stats(client: stripe.StripeClient, ctl: FakeStripeControl) -> None:
    """Past `rps_limit` requests per second the API answers 429 `rate_limit`; `/_fake/stats`
    counts requests per (method, route template) and status, and the busiest second."""
    customer = await client.v1.customers.create_async({})
    await ctl.reset_stats()
    await ctl.set_api_faults(rps_limit=5)
    results = await asyncio.gather(
        *(client.v1.customers.retrieve_async(customer.id) for _ in range(12)),
        return_exceptions=True,
    )
    limited = [r for r in results if isinstance(r, stripe.RateLimitError)]
    assert len(limited) == 7
    stats = await ctl.stats()
    assert stats["routes"]["GET /v1/customers/{id}"] == {"count": 12, "200": 5, "429": 7}
    assert stats["total"] == 12
    assert stats["max_rps"] >= 12
    await ctl.clear_api_faults()
    await ctl.reset_stats()
    assert (await ctl.stats())["total"] == 0
