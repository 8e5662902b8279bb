"""The in-memory objects of the fake, and Stripe-like ids (`cus_...`, `sub_1...`, `evt_1...`).

Plain dataclasses hold state; `shapes.py` renders them as Stripe JSON. Every object carries a
`seq` (creation order) that breaks ties between equal `created` values in lists, as Stripe's
own ordering does.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Any

from .dated import Dated, DatedTable
from .payment_objects import PAYMENT_ID_FORMATS, PaymentObjects

ALPHABET = string.ascii_letters + string.digits

# Prefix and length of the random part, modelled on ids Stripe returns in test mode.
ID_FORMATS: dict[str, tuple[str, int]] = {
    "customer": ("cus_", 14),
    "subscription": ("sub_1", 23),
    "subscription_item": ("si_", 14),
    "invoice": ("in_1", 23),
    "invoice_line": ("il_1", 23),
    "price": ("price_1", 23),
    "product": ("prod_", 14),
    "feature": ("feat_test_", 28),
    "product_feature": ("prodft_", 14),
    "active_entitlement": ("ent_test_", 28),
    "checkout_session": ("cs_test_a1", 56),
    "event": ("evt_1", 23),
    "thin_event": ("evt_test_", 36),
    "request": ("req_", 14),
    "test_clock": ("clock_1", 23),
    "webhook_endpoint": ("we_1", 23),
    "webhook_secret": ("whsec_", 32),
    "payment_method": ("pm_1", 23),
    "payment_intent": ("pi_3", 23),
    "delivery": ("dlv_", 16),
    **PAYMENT_ID_FORMATS,
}


@dataclass
class TestClock:
    id: str
    created: int
    seq: int
    frozen_time: int
    name: str | None
    deletes_after: int
    status: str = "ready"
    # Where transitions have got to; equals `frozen_time` once the clock is `ready`.
    now: int = 0


@dataclass
class PaymentMethod:
    id: str
    created: int
    seq: int
    fails: bool
    brand: str
    last4: str
    customer: str | None = None


@dataclass
class Customer(Dated):
    id: str
    created: int
    seq: int
    email: str | None = None
    name: str | None = None
    description: str | None = None
    phone: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    test_clock: str | None = None
    default_payment_method: str | None = None
    currency: str | None = None
    invoice_prefix: str = ""
    next_invoice_sequence: int = 1
    deleted: bool = False


@dataclass
class Product:
    id: str
    created: int
    seq: int
    name: str
    updated: int = 0
    active: bool = True
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    default_price: str | None = None


@dataclass
class Price:
    id: str
    created: int
    seq: int
    product: str
    currency: str
    unit_amount: int
    interval: str | None = None
    interval_count: int = 1
    active: bool = True
    metadata: dict[str, str] = field(default_factory=dict)
    lookup_key: str | None = None
    nickname: str | None = None


@dataclass
class Feature:
    id: str
    created: int
    seq: int
    name: str
    lookup_key: str
    active: bool = True
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class ProductFeature:
    id: str
    seq: int
    product: str
    feature: str


@dataclass
class SubscriptionItem:
    id: str
    created: int
    price: str
    quantity: int
    current_period_start: int
    current_period_end: int
    metadata: dict[str, str] = field(default_factory=dict)
    # Feature ids this item entitles to in its current period: its product's features when
    # the item was created or its price changed, refreshed at each period start.
    features: list[str] = field(default_factory=list)


@dataclass
class Subscription(Dated):
    id: str
    created: int
    seq: int
    customer: str
    items: list[SubscriptionItem]
    status: str
    start_date: int
    billing_cycle_anchor: int
    currency: str = "usd"
    test_clock: str | None = None
    trial_start: int | None = None
    trial_end: int | None = None
    trial_end_behavior: str = "create_invoice"
    trial_will_end_sent: bool = False
    cancel_at: int | None = None
    cancel_at_period_end: bool = False
    canceled_at: int | None = None
    ended_at: int | None = None
    cancellation_reason: str | None = None
    default_payment_method: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    pause_behavior: str | None = None
    pause_resumes_at: int | None = None
    latest_invoice: str | None = None
    paused_at: int | None = None
    paused_reason: str | None = None
    past_due_since: int | None = None
    # `flexible` by default since 2025-09-30.clover (https://docs.stripe.com/billing/subscriptions/billing-mode).
    billing_mode: str = "flexible"
    # `send_invoice`: Stripe emails each invoice, due `days_until_due` days after it is finalized.
    collection_method: str = "charge_automatically"
    days_until_due: int | None = None


@dataclass
class InvoiceLine:
    id: str
    amount: int
    description: str
    period_start: int
    period_end: int
    price: str
    quantity: int
    subscription_item: str | None


@dataclass
class Invoice:
    id: str
    created: int
    seq: int
    customer: str
    subscription: str | None
    billing_reason: str
    lines: list[InvoiceLine]
    period_start: int
    period_end: int
    currency: str = "usd"
    test_clock: str | None = None
    status: str = "draft"
    auto_advance: bool = True
    finalize_at: int | None = None
    finalized_at: int | None = None
    paid_at: int | None = None
    voided_at: int | None = None
    marked_uncollectible_at: int | None = None
    attempt_count: int = 0
    attempted: bool = False
    next_payment_attempt: int | None = None
    first_failure_at: int | None = None
    number: str | None = None
    amount_paid: int = 0
    payment_intent: str | None = None
    subscription_metadata: dict[str, str] = field(default_factory=dict)
    collection_method: str = "charge_automatically"
    days_until_due: int | None = None
    due_date: int | None = None
    # True once the due date passed unpaid and the subscription was moved to past_due.
    overdue: bool = False

    @property
    def amount_due(self) -> int:
        return sum(line.amount for line in self.lines)


@dataclass
class CheckoutSession:
    id: str
    created: int
    seq: int
    expires_at: int
    mode: str
    line_items: list[tuple[str, int]]
    payment_method_collection: str = "always"
    client_reference_id: str | None = None
    customer: str | None = None
    customer_email: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    trial_period_days: int | None = None
    trial_end: int | None = None
    trial_end_behavior: str | None = None
    subscription_metadata: dict[str, str] = field(default_factory=dict)
    payment_link: str | None = None
    status: str = "open"
    payment_status: str = "unpaid"
    subscription: str | None = None
    invoice: str | None = None
    success_url: str | None = None
    cancel_url: str | None = None
    customer_details: dict[str, Any] | None = None
    test_clock: str | None = None
    # mode=payment (payments.py): `if_required` or `always`; the PaymentIntent once paid for
    customer_creation: str | None = None
    payment_intent: str | None = None


@dataclass
class WebhookEndpoint:
    id: str
    created: int
    seq: int
    url: str
    enabled_events: list[str]
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    status: str = "enabled"
    api_version: str | None = None


class SubscriptionTable(DatedTable[Subscription]):
    """Subscriptions, also by customer (a subscription's customer never changes): each sync's
    `GET /v1/subscriptions?customer=` and each entitlement summary read a customer's few, not
    every subscription of the account."""

    def __init__(self) -> None:
        super().__init__()
        self._by_customer: dict[str, dict[str, None]] = {}

    def __setitem__(self, object_id: str, obj: Subscription) -> None:
        super().__setitem__(object_id, obj)
        self._by_customer.setdefault(obj.customer, {})[object_id] = None

    def __delitem__(self, object_id: str) -> None:
        customer = self[object_id].customer
        super().__delitem__(object_id)
        ids = self._by_customer.get(customer, {})
        ids.pop(object_id, None)
        if not ids:
            self._by_customer.pop(customer, None)

    def clear(self) -> None:
        super().clear()
        self._by_customer.clear()

    def of_customer(self, customer_id: str) -> list[Subscription]:
        """In the order they were stored, as iterating the whole table gave them."""
        return [self[i] for i in self._by_customer.get(customer_id, {})]


class Store:
    """All objects, by kind and id. Not thread-safe: only the fake's event loop touches it."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._seq = 0
        self.clocks: dict[str, TestClock] = {}
        self.payment_methods: dict[str, PaymentMethod] = {}
        # In list order (dated.py): a page of a `created` range is a bisect and a short walk.
        self.customers: DatedTable[Customer] = DatedTable()
        self.products: dict[str, Product] = {}
        self.prices: dict[str, Price] = {}
        self.features: dict[str, Feature] = {}
        self.product_features: dict[str, ProductFeature] = {}
        self.subscriptions = SubscriptionTable()
        self.invoices: dict[str, Invoice] = {}
        self.sessions: dict[str, CheckoutSession] = {}
        self.webhook_endpoints: dict[str, WebhookEndpoint] = {}
        self.payments = PaymentObjects()
        # (customer, feature) -> the active entitlement's id, stable while it stays active.
        self.entitlement_ids: dict[tuple[str, str], str] = {}

    def new_id(self, kind: str) -> str:
        prefix, length = ID_FORMATS[kind]
        return prefix + "".join(self._rng.choice(ALPHABET) for _ in range(length))

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def random_token(self, length: int) -> str:
        return "".join(
            self._rng.choice(string.ascii_uppercase + string.digits) for _ in range(length)
        )

    def subscriptions_of(self, customer_id: str) -> list[Subscription]:
        return self.subscriptions.of_customer(customer_id)

    def features_of_product(self, product_id: str) -> list[Feature]:
        return [
            self.features[pf.feature]
            for pf in sorted(self.product_features.values(), key=lambda pf: pf.seq)
            if pf.product == product_id and pf.feature in self.features
        ]

    def customers_of_product(self, product_id: str) -> set[str]:
        out: set[str] = set()
        for sub in self.subscriptions.values():
            for item in sub.items:
                price = self.prices.get(item.price)
                if price is not None and price.product == product_id:
                    out.add(sub.customer)
        return out

    def clock_of_customer(self, customer_id: str | None) -> str | None:
        if customer_id is None:
            return None
        customer = self.customers.get(customer_id)
        return customer.test_clock if customer else None
