"""Stripe objects as the policy sees them: frozen dataclasses parsed once, at the edge.

Everything inside the worker works on these; tests build them from plain dicts shaped like
Stripe's (`parse_subscription(fixture)`), never from SDK objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.access.purchases import Charge, Purchase

# Statuses as Stripe names them (API version 2026-10-28.endive).
STATUSES = (
    "trialing",
    "active",
    "past_due",
    "paused",
    "unpaid",
    "canceled",
    "incomplete",
    "incomplete_expired",
)


class ParseError(ValueError):
    """A Stripe payload lacks a field we cannot do without."""


def ref_id(value: Any) -> str | None:
    """A Stripe reference: an id string, or an expanded object with an `id`."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping):
        inner = value.get("id")
        return inner if isinstance(inner, str) and inner else None
    return None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _user_id(metadata: Any) -> str | None:
    if isinstance(metadata, Mapping):
        value = metadata.get("user_id")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True)
class Item:
    id: str
    price_id: str
    product_id: str
    current_period_start: int | None
    current_period_end: int | None
    # Stripe's `quantity`; None when the item has none (metered prices): docs/contract.md §5.2
    # counts it as 1 (`units`). 0 grants nothing.
    quantity: int | None = None

    @property
    def units(self) -> int:
        return 1 if self.quantity is None else self.quantity


@dataclass(frozen=True)
class Invoice:
    """The subscription's latest invoice, as far as the policy needs it (when it became past_due)."""

    id: str
    status: str | None
    created: int | None = None
    finalized_at: int | None = None
    due_date: int | None = None

    @property
    def unpaid(self) -> bool:
        return self.status in ("open", "uncollectible")


@dataclass(frozen=True)
class Subscription:
    id: str
    customer_id: str
    status: str
    items: tuple[Item, ...]
    created: int
    trial_end: int | None = None
    cancel_at: int | None = None
    cancel_at_period_end: bool = False
    collection_paused: bool = False
    # When it became past_due, when someone knows better than the invoice (a test's oracle);
    # otherwise the policy reads the latest invoice (`shared/access/policy.py` `past_due_moment`).
    past_due_since: int | None = None
    collection_method: str | None = None
    latest_invoice: Invoice | None = None
    metadata_user_id: str | None = None
    test_clock: str | None = None
    # the PaymentIntent of its latest paid invoice, when read (disputes, docs/contract.md §5.1)
    paid_payment_intent: str | None = None

    @property
    def period_end(self) -> int | None:
        """The latest `current_period_end` of the items (since API version basil it is per item)."""
        ends = [i.current_period_end for i in self.items if i.current_period_end is not None]
        return max(ends) if ends else None

    @property
    def earliest_period_end(self) -> int | None:
        """The earliest `current_period_end` of the items (flexible billing: periods may differ)."""
        ends = [i.current_period_end for i in self.items if i.current_period_end is not None]
        return min(ends) if ends else None

    @property
    def product_ids(self) -> frozenset[str]:
        return frozenset(i.product_id for i in self.items)


@dataclass(frozen=True)
class Customer:
    id: str
    deleted: bool = False
    email: str | None = None
    livemode: bool = False
    metadata_user_id: str | None = None
    test_clock: str | None = None


@dataclass(frozen=True)
class CustomerFacts:
    """What Stripe says about one customer at sync time."""

    customer_id: str
    customer: Customer | None  # None: Stripe does not know the customer (404)
    subscriptions: tuple[Subscription, ...]
    # client_reference_id of the customer's newest completed Checkout Session, if any
    checkout_user_id: str | None
    # lookup keys of Stripe's own active entitlements, for comparison only
    stripe_features: frozenset[str]
    # the test clock's frozen_time when the customer is on a test clock
    clock_now: int | None = None
    # one-time purchases (docs/contract.md §5.1) and the customer's charges with their disputes,
    # when the sync read them (`worker/payments.py` says when)
    purchases: tuple[Purchase, ...] = ()
    charges: tuple[Charge, ...] = ()
    payments_read: bool = False  # False: purchases and charges were not read (left empty)
    # a guest purchase's mode (its session's `livemode`): it has no Customer to say so
    guest_livemode: bool = False

    @property
    def livemode(self) -> bool:
        return self.customer.livemode if self.customer else self.guest_livemode

    @property
    def is_guest(self) -> bool:
        """A Checkout Session without a Customer is a customer of its own, keyed by its id."""
        return self.customer_id.startswith("cs_")

    @property
    def product_ids(self) -> frozenset[str]:
        subs = {p for s in self.subscriptions for p in s.product_ids}
        return frozenset(subs | {p for x in self.purchases for p in x.product_ids})


def parse_quantity(value: Any, where: str) -> int | None:
    """An item's or line item's `quantity` (docs/contract.md §5.2): a whole number >= 0, or None
    when Stripe gives none (metered prices). Anything else is not Stripe's and is refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParseError(f"{where} has quantity {value!r}, not a whole number >= 0")
    return value


def parse_item(d: Mapping[str, Any]) -> Item:
    price = d.get("price") or d.get("plan")
    if not isinstance(price, Mapping):
        raise ParseError(f"subscription item {d.get('id')!r} has no price")
    product = ref_id(price.get("product"))
    price_id = ref_id(price)
    if not product or not price_id:
        raise ParseError(f"subscription item {d.get('id')!r} has no price.product")
    return Item(
        id=str(d.get("id", "")),
        price_id=price_id,
        product_id=product,
        current_period_start=_int(d.get("current_period_start")),
        current_period_end=_int(d.get("current_period_end")),
        quantity=parse_quantity(d.get("quantity"), f"subscription item {d.get('id')!r}"),
    )


def parse_invoice(d: Any) -> Invoice | None:
    """The expanded `latest_invoice`; None when it is only an id (or absent)."""
    if not isinstance(d, Mapping) or not ref_id(d.get("id")):
        return None
    transitions = d.get("status_transitions")
    status = d.get("status")
    return Invoice(
        id=str(ref_id(d.get("id"))),
        status=status if isinstance(status, str) else None,
        created=_int(d.get("created")),
        finalized_at=_int(transitions.get("finalized_at")) if isinstance(transitions, Mapping) else None,
        due_date=_int(d.get("due_date")),
    )


def parse_subscription(d: Mapping[str, Any]) -> Subscription:
    sub_id, status, customer = ref_id(d.get("id")), d.get("status"), ref_id(d.get("customer"))
    if not sub_id or not isinstance(status, str) or not customer:
        raise ParseError("subscription lacks id, status or customer")
    items_obj = d.get("items")
    raw_items = items_obj.get("data", []) if isinstance(items_obj, Mapping) else []
    pause = d.get("pause_collection")
    return Subscription(
        id=sub_id,
        customer_id=customer,
        status=status,
        items=tuple(parse_item(i) for i in raw_items),
        created=_int(d.get("created")) or 0,
        trial_end=_int(d.get("trial_end")),
        cancel_at=_int(d.get("cancel_at")),
        cancel_at_period_end=bool(d.get("cancel_at_period_end")),
        collection_paused=isinstance(pause, Mapping) and bool(pause.get("behavior")),
        collection_method=d.get("collection_method") if isinstance(d.get("collection_method"), str) else None,
        latest_invoice=parse_invoice(d.get("latest_invoice")),
        metadata_user_id=_user_id(d.get("metadata")),
        test_clock=ref_id(d.get("test_clock")),
    )


def parse_customer(d: Mapping[str, Any]) -> Customer:
    cid = ref_id(d.get("id"))
    if not cid:
        raise ParseError("customer lacks id")
    email = d.get("email")
    return Customer(
        id=cid,
        deleted=bool(d.get("deleted")),
        email=email if isinstance(email, str) else None,
        livemode=bool(d.get("livemode")),
        metadata_user_id=_user_id(d.get("metadata")),
        test_clock=ref_id(d.get("test_clock")),
    )
