"""Payment methods, invoices and charges, and the subscription status changes payments cause.

Test cards follow Stripe's test payment-method ids (https://docs.stripe.com/testing):
`pm_card_visa` always succeeds; `pm_card_chargeCustomerFail` attaches to a customer but every
charge on it is declined. Passing one of these ids creates a new `pm_1...` object, as Stripe does.

A charge uses the subscription's `default_payment_method`, else the customer's
`invoice_settings.default_payment_method`, in that order, like Stripe's retries
(https://docs.stripe.com/billing/revenue-recovery/smart-retries#payment-method-ordering).
"""

from __future__ import annotations

from typing import Any

from . import errors, payments, shapes, shapes_billing
from .clock import DAY_S
from .core import Core
from .events import SUBSCRIPTION_STATUS_THIN_TYPES, previous_attributes
from .store import Customer, Invoice, InvoiceLine, PaymentMethod, Subscription, SubscriptionItem

JSON = dict[str, Any]

# id -> (every charge fails, brand, last4)
TEST_CARDS: dict[str, tuple[bool, str, str]] = {
    "pm_card_visa": (False, "visa", "4242"),
    "pm_card_mastercard": (False, "mastercard", "4444"),
    "pm_card_amex": (False, "amex", "8431"),
    "pm_card_chargeCustomerFail": (True, "visa", "0341"),
    "pm_card_visa_chargeDeclined": (True, "visa", "0002"),
}


def materialize_payment_method(
    core: Core, ref: str, clock_id: str | None, param: str
) -> PaymentMethod:
    """An existing payment method, or a new one made from a test card id."""
    existing = core.store.payment_methods.get(ref)
    if existing is not None:
        return existing
    card = TEST_CARDS.get(ref)
    if card is None:
        raise errors.resource_missing("PaymentMethod", ref, param=param)
    fails, brand, last4 = card
    pm = PaymentMethod(
        id=core.store.new_id("payment_method"),
        created=core.now(clock_id),
        seq=core.store.next_seq(),
        fails=fails,
        brand=brand,
        last4=last4,
    )
    core.store.payment_methods[pm.id] = pm
    return pm


def attach_payment_method(core: Core, pm: PaymentMethod, customer: Customer) -> None:
    if pm.customer == customer.id:
        return
    if pm.customer is not None:
        raise errors.invalid_request(
            "The payment method you provided has already been attached to a customer.",
            param="payment_method",
        )
    pm.customer = customer.id
    core.emit("payment_method.attached", shapes.payment_method(pm), customer.test_clock)


def payment_method_for(
    core: Core, sub: Subscription | None, customer_id: str
) -> PaymentMethod | None:
    ref = sub.default_payment_method if sub is not None else None
    if ref is None:
        customer = core.store.customers.get(customer_id)
        ref = customer.default_payment_method if customer is not None else None
    return core.store.payment_methods.get(ref) if ref else None


def sub_json(core: Core, sub: Subscription) -> JSON:
    return shapes_billing.subscription(core.store, sub)


def emit_subscription(
    core: Core, type_: str, sub: Subscription, before: JSON | None = None
) -> None:
    after = sub_json(core, sub)
    previous = previous_attributes(before, after) if before is not None else None
    core.emit(type_, after, sub.test_clock, previous)
    core.entitlements.touch(sub.customer)
    status_thin_event(core, type_, before, after, sub.test_clock)


def status_thin_event(
    core: Core, type_: str, before: JSON | None, after: JSON, clock_id: str | None
) -> None:
    """The thin-only `v1.customer.subscription.<status>` of a subscription that came to that
    status: created in it, updated into it, or ended `incomplete_expired` (assumption:
    fakestripe/README.md)."""
    if type_ == "customer.subscription.updated":
        came_to = after["status"] if before and before.get("status") != after["status"] else None
    elif type_ in ("customer.subscription.created", "customer.subscription.deleted"):
        came_to = after["status"]
    else:
        came_to = None
    thin_type = SUBSCRIPTION_STATUS_THIN_TYPES.get(came_to or "")
    if thin_type is not None:
        core.emit_thin(thin_type, after, clock_id)


def emit_invoice(core: Core, type_: str, inv: Invoice) -> None:
    core.emit(type_, shapes_billing.invoice(core.store, inv), inv.test_clock)


def build_invoice(
    core: Core,
    sub: Subscription,
    billing_reason: str,
    period_start: int,
    period_end: int,
    *,
    free: bool = False,
    items: list[SubscriptionItem] | None = None,
) -> Invoice:
    """A draft invoice for the subscription's items (or just `items`) over one period (not yet
    announced). A `send_invoice` subscription's invoice is due `days_until_due` days after it
    is finalized."""
    now = core.now(sub.test_clock)
    inv_id = core.store.new_id("invoice")
    lines = []
    for item in sub.items if items is None else items:
        price = core.store.prices[item.price]
        product = core.store.products.get(price.product)
        label = product.name if product else price.product
        description = f"{item.quantity} × {label}"
        if free:
            description = f"Trial period for {label}"
        lines.append(
            InvoiceLine(
                id=core.store.new_id("invoice_line"),
                amount=0 if free else price.unit_amount * item.quantity,
                description=description,
                period_start=period_start,
                period_end=period_end,
                price=price.id,
                quantity=item.quantity,
                subscription_item=item.id,
            )
        )
    inv = Invoice(
        id=inv_id,
        created=now,
        seq=core.store.next_seq(),
        customer=sub.customer,
        subscription=sub.id,
        billing_reason=billing_reason,
        lines=lines,
        period_start=period_start,
        period_end=period_end,
        currency=sub.currency,
        test_clock=sub.test_clock,
        subscription_metadata=dict(sub.metadata),
        collection_method=sub.collection_method,
        days_until_due=sub.days_until_due,
    )
    core.store.invoices[inv.id] = inv
    sub.latest_invoice = inv.id
    return inv


def finalize(core: Core, inv: Invoice) -> None:
    customer = core.store.customers.get(inv.customer)
    inv.status = "open"
    inv.finalized_at = core.now(inv.test_clock)
    inv.finalize_at = None
    if inv.collection_method == "send_invoice" and inv.amount_due > 0:
        inv.due_date = inv.finalized_at + (inv.days_until_due or 0) * DAY_S
    if customer is not None:
        inv.number = f"{customer.invoice_prefix}-{customer.next_invoice_sequence:04d}"
        customer.next_invoice_sequence += 1
    emit_invoice(core, "invoice.finalized", inv)


def attempt_payment(core: Core, inv: Invoice) -> bool:
    """Charge an open invoice (no-op success for $0); emits the invoice events either way."""
    sub = core.store.subscriptions.get(inv.subscription or "")
    if inv.amount_due == 0:
        mark_paid(core, inv, sub)
        return True
    pm = payment_method_for(core, sub, inv.customer)
    if pm is not None and not pm.fails:
        inv.attempt_count += 1
        inv.attempted = True
        mark_paid(core, inv, sub)
        return True
    record_failure(core, inv, sub)
    return False


def mark_paid(core: Core, inv: Invoice, sub: Subscription | None, *, charged: bool = True) -> None:
    now = core.now(inv.test_clock)
    inv.status = "paid"
    inv.paid_at = now
    inv.amount_paid = inv.amount_due
    inv.attempted = True
    inv.next_payment_attempt = None
    inv.auto_advance = False
    if charged:
        pm = payment_method_for(core, sub, inv.customer)
        payments.charge_for_invoice(core, inv, pm.id if pm else None)
    emit_invoice(core, "invoice.paid", inv)
    emit_invoice(core, "invoice.payment_succeeded", inv)
    if sub is not None and sub.status in ("incomplete", "past_due", "unpaid"):
        if any(
            other.status == "open" and other.id != inv.id
            for other in core.store.invoices.values()
            if other.subscription == sub.id
        ):
            return
        before = sub_json(core, sub)
        sub.status = "active"
        sub.past_due_since = None
        emit_subscription(core, "customer.subscription.updated", sub, before)


def record_failure(core: Core, inv: Invoice, sub: Subscription | None) -> None:
    now = core.now(inv.test_clock)
    inv.attempt_count += 1
    inv.attempted = True
    if inv.first_failure_at is None:
        inv.first_failure_at = now
    inv.next_payment_attempt = None
    retries = core.settings.retry_schedule_days
    retrying = inv.billing_reason != "subscription_create" and sub is not None
    if retrying and inv.attempt_count - 1 < len(retries):
        due = inv.first_failure_at + int(retries[inv.attempt_count - 1] * DAY_S)
        inv.next_payment_attempt = max(due, now + 1)
    emit_invoice(core, "invoice.payment_failed", inv)
    if sub is None:
        return
    if sub.status in ("active", "trialing"):
        before = sub_json(core, sub)
        sub.status = "past_due"
        sub.past_due_since = now
        emit_subscription(core, "customer.subscription.updated", sub, before)
    if retrying and inv.next_payment_attempt is None:
        retries_exhausted(core, sub)


def retries_exhausted(core: Core, sub: Subscription) -> None:
    action = core.settings.retry_exhausted_action
    if sub.status not in ("past_due", "active"):
        return
    if action == "cancel":
        cancel(core, sub, reason="payment_failed")
    elif action == "unpaid":
        before = sub_json(core, sub)
        sub.status = "unpaid"
        emit_subscription(core, "customer.subscription.updated", sub, before)


def cancel(core: Core, sub: Subscription, reason: str | None) -> None:
    """End the subscription now: status `canceled`, `customer.subscription.deleted`."""
    now = core.now(sub.test_clock)
    sub.status = "canceled"
    sub.ended_at = now
    if sub.canceled_at is None:
        sub.canceled_at = now
    sub.cancellation_reason = reason
    for inv in core.store.invoices.values():
        if inv.subscription == sub.id and inv.status in ("draft", "open"):
            inv.next_payment_attempt = None
            inv.auto_advance = False
            inv.finalize_at = None
    emit_subscription(core, "customer.subscription.deleted", sub)


def void(core: Core, inv: Invoice) -> None:
    inv.status = "void"
    inv.voided_at = core.now(inv.test_clock)
    inv.next_payment_attempt = None
    inv.auto_advance = False
    emit_invoice(core, "invoice.voided", inv)


def mark_uncollectible(core: Core, inv: Invoice) -> None:
    inv.status = "uncollectible"
    inv.marked_uncollectible_at = core.now(inv.test_clock)
    inv.next_payment_attempt = None
    inv.auto_advance = False
    emit_invoice(core, "invoice.marked_uncollectible", inv)


def finalize_and_collect(core: Core, inv: Invoice) -> None:
    """What Stripe does about an hour after a renewal invoice was created. A `send_invoice`
    invoice is finalized and sent, not charged: the customer pays it by its due date
    (https://docs.stripe.com/billing/invoices/subscription)."""
    sub = core.store.subscriptions.get(inv.subscription or "")
    if sub is not None and sub.pause_behavior == "keep_as_draft":
        inv.auto_advance = False
        inv.finalize_at = None
        return
    finalize(core, inv)
    if inv.collection_method == "send_invoice":
        if inv.amount_due == 0:
            mark_paid(core, inv, sub)
        return
    if sub is not None and sub.pause_behavior == "void":
        void(core, inv)
    elif sub is not None and sub.pause_behavior == "mark_uncollectible":
        mark_uncollectible(core, inv)
    else:
        attempt_payment(core, inv)


def overdue(core: Core, inv: Invoice) -> None:
    """A `send_invoice` invoice still open at its `due_date`: its subscription turns past_due
    (https://docs.stripe.com/billing/subscriptions/overview#payment-status)."""
    inv.overdue = True
    sub = core.store.subscriptions.get(inv.subscription or "")
    if sub is None or sub.status not in ("active", "trialing"):
        return
    before = sub_json(core, sub)
    sub.status = "past_due"
    sub.past_due_since = core.now(inv.test_clock)
    emit_subscription(core, "customer.subscription.updated", sub, before)


def pay_manually(
    core: Core, inv: Invoice, pm: PaymentMethod | None, *, out_of_band: bool = False
) -> None:
    """`POST /v1/invoices/{id}/pay`: charge now (a declined card answers 402), or, with
    `paid_out_of_band`, record a payment made outside Stripe
    (https://docs.stripe.com/api/invoices/pay)."""
    if inv.status == "draft":
        finalize(core, inv)
    if inv.status != "open":
        raise errors.invalid_request("Invoice is already paid", code="invoice_not_open")
    sub = core.store.subscriptions.get(inv.subscription or "")
    if out_of_band:
        mark_paid(core, inv, sub, charged=False)
        return
    card = pm or payment_method_for(core, sub, inv.customer)
    if inv.amount_due > 0 and card is None:
        raise errors.invalid_request(
            "This customer has no attached payment source or default payment method."
        )
    if inv.amount_due > 0 and card is not None and card.fails:
        inv.attempt_count += 1
        inv.attempted = True
        emit_invoice(core, "invoice.payment_failed", inv)
        raise errors.card_declined()
    inv.attempt_count += 1
    mark_paid(core, inv, sub)
