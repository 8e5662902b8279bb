"""Which work a Stripe event calls for (SPEC section 4), shared by ingest and the Events API poller.

An event is only ever a hint about *which* customer (or catalog entry) changed; the worker
re-reads the truth from Stripe. So all we take from a payload is an id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

# Event types that are customer work (SPEC section 4), besides every `customer.subscription.*`.
CUSTOMER_TYPES = frozenset(
    {
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "invoice.payment_action_required",
        "invoice.marked_uncollectible",
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "entitlements.active_entitlement_summary.updated",
    }
)
SUBSCRIPTION_PREFIX = "customer.subscription."
CATALOG_PREFIXES = ("product.", "price.", "entitlements.feature.")

# Every type we queue, for the Events API poller's `types[]` filter and the README.
QUEUED_TYPE_PATTERNS = (
    *sorted(CUSTOMER_TYPES),
    "customer.subscription.*",
    "product.*",
    "price.*",
    "entitlements.feature.*",
)

# Prefixes that name a unit the worker resolves to a customer (when a payload gives no customer).
SUBSCRIPTION_UNIT_PREFIX = "sub_"
CHECKOUT_UNIT_PREFIX = "cs_"
# A thin event whose object we cannot resolve with the endpoints SPEC section 8 allows (an
# invoice) asks the Events API poller to run now: the snapshot event there names the customer.
EVENTS_POLL_UNIT = "__events__"


class BadEventError(ValueError):
    """The body is JSON but not a Stripe event we can route."""


@dataclass(frozen=True)
class Route:
    kind: Literal["customer", "catalog", "ignored"]
    # customer id, or a `sub_`/`cs_` id to resolve, or EVENTS_POLL_UNIT
    unit: str | None = None
    # for catalog work: `product:<id>` or `feature:<id>`
    catalog_item: str | None = None


def wants_work(event_type: str) -> Literal["customer", "catalog", "ignored"]:
    if event_type in CUSTOMER_TYPES or event_type.startswith(SUBSCRIPTION_PREFIX):
        return "customer"
    if event_type.startswith(CATALOG_PREFIXES):
        return "catalog"
    return "ignored"


def _id(value: Any) -> str | None:
    """A Stripe reference is an id string, or the expanded object carrying `id`."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping):
        inner = value.get("id")
        if isinstance(inner, str) and inner:
            return inner
    return None


def _customer_unit(event_type: str, obj: Mapping[str, Any]) -> str | None:
    if event_type.startswith("customer.") and not event_type.startswith(SUBSCRIPTION_PREFIX):
        return _id(obj.get("id"))
    if customer := _id(obj.get("customer")):
        return customer
    if event_type.startswith("invoice."):
        # Since API version basil the subscription is under parent.subscription_details.
        parent = obj.get("parent")
        details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
        if isinstance(details, Mapping) and (sub := _id(details.get("subscription"))):
            return sub
    if event_type.startswith(SUBSCRIPTION_PREFIX):
        return _id(obj.get("id"))
    if event_type.startswith("checkout.session."):
        return _id(obj.get("subscription"))
    return None


def _type_and_kind(event: Mapping[str, Any]) -> tuple[str, Literal["customer", "catalog", "ignored"]]:
    event_type = event.get("type")
    if not isinstance(event_type, str):
        raise BadEventError("event has no type")
    return event_type, wants_work(event_type)


def route_snapshot(event: Mapping[str, Any]) -> Route:
    """Route a snapshot event (`object: "event"`, with `data.object`)."""
    event_type, kind = _type_and_kind(event)
    if kind == "ignored":
        return Route("ignored")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        raise BadEventError("event has no data.object")
    if kind == "catalog":
        if event_type.startswith("price."):
            product = _id(obj.get("product"))
            return Route("catalog", catalog_item=f"product:{product}") if product else Route("ignored")
        oid = _id(obj.get("id"))
        if not oid:
            raise BadEventError("catalog event object has no id")
        prefix = "feature" if event_type.startswith("entitlements.feature.") else "product"
        return Route("catalog", catalog_item=f"{prefix}:{oid}")
    unit = _customer_unit(event_type, obj)
    # A payment-mode checkout session without a customer concerns no subscription: no work.
    return Route("customer", unit=unit) if unit else Route("ignored")


def route_thin(event: Mapping[str, Any]) -> Route:
    """Route a thin event (`object: "v2.core.event"`, with `related_object`)."""
    _, kind = _type_and_kind(event)
    if kind == "ignored":
        return Route("ignored")
    related = event.get("related_object")
    rid = _id(related) if isinstance(related, Mapping) else None
    if not rid:
        # Nothing to go on: let the Events API poller find the snapshot.
        return Route("customer", unit=EVENTS_POLL_UNIT)
    if kind == "catalog":
        if rid.startswith("prod_"):
            return Route("catalog", catalog_item=f"product:{rid}")
        if rid.startswith("feat_"):
            return Route("catalog", catalog_item=f"feature:{rid}")
        return Route("catalog", catalog_item="*")
    if rid.startswith(("cus_", SUBSCRIPTION_UNIT_PREFIX, CHECKOUT_UNIT_PREFIX)):
        return Route("customer", unit=rid)
    return Route("customer", unit=EVENTS_POLL_UNIT)


def event_hints(event: Mapping[str, Any]) -> dict[str, str]:
    """What a snapshot event may add to its queued record besides its id and type.

    Only immutable facts: a Checkout Session's `client_reference_id` is fixed when the session
    is created (https://docs.stripe.com/api/checkout/sessions/update takes no such parameter),
    so the worker need not read the session again for it (`""`: the session has none). Thin
    events carry no object: nothing."""
    event_type = event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if event.get("object") != "event" or not isinstance(event_type, str) or not isinstance(obj, Mapping):
        return {}
    if event_type.startswith("checkout.session.") and obj.get("status") == "complete":
        ref = obj.get("client_reference_id")
        return {"client_reference_id": ref.strip() if isinstance(ref, str) else ""}
    return {}


def route(event: Mapping[str, Any]) -> Route:
    obj = event.get("object")
    if obj == "event":
        return route_snapshot(event)
    if obj == "v2.core.event":
        return route_thin(event)
    raise BadEventError("not a Stripe event (object must be \"event\" or \"v2.core.event\")")
