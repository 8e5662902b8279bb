"""Active entitlements computed as Stripe computes them, and the summary events they cause.

A customer is entitled to the features attached (Product Features) to the products of the
items of its subscriptions that are `trialing`, `active` or `past_due`
(https://docs.stripe.com/billing/entitlements). Stripe's known quirk is reproduced on purpose:
a subscription that became `paused` because its trial ended without a payment method keeps
its entitlements, so no `entitlements.active_entitlement_summary.updated` is sent for it.

Attaching a feature to a product, or removing it, fires no event and does not change the
active entitlements of existing subscriptions until their next billing period: "Existing
subscriptions will create active entitlements for any product feature changes at the start of
the next billing period" (https://docs.stripe.com/billing/entitlements). Each subscription item
therefore keeps a snapshot of its product's features (`snapshot`), taken when the item is
created or its price changes and at each period start.

Whenever a customer's computed set changes (subscription created, ended, upgraded, renewed into
a period with other features), one summary event is emitted for that customer at the end of the
operation that changed it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import shapes
from .store import Feature, Store, Subscription, SubscriptionItem

JSON = dict[str, Any]

GRANTING_STATUSES = frozenset({"trialing", "active", "past_due"})
TRIAL_END_PAUSE = "trial_end_without_payment_method"


def grants(sub: Subscription) -> bool:
    if sub.status in GRANTING_STATUSES:
        return True
    # Stripe's quirk: paused at trial end still counts (see module docstring).
    return sub.status == "paused" and sub.paused_reason == TRIAL_END_PAUSE


def snapshot(store: Store, item: SubscriptionItem) -> None:
    """Take the features of the item's product as those it entitles to in this period."""
    price = store.prices.get(item.price)
    features = store.features_of_product(price.product) if price is not None else []
    item.features = [f.id for f in features]


def active_features(store: Store, customer_id: str) -> list[Feature]:
    found: dict[str, Feature] = {}
    subs = sorted(store.subscriptions_of(customer_id), key=lambda s: s.seq)
    for sub in subs:
        if not grants(sub):
            continue
        for item in sub.items:
            for feature_id in item.features:
                feature = store.features.get(feature_id)
                if feature is not None and feature.active:
                    found.setdefault(feature.id, feature)
    return list(found.values())


def active_entitlements(store: Store, customer_id: str) -> list[JSON]:
    out = []
    for feature in active_features(store, customer_id):
        key = (customer_id, feature.id)
        if key not in store.entitlement_ids:
            store.entitlement_ids[key] = store.new_id("active_entitlement")
        out.append(shapes.active_entitlement(store.entitlement_ids[key], feature))
    return out


Emit = Callable[[str, JSON, str | None], object]


class EntitlementTracker:
    """Remembers the last summary sent per customer; `flush` sends one where it changed."""

    def __init__(self) -> None:
        self.touched: set[str] = set()
        self.last: dict[str, tuple[str, ...]] = {}

    def touch(self, customer_id: str) -> None:
        self.touched.add(customer_id)

    def flush(self, store: Store, emit: Emit) -> None:
        touched, self.touched = sorted(self.touched), set()
        for customer_id in touched:
            customer = store.customers.get(customer_id)
            if customer is None or customer.deleted:
                continue
            entitlements = active_entitlements(store, customer_id)
            current = tuple(e["feature"] for e in entitlements)
            if current == self.last.get(customer_id, ()):
                continue
            self.last[customer_id] = current
            for key in [k for k in store.entitlement_ids if k[0] == customer_id]:
                if key[1] not in current:
                    del store.entitlement_ids[key]
            summary = shapes.active_entitlement_summary(customer_id, entitlements)
            emit("entitlements.active_entitlement_summary.updated", summary, customer.test_clock)

    def clear(self) -> None:
        self.touched.clear()
        self.last.clear()
