"""Every kind of object the fake serves has only the keys stripe-python 16.1.0 declares for it.

The fake checks each answer and webhook payload against the SDK's resource classes as it goes
(`FakeStripe(check_shapes=True)`, `fakestripe.shape_log`, built on `fakestripe.grounding`):
keys the class does not declare, and non-optional ones absent, through nested objects, lists and
expanded objects, and thin `v2.core.event` payloads against their `stripe.events` class.
tests/conftest.py fails the run if any test's fake served such an object; the test below drives
one of every kind the fake renders (found in its source, so a new kind must be added here) and
checks that each was seen and none had a problem. Nothing is read from outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import stripe
from fake_helpers import Receiver, make_catalog

from fakestripe import FakeStripe, FakeStripeControl

SOURCE = Path(__file__).resolve().parents[1] / "src" / "fakestripe"
LITERAL = re.compile(r'"object": "([a-z0-9_.]+)"')


def modeled_types() -> set[str]:
    """Every `"object": "..."` the fake's source renders."""
    found: set[str] = set()
    for path in SOURCE.glob("*.py"):
        found |= set(LITERAL.findall(path.read_text()))
    return found


async def test_every_kind_of_object_has_only_the_sdks_keys(
    fake: FakeStripe, client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """Customer (+ deleted), subscription, subscription item, plan, price, product, product
    feature (+ deleted), feature, active entitlement (+ summary), Checkout Session and its line
    items, invoice with its payments and lines, event (snapshot and thin), test clock
    (+ deleted), payment method, payment link, payment intent, charge, refund, dispute and
    webhook endpoint (+ deleted): each seen, none with a key the SDK does not describe."""
    assert modeled_types() >= {"subscription", "invoice", "v2.core.event", "dispute"}
    endpoint = await client.v1.webhook_endpoints.create_async(
        {"url": receiver.url, "enabled_events": ["*"]}
    )
    await ctl.add_webhook_endpoint(receiver.url, thin=True)
    catalog = await make_catalog(client, ("pro",))
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": 1_900_000_000})
    customer = await client.v1.customers.create_async(
        {
            "email": "k@example.com",
            "test_clock": clock.id,
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}]}
    )
    await client.v1.subscription_items.list_async({"subscription": sub.id})
    await client.v1.invoices.retrieve_async(
        str(sub.latest_invoice), {"expand": ["payments", "customer"]}
    )
    await client.v1.subscriptions.list_async({"customer": customer.id, "expand": ["data.customer"]})
    await client.v1.entitlements.active_entitlements.list_async({"customer": customer.id})
    assert customer.invoice_settings is not None
    await client.v1.payment_methods.retrieve_async(
        str(customer.invoice_settings.default_payment_method)
    )
    await client.v1.products.features.list_async(catalog.product.id)
    await client.v1.entitlements.features.list_async()
    await client.v1.prices.list_async({"expand": ["data.product"]})

    one_time = await client.v1.prices.create_async(
        {"product": catalog.product.id, "unit_amount": 900, "currency": "usd"}
    )
    session = await client.v1.checkout.sessions.create_async(
        {
            "mode": "payment",
            "line_items": [{"price": one_time.id, "quantity": 1}],
            "success_url": "https://example.com/ok",
        }
    )
    done = await ctl.complete_checkout(session.id, payment_method="pm_card_createDispute")
    await client.v1.checkout.sessions.line_items.list_async(session.id)
    await client.v1.checkout.sessions.retrieve_async(session.id)
    pi = await client.v1.payment_intents.retrieve_async(done["payment_intent"])
    await client.v1.charges.list_async({"payment_intent": pi.id})
    disputes = await client.v1.disputes.list_async({"payment_intent": pi.id})
    await client.v1.disputes.retrieve_async(disputes.data[0].id)
    other = await client.v1.checkout.sessions.create_async(
        {
            "mode": "payment",
            "line_items": [{"price": one_time.id, "quantity": 1}],
            "success_url": "https://example.com/ok",
        }
    )
    paid = await ctl.complete_checkout(other.id, payment_method="pm_card_visa")
    await client.v1.refunds.create_async({"payment_intent": paid["payment_intent"]})
    await client.v1.payment_links.create_async(
        {"line_items": [{"price": one_time.id, "quantity": 1}]}
    )

    await ctl.wait_idle()
    events = await client.v1.events.list_async({"limit": 100})
    thin = next(r.event for r in receiver.received if r.event["object"] == "v2.core.event")
    async with (
        aiohttp.ClientSession(headers={"Authorization": "Bearer sk_test_fake"}) as http,
        http.get(f"{fake.base_url}/v2/core/events/{thin['id']}") as resp,
    ):
        assert resp.status == 200
    await client.v1.events.retrieve_async(events.data[0].id)
    await client.v1.webhook_endpoints.retrieve_async(endpoint.id)

    product_features = await client.v1.products.features.list_async(catalog.product.id)
    await client.v1.products.features.delete_async(catalog.product.id, product_features.data[0].id)
    await client.v1.webhook_endpoints.delete_async(endpoint.id)
    gone = await client.v1.customers.create_async({"email": "gone@example.com"})
    await client.v1.customers.delete_async(gone.id)
    await client.v1.customers.retrieve_async(gone.id)
    await client.v1.test_helpers.test_clocks.delete_async(clock.id)
    await ctl.wait_idle()

    seen = await ctl.shapes()
    assert seen["enabled"] is True
    assert seen["problems"] == [], "\n".join(seen["problems"])
    assert modeled_types() - set(seen["types"]) == set(), "kinds of object this test never saw"


async def test_invoice_names_its_subscription_in_parent(client: stripe.StripeClient) -> None:
    """Since basil an invoice's subscription is at `parent.subscription_details.subscription`
    and the period is on the items; the top-level `subscription` field is null."""
    catalog = await make_catalog(client)
    customer = await client.v1.customers.create_async(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}]}
    )
    invoice = await client.v1.invoices.retrieve_async(str(sub.latest_invoice))
    assert invoice.parent is not None
    assert invoice.parent.type == "subscription_details"
    assert invoice.parent.subscription_details is not None
    assert invoice.parent.subscription_details.subscription == sub.id
    assert "subscription" not in invoice.to_dict()
    assert invoice.status_transitions.finalized_at is not None
    assert invoice.status_transitions.paid_at is not None
    item = sub["items"].data[0]
    assert item.current_period_end > item.current_period_start
    assert "current_period_end" not in sub.to_dict()
