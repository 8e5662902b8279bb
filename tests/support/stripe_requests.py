"""What the service may ask of Stripe (docs/contract.md §8), checked against what it did ask.

Every fake Stripe a test stack starts records its requests (`fakestripe.faults.RequestLog`); the
stack hands them to `RECORDED` when it stops, and a session fixture (tests/conftest.py) checks
the ones made with the service's key (`SERVICE_KEY`; the test's own driving requests use another
key) at the end of the run:

- a GET on docs/contract.md §8's list (or `GET`/`POST /v1/webhook_endpoints[/{id}]`, the one exception);
- every query parameter declared by the stripe-python 16.1.0 params TypedDict of that endpoint;
- every `expand` path at most four levels deep (https://docs.stripe.com/expand).
"""

from __future__ import annotations

from typing import Any

import stripe.params as p
from fakestripe.grounding import REQUEST_OPTION_KEYS
from stripe.params import checkout, entitlements, test_helpers

SERVICE_KEY = "sk_test_service"

# (method, the fake's route template) -> the SDK params TypedDict of that call.
ALLOWED: dict[tuple[str, str], type] = {
    ("GET", "/v1/customers/{id}"): p.CustomerRetrieveParams,
    ("GET", "/v1/customers"): p.CustomerListParams,
    ("GET", "/v1/subscriptions"): p.SubscriptionListParams,
    ("GET", "/v1/subscriptions/{id}"): p.SubscriptionRetrieveParams,
    ("GET", "/v1/products/{id}"): p.ProductRetrieveParams,
    ("GET", "/v1/products/{id}/features"): p.ProductFeatureListParams,
    ("GET", "/v1/products"): p.ProductListParams,
    ("GET", "/v1/checkout/sessions"): checkout.SessionListParams,
    ("GET", "/v1/checkout/sessions/{id}"): checkout.SessionRetrieveParams,
    ("GET", "/v1/entitlements/active_entitlements"): entitlements.ActiveEntitlementListParams,
    ("GET", "/v1/test_helpers/test_clocks/{id}"): test_helpers.TestClockRetrieveParams,
    ("GET", "/v1/events"): p.EventListParams,
    # added 2026-12
    ("GET", "/v1/subscription_items"): p.SubscriptionItemListParams,
    ("GET", "/v1/checkout/sessions/{id}/line_items"): checkout.SessionLineItemListParams,
    ("GET", "/v1/charges"): p.ChargeListParams,
    ("GET", "/v1/charges/{id}"): p.ChargeRetrieveParams,
    ("GET", "/v1/disputes"): p.DisputeListParams,
    ("GET", "/v1/disputes/{id}"): p.DisputeRetrieveParams,
    ("GET", "/v1/prices"): p.PriceListParams,
    ("GET", "/v1/payment_intents/{id}"): p.PaymentIntentRetrieveParams,
    ("GET", "/v1/invoices/{id}"): p.InvoiceRetrieveParams,
    # the exception: `entitled connect`
    ("GET", "/v1/webhook_endpoints"): p.WebhookEndpointListParams,
    ("GET", "/v1/webhook_endpoints/{id}"): p.WebhookEndpointRetrieveParams,
    ("POST", "/v1/webhook_endpoints"): p.WebhookEndpointCreateParams,
    ("POST", "/v1/webhook_endpoints/{id}"): p.WebhookEndpointUpdateParams,
}

MAX_EXPAND_DEPTH = 4

# Filled by tests/support/stack.py as each stack stops: the fake's `RequestLog.to_json()`.
RECORDED: list[dict[str, Any]] = []
# Likewise: what each stack's fake served that stripe-python's classes do not describe
# (`FakeStripe(check_shapes=True)`, fakestripe/src/fakestripe/shape_log.py).
SHAPE_PROBLEMS: dict[str, str] = {}


def request_problems(entries: list[dict[str, Any]], key: str = SERVICE_KEY) -> list[str]:
    """Why each recorded request made with `key` breaks docs/contract.md §8 (empty when none does)."""
    problems: list[str] = []
    for entry in entries:
        if entry["key"] != key:
            continue
        call = f"{entry['method']} {entry['route']} (e.g. {entry['example']}, {entry['count']}x)"
        cls = ALLOWED.get((entry["method"], entry["route"]))
        if cls is None:
            problems.append(f"{call}: not on docs/contract.md §8's list")
            continue
        declared = set(cls.__annotations__) - REQUEST_OPTION_KEYS
        problems += [
            f"{call}: parameter {name!r} is not declared by {cls.__name__}"
            for name in entry["params"]
            if name not in declared
        ]
        problems += [
            f"{call}: expand path {path!r} is deeper than {MAX_EXPAND_DEPTH} levels"
            for path in entry["expand"]
            if len(path.split(".")) > MAX_EXPAND_DEPTH
        ]
    return problems
