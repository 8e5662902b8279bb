"""Checkout Sessions in `mode=payment` (one-time purchases), and Payment Links that make them.

- Creating one takes one-time prices only (Stripe refuses a recurring price in payment mode).
  `customer_creation` is `if_required` by default: the buyer stays a guest, the session's
  `customer` stays null and `customer_details` holds what they typed; `always` creates a
  Customer (https://docs.stripe.com/payments/checkout/guest-customers,
  https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-customer_creation).
- Completing it with a card (control API `POST /_fake/checkout/sessions/{id}/complete`) emits
  `customer.created` (when one is created), `payment_method.attached` (with a customer),
  `payment_intent.created`, `charge.succeeded`, `payment_intent.succeeded`, then
  `checkout.session.completed` with `payment_status: paid`
  (https://docs.stripe.com/checkout/fulfillment).
- With a bank debit (`pm_usBankAccount_success` / `_failure`) the session completes `unpaid`
  (`payment_intent.processing`, `charge.pending`, `checkout.session.completed`); settling it
  (`POST /_fake/checkout/sessions/{id}/settle`) emits `charge.succeeded`,
  `payment_intent.succeeded`, `checkout.session.async_payment_succeeded` (`paid`) or
  `charge.failed`, `payment_intent.payment_failed`, `checkout.session.async_payment_failed`
  (https://docs.stripe.com/payments/checkout/fulfill-orders#delayed-notification).
- Payment Links (`POST /v1/payment_links`, https://docs.stripe.com/payment-links/api): a buyer
  opening one gets a new Checkout Session with `payment_link` set and the link's mode, line
  items and `customer_creation` (control API `POST /_fake/payment_links/{id}/checkout`). A
  Payment Link in payment mode creates no Customer unless `customer_creation=always`
  (https://docs.stripe.com/payment-links/customer-info).
"""

from __future__ import annotations

from typing import Any

from . import errors, payments, shapes, shapes_billing
from .billing import apply_metadata, get_customer, require_ready_clock
from .clock import DAY_S
from .core import Core
from .invoicing import TEST_CARDS, attach_payment_method, materialize_payment_method
from .payment_objects import PaymentLink
from .store import CheckoutSession, Customer

JSON = dict[str, Any]


def check_one_time(core: Core, items: list[tuple[str, int]], param: str) -> None:
    if not items:
        raise errors.missing_parameter(param)
    for index, (price_id, _) in enumerate(items):
        price = core.store.prices.get(price_id)
        if price is None:
            raise errors.resource_missing("price", price_id, param=f"{param}[{index}][price]")
        if price.interval is not None:
            raise errors.invalid_request(
                "You specified `payment` mode but passed a recurring price. Either switch to "
                "`subscription` mode or use only one-time prices.",
                param=f"{param}[{index}][price]",
            )


def create_session(core: Core, p: dict[str, Any]) -> CheckoutSession:
    if "subscription_data" in p:
        raise errors.invalid_request(
            "You can not pass `subscription_data` in `payment` mode.", param="subscription_data"
        )
    if "customer" in p and "customer_email" in p:
        raise errors.invalid_request(
            "You may only specify one of these parameters: customer, customer_email."
        )
    if "customer" in p and "customer_creation" in p:
        raise errors.invalid_request(
            "You may only specify one of these parameters: customer, customer_creation."
        )
    clock_id = get_customer(core, p["customer"]).test_clock if "customer" in p else None
    lines = p.get("line_items", {})
    for index, line in enumerate(lines):
        for key in ("price", "quantity"):
            if key not in line:
                raise errors.missing_parameter(f"line_items[{index}][{key}]")
    items = [(line["price"], line["quantity"]) for line in lines]
    check_one_time(core, items, "line_items")
    now = core.now(clock_id)
    session = CheckoutSession(
        id=core.store.new_id("checkout_session"), created=now, seq=core.store.next_seq(),
        expires_at=now + DAY_S, mode="payment", line_items=items,
        client_reference_id=p.get("client_reference_id"), customer=p.get("customer"),
        customer_email=p.get("customer_email"), payment_link=p.get("payment_link"),
        success_url=p.get("success_url"), cancel_url=p.get("cancel_url"), test_clock=clock_id,
        customer_creation=None if "customer" in p else p.get("customer_creation", "if_required"),
    )  # fmt: skip
    apply_metadata(session.metadata, p.get("metadata", {}))
    core.store.sessions[session.id] = session
    return session


def _buyer(core: Core, session: CheckoutSession, email: str) -> Customer | None:
    if session.customer is not None:
        customer = get_customer(core, session.customer)
        require_ready_clock(core, customer.test_clock)
        return customer
    if session.customer_creation != "always":
        return None
    customer = Customer(
        id=core.store.new_id("customer"), created=core.now(None), seq=core.store.next_seq(),
        email=email, invoice_prefix=core.store.random_token(8),
    )  # fmt: skip
    core.store.customers[customer.id] = customer
    core.emit("customer.created", shapes.customer(customer), None)
    return customer


def _method(core: Core, ref: str, customer: Customer | None) -> tuple[str | None, str]:
    """The payment method's id (a new pm_ for a test card) and type."""
    if ref in payments.ASYNC_METHODS:
        return None, payments.ASYNC_METHODS[ref][1]
    card_ref = "pm_card_visa" if ref in payments.DISPUTE_CARDS else ref
    pm = materialize_payment_method(core, card_ref, customer.test_clock if customer else None, "payment_method")
    if customer is not None:
        attach_payment_method(core, pm, customer)
    return pm.id, "card"


def complete(core: Core, session: CheckoutSession, *, payment_method: str | None,
             email: str | None = None, name: str | None = None) -> CheckoutSession:
    """The buyer pays on the Checkout page; see the module docstring for the events."""
    if session.status != "open":
        raise errors.invalid_request(
            f"This Checkout Session is {session.status}; only an open session can be completed.",
            code="checkout_session_not_open",
        )
    if payment_method is None:
        raise errors.invalid_request("payment_method is required in payment mode.", param="payment_method")
    known = payments.is_known_method(payment_method) or payment_method in core.store.payment_methods
    if not known:
        raise errors.resource_missing("PaymentMethod", payment_method, param="payment_method")
    card = TEST_CARDS.get(payment_method)
    if card is not None and card[0]:
        raise errors.card_declined(param="payment_method")
    buyer_email = session.customer_email or email or f"buyer+{core.store.random_token(6).lower()}@example.com"
    customer = _buyer(core, session, buyer_email)
    pm_id, method_type = _method(core, payment_method, customer)
    amount = sum(core.store.prices[price].unit_amount * qty for price, qty in session.line_items)
    clock = customer.test_clock if customer else None
    pi, _ = payments.new_payment(
        core, amount=amount, currency="usd", customer=customer.id if customer else None,
        payment_method=pm_id, method_type=method_type, clock=clock, email=buyer_email,
    )  # fmt: skip
    if payment_method in payments.ASYNC_METHODS:
        pi.settles_ok = payments.ASYNC_METHODS[payment_method][0]
    core.emit("payment_intent.created", payments.pi_json(pi), clock)
    session.status = "complete"
    session.customer = customer.id if customer else None
    session.payment_intent = pi.id
    session.customer_details = {
        "address": None, "business_name": None, "email": customer.email if customer else buyer_email,
        "individual_name": None, "name": (customer.name if customer else None) or name or "Jenny Rosen",
        "phone": None, "tax_exempt": "none", "tax_ids": [],
    }  # fmt: skip
    if method_type == "card":
        charge = payments.succeed(core, pi)
        session.payment_status = "paid"
    else:
        payments.process(core, pi)
        charge = None
    core.emit("checkout.session.completed", session_json(core, session), clock)
    if charge is not None and payment_method in payments.DISPUTE_CARDS:
        reason, inquiry = payments.DISPUTE_CARDS[payment_method]
        payments.open_dispute(core, charge, reason=reason, inquiry=inquiry)
    return session


def settle(core: Core, session: CheckoutSession, succeeded: bool | None = None) -> CheckoutSession:
    """A bank debit's outcome arrives; `succeeded=None` takes the test method's own outcome."""
    pi = core.store.payments.payment_intents.get(session.payment_intent or "")
    if session.mode != "payment" or pi is None or pi.status != "processing":
        raise errors.invalid_request("This Checkout Session has no payment awaiting settlement.")
    clock = pi.clock
    if succeeded is None:
        succeeded = pi.settles_ok
    if succeeded:
        payments.succeed(core, pi)
        session.payment_status = "paid"
        core.emit("checkout.session.async_payment_succeeded", session_json(core, session), clock)
    else:
        payments.fail(core, pi)
        core.emit("checkout.session.async_payment_failed", session_json(core, session), clock)
    return session


def session_json(core: Core, session: CheckoutSession) -> JSON:
    return shapes_billing.checkout_session(core.store, session)


# Payment Links -----------------------------------------------------------------------------


def create_link(core: Core, p: dict[str, Any]) -> PaymentLink:
    lines = p["line_items"]
    for index, line in enumerate(lines):
        for key in ("price", "quantity"):
            if key not in line:
                raise errors.missing_parameter(f"line_items[{index}][{key}]")
    items = [(line["price"], line["quantity"]) for line in lines]
    recurring = [core.store.prices[price].interval is not None for price, _ in items if price in core.store.prices]
    mode = "subscription" if any(recurring) else "payment"
    if mode == "payment":
        check_one_time(core, items, "line_items")
    after = p.get("after_completion", {})
    link = PaymentLink(
        id=core.store.new_id("payment_link"), created=core.now(None), seq=core.store.next_seq(),
        line_items=items, mode=mode, customer_creation=p.get("customer_creation", "if_required"),
        after_completion_url=after.get("redirect", {}).get("url") if after.get("type") == "redirect" else None,
    )  # fmt: skip
    apply_metadata(link.metadata, p.get("metadata", {}))
    core.store.payments.payment_links[link.id] = link
    return link


def open_link(core: Core, link: PaymentLink, client_reference_id: str | None) -> CheckoutSession:
    """A buyer opens the link's URL (optionally with `?client_reference_id=`): a new session."""
    if not link.active:
        raise errors.invalid_request("This payment link is no longer active.")
    p: dict[str, Any] = {
        "mode": link.mode,
        "line_items": [{"price": price, "quantity": qty} for price, qty in link.line_items],
        "payment_link": link.id,
        "metadata": dict(link.metadata),
    }
    if client_reference_id is not None:
        p["client_reference_id"] = client_reference_id
    if link.mode == "payment":
        p["customer_creation"] = link.customer_creation
        return create_session(core, p)
    from .checkout import create_session as create_subscription_session

    return create_subscription_session(core, p)
