"""Stripe-shaped JSON for customers, the catalog, entitlements, clocks, events and endpoints.

Each builder returns a fresh dict whose top-level keys are exactly those of the object in
Stripe's `openapi/fixtures3.json` (tests/fakestripe/test_shapes.py checks it). Billing objects
(subscriptions, invoices, Checkout Sessions) are in `shapes_billing.py`.
"""

from __future__ import annotations

from typing import Any

from .store import (
    Customer,
    Feature,
    PaymentMethod,
    Price,
    Product,
    ProductFeature,
    Store,
    TestClock,
    WebhookEndpoint,
)

JSON = dict[str, Any]

EMPTY_ADDRESS: JSON = {
    "city": None,
    "country": None,
    "line1": None,
    "line2": None,
    "postal_code": None,
    "state": None,
}


def list_object(data: list[JSON], url: str, has_more: bool = False) -> JSON:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def deleted(object_id: str, object_type: str) -> JSON:
    return {"id": object_id, "object": object_type, "deleted": True}


def customer(c: Customer) -> JSON:
    if c.deleted:
        return deleted(c.id, "customer")
    return {
        "id": c.id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": c.created,
        "currency": c.currency,
        "default_source": None,
        "delinquent": False,
        "description": c.description,
        "discount": None,
        "email": c.email,
        "invoice_prefix": c.invoice_prefix,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": c.default_payment_method,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": dict(c.metadata),
        "name": c.name,
        "next_invoice_sequence": c.next_invoice_sequence,
        "phone": c.phone,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": c.test_clock,
    }


def payment_method(pm: PaymentMethod) -> JSON:
    return {
        "id": pm.id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": dict(EMPTY_ADDRESS),
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "card": {
            "brand": pm.brand,
            "checks": {
                "address_line1_check": None,
                "address_postal_code_check": None,
                "cvc_check": None,
            },
            "country": "US",
            "display_brand": pm.brand,
            "exp_month": 12,
            "exp_year": 2034,
            "fingerprint": "fake" + pm.last4,
            "funding": "credit",
            "generated_from": None,
            "last4": pm.last4,
            "networks": {"available": [pm.brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": pm.created,
        "customer": pm.customer,
        "customer_account": None,
        "livemode": False,
        "metadata": {},
        "type": "card",
    }


def product(p: Product) -> JSON:
    return {
        "id": p.id,
        "object": "product",
        "active": p.active,
        "created": p.created,
        "default_price": p.default_price,
        "description": p.description,
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": dict(p.metadata),
        "name": p.name,
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "type": "service",
        "unit_label": None,
        "updated": p.updated,
        "url": None,
    }


def price(p: Price) -> JSON:
    recurring = None
    if p.interval is not None:
        recurring = {
            "interval": p.interval,
            "interval_count": p.interval_count,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }
    return {
        "id": p.id,
        "object": "price",
        "active": p.active,
        "billing_scheme": "per_unit",
        "created": p.created,
        "currency": p.currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": p.lookup_key,
        "metadata": dict(p.metadata),
        "nickname": p.nickname,
        "product": p.product,
        "recurring": recurring,
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": p.unit_amount,
        "unit_amount_decimal": str(p.unit_amount),
    }


def plan(p: Price) -> JSON:
    """The legacy `plan` view of a recurring price (still on subscription items)."""
    return {
        "id": p.id,
        "object": "plan",
        "active": p.active,
        "amount": p.unit_amount,
        "amount_decimal": str(p.unit_amount),
        "billing_scheme": "per_unit",
        "created": p.created,
        "currency": p.currency,
        "interval": p.interval,
        "interval_count": p.interval_count,
        "livemode": False,
        "metadata": dict(p.metadata),
        "meter": None,
        "nickname": p.nickname,
        "product": p.product,
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


def feature(f: Feature) -> JSON:
    return {
        "id": f.id,
        "object": "entitlements.feature",
        "active": f.active,
        "livemode": False,
        "lookup_key": f.lookup_key,
        "metadata": dict(f.metadata),
        "name": f.name,
    }


def product_feature(store: Store, pf: ProductFeature) -> JSON:
    return {
        "id": pf.id,
        "object": "product_feature",
        "entitlement_feature": feature(store.features[pf.feature]),
        "livemode": False,
    }


def active_entitlement(entitlement_id: str, f: Feature) -> JSON:
    return {
        "id": entitlement_id,
        "object": "entitlements.active_entitlement",
        "feature": f.id,
        "livemode": False,
        "lookup_key": f.lookup_key,
    }


def active_entitlement_summary(customer_id: str, entitlements: list[JSON]) -> JSON:
    """No `id`: Stripe's summary object is identified by its customer."""
    return {
        "object": "entitlements.active_entitlement_summary",
        "customer": customer_id,
        "entitlements": list_object(
            entitlements, f"/v1/customer/{customer_id}/entitlements", has_more=False
        ),
        "livemode": False,
    }


def test_clock(c: TestClock) -> JSON:
    return {
        "id": c.id,
        "object": "test_helpers.test_clock",
        "created": c.created,
        "deletes_after": c.deletes_after,
        "frozen_time": c.frozen_time,
        "livemode": False,
        "name": c.name,
        "status": c.status,
        "status_details": {"advancing": {"target_frozen_time": c.frozen_time}}
        if c.status == "advancing"
        else {},
    }


def webhook_endpoint(w: WebhookEndpoint, secret: str | None = None) -> JSON:
    out: JSON = {
        "id": w.id,
        "object": "webhook_endpoint",
        "api_version": w.api_version,
        "application": None,
        "created": w.created,
        "description": w.description,
        "enabled_events": list(w.enabled_events),
        "livemode": False,
        "metadata": dict(w.metadata),
        "status": w.status,
        "url": w.url,
    }
    if secret is not None:
        out["secret"] = secret
    return out
