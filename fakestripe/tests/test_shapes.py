"""The fake's objects have exactly the top-level keys of Stripe's own example objects.

Stripe's `openapi/fixtures3.json` (kept at ../shared/stripe/fixtures3.json, beside the repo)
lists one example per object type. Every object the fake returns for the types the service
reads must have the same key set, so code written against the fake sees Stripe's shapes.
The only extra key allowed is `subscription.status_details`, which API version endive added
(stripe-python 16.1.0 declares it) after the fixtures file was generated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import stripe
from fake_helpers import Receiver, make_catalog

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "stripe" / "fixtures3.json"
EXTRA_KEYS = {"subscription": {"status_details"}}


def fixture_keys() -> dict[str, set[str]]:
    if not FIXTURES.exists():
        pytest.skip(f"{FIXTURES} is absent")
    resources: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return {name: set(obj) for name, obj in resources.items()}


def check(name: str, obj: dict[str, Any], expected: dict[str, set[str]]) -> None:
    keys = set(obj)
    allowed_extra = EXTRA_KEYS.get(name, set())
    assert expected[name] - keys == set(), f"{name} lacks {sorted(expected[name] - keys)}"
    assert keys - expected[name] - allowed_extra == set(), (
        f"{name} has extra {sorted(keys - expected[name])}"
    )


async def test_objects_have_stripes_key_sets(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    """Customer, subscription (+ item), price, product, product feature, feature, active
    entitlement (+ summary), Checkout Session, invoice, event, test clock, payment method,
    webhook endpoint and the deleted stubs all have fixtures3.json's top-level keys."""
    expected = fixture_keys()
    endpoint = await client.v1.webhook_endpoints.create_async(
        {"url": receiver.url, "enabled_events": ["*"]}
    )
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
    session = await client.v1.checkout.sessions.create_async(
        {
            "mode": "subscription",
            "line_items": [{"price": catalog.price.id, "quantity": 1}],
            "success_url": "https://x",
        }
    )
    invoice = await client.v1.invoices.retrieve_async(str(sub.latest_invoice))
    product_features = await client.v1.products.features.list_async(catalog.product.id)
    entitlements = await client.v1.entitlements.active_entitlements.list_async(
        {"customer": customer.id}
    )
    events = await client.v1.events.list_async(
        {"type": "entitlements.active_entitlement_summary.updated"}
    )
    assert customer.invoice_settings is not None
    pm = await client.v1.payment_methods.retrieve_async(
        str(customer.invoice_settings.default_payment_method)
    )

    check("customer", customer.to_dict(), expected)
    check("subscription", sub.to_dict(), expected)
    check("subscription_item", sub["items"].data[0].to_dict(), expected)
    check("price", catalog.price.to_dict(), expected)
    check("product", catalog.product.to_dict(), expected)
    check("product_feature", product_features.data[0].to_dict(), expected)
    check("entitlements.feature", catalog.features[0].to_dict(), expected)
    check("entitlements.active_entitlement", entitlements.data[0].to_dict(), expected)
    check("entitlements.active_entitlement_summary", events.data[0].data.object.to_dict(), expected)
    check("checkout.session", session.to_dict(), expected)
    check("invoice", invoice.to_dict(), expected)
    check("line_item", invoice.lines.data[0].to_dict(), expected)
    check("event", events.data[0].to_dict(), expected)
    check("test_helpers.test_clock", clock.to_dict(), expected)
    check("payment_method", pm.to_dict(), expected)
    listed = await client.v1.webhook_endpoints.retrieve_async(endpoint.id)
    check("webhook_endpoint", listed.to_dict(), expected)

    deleted_pf = await client.v1.products.features.delete_async(
        catalog.product.id, product_features.data[0].id
    )
    check("deleted_product_feature", deleted_pf.to_dict(), expected)
    deleted_we = await client.v1.webhook_endpoints.delete_async(endpoint.id)
    check("deleted_webhook_endpoint", deleted_we.to_dict(), expected)
    other = await client.v1.customers.create_async({"email": "gone@example.com"})
    deleted_customer = await client.v1.customers.delete_async(other.id)
    check("deleted_customer", deleted_customer.to_dict(), expected)
    deleted_clock = await client.v1.test_helpers.test_clocks.delete_async(clock.id)
    check("deleted_test_helpers.test_clock", deleted_clock.to_dict(), expected)


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
    assert invoice.to_dict()["subscription"] is None
    assert invoice.status_transitions.finalized_at is not None
    assert invoice.status_transitions.paid_at is not None
    item = sub["items"].data[0]
    assert item.current_period_end > item.current_period_start
    assert "current_period_end" not in sub.to_dict()
