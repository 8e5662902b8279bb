"""One-time payments in the fake: payment-mode Checkout (guest and customer, card and bank
debit), line items, PaymentIntents, Charges, Refunds, Disputes and Payment Links, each with the
events Stripe sends, and key sets as stripe-python 16.1.0 declares them."""

from __future__ import annotations

import inspect
import typing
from typing import Any, cast

import pytest
import stripe
from fake_helpers import Receiver, listen, make_catalog
from stripe.params.checkout import SessionCreateParams

from fakestripe import FakeStripeControl, FakeStripeControlError

PAYMENT_FLOW = ["payment_intent.created", "charge.succeeded", "payment_intent.succeeded",
                "checkout.session.completed"]  # fmt: skip


def flow(receiver: Receiver) -> list[str]:
    """The types received, without the catalog's own events."""
    return [t for t in receiver.types() if not t.startswith(("product.", "price.", "entitlements."))]


def declared_keys(cls: type) -> tuple[set[str], set[str]]:
    """(every top-level key the SDK class declares, the non-optional ones)."""
    hints = {k: str(v) for k, v in inspect.get_annotations(cls).items()}
    keys = {k for k in hints if k[0].islower()}
    return keys, {k for k in keys if "Optional" not in hints[k]}


def check_sdk_keys(cls: type, obj: dict[str, Any]) -> None:
    keys, required = declared_keys(cls)
    assert set(obj) - keys == set(), f"{cls.__name__} has undeclared {sorted(set(obj) - keys)}"
    assert required - set(obj) == set(), f"{cls.__name__} lacks {sorted(required - set(obj))}"


async def one_time_price(client: stripe.StripeClient, key: str = "lifetime", amount: int = 9900) -> str:
    catalog = await make_catalog(client, (key,), name=key.title())
    price = await client.v1.prices.create_async(
        {"product": catalog.product.id, "unit_amount": amount, "currency": "usd"}
    )
    return price.id


async def session(client: stripe.StripeClient, price: str, quantity: int = 1, **extra: Any) -> stripe.checkout.Session:
    params = {"mode": "payment", "line_items": [{"price": price, "quantity": quantity}],
              "success_url": "https://example.com/ok", **extra}  # fmt: skip
    return await client.v1.checkout.sessions.create_async(cast(SessionCreateParams, params))


async def test_guest_purchase_with_a_card(client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver) -> None:
    """A payment-mode session without a customer stays a guest (`customer_creation` defaults
    to `if_required`): no Customer, a paid session with a PaymentIntent and a succeeded charge
    with `customer: null`; the events are Stripe's for a card payment."""
    await listen(client, receiver)
    price = await one_time_price(client)
    created = await session(client, price, quantity=2, client_reference_id="u_1")
    assert created.customer_creation == "if_required"
    done = await ctl.complete_checkout(created.id, payment_method="pm_card_visa", email="g@example.com")
    await ctl.wait_idle()
    assert done["customer"] is None
    assert done["payment_status"] == "paid"
    assert done["customer_details"]["email"] == "g@example.com"
    assert flow(receiver) == PAYMENT_FLOW
    pi = await client.v1.payment_intents.retrieve_async(done["payment_intent"])
    assert pi.status == "succeeded"
    assert pi.amount == 2 * 9900
    charges = await client.v1.charges.list_async({"payment_intent": pi.id})
    assert [c.id for c in charges.data] == [pi.latest_charge]
    assert charges.data[0].customer is None
    assert charges.data[0].paid
    items = await client.v1.checkout.sessions.line_items.list_async(created.id)
    assert [(i.quantity, i.price.id if i.price else None) for i in items.data] == [(2, price)]
    check_sdk_keys(stripe.PaymentIntent, pi.to_dict())
    check_sdk_keys(stripe.Charge, charges.data[0].to_dict())
    check_sdk_keys(stripe.LineItem, items.data[0].to_dict())


async def test_customer_creation_always(client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver) -> None:
    """`customer_creation=always` makes a Customer first; the charge names it."""
    await listen(client, receiver)
    price = await one_time_price(client)
    created = await session(client, price, customer_creation="always")
    done = await ctl.complete_checkout(created.id, payment_method="pm_card_visa")
    await ctl.wait_idle()
    assert done["customer"] is not None
    assert done["customer"].startswith("cus_")
    assert flow(receiver) == ["customer.created", "payment_method.attached", *PAYMENT_FLOW]
    charges = await client.v1.charges.list_async({"customer": done["customer"]})
    assert len(charges.data) == 1


async def test_payment_mode_refuses_recurring_prices(client: stripe.StripeClient) -> None:
    """Stripe: payment mode takes one-time prices only."""
    catalog = await make_catalog(client)
    with pytest.raises(stripe.InvalidRequestError, match="recurring"):
        await session(client, catalog.price.id)


@pytest.mark.parametrize(("method", "outcome"), [("pm_usBankAccount_success", "succeeded"),
                                                  ("pm_usBankAccount_failure", "failed")])  # fmt: skip
async def test_async_payment(client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver,
                             method: str, outcome: str) -> None:  # fmt: skip
    """A bank debit completes the session `unpaid`; settling sends
    `checkout.session.async_payment_succeeded` (then `paid`) or `..._failed`."""
    await listen(client, receiver)
    price = await one_time_price(client)
    created = await session(client, price)
    done = await ctl.complete_checkout(created.id, payment_method=method)
    assert done["payment_status"] == "unpaid"
    assert done["status"] == "complete"
    settled = await ctl.settle_checkout(created.id)
    await ctl.wait_idle()
    types = flow(receiver)
    assert types[:4] == ["payment_intent.created", "charge.pending", "payment_intent.processing",
                         "checkout.session.completed"]  # fmt: skip
    if outcome == "succeeded":
        assert types[4:] == ["charge.succeeded", "payment_intent.succeeded",
                             "checkout.session.async_payment_succeeded"]  # fmt: skip
        assert settled["payment_status"] == "paid"
    else:
        assert types[4:] == ["charge.failed", "payment_intent.payment_failed",
                             "checkout.session.async_payment_failed"]  # fmt: skip
        assert settled["payment_status"] == "unpaid"


async def test_refunds_partial_then_full(client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver) -> None:
    """A partial refund leaves `refunded` false; the rest makes it true; more is refused."""
    price = await one_time_price(client, amount=1000)
    done = await ctl.complete_checkout((await session(client, price)).id, payment_method="pm_card_visa")
    await listen(client, receiver)
    pi = await client.v1.payment_intents.retrieve_async(done["payment_intent"])
    first = await client.v1.refunds.create_async({"payment_intent": pi.id, "amount": 300})
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert (charge.amount_refunded, charge.refunded) == (300, False)
    await client.v1.refunds.create_async({"charge": charge.id})
    charge = await client.v1.charges.retrieve_async(charge.id)
    assert (charge.amount_refunded, charge.refunded) == (1000, True)
    with pytest.raises(stripe.InvalidRequestError, match="already been refunded"):
        await client.v1.refunds.create_async({"charge": charge.id})
    await ctl.wait_idle()
    assert flow(receiver) == ["charge.refunded", "refund.created"] * 2
    check_sdk_keys(stripe.Refund, first.to_dict())


@pytest.mark.parametrize("outcome", ["won", "lost"])
async def test_dispute_created_then_closed(client: stripe.StripeClient, ctl: FakeStripeControl,
                                           receiver: Receiver, outcome: str) -> None:  # fmt: skip
    """`pm_card_createDispute` opens a dispute after the charge; evidence decides it as on
    Stripe's test mode; a won dispute reinstates the funds."""
    await listen(client, receiver)
    price = await one_time_price(client)
    done = await ctl.complete_checkout((await session(client, price)).id, payment_method="pm_card_createDispute")
    pi = await client.v1.payment_intents.retrieve_async(done["payment_intent"])
    disputes = await client.v1.disputes.list_async({"payment_intent": pi.id})
    assert [d.status for d in disputes.data] == ["needs_response"]
    dispute = disputes.data[0]
    assert (await client.v1.charges.retrieve_async(str(pi.latest_charge))).disputed
    with pytest.raises(stripe.InvalidRequestError, match="charged back"):
        await client.v1.refunds.create_async({"payment_intent": pi.id})
    await client.v1.disputes.update_async(dispute.id, {"evidence": {"uncategorized_text": f"{'winning' if outcome == 'won' else 'losing'}_evidence"}})
    closed = await client.v1.disputes.retrieve_async(dispute.id)
    assert closed.status == outcome
    await ctl.wait_idle()
    tail = ["charge.dispute.updated", "charge.dispute.closed"]
    if outcome == "won":
        tail.append("charge.dispute.funds_reinstated")
    assert flow(receiver) == [*PAYMENT_FLOW, "charge.dispute.created", "charge.dispute.funds_withdrawn", *tail]
    check_sdk_keys(stripe.Dispute, closed.to_dict())


async def test_control_dispute_and_close(client: stripe.StripeClient, ctl: FakeStripeControl) -> None:
    """The control API disputes any charge; `POST /v1/disputes/{id}/close` accepts it (lost);
    a closed dispute cannot be closed again; an inquiry closes `warning_closed`."""
    price = await one_time_price(client)
    done = await ctl.complete_checkout((await session(client, price)).id, payment_method="pm_card_visa")
    pi = await client.v1.payment_intents.retrieve_async(done["payment_intent"])
    opened = await ctl.dispute_charge(str(pi.latest_charge))
    closed = await client.v1.disputes.close_async(opened["id"])
    assert closed.status == "lost"
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.disputes.close_async(opened["id"])
    other = await ctl.complete_checkout((await session(client, price)).id, payment_method="pm_card_visa")
    charge = (await client.v1.payment_intents.retrieve_async(other["payment_intent"])).latest_charge
    inquiry = await ctl.dispute_charge(str(charge), inquiry=True)
    assert inquiry["status"] == "warning_needs_response"
    resolved = await ctl.resolve_dispute(inquiry["id"], "won")
    assert resolved["status"] == "warning_closed"


async def test_payment_link_in_payment_mode(client: stripe.StripeClient, ctl: FakeStripeControl) -> None:
    """A Payment Link with a one-time price makes payment-mode sessions that carry the link's
    id and `customer_creation`."""
    price = await one_time_price(client)
    link = await client.v1.payment_links.create_async({"line_items": [{"price": price, "quantity": 1}]})
    check_sdk_keys(stripe.PaymentLink, link.to_dict())
    opened = await ctl.open_payment_link(link.id, client_reference_id="u_9")
    assert (opened["mode"], opened["payment_link"], opened["customer_creation"]) == ("payment", link.id, "if_required")
    assert opened["client_reference_id"] == "u_9"
    done = await ctl.complete_checkout(opened["id"], payment_method="pm_card_visa")
    assert done["customer"] is None
    assert done["payment_status"] == "paid"
    always = await client.v1.payment_links.create_async(
        {"line_items": [{"price": price, "quantity": 1}], "customer_creation": "always"}
    )
    opened = await ctl.open_payment_link(always.id)
    done = await ctl.complete_checkout(opened["id"], payment_method="pm_card_visa")
    assert done["customer"] is not None


async def test_renewal_charge_is_listed_and_disputable(client: stripe.StripeClient, ctl: FakeStripeControl) -> None:
    """A paid subscription invoice has a PaymentIntent in its `payments` (expand) and a charge
    listed for the customer, which can be disputed."""
    catalog = await make_catalog(client)
    customer = await client.v1.customers.create_async(
        {"payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    sub = await client.v1.subscriptions.create_async({"customer": customer.id, "items": [{"price": catalog.price.id}]})
    invoice = await client.v1.invoices.retrieve_async(str(sub.latest_invoice), {"expand": ["payments"]})
    assert invoice.payments is not None
    payment = invoice.payments.data[0].payment
    charges = await client.v1.charges.list_async({"customer": customer.id})
    assert [c.payment_intent for c in charges.data] == [payment.payment_intent]
    dispute = await ctl.dispute_charge(charges.data[0].id)
    assert dispute["payment_intent"] == payment.payment_intent


async def test_quantity_update_event(client: stripe.StripeClient, receiver: Receiver) -> None:
    """Raising a subscription item's quantity sends `customer.subscription.updated` with the
    old items in `previous_attributes` (https://docs.stripe.com/billing/subscriptions/quantities)."""
    catalog = await make_catalog(client, ("team",), name="Team")
    customer = await client.v1.customers.create_async(
        {"payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id, "quantity": 5}]}
    )
    await listen(client, receiver)
    item = sub["items"].data[0]
    updated = await client.v1.subscriptions.update_async(sub.id, {"items": [{"id": item.id, "quantity": 8}]})
    assert updated["items"].data[0].quantity == 8
    events = await client.v1.events.list_async({"type": "customer.subscription.updated", "limit": 1})
    previous = typing.cast(dict[str, Any], events.data[0].data.to_dict().get("previous_attributes"))
    assert previous["items"]["data"][0]["quantity"] == 5


async def test_unknown_control_options_refused(ctl: FakeStripeControl) -> None:
    """Control routes refuse unknown options and unknown ids."""
    with pytest.raises(FakeStripeControlError):
        await ctl.dispute_charge("ch_missing")
