"""Which work a Stripe event calls for (docs/contract.md §4), shared by ingest and the Events API poller.

An event is only ever a hint about *which* customer (or catalog entry) changed; the worker
re-reads the truth from Stripe. So all we take from a payload is an id, and only an id of
Stripe's shape (`units.is_stripe_id`): anything else is refused as not a Stripe event, so no
payload can name an internal unit or a unit the worker could never process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.coordination.units import CATALOG, EVENTS_POLL, Unit, UnitKind, is_stripe_id

# Refund and dispute events (docs/contract.md §4). `charge.dispute.updated` (evidence added) and
# `charge.dispute.funds_withdrawn` (follows `created`) change nothing §5.1 reads.
CHARGE_TYPES = frozenset(
    {"charge.refunded", "charge.dispute.created", "charge.dispute.closed", "charge.dispute.funds_reinstated"}
)
# Event types that are customer work (docs/contract.md §4), besides every `customer.subscription.*`.
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
        # docs/contract.md §4 and §5.1: refunds and disputes end or suspend a payment's access
        *CHARGE_TYPES,
    }
)
SUBSCRIPTION_PREFIX = "customer.subscription."
CATALOG_PREFIXES = ("product.", "price.", "entitlements.feature.")
# Thin events about API v1 resources carry this prefix (`v1.customer.subscription.updated`;
# https://docs.stripe.com/event-destinations#events-overview, changelog 2026-09-30.endive).
# Past it they name the same thing as the snapshot type, and route the same way.
THIN_V1_PREFIX = "v1."

# Every type we queue, for the Events API poller's `types[]` filter and the README.
QUEUED_TYPE_PATTERNS = (
    *sorted(CUSTOMER_TYPES),
    "customer.subscription.*",
    "product.*",
    "price.*",
    "entitlements.feature.*",
)

# A thin event's `related_object.type` -> the unit kind and id prefix it stands for.
_THIN_OBJECTS: dict[str, tuple[UnitKind, str]] = {
    "customer": (UnitKind.CUSTOMER, "cus_"),
    "subscription": (UnitKind.SUBSCRIPTION, "sub_"),
    "checkout.session": (UnitKind.CHECKOUT, "cs_"),
    "charge": (UnitKind.CHARGE, "ch_"),
}


class BadEventError(ValueError):
    """The body is JSON but not a Stripe event we can route."""


@dataclass(frozen=True)
class Route:
    """The work an event calls for: None = none (ignored)."""

    unit: Unit | None = None
    # for catalog work: `product:<id>`, `feature:<id>` or `*`
    catalog_item: str | None = None

    @property
    def ignored(self) -> bool:
        return self.unit is None


IGNORED = Route()


def base_type(event_type: str) -> str:
    """The snapshot type a (possibly thin, `v1.`-prefixed) event type names."""
    return event_type.removeprefix(THIN_V1_PREFIX)


def wants_work(event_type: str) -> bool | None:
    """True: customer work; False: catalog work; None: no work."""
    if event_type in CUSTOMER_TYPES or event_type.startswith(SUBSCRIPTION_PREFIX):
        return True
    if event_type.startswith(CATALOG_PREFIXES):
        return False
    return None


def _ref(value: Any, what: str, prefix: str | None = None) -> str | None:
    """A Stripe reference: an id string, or the expanded object carrying `id`. None when absent;
    BadEventError when present but not an id of Stripe's shape (and of `prefix`, if given)."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if value is None or value == "":
        return None
    if not is_stripe_id(value, prefix=prefix):
        raise BadEventError(f"{what} is not a Stripe id" + (f" starting {prefix}" if prefix else ""))
    return str(value)


def _payment_unit(event_type: str, obj: Mapping[str, Any]) -> Unit | None:
    """docs/contract.md §5.1: a charge's customer, else the charge itself (the worker finds the
    guest purchase it paid); a dispute names only its charge."""
    if event_type.startswith("charge.dispute."):
        charge = _ref(obj.get("charge"), "the dispute's charge", "ch_")
        return Unit(UnitKind.CHARGE, charge) if charge else None
    if customer := _ref(obj.get("customer"), "customer", "cus_"):
        return Unit.customer(customer)
    charge = _ref(obj.get("id"), "the charge's id", "ch_")
    return Unit(UnitKind.CHARGE, charge) if charge else None


def _customer_unit(event_type: str, obj: Mapping[str, Any]) -> Unit | None:
    if event_type in CHARGE_TYPES:
        return _payment_unit(event_type, obj)
    if event_type.startswith("customer.") and not event_type.startswith(SUBSCRIPTION_PREFIX):
        cid = _ref(obj.get("id"), "the customer's id", "cus_")
        return Unit.customer(cid) if cid else None
    if customer := _ref(obj.get("customer"), "customer", "cus_"):
        return Unit.customer(customer)
    sub: str | None = None
    if event_type.startswith("invoice."):
        # Since API version basil the subscription is under parent.subscription_details.
        parent = obj.get("parent")
        details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
        if isinstance(details, Mapping):
            sub = _ref(details.get("subscription"), "the invoice's subscription", "sub_")
    elif event_type.startswith(SUBSCRIPTION_PREFIX):
        sub = _ref(obj.get("id"), "the subscription's id", "sub_")
    elif event_type.startswith("checkout.session."):
        sub = _ref(obj.get("subscription"), "the session's subscription", "sub_")
        if sub is None and obj.get("mode") == "payment":
            # A guest purchase (no Customer) is a customer of its own, keyed by the session id.
            guest = _ref(obj.get("id"), "the session's id", "cs_")
            return Unit.customer(guest) if guest else None
    return Unit(UnitKind.SUBSCRIPTION, sub) if sub else None


def _type(event: Mapping[str, Any]) -> str:
    event_type = event.get("type")
    if not isinstance(event_type, str):
        raise BadEventError("event has no type")
    return event_type


def route_snapshot(event: Mapping[str, Any]) -> Route:
    """Route a snapshot event (`object: "event"`, with `data.object`)."""
    event_type = _type(event)
    customer_work = wants_work(event_type)
    if customer_work is None:
        return IGNORED
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        raise BadEventError("event has no data.object")
    if not customer_work:
        if event_type.startswith("price."):
            product = _ref(obj.get("product"), "the price's product", "prod_")
            return Route(CATALOG, f"product:{product}") if product else IGNORED
        is_feature = event_type.startswith("entitlements.feature.")
        oid = _ref(obj.get("id"), "the object's id", "feat_" if is_feature else "prod_")
        if not oid:
            raise BadEventError("catalog event object has no id")
        return Route(CATALOG, f"{'feature' if is_feature else 'product'}:{oid}")
    unit = _customer_unit(event_type, obj)
    return Route(unit) if unit else IGNORED


def route_thin(event: Mapping[str, Any]) -> Route:
    """Route a thin event (`object: "v2.core.event"`, with `related_object`)."""
    customer_work = wants_work(base_type(_type(event)))
    if customer_work is None:
        return IGNORED
    related = event.get("related_object")
    rtype = related.get("type") if isinstance(related, Mapping) else None
    rid = _ref(related, "related_object.id")
    if not rid:
        # Nothing to go on: let the Events API poller find the snapshot.
        return Route(EVENTS_POLL)
    if not customer_work:
        if rtype == "product":
            return Route(CATALOG, f"product:{_ref(rid, 'related_object.id', 'prod_')}")
        if rtype == "entitlements.feature":
            return Route(CATALOG, f"feature:{_ref(rid, 'related_object.id', 'feat_')}")
        return Route(CATALOG, "*")
    if isinstance(rtype, str) and rtype in _THIN_OBJECTS:
        kind, prefix = _THIN_OBJECTS[rtype]
        return Route(Unit(kind, str(_ref(rid, "related_object.id", prefix))))
    # An invoice, say: no endpoint docs/contract.md §8 allows resolves it; the snapshot event the
    # Events API poller reads names the customer.
    return Route(EVENTS_POLL)


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
        hints = {"client_reference_id": ref.strip() if isinstance(ref, str) else ""}
        # a session's mode is fixed at creation too: a payment-mode one tells the worker to read
        # the customer's purchases (docs/contract.md §5.1)
        if obj.get("mode") == "payment":
            hints["mode"] = "payment"
        return hints
    return {}


def route(event: Mapping[str, Any]) -> Route:
    obj = event.get("object")
    if obj == "event":
        return route_snapshot(event)
    if obj == "v2.core.event":
        return route_thin(event)
    raise BadEventError("not a Stripe event (object must be \"event\" or \"v2.core.event\")")


def created_of(event: Mapping[str, Any]) -> int:
    """`created` as Unix seconds: an integer on a snapshot event, an RFC 3339 time on a thin one
    (https://docs.stripe.com/api/v2/core/events/object). BadEventError for anything else."""
    created = event.get("created")
    if event.get("object") == "event":
        if isinstance(created, int) and not isinstance(created, bool) and 0 <= created < 2**40:
            return created
        raise BadEventError("created is not a Unix time")
    if isinstance(created, str) and len(created) <= 40:
        try:
            return int(datetime.fromisoformat(created).timestamp())
        except ValueError:
            pass
    raise BadEventError("created is not an RFC 3339 time")
