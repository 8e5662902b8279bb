"""Customers and subscriptions, created and changed the way the API requests ask.

Every function here runs inside `Core.operation()` (the API middleware opens one) and emits the
events of the change. Parameters arrive already checked by `forms`; these functions check what
depends on state (ids exist, a canceled subscription cannot change, ...).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from . import errors, shapes
from .clock import DAY_S, add_interval
from .core import Core
from .entitlements import snapshot
from .events import previous_attributes
from .forms import UNSET
from .invoicing import (
    attach_payment_method,
    attempt_payment,
    build_invoice,
    cancel,
    emit_invoice,
    emit_subscription,
    finalize,
    materialize_payment_method,
    payment_method_for,
    sub_json,
)
from .store import Customer, Subscription, SubscriptionItem
from .transitions import end_trial, item_interval, period_end

JSON = dict[str, Any]


def apply_metadata(target: dict[str, str], value: Any) -> None:
    if value is UNSET:
        target.clear()
        return
    for key, item in value.items():
        if item is None:
            target.pop(key, None)
        else:
            target[key] = item


def require_ready_clock(core: Core, clock_id: str | None) -> None:
    if clock_id is None:
        return
    clock = core.store.clocks.get(clock_id)
    if clock is not None and clock.status == "advancing":
        raise errors.invalid_request(
            f"The test clock {clock_id} is advancing; you cannot modify its objects until it "
            "is ready.",
            code="test_clock_advancing",
        )


def get_customer(core: Core, customer_id: str, param: str = "customer") -> Customer:
    customer = core.store.customers.get(customer_id)
    if customer is None or customer.deleted:
        raise errors.resource_missing("customer", customer_id, param=param)
    return customer


def create_customer(core: Core, p: dict[str, Any]) -> Customer:
    clock_id = p.get("test_clock")
    if clock_id is not None:
        if clock_id not in core.store.clocks:
            raise errors.resource_missing("test_helpers.test_clock", clock_id, param="test_clock")
        require_ready_clock(core, clock_id)
    customer = Customer(
        id=core.store.new_id("customer"),
        created=core.now(clock_id),
        seq=core.store.next_seq(),
        email=p.get("email"),
        name=p.get("name"),
        description=p.get("description"),
        phone=p.get("phone"),
        test_clock=clock_id,
        invoice_prefix=core.store.random_token(8),
    )
    apply_metadata(customer.metadata, p.get("metadata", {}))
    attached = []
    if "payment_method" in p:
        attached.append(
            materialize_payment_method(core, p["payment_method"], clock_id, "payment_method")
        )
    default_ref = p.get("invoice_settings", {}).get("default_payment_method")
    if default_ref not in (None, UNSET):
        if attached and default_ref == p.get("payment_method"):
            customer.default_payment_method = attached[0].id
        else:
            pm = materialize_payment_method(
                core, default_ref, clock_id, "invoice_settings[default_payment_method]"
            )
            attached.append(pm)
            customer.default_payment_method = pm.id
    core.store.customers[customer.id] = customer
    core.emit("customer.created", shapes.customer(customer), clock_id)
    for pm in attached:
        attach_payment_method(core, pm, customer)
    return customer


def update_customer(core: Core, customer: Customer, p: dict[str, Any]) -> Customer:
    require_ready_clock(core, customer.test_clock)
    before = shapes.customer(customer)
    for key in ("email", "name", "description", "phone"):
        if key in p:
            setattr(customer, key, None if p[key] is UNSET else p[key])
    if "metadata" in p:
        apply_metadata(customer.metadata, p["metadata"])
    settings = p.get("invoice_settings", {})
    if "default_payment_method" in settings:
        ref = settings["default_payment_method"]
        if ref is UNSET:
            customer.default_payment_method = None
        else:
            pm = materialize_payment_method(
                core, ref, customer.test_clock, "invoice_settings[default_payment_method]"
            )
            if pm.customer not in (None, customer.id):
                raise errors.invalid_request(
                    f"The customer does not have a payment method with the ID {pm.id}.",
                    param="invoice_settings[default_payment_method]",
                )
            attach_payment_method(core, pm, customer)
            customer.default_payment_method = pm.id
    after = shapes.customer(customer)
    changed = previous_attributes(before, after)
    if changed:
        core.emit("customer.updated", after, customer.test_clock, changed)
    return customer


def delete_customer(core: Core, customer: Customer) -> None:
    require_ready_clock(core, customer.test_clock)
    for sub in core.store.subscriptions_of(customer.id):
        if sub.status not in ("canceled", "incomplete_expired"):
            cancel(core, sub, reason="cancellation_requested")
    snapshot = shapes.customer(customer)
    core.entitlements.flush(core.store, core.emit)
    customer.deleted = True
    core.emit("customer.deleted", snapshot, customer.test_clock)


@dataclass
class NewSubscription:
    """What a subscription is created with, whether by the API or by a Checkout Session."""

    items: list[tuple[str, int]]
    trial_end: int | None = None
    trial_end_behavior: str = "create_invoice"
    default_payment_method: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    # "charge" (allow_incomplete/error_if_incomplete), "incomplete" (default_incomplete),
    # "checkout" (created incomplete, activated once its first invoice is paid).
    flow: str = "charge"
    billing_mode: str = "flexible"
    collection_method: str = "charge_automatically"
    days_until_due: int | None = None


def check_items(
    core: Core, items: list[tuple[str, int]], param: str, billing_mode: str = "flexible"
) -> None:
    """Prices exist, are recurring and active; items of different intervals only in flexible
    billing mode (https://docs.stripe.com/billing/subscriptions/mixed-interval: "Mixed
    interval subscriptions must use flexible billing mode")."""
    if not items:
        raise errors.missing_parameter(param)
    intervals = set()
    for index, (price_id, _) in enumerate(items):
        price = core.store.prices.get(price_id)
        if price is None:
            raise errors.resource_missing("price", price_id, param=f"{param}[{index}][price]")
        if price.interval is None:
            raise errors.invalid_request(
                "The price specified is set to `type=one_time` but this field only accepts "
                "prices with `type=recurring`.",
                param=f"{param}[{index}][price]",
            )
        if not price.active:
            raise errors.invalid_request(
                "The price specified is inactive. This field only accepts active prices.",
                param=f"{param}[{index}][price]",
            )
        intervals.add((price.interval, price.interval_count))
    if len(intervals) > 1 and billing_mode == "classic":
        raise errors.invalid_request(
            "The price specified has a different billing interval than the other prices of "
            "this subscription.",
            param=param,
        )


def _check_collection(spec: NewSubscription) -> None:
    if spec.collection_method == "send_invoice" and spec.days_until_due is None:
        raise errors.invalid_request(
            "Missing required param: days_until_due. It is required when collection_method is "
            "send_invoice.",
            param="days_until_due",
        )
    if spec.collection_method != "send_invoice" and spec.days_until_due is not None:
        raise errors.invalid_request(
            "days_until_due can only be set when collection_method is send_invoice.",
            param="days_until_due",
        )


def _item_end(core: Core, price_id: str, now: int, trial_end: int | None) -> int:
    """Each item's first period: to the trial's end, else one interval of its own price."""
    if trial_end is not None:
        return trial_end
    price = core.store.prices[price_id]
    return add_interval(now, price.interval or "month", price.interval_count)


def create_subscription(core: Core, customer: Customer, spec: NewSubscription) -> Subscription:
    """A new subscription. `send_invoice` ones are `active` at once, their first invoice
    finalized an hour later and due `days_until_due` days after that
    (https://docs.stripe.com/billing/invoices/subscription;
    https://docs.stripe.com/api/subscriptions/object#subscription_object-collection_method:
    "Stripe will email your customer an invoice with payment instructions and mark the
    subscription as active")."""
    require_ready_clock(core, customer.test_clock)
    check_items(core, spec.items, "items", spec.billing_mode)
    _check_collection(spec)
    now = core.now(customer.test_clock)
    price = core.store.prices[spec.items[0][0]]
    trialing = spec.trial_end is not None and spec.trial_end > now
    trial_end = spec.trial_end if trialing else None
    ends = [_item_end(core, price_id, now, trial_end) for price_id, _ in spec.items]
    end = min(ends)
    sub = Subscription(
        id=core.store.new_id("subscription"),
        created=now,
        seq=core.store.next_seq(),
        customer=customer.id,
        items=[],
        status="trialing" if trialing else "incomplete",
        start_date=now,
        billing_cycle_anchor=end if trialing else now,
        currency=price.currency,
        test_clock=customer.test_clock,
        trial_start=now if trialing else None,
        trial_end=end if trialing else None,
        trial_end_behavior=spec.trial_end_behavior,
        default_payment_method=spec.default_payment_method,
        description=spec.description,
        metadata=dict(spec.metadata),
        billing_mode=spec.billing_mode,
        collection_method=spec.collection_method,
        days_until_due=spec.days_until_due,
    )
    sub.items = [
        SubscriptionItem(
            id=core.store.new_id("subscription_item"),
            created=now,
            price=price_id,
            quantity=quantity,
            current_period_start=now,
            current_period_end=item_end,
        )
        for (price_id, quantity), item_end in zip(spec.items, ends, strict=True)
    ]
    for item in sub.items:
        snapshot(core.store, item)
    if spec.cancel_at_period_end:
        sub.cancel_at_period_end, sub.cancel_at, sub.canceled_at = True, end, now
    elif spec.cancel_at is not None:
        sub.cancel_at, sub.canceled_at = spec.cancel_at, now
    pm = payment_method_for(core, sub, customer.id)
    sends_invoice = spec.collection_method == "send_invoice"
    if not trialing and (sends_invoice or (spec.flow == "charge" and pm is not None and not pm.fails)):
        sub.status = "active"
    core.store.subscriptions[sub.id] = sub
    customer.currency = customer.currency or sub.currency
    emit_subscription(core, "customer.subscription.created", sub)
    inv = build_invoice(core, sub, "subscription_create", now, max(ends), free=trialing)
    if trialing:
        inv.period_end = now
    emit_invoice(core, "invoice.created", inv)
    if sends_invoice and not trialing:
        inv.finalize_at = now + core.settings.invoice_finalize_delay_s
        return sub
    finalize(core, inv)
    if trialing or spec.flow == "checkout" or (spec.flow == "charge" and pm is not None):
        attempt_payment(core, inv)
    return sub


def get_subscription(core: Core, sub_id: str) -> Subscription:
    sub = core.store.subscriptions.get(sub_id)
    if sub is None:
        raise errors.resource_missing("subscription", sub_id)
    return sub


def update_subscription(core: Core, sub: Subscription, p: dict[str, Any]) -> Subscription:
    """Apply an update; on a refused parameter nothing of it stays applied, as on Stripe."""
    saved = copy.deepcopy(sub)
    try:
        return _update_subscription(core, sub, p)
    except errors.StripeError:
        sub.__dict__.update(saved.__dict__)
        raise


def _update_subscription(core: Core, sub: Subscription, p: dict[str, Any]) -> Subscription:
    require_ready_clock(core, sub.test_clock)
    now = core.now(sub.test_clock)
    if sub.status in ("canceled", "incomplete_expired") and set(p) - {"metadata", "expand"}:
        raise errors.invalid_request(
            "A canceled subscription can only update its cancellation_details and metadata."
        )
    before = sub_json(core, sub)
    _update_details(core, sub, p)
    if "items" in p:
        change_items(core, sub, p["items"], now)
    _update_cancellation(sub, p, now)
    if "pause_collection" in p:
        _update_pause(sub, p["pause_collection"])
    ending_trial = _update_trial(sub, p, now)
    after = sub_json(core, sub)
    if previous_attributes(before, after):
        emit_subscription(core, "customer.subscription.updated", sub, before)
    if ending_trial:
        end_trial(core, sub)
    return sub


def _update_details(core: Core, sub: Subscription, p: dict[str, Any]) -> None:
    """`metadata`, `description` and `default_payment_method`."""
    if "metadata" in p:
        apply_metadata(sub.metadata, p["metadata"])
    if "description" in p:
        sub.description = None if p["description"] is UNSET else p["description"]
    if "default_payment_method" in p:
        ref = p["default_payment_method"]
        if ref is UNSET:
            sub.default_payment_method = None
        else:
            pm = materialize_payment_method(core, ref, sub.test_clock, "default_payment_method")
            attach_payment_method(core, pm, core.store.customers[sub.customer])
            sub.default_payment_method = pm.id


def _clear_cancellation(sub: Subscription) -> None:
    sub.cancel_at_period_end, sub.cancel_at, sub.canceled_at = False, None, None


def _update_cancellation(sub: Subscription, p: dict[str, Any], now: int) -> None:
    """`cancel_at_period_end` and `cancel_at`: setting one clears the other, as on Stripe
    (https://docs.stripe.com/billing/subscriptions/cancel)."""
    if "cancel_at_period_end" in p:
        if p["cancel_at_period_end"]:
            sub.cancel_at_period_end, sub.cancel_at, sub.canceled_at = True, period_end(sub), now
        else:
            _clear_cancellation(sub)
    if "cancel_at" in p:
        if p["cancel_at"] is UNSET:
            _clear_cancellation(sub)
            return
        at = int(p["cancel_at"])
        if at <= now:
            raise errors.invalid_value("cancel_at", "cancel_at must be in the future.")
        sub.cancel_at_period_end, sub.cancel_at, sub.canceled_at = False, at, now


def _update_pause(sub: Subscription, pause: Any) -> None:
    """`pause_collection` (https://docs.stripe.com/billing/subscriptions/pause-payment)."""
    if pause is UNSET:
        sub.pause_behavior, sub.pause_resumes_at = None, None
        return
    if "behavior" not in pause:
        raise errors.missing_parameter("pause_collection[behavior]")
    sub.pause_behavior = pause["behavior"]
    sub.pause_resumes_at = pause.get("resumes_at")


def _update_trial(sub: Subscription, p: dict[str, Any], now: int) -> bool:
    """`trial_end` and `trial_settings`; True when the trial is to end now."""
    ending_trial = False
    if "trial_end" in p and sub.status == "trialing":
        value = p["trial_end"]
        if value == "now" or int(value) <= now:
            sub.trial_end, ending_trial = now, True
        else:
            sub.trial_end = int(value)
            for item in sub.items:
                item.current_period_end = sub.trial_end
    if "trial_settings" in p:
        behavior = p["trial_settings"].get("end_behavior", {}).get("missing_payment_method")
        if behavior:
            sub.trial_end_behavior = behavior
    return ending_trial


def change_items(core: Core, sub: Subscription, changes: list[dict[str, Any]], now: int) -> None:
    """Upgrade, downgrade, add or remove items; prorations are not invoiced (documented)."""
    items = {item.id: item for item in sub.items}
    for index, change in enumerate(changes):
        _change_item(core, sub, items, index, change, now)
    if not items:
        raise errors.invalid_request(
            "A subscription must have at least one active item.", param="items"
        )
    sub.items = list(items.values())
    check_items(core, [(item.price, item.quantity) for item in sub.items], "items", sub.billing_mode)


def _change_item(
    core: Core,
    sub: Subscription,
    items: dict[str, SubscriptionItem],
    index: int,
    change: dict[str, Any],
    now: int,
) -> None:
    """One entry of `items[]`: delete (`deleted` with `id`), add (no `id`) or change (`id`)."""
    item_id = change.get("id")
    if item_id is not None and item_id not in items:
        raise errors.resource_missing("subscription_item", item_id, param=f"items[{index}][id]")
    if change.get("deleted"):
        if item_id is None:
            raise errors.missing_parameter(f"items[{index}][id]")
        del items[item_id]
        return
    price_id = change.get("price")
    if price_id is not None:
        check_items(core, [(price_id, 1)], "items")
    if item_id is None:
        if price_id is None:
            raise errors.missing_parameter(f"items[{index}][price]")
        start, end = _new_item_period(core, sub, price_id, now)
        new = SubscriptionItem(
            id=core.store.new_id("subscription_item"),
            created=now,
            price=price_id,
            quantity=change.get("quantity", 1),
            current_period_start=start,
            current_period_end=end,
        )
        snapshot(core.store, new)
        items[new.id] = new
        return
    item = items[item_id]
    if price_id is not None and price_id != item.price:
        item.price = price_id
        snapshot(core.store, item)
    if "quantity" in change:
        item.quantity = change["quantity"]
    if "metadata" in change:
        apply_metadata(item.metadata, change["metadata"])


def _new_item_period(core: Core, sub: Subscription, price_id: str, now: int) -> tuple[int, int]:
    """An added item joins the period of an item of the same interval (or the trial); one of
    a new interval starts its own period now (mixed intervals, flexible billing mode)."""
    price = core.store.prices[price_id]
    interval = (price.interval or "month", price.interval_count)
    same = [i for i in sub.items if item_interval(core, i) == interval]
    if sub.status == "trialing":
        return min(i.current_period_start for i in sub.items), period_end(sub)
    if not same:
        return now, add_interval(now, *interval)
    return same[0].current_period_start, same[0].current_period_end


def cancel_now(core: Core, sub: Subscription) -> Subscription:
    require_ready_clock(core, sub.test_clock)
    if sub.status in ("canceled", "incomplete_expired"):
        raise errors.invalid_request(
            f"No such subscription: '{sub.id}'; it is already canceled.", code="resource_missing"
        )
    cancel(core, sub, reason="cancellation_requested")
    return sub


def resume(core: Core, sub: Subscription) -> Subscription:
    """`POST /v1/subscriptions/{id}/resume` of a `paused` subscription: a new period starts
    now and its invoice is charged at once; if that fails the subscription is `past_due`.
    Events: `customer.subscription.updated`, `customer.subscription.resumed`,
    `invoice.created`, `invoice.finalized`, then paid or failed
    (https://docs.stripe.com/billing/subscriptions/pausing)."""
    require_ready_clock(core, sub.test_clock)
    if sub.status != "paused":
        raise errors.invalid_request(
            f"Subscription {sub.id} is not paused (status {sub.status}); only paused "
            "subscriptions can be resumed."
        )
    now = core.now(sub.test_clock)
    before = sub_json(core, sub)
    sub.status, sub.paused_at, sub.paused_reason = "active", None, None
    sub.billing_cycle_anchor = now
    for item in sub.items:
        item.current_period_start = now
        item.current_period_end = add_interval(now, *item_interval(core, item))
        snapshot(core.store, item)
    end = max(item.current_period_end for item in sub.items)
    inv = build_invoice(core, sub, "subscription_update", now, end)
    emit_subscription(core, "customer.subscription.updated", sub, before)
    emit_subscription(core, "customer.subscription.resumed", sub)
    emit_invoice(core, "invoice.created", inv)
    finalize(core, inv)
    attempt_payment(core, inv)
    return sub


def trial_end_from(p: dict[str, Any], now: int) -> int | None:
    if "trial_end" in p and "trial_period_days" in p:
        raise errors.invalid_request(
            "You may only specify one of these parameters: trial_end, trial_period_days."
        )
    if p.get("trial_end") == "now":
        return None
    if "trial_end" in p:
        trial_end = int(p["trial_end"])
        if trial_end <= now:
            raise errors.invalid_value(
                "trial_end", "Invalid timestamp: must be an integer Unix timestamp in the future."
            )
        return trial_end
    if p.get("trial_period_days"):
        return now + int(p["trial_period_days"]) * DAY_S
    return None
