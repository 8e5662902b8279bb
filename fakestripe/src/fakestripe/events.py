"""Event records: what `GET /v1/events` lists and what webhooks carry.

An event keeps the snapshot of its object taken when it was emitted (`data.object`) and, for
`*.updated` types, the previous values of the top-level fields that changed
(`data.previous_attributes`). `request` names the API request that caused it, or is null for
changes the clock made (renewals, trial ends, retries).
"""

from __future__ import annotations

import contextvars
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .clock import API_VERSION, rfc3339

JSON = dict[str, Any]

# (request id, idempotency key) of the API request being handled, if any.
CURRENT_REQUEST: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "fakestripe_request", default=(None, None)
)

# Every snapshot event type the fake emits; `EventLog.emit` refuses any other, and the grounding
# test checks each against stripe-python's `enabled_events` list (Stripe has no
# `entitlements.feature.*` events, for one).
SNAPSHOT_TYPES = frozenset(
    {
        "charge.dispute.closed",
        "charge.dispute.created",
        "charge.dispute.funds_reinstated",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.updated",
        "charge.failed",
        "charge.pending",
        "charge.refunded",
        "charge.succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.completed",
        "checkout.session.expired",
        "customer.created",
        "customer.deleted",
        "customer.subscription.created",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.trial_will_end",
        "customer.subscription.updated",
        "customer.updated",
        "entitlements.active_entitlement_summary.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.marked_uncollectible",
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.payment_succeeded",
        "invoice.voided",
        "payment_intent.created",
        "payment_intent.payment_failed",
        "payment_intent.processing",
        "payment_intent.succeeded",
        "payment_method.attached",
        "price.created",
        "price.updated",
        "product.created",
        "product.updated",
        "refund.created",
        "test_helpers.test_clock.advancing",
        "test_helpers.test_clock.created",
        "test_helpers.test_clock.deleted",
        "test_helpers.test_clock.ready",
    }
)

# Thin event types with no snapshot event: Stripe's event destinations send
# `v1.customer.subscription.<status>` when a subscription comes to that status (stripe-python
# 16.1.0 has a `stripe.events` class for each; https://docs.stripe.com/event-destinations).
SUBSCRIPTION_STATUS_THIN_TYPES = {
    status: f"v1.customer.subscription.{status}"
    for status in ("active", "incomplete", "incomplete_expired", "past_due", "trialing", "unpaid")
}
THIN_ONLY_TYPES = frozenset(SUBSCRIPTION_STATUS_THIN_TYPES.values())

_URL_OF_OBJECT = {
    "customer": "/v1/customers/",
    "subscription": "/v1/subscriptions/",
    "invoice": "/v1/invoices/",
    "checkout.session": "/v1/checkout/sessions/",
    "product": "/v1/products/",
    "price": "/v1/prices/",
    "entitlements.feature": "/v1/entitlements/features/",
    "payment_method": "/v1/payment_methods/",
    "test_helpers.test_clock": "/v1/test_helpers/test_clocks/",
    "charge": "/v1/charges/",
    "dispute": "/v1/disputes/",
    "payment_intent": "/v1/payment_intents/",
    "refund": "/v1/refunds/",
}


@dataclass
class Event:
    id: str
    type: str
    created: int
    seq: int
    object: JSON
    previous_attributes: JSON | None
    request_id: str | None
    idempotency_key: str | None
    clock: str | None
    thin_id: str
    pending_webhooks: int = 0
    # A thin-only event (`v1.customer.subscription.past_due`) has no snapshot event: it is
    # not listed by `/v1/events` and goes only to thin destinations, under its own type.
    thin_only: bool = False

    @property
    def thin_type(self) -> str:
        return self.type if self.thin_only else "v1." + self.type

    def to_json(self) -> JSON:
        data: JSON = {"object": copy.deepcopy(self.object)}
        if self.previous_attributes is not None:
            data["previous_attributes"] = copy.deepcopy(self.previous_attributes)
        return {
            "id": self.id,
            "object": "event",
            "api_version": API_VERSION,
            "created": self.created,
            "data": data,
            "livemode": False,
            "pending_webhooks": self.pending_webhooks,
            "request": {"id": self.request_id, "idempotency_key": self.idempotency_key},
            "type": self.type,
        }

    def related_object(self) -> JSON | None:
        kind = self.object.get("object")
        object_id = self.object.get("id")
        if (
            not isinstance(kind, str)
            or not isinstance(object_id, str)
            or kind not in _URL_OF_OBJECT
        ):
            return None
        return {"id": object_id, "type": kind, "url": _URL_OF_OBJECT[kind] + object_id}

    def thin_json(self) -> JSON:
        """The thin (`v2.core.event`) notification of this event, as event destinations send it."""
        out: JSON = {
            "id": self.thin_id,
            "object": "v2.core.event",
            "type": self.thin_type,
            "created": rfc3339(self.created),
            "livemode": False,
        }
        related = self.related_object()
        if related is not None:
            out["related_object"] = related
        if self.request_id is not None:
            out["reason"] = {
                "type": "request",
                "request": {"id": self.request_id, "idempotency_key": self.idempotency_key},
            }
        return out

    def v2_json(self) -> JSON:
        """`GET /v2/core/events/{id}`: the thin event, pointing at the v1 snapshot event."""
        out = self.thin_json()
        out.update(changes=None, context=None, snapshot_event=None if self.thin_only else self.id)
        out.setdefault("reason", None)
        return out


def previous_attributes(before: JSON, after: JSON) -> JSON:
    """The previous values of the top-level fields that differ between two snapshots."""
    return {key: copy.deepcopy(value) for key, value in before.items() if after.get(key) != value}


def copy_json(value: Any) -> Any:
    """A deep copy of plain JSON (dicts, lists, scalars): what `copy.deepcopy` made of a
    snapshot, about ten times faster (it was most of the cost of creating a subscription);
    anything else still goes through `copy.deepcopy`."""
    kind = type(value)
    if kind is dict:
        return {k: copy_json(v) for k, v in value.items()}
    if kind is list:
        return [copy_json(v) for v in value]
    if kind in (str, int, float, bool) or value is None:
        return value
    return copy.deepcopy(value)


Listener = Callable[[Event], None]


class EventLog:
    def __init__(self, new_id: Callable[[str], str], next_seq: Callable[[], int]) -> None:
        self._new_id = new_id
        self._next_seq = next_seq
        self.events: list[Event] = []
        self.by_id: dict[str, Event] = {}
        self.by_thin_id: dict[str, Event] = {}
        self.listeners: list[Listener] = []

    def emit(
        self,
        type_: str,
        obj: JSON,
        created: int,
        clock: str | None,
        previous: JSON | None = None,
        *,
        thin_only: bool = False,
    ) -> Event:
        known = THIN_ONLY_TYPES if thin_only else SNAPSHOT_TYPES
        if type_ not in known:
            raise ValueError(f"the fake does not emit {type_!r} (not in events.py's registry)")
        request_id, idempotency_key = CURRENT_REQUEST.get()
        event = Event(
            id=self._new_id("event"),
            type=type_,
            created=created,
            seq=self._next_seq(),
            object=copy_json(obj),
            previous_attributes=previous,
            request_id=request_id,
            idempotency_key=idempotency_key,
            clock=clock,
            thin_id=self._new_id("thin_event"),
            thin_only=thin_only,
        )
        self._store(event)
        for listener in list(self.listeners):
            listener(event)
        return event

    def clone(self, event: Event) -> Event:
        """A second event for the same change, with a new id (Stripe sometimes sends one)."""
        twin = copy.copy(event)
        twin.id = self._new_id("event")
        twin.thin_id = self._new_id("thin_event")
        twin.seq = self._next_seq()
        self._store(twin)
        return twin

    def _store(self, event: Event) -> None:
        self.by_thin_id[event.thin_id] = event
        if event.thin_only:
            return
        self.events.append(event)
        self.by_id[event.id] = event

    def clear(self) -> None:
        self.events.clear()
        self.by_id.clear()
        self.by_thin_id.clear()
