"""The fake does what Stripe does where an earlier fake (and the service with it) misread it:
thin `v1.` events and thin-only status types, catalog changes that wait for the next period,
`send_invoice` subscriptions, flexible billing with per-item periods, `pause_collection` on a
past_due subscription, retries by key mode and endpoint-concurrency 429s. Each test cites the
Stripe page the behaviour comes from (docs/contract.md §4, §5, §9)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import stripe
from fake_helpers import (
    DAY,
    HOUR,
    START,
    Receiver,
    advance,
    card_customer,
    close_http,
    make_catalog,
)
from stripe.params import SubscriptionCreateParamsItem

from fakestripe import FakeStripe, FakeStripeControl

# Thin events ------------------------------------------------------------------------------


async def test_thin_endpoint_gets_the_thin_only_past_due_type(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """A subscription going past_due sends a thin destination `v1.customer.subscription.updated`
    and the thin-only `v1.customer.subscription.past_due`, which has no snapshot event in
    `/v1/events`. Source: https://docs.stripe.com/event-destinations (thin events for API v1
    resources) and stripe-python 16.1.0's `stripe.events` classes."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await card_customer(client, clock.id, "pm_card_chargeCustomerFail")
    await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}], "trial_period_days": 1}
    )
    await ctl.add_webhook_endpoint(receiver.url, ["*"], thin=True)
    await advance(client, ctl, clock.id, START + DAY + HOUR)
    types = receiver.types()
    assert all(t.startswith("v1.") for t in types), types
    assert "v1.customer.subscription.updated" in types
    assert "v1.customer.subscription.past_due" in types
    thin_only = next(
        e for e in receiver.events() if e["type"] == "v1.customer.subscription.past_due"
    )
    assert thin_only["object"] == "v2.core.event"
    assert thin_only["related_object"]["type"] == "subscription"
    listed = await client.v1.events.list_async({"limit": 100})
    assert not any(e.type.endswith("subscription.past_due") for e in listed.data)


# Catalog changes ---------------------------------------------------------------------------


async def test_attached_feature_reaches_an_existing_subscription_at_its_next_period(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """A feature attached to a product fires no event and is not active for an existing
    subscriber until its next billing period starts: "Existing subscriptions will create
    active entitlements for any product feature changes at the start of the next billing
    period" (https://docs.stripe.com/billing/entitlements)."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await card_customer(client, clock.id)
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}]}
    )
    sso = await client.v1.entitlements.features.create_async({"name": "SSO", "lookup_key": "sso"})
    await ctl.add_webhook_endpoint(receiver.url)
    await client.v1.products.features.create_async(
        catalog.product.id, {"entitlement_feature": sso.id}
    )
    await ctl.wait_idle()
    assert receiver.types() == []

    async def keys() -> list[str]:
        page = await client.v1.entitlements.active_entitlements.list_async(
            {"customer": customer.id}
        )
        return sorted(e.lookup_key for e in page.data)

    assert await keys() == ["pro"]
    await advance(client, ctl, clock.id, sub["items"].data[0].current_period_end + 1)
    assert await keys() == ["pro", "sso"]
    assert "entitlements.active_entitlement_summary.updated" in receiver.types()


# send_invoice -----------------------------------------------------------------------------


async def test_send_invoice_is_active_at_once_and_past_due_only_after_its_due_date(
    client: stripe.StripeClient, ctl: FakeStripeControl
) -> None:
    """`collection_method=send_invoice` with `days_until_due`: active from creation, no charge;
    the invoice is finalized with `due_date` = finalization + days_until_due, and only an
    invoice still open at its due date makes the subscription past_due; paying it out of band
    makes it active again. Sources: https://docs.stripe.com/billing/invoices/subscription,
    https://docs.stripe.com/billing/subscriptions/overview#payment-status."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await client.v1.customers.create_async({"test_clock": clock.id})
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.subscriptions.create_async(
            {
                "customer": customer.id,
                "items": [{"price": catalog.price.id}],
                "collection_method": "send_invoice",
            }
        )
    assert missing.value.param == "days_until_due"
    sub = await client.v1.subscriptions.create_async(
        {
            "customer": customer.id,
            "items": [{"price": catalog.price.id}],
            "collection_method": "send_invoice",
            "days_until_due": 7,
        }
    )
    assert (sub.status, sub.collection_method, sub.days_until_due) == ("active", "send_invoice", 7)
    await advance(client, ctl, clock.id, START + HOUR + 1)
    invoice = await client.v1.invoices.retrieve_async(str(sub.latest_invoice))
    assert invoice.status == "open"
    assert invoice.collection_method == "send_invoice"
    finalized = invoice.status_transitions.finalized_at
    assert finalized is not None
    assert invoice.due_date == finalized + 7 * DAY
    await advance(client, ctl, clock.id, invoice.due_date - 60)
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == "active"
    await advance(client, ctl, clock.id, invoice.due_date + 60)
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == "past_due"
    await client.v1.invoices.pay_async(invoice.id, {"paid_out_of_band": True})
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == "active"


# Flexible billing ----------------------------------------------------------------------------


async def test_flexible_billing_is_the_default_and_allows_mixed_intervals(
    client: stripe.StripeClient,
) -> None:
    """New subscriptions are in flexible billing mode (the default since 2025-09-30.clover:
    https://docs.stripe.com/billing/subscriptions/billing-mode); only flexible mode takes items
    of different intervals, each with its own period, and `cancel_at_period_end` cancels at the
    earliest item's end (https://docs.stripe.com/billing/subscriptions/mixed-interval)."""
    monthly = await make_catalog(client, ("pro",))
    yearly = await make_catalog(client, ("archive",), name="Archive", interval="year")
    customer = await client.v1.customers.create_async(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    items: list[SubscriptionCreateParamsItem] = [
        {"price": monthly.price.id},
        {"price": yearly.price.id},
    ]
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.subscriptions.create_async(
            {"customer": customer.id, "items": items, "billing_mode": {"type": "classic"}}
        )
    sub = await client.v1.subscriptions.create_async({"customer": customer.id, "items": items})
    assert sub.billing_mode.type == "flexible"
    ends = {i.price.id: i.current_period_end for i in sub["items"].data}
    assert ends[yearly.price.id] - ends[monthly.price.id] > 300 * DAY
    updated = await client.v1.subscriptions.update_async(sub.id, {"cancel_at_period_end": True})
    assert updated.cancel_at == ends[monthly.price.id]
    classic = await client.v1.subscriptions.create_async(
        {
            "customer": customer.id,
            "items": [{"price": monthly.price.id}],
            "billing_mode": {"type": "classic"},
        }
    )
    assert classic.billing_mode.type == "classic"


async def test_embedded_items_stop_at_ten_and_subscription_items_lists_the_rest(
    client: stripe.StripeClient,
) -> None:
    """A subscription's embedded `items` list holds its first 10 items with `has_more`; the
    rest are read with `GET /v1/subscription_items?subscription=`
    (https://docs.stripe.com/api/subscription_items/list; lists default to 10:
    https://docs.stripe.com/api/pagination)."""
    customer = await client.v1.customers.create_async(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    prices = [(await make_catalog(client, (f"f{i}",), name=f"P{i}")).price.id for i in range(12)]
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": p} for p in prices]}
    )
    assert len(sub["items"].data) == 10
    assert sub["items"].has_more is True
    page = await client.v1.subscription_items.list_async({"subscription": sub.id, "limit": 100})
    assert sorted(i.price.id for i in page.data) == sorted(prices)
    assert page.has_more is False
    walked = [
        i.id
        async for i in (
            await client.v1.subscription_items.list_async({"subscription": sub.id, "limit": 5})
        ).auto_paging_iter()
    ]
    assert len(walked) == len(set(walked)) == 12


# pause_collection ----------------------------------------------------------------------------


async def test_pause_collection_on_a_past_due_subscription_keeps_its_entitlements(
    client: stripe.StripeClient, ctl: FakeStripeControl
) -> None:
    """Pausing collection on a past_due subscription leaves it past_due with its features:
    "your customer retains access" (https://docs.stripe.com/billing/subscriptions/pause-payment);
    Stripe's entitlements follow past_due subscriptions (https://docs.stripe.com/billing/entitlements)."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await card_customer(client, clock.id, "pm_card_chargeCustomerFail")
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}], "trial_period_days": 1}
    )
    await advance(client, ctl, clock.id, START + DAY + HOUR)
    paused = await client.v1.subscriptions.update_async(
        sub.id, {"pause_collection": {"behavior": "keep_as_draft"}}
    )
    assert paused.status == "past_due"
    assert paused.pause_collection is not None
    assert paused.pause_collection.behavior == "keep_as_draft"
    await advance(client, ctl, clock.id, START + 2 * DAY)
    listed = await client.v1.entitlements.active_entitlements.list_async({"customer": customer.id})
    assert [e.lookup_key for e in listed.data] == ["pro"]
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == "past_due"


# Webhook retries by mode -------------------------------------------------------------------


@pytest.mark.parametrize(("key", "attempts"), [("sk_test_modes", 4), ("sk_live_modes", 10)])
async def test_webhook_retries_follow_the_keys_mode(key: str, attempts: int) -> None:
    """A failing endpoint is tried once and retried 3 times over about 3 hours in test mode,
    and 9 times over about 3 days in live mode
    (https://docs.stripe.com/webhooks#automatic-retries: "In test mode, Stripe retries three
    times over a few hours"; live "for up to three days")."""
    async with (
        FakeStripe(api_keys=(key,), seed=3, tick_interval_s=0.05).running() as fake,
        Receiver(default_status=500).running() as receiver,
        FakeStripeControl(fake.base_url) as ctl,
    ):
        endpoint = await ctl.add_webhook_endpoint(
            receiver.url, ["customer.created"], faults={"retry_backoff_scale": 0.00002}
        )
        http = stripe.AIOHTTPClient()
        try:
            client = stripe.StripeClient(
                key, base_addresses={"api": fake.base_url}, http_client=http
            )
            await client.v1.customers.create_async({})
            await ctl.wait_idle(timeout_s=20)
        finally:
            await close_http(http)
        tried = (await ctl.deliveries(endpoint_id=endpoint["id"]))["deliveries"]
        assert len(tried) == attempts
        scale = 0.00002
        total = sum(d.get("next_retry_in_s") or 0 for d in tried) / scale
        assert (total < 5 * HOUR) if attempts == 4 else (2 * DAY < total < 3 * DAY)


# Endpoint concurrency ---------------------------------------------------------------------


async def test_endpoint_concurrency_429_carries_no_retry_headers(
    fake: FakeStripe, client: stripe.StripeClient, ctl: FakeStripeControl
) -> None:
    """Past `endpoint_concurrency` requests in flight on one endpoint, Stripe's concurrency
    limiter answers 429 with `Stripe-Rate-Limited-Reason: endpoint-concurrency` and neither
    `Retry-After` nor `Stripe-Should-Retry` (https://docs.stripe.com/rate-limits, "API
    limiters"); other endpoints are not affected."""
    customer = await client.v1.customers.create_async({})
    await ctl.set_api_faults(endpoint_concurrency=2, latency_ms=200)
    headers = {"Authorization": "Bearer sk_test_fake"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def get(path: str) -> tuple[int, dict[str, str], str]:
            async with session.get(f"{fake.base_url}{path}") as resp:
                body = await resp.json()
                return resp.status, dict(resp.headers), body.get("error", {}).get("code", "")

        results = await asyncio.gather(
            *(get(f"/v1/customers/{customer.id}") for _ in range(6)), get("/v1/products")
        )
    await ctl.clear_api_faults()
    limited = [r for r in results[:6] if r[0] == 429]
    assert len(limited) == 4
    for _, got, code in limited:
        assert got["Stripe-Rate-Limited-Reason"] == "endpoint-concurrency"
        assert "Retry-After" not in got
        assert "Stripe-Should-Retry" not in got
        assert code == "rate_limit"
    assert results[6][0] == 200
