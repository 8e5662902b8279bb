"""Checkout Sessions in `mode=subscription`, and their completion by a (simulated) buyer.

Completing a session (control API `POST /_fake/checkout/sessions/{id}/complete`) does what
Stripe does when the buyer pays, and emits, in this order:

1. `customer.created` (when the session had no customer)
2. `customer.updated` + `payment_method.attached` (when a card was entered; the card's
   billing name fills the new customer's name)
3. `customer.subscription.created` (`trialing`, or `incomplete` until the first invoice is paid)
4. `invoice.created`, `invoice.finalized`, `invoice.paid`, `invoice.payment_succeeded`
5. `customer.subscription.updated` (`incomplete` -> `active`, when there is no trial)
6. `checkout.session.completed`
7. `entitlements.active_entitlement_summary.updated` (when the customer's features changed)

Sources: https://docs.stripe.com/billing/subscriptions/build-subscriptions?ui=checkout,
https://docs.stripe.com/payments/checkout/free-trials (trials without a card:
`payment_method_collection=if_required`), https://docs.stripe.com/billing/subscriptions/webhooks.
"""

from __future__ import annotations

from typing import Any

from . import checkout_payment, errors, shapes, shapes_billing
from .billing import (
    NewSubscription,
    apply_metadata,
    check_items,
    create_subscription,
    get_customer,
    require_ready_clock,
)
from .clock import DAY_S
from .core import Core
from .events import previous_attributes
from .invoicing import TEST_CARDS, attach_payment_method, materialize_payment_method
from .store import CheckoutSession, Customer

JSON = dict[str, Any]


def session_json(core: Core, session: CheckoutSession) -> JSON:
    return shapes_billing.checkout_session(core.store, session)


def create_session(core: Core, p: dict[str, Any]) -> CheckoutSession:
    if p["mode"] == "payment":
        return checkout_payment.create_session(core, p)
    if p["mode"] != "subscription":
        raise errors.invalid_value(
            "mode", "The fake Stripe supports Checkout Sessions in mode=subscription and mode=payment only."
        )
    if "customer" in p and "customer_email" in p:
        raise errors.invalid_request(
            "You may only specify one of these parameters: customer, customer_email."
        )
    clock_id = None
    if "customer" in p:
        clock_id = get_customer(core, p["customer"]).test_clock
    for index, line in enumerate(p["line_items"]):
        if "price" not in line:
            raise errors.missing_parameter(f"line_items[{index}][price]")
        if "quantity" not in line:
            raise errors.missing_parameter(f"line_items[{index}][quantity]")
    items = [(line["price"], line["quantity"]) for line in p["line_items"]]
    check_items(core, items, "line_items")
    data = p.get("subscription_data", {})
    if "trial_period_days" in data and "trial_end" in data:
        raise errors.invalid_request(
            "You may only specify one of these parameters: subscription_data[trial_end], "
            "subscription_data[trial_period_days]."
        )
    now = core.now(clock_id)
    session = CheckoutSession(
        id=core.store.new_id("checkout_session"),
        created=now,
        seq=core.store.next_seq(),
        expires_at=now + DAY_S,
        mode="subscription",
        line_items=items,
        payment_method_collection=p.get("payment_method_collection", "always"),
        client_reference_id=p.get("client_reference_id"),
        customer=p.get("customer"),
        customer_email=p.get("customer_email"),
        trial_period_days=data.get("trial_period_days"),
        trial_end=data.get("trial_end"),
        trial_end_behavior=data.get("trial_settings", {})
        .get("end_behavior", {})
        .get("missing_payment_method"),
        payment_link=p.get("payment_link"),
        success_url=p.get("success_url"),
        cancel_url=p.get("cancel_url"),
        test_clock=clock_id,
    )
    apply_metadata(session.metadata, p.get("metadata", {}))
    apply_metadata(session.subscription_metadata, data.get("metadata", {}))
    core.store.sessions[session.id] = session
    return session


def has_trial(session: CheckoutSession) -> bool:
    return bool(session.trial_period_days or session.trial_end)


def complete(
    core: Core,
    session: CheckoutSession,
    *,
    payment_method: str | None,
    test_clock: str | None = None,
    email: str | None = None,
    name: str | None = None,
) -> CheckoutSession:
    """The buyer submits the Checkout page; see the module docstring for the events."""
    if session.mode == "payment":
        return checkout_payment.complete(core, session, payment_method=payment_method, email=email, name=name)
    if session.status != "open":
        raise errors.invalid_request(
            f"This Checkout Session is {session.status}; only an open session can be completed.",
            code="checkout_session_not_open",
        )
    if payment_method is None and not (
        session.payment_method_collection == "if_required" and has_trial(session)
    ):
        raise errors.invalid_request(
            "payment_method is required: this session collects a payment method "
            "(payment_method_collection=always, or nothing is free today).",
            param="payment_method",
        )
    known = payment_method in TEST_CARDS or payment_method in core.store.payment_methods
    if payment_method is not None and not known:
        raise errors.resource_missing("PaymentMethod", payment_method, param="payment_method")
    card = TEST_CARDS.get(payment_method or "")
    if card is not None and card[0] and not has_trial(session):
        raise errors.card_declined(param="payment_method")
    customer = _buyer(core, session, test_clock, email)
    now = core.now(customer.test_clock)
    pm = None
    if payment_method is not None:
        if session.customer is None:
            before = shapes.customer(customer)
            customer.name = customer.name or name or "Jenny Rosen"
            after = shapes.customer(customer)
            core.emit(
                "customer.updated", after, customer.test_clock, previous_attributes(before, after)
            )
        pm = materialize_payment_method(core, payment_method, customer.test_clock, "payment_method")
        attach_payment_method(core, pm, customer)
    trial_end = None
    if session.trial_end is not None:
        trial_end = session.trial_end
    elif session.trial_period_days:
        trial_end = now + session.trial_period_days * DAY_S
    sub = create_subscription(
        core,
        customer,
        NewSubscription(
            items=list(session.line_items),
            trial_end=trial_end,
            trial_end_behavior=session.trial_end_behavior or "create_invoice",
            default_payment_method=pm.id if pm else None,
            metadata=dict(session.subscription_metadata),
            flow="checkout",
        ),
    )
    session.status = "complete"
    session.customer = customer.id
    session.subscription = sub.id
    session.invoice = sub.latest_invoice
    session.payment_status = "no_payment_required" if has_trial(session) else "paid"
    session.customer_details = {
        "address": None,
        "business_name": None,
        "email": customer.email,
        "individual_name": None,
        "name": customer.name,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }
    core.emit("checkout.session.completed", session_json(core, session), customer.test_clock)
    return session


def _buyer(
    core: Core, session: CheckoutSession, test_clock: str | None, email: str | None
) -> Customer:
    if session.customer is not None:
        customer = get_customer(core, session.customer)
        require_ready_clock(core, customer.test_clock)
        return customer
    if test_clock is not None:
        if test_clock not in core.store.clocks:
            raise errors.resource_missing("test_helpers.test_clock", test_clock, param="test_clock")
        require_ready_clock(core, test_clock)
    customer = Customer(
        id=core.store.new_id("customer"),
        created=core.now(test_clock),
        seq=core.store.next_seq(),
        email=session.customer_email
        or email
        or f"buyer+{core.store.random_token(6).lower()}@example.com",
        test_clock=test_clock,
        invoice_prefix=core.store.random_token(8),
    )
    core.store.customers[customer.id] = customer
    core.emit("customer.created", shapes.customer(customer), test_clock)
    return customer


def expire(core: Core, session: CheckoutSession) -> CheckoutSession:
    if session.status != "open":
        raise errors.invalid_request(
            f"Only Checkout Sessions with a status of `open` can be expired; this one is {session.status}."
        )
    session.status = "expired"
    core.emit("checkout.session.expired", session_json(core, session), session.test_clock)
    return session
