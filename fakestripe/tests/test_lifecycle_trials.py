"""Checkout and trial lifecycles emit the events Stripe documents for them, in that order, at
the moments a test clock reaches them; a webhook receiver records them.

Every test registers a `*` endpoint after setting up its catalog and clock, so what the
receiver gets is exactly the lifecycle's events (plus the test clock's own
`test_helpers.test_clock.advancing` / `.ready`, which Stripe sends to such an endpoint too).
"""

from __future__ import annotations

import pytest
import stripe
from fake_helpers import (
    DAY,
    HOUR,
    START,
    SUMMARY,
    Receiver,
    advance,
    card_customer,
    clocked,
    listen,
    make_catalog,
    since,
)

from fakestripe import FakeStripeControl


async def test_payment_link_trial_without_card_pauses_and_keeps_entitlements(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """A Payment Link checkout with a 1-day trial and no card; advance the test clock 25 hours.

    The receiver gets exactly what Stripe sends: the checkout's events (no card, so no
    payment_method.attached; a $0 trial invoice, paid), then at trial end
    `customer.subscription.updated` and `customer.subscription.paused`, and no
    `entitlements.active_entitlement_summary.updated` for the pause, while
    `GET /v1/entitlements/active_entitlements` still lists the features (Stripe's quirk).
    Sources: https://docs.stripe.com/payments/checkout/free-trials,
    https://docs.stripe.com/billing/subscriptions/trials,
    https://docs.stripe.com/billing/subscriptions/webhooks,
    https://docs.stripe.com/billing/entitlements.
    """
    catalog = await make_catalog(client, ("pro", "export"))
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    secret = await listen(client, receiver)
    session = await client.v1.checkout.sessions.create_async(
        {
            "mode": "subscription",
            "line_items": [{"price": catalog.price.id, "quantity": 1}],
            "payment_method_collection": "if_required",
            "subscription_data": {
                "trial_period_days": 1,
                "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
            },
            "payment_link": "plink_1TestTrial",
            "client_reference_id": "u_42",
        }  # type: ignore[arg-type]  # payment_link: a fake-only parameter standing in for a Payment Link
    )
    done = await ctl.complete_checkout(session.id, test_clock=clock.id)
    await ctl.wait_idle()
    checkout = [
        "customer.created",
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "checkout.session.completed",
        SUMMARY,
    ]
    assert receiver.types() == checkout
    completed = receiver.events()[6]["data"]["object"]
    assert (completed["payment_link"], completed["client_reference_id"]) == (
        "plink_1TestTrial",
        "u_42",
    )
    assert completed["payment_status"] == "no_payment_required"

    await advance(client, ctl, clock.id, START + 25 * HOUR)
    assert receiver.types() == checkout + clocked(
        "customer.subscription.updated", "customer.subscription.paused"
    )
    lifecycle = [t for t in receiver.types() if not t.startswith("test_helpers.")]
    assert lifecycle[-1] == "customer.subscription.paused"
    assert lifecycle.count(SUMMARY) == 1
    for got in receiver.received:
        stripe.Webhook.construct_event(got.body, got.signature, secret)

    paused = receiver.events()[-2]
    assert paused["created"] == START + DAY
    assert paused["data"]["object"]["status"] == "paused"
    updated = receiver.events()[-3]
    assert updated["data"]["previous_attributes"]["status"] == "trialing"
    sub = await client.v1.subscriptions.retrieve_async(done["subscription"])
    assert sub.status == "paused"
    assert (
        sub.to_dict()["status_details"]["paused"]["subscription"]["type"]
        == "trial_end_without_payment_method"
    )
    entitlements = await client.v1.entitlements.active_entitlements.list_async(
        {"customer": done["customer"]}
    )
    assert sorted(e.lookup_key for e in entitlements.data) == ["export", "pro"]


async def test_checkout_with_card_emits_stripes_burst(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """A paid subscription checkout sends about ten events within a second, in Stripe's order:
    customer, payment method, subscription (incomplete), invoice created/finalized/paid,
    subscription updated to active, checkout.session.completed, entitlements summary.
    Sources: https://docs.stripe.com/billing/subscriptions/build-subscriptions?ui=checkout,
    https://docs.stripe.com/billing/subscriptions/webhooks."""
    catalog = await make_catalog(client)
    await listen(client, receiver)
    session = await client.v1.checkout.sessions.create_async(
        {
            "mode": "subscription",
            "line_items": [{"price": catalog.price.id, "quantity": 1}],
            "client_reference_id": "u_7",
        }
    )
    await ctl.complete_checkout(session.id, payment_method="pm_card_visa")
    await ctl.wait_idle()
    assert receiver.types() == [
        "customer.created",
        "customer.updated",
        "payment_method.attached",
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
        "checkout.session.completed",
        SUMMARY,
    ]
    events = receiver.events()
    assert max(e["created"] for e in events) - min(e["created"] for e in events) <= 1
    assert events[3]["data"]["object"]["status"] == "incomplete"
    assert events[8]["data"]["object"]["status"] == "active"
    assert events[8]["data"]["previous_attributes"]["status"] == "incomplete"
    assert events[-1]["data"]["object"]["entitlements"]["data"][0]["lookup_key"] == "pro"


async def test_trial_end_with_card_activates_and_charges_an_hour_later(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """With a card, trial end makes the subscription `active` with a new period and a draft
    invoice (`invoice.created`); about an hour later it is finalized and paid.
    Source: https://docs.stripe.com/billing/subscriptions/trials ("Approximately 1 hour
    later, we attempt to charge that invoice")."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await card_customer(client, clock.id)
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}], "trial_period_days": 1}
    )
    await listen(client, receiver)
    await advance(client, ctl, clock.id, START + DAY + 60)
    assert receiver.types() == clocked("customer.subscription.updated", "invoice.created")
    mid = await client.v1.subscriptions.retrieve_async(sub.id, {"expand": ["latest_invoice"]})
    assert mid.status == "active"
    assert mid["items"].data[0].current_period_start == START + DAY
    assert isinstance(mid.latest_invoice, stripe.Invoice)
    assert mid.latest_invoice.status == "draft"
    before = len(receiver.received)
    await advance(client, ctl, clock.id, START + DAY + HOUR + 60)
    assert since(receiver, before) == clocked(
        "invoice.finalized", "invoice.paid", "invoice.payment_succeeded"
    )
    paid = receiver.events()[-2]["data"]["object"]
    assert paid["status_transitions"]["paid_at"] == START + DAY + HOUR


@pytest.mark.parametrize(
    ("behavior", "expected", "status"),
    [
        ("cancel", ["customer.subscription.deleted", SUMMARY], "canceled"),
        (
            "create_invoice",
            [
                "customer.subscription.updated",
                "invoice.created",
                "invoice.finalized",
                "invoice.payment_failed",
                "customer.subscription.updated",
            ],
            "past_due",
        ),
    ],
)
async def test_trial_end_without_card(
    client: stripe.StripeClient,
    ctl: FakeStripeControl,
    receiver: Receiver,
    behavior: str,
    expected: list[str],
    status: str,
) -> None:
    """Without a payment method, trial end follows `trial_settings.end_behavior`:
    `cancel` ends the subscription (`customer.subscription.deleted`, entitlements removed);
    `create_invoice` activates it, then the invoice cannot be paid and it goes `past_due`
    with the invoice open. Source: https://docs.stripe.com/billing/subscriptions/trials."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await client.v1.customers.create_async({"test_clock": clock.id})
    sub = await client.v1.subscriptions.create_async(
        {
            "customer": customer.id,
            "items": [{"price": catalog.price.id}],
            "trial_period_days": 1,
            "trial_settings": {"end_behavior": {"missing_payment_method": behavior}},
        }
    )
    await listen(client, receiver)
    await advance(client, ctl, clock.id, START + DAY + 2 * HOUR)
    assert [t for t in receiver.types() if not t.startswith("test_helpers.")] == expected
    final = await client.v1.subscriptions.retrieve_async(sub.id, {"expand": ["latest_invoice"]})
    assert final.status == status
    entitlements = await client.v1.entitlements.active_entitlements.list_async(
        {"customer": customer.id}
    )
    assert bool(entitlements.data) == (status == "past_due")
    if status == "past_due":
        assert isinstance(final.latest_invoice, stripe.Invoice)
        assert final.latest_invoice.status == "open"
    else:
        assert final.ended_at == START + DAY


async def test_trial_will_end_three_days_before(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """A 7-day trial gets `customer.subscription.trial_will_end` 3 days before it ends.
    Source: https://docs.stripe.com/billing/subscriptions/trials."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await card_customer(client, clock.id)
    await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}], "trial_period_days": 7}
    )
    await listen(client, receiver)
    await advance(client, ctl, clock.id, START + 4 * DAY - 1)
    assert receiver.types() == clocked()
    await advance(client, ctl, clock.id, START + 4 * DAY + 1)
    assert receiver.types() == clocked() + clocked("customer.subscription.trial_will_end")
    assert receiver.events()[-2]["created"] == START + 4 * DAY


async def test_test_clock_rules(client: stripe.StripeClient, ctl: FakeStripeControl) -> None:
    """A test clock answers `advancing` and becomes `ready`; it cannot go back, nor more than
    two intervals of its shortest subscription at once (Stripe's limit).
    Source: https://docs.stripe.com/billing/testing/test-clocks."""
    catalog = await make_catalog(client, interval="week")
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await client.v1.customers.create_async({"test_clock": clock.id})
    await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}], "trial_period_days": 1}
    )
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.test_helpers.test_clocks.advance_async(clock.id, {"frozen_time": START - 1})
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.test_helpers.test_clocks.advance_async(
            clock.id, {"frozen_time": START + 15 * DAY}
        )
    answer = await client.v1.test_helpers.test_clocks.advance_async(
        clock.id, {"frozen_time": START + 10 * DAY}
    )
    assert answer.status == "advancing"
    await ctl.wait_idle()
    assert (await client.v1.test_helpers.test_clocks.retrieve_async(clock.id)).status == "ready"


async def test_paused_after_trial_resumes_once_a_card_is_added(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """A subscription paused at trial end resumes (`POST /v1/subscriptions/{id}/resume`) after
    the customer adds a card: `customer.subscription.updated`, `customer.subscription.resumed`,
    then its invoice is created, finalized and paid at once; access never changed, so no
    summary event. Source: https://docs.stripe.com/billing/subscriptions/pausing."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await client.v1.customers.create_async({"test_clock": clock.id})
    sub = await client.v1.subscriptions.create_async(
        {
            "customer": customer.id,
            "items": [{"price": catalog.price.id}],
            "trial_period_days": 1,
            "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
        }
    )
    await advance(client, ctl, clock.id, START + DAY + HOUR)
    await listen(client, receiver)
    await client.v1.customers.update_async(
        customer.id, {"invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    resumed = await client.v1.subscriptions.resume_async(sub.id)
    assert resumed.status == "active"
    assert resumed["items"].data[0].current_period_start == START + DAY + HOUR
    await ctl.wait_idle()
    assert receiver.types() == [
        "payment_method.attached",
        "customer.updated",
        "customer.subscription.updated",
        "customer.subscription.resumed",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
