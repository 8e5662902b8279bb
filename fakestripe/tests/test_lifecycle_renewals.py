"""Renewal, payment retry, cancellation, pause-collection and plan-change lifecycles emit the
events Stripe documents for them, in order; entitlement summaries follow feature changes.

As in test_lifecycle_trials.py, each test registers a `*` endpoint after its setup, so the
receiver records exactly the lifecycle's events (and the test clock's advancing / ready).
"""

from __future__ import annotations

from typing import Any

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


async def test_renewal_succeeds_after_the_finalize_delay(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """At the period end the items get the new period and a draft invoice is created; the
    invoice is finalized and paid an hour later, so for an hour the new period shows with no
    payment confirmed. Source: https://docs.stripe.com/billing/subscriptions/overview#invoice-lifecycle."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await card_customer(client, clock.id)
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}]}
    )
    end = sub["items"].data[0].current_period_end
    await listen(client, receiver)
    await advance(client, ctl, clock.id, end + 1)
    assert receiver.types() == clocked("customer.subscription.updated", "invoice.created")
    updated = receiver.events()[1]["data"]
    assert updated["object"]["items"]["data"][0]["current_period_start"] == end
    assert updated["previous_attributes"]["items"]["data"][0]["current_period_end"] == end
    before = len(receiver.received)
    await advance(client, ctl, clock.id, end + HOUR)
    assert since(receiver, before) == clocked(
        "invoice.finalized", "invoice.paid", "invoice.payment_succeeded"
    )
    invoice = receiver.events()[-2]["data"]["object"]
    assert invoice["billing_reason"] == "subscription_cycle"
    assert invoice["parent"]["subscription_details"]["subscription"] == sub.id


async def failing_renewal(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> tuple[stripe.Customer, stripe.Subscription, str]:
    """A trialing subscription whose card attaches but declines every charge; returns after
    the first renewal charge failed (1 day + 1 hour in)."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await card_customer(client, clock.id, "pm_card_chargeCustomerFail")
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}], "trial_period_days": 1}
    )
    await listen(client, receiver)
    await advance(client, ctl, clock.id, START + DAY + HOUR)
    assert receiver.types() == clocked(
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.payment_failed",
        "customer.subscription.updated",
    )
    assert receiver.events()[-2]["data"]["object"]["status"] == "past_due"
    return customer, sub, clock.id


async def test_failed_renewal_is_retried_then_canceled(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """A declined renewal makes the subscription `past_due`; it is retried 3, 5 and 7 days
    after the first failure (`invoice.payment_failed` each time) and, with the default
    setting, canceled when the retries run out (entitlements removed).
    Source: https://docs.stripe.com/billing/revenue-recovery/smart-retries."""
    customer, sub, clock_id = await failing_renewal(client, ctl, receiver)
    first_failure = START + DAY + HOUR
    invoice = await client.v1.invoices.retrieve_async(
        str((await client.v1.subscriptions.retrieve_async(sub.id)).latest_invoice)
    )
    assert invoice.next_payment_attempt == first_failure + 3 * DAY
    before = len(receiver.received)
    await advance(client, ctl, clock_id, first_failure + 5 * DAY)
    assert since(receiver, before) == clocked("invoice.payment_failed", "invoice.payment_failed")
    before = len(receiver.received)
    await advance(client, ctl, clock_id, first_failure + 7 * DAY)
    assert since(receiver, before) == clocked(
        "invoice.payment_failed", "customer.subscription.deleted", SUMMARY
    )
    final = await client.v1.subscriptions.retrieve_async(sub.id)
    assert final.status == "canceled"
    assert final.cancellation_details is not None
    assert final.cancellation_details.reason == "payment_failed"
    assert (
        await client.v1.entitlements.active_entitlements.list_async({"customer": customer.id})
    ).data == []


@pytest.mark.parametrize(
    ("setting", "tail", "status"),
    [
        ("unpaid", ["customer.subscription.updated", SUMMARY], "unpaid"),
        ("past_due", [], "past_due"),
    ],
)
async def test_retry_exhaustion_follows_the_account_setting(
    client: stripe.StripeClient,
    ctl: FakeStripeControl,
    receiver: Receiver,
    setting: str,
    tail: list[str],
    status: str,
) -> None:
    """When retries run out the subscription becomes `unpaid` or stays `past_due`, per the
    account's setting (control API). Source: https://docs.stripe.com/billing/revenue-recovery/smart-retries."""
    await ctl.update_settings(retry_exhausted_action=setting, retry_schedule_days=[1])
    _, sub, clock_id = await failing_renewal(client, ctl, receiver)
    before = len(receiver.received)
    await advance(client, ctl, clock_id, START + 2 * DAY + HOUR)
    assert since(receiver, before) == clocked("invoice.payment_failed", *tail)
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == status


async def test_retry_succeeds_after_the_card_is_replaced(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """Replacing the customer's default card with `pm_card_visa` makes the next retry pay the
    invoice: `invoice.paid`, `invoice.payment_succeeded`, and the subscription back to
    `active`; entitlements never changed, so no summary event.
    Source: https://docs.stripe.com/billing/revenue-recovery/smart-retries."""
    customer, sub, clock_id = await failing_renewal(client, ctl, receiver)
    before = len(receiver.received)
    await client.v1.customers.update_async(
        customer.id, {"invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    await advance(client, ctl, clock_id, START + 4 * DAY + HOUR)
    assert since(receiver, before) == [
        "payment_method.attached",
        "customer.updated",
        *clocked("invoice.paid", "invoice.payment_succeeded", "customer.subscription.updated"),
    ]
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == "active"


async def test_cancel_at_period_end(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """`cancel_at_period_end=true` sets `cancel_at` to the period end (as current Stripe
    does) and the subscription ends there: `customer.subscription.deleted`, status
    `canceled`, `ended_at`, no renewal invoice, entitlements removed.
    Source: https://docs.stripe.com/billing/subscriptions/cancel."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await card_customer(client, clock.id)
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}]}
    )
    end = sub["items"].data[0].current_period_end
    await listen(client, receiver)
    updated = await client.v1.subscriptions.update_async(sub.id, {"cancel_at_period_end": True})
    assert (updated.cancel_at, updated.cancel_at_period_end, updated.status) == (
        end,
        True,
        "active",
    )
    await ctl.wait_idle()
    change = receiver.events()[0]["data"]["previous_attributes"]
    assert change["cancel_at"] is None
    assert change["cancel_at_period_end"] is False
    await advance(client, ctl, clock.id, end + 2 * HOUR)
    assert receiver.types() == [
        "customer.subscription.updated",
        *clocked("customer.subscription.deleted", SUMMARY),
    ]
    final = await client.v1.subscriptions.retrieve_async(sub.id)
    assert (final.status, final.ended_at) == ("canceled", end)


@pytest.mark.parametrize(
    ("behavior", "event"),
    [("void", "invoice.voided"), ("mark_uncollectible", "invoice.marked_uncollectible")],
)
async def test_pause_collection_keeps_the_subscription_active(
    client: stripe.StripeClient,
    ctl: FakeStripeControl,
    receiver: Receiver,
    behavior: str,
    event: str,
) -> None:
    """With `pause_collection` the subscription stays `active` (access kept) and the renewal
    invoice is voided or marked uncollectible instead of charged; `pause_collection=""`
    resumes. Source: https://docs.stripe.com/billing/subscriptions/pause-payment."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await card_customer(client, clock.id)
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}]}
    )
    end = sub["items"].data[0].current_period_end
    await listen(client, receiver)
    await client.v1.subscriptions.update_async(sub.id, {"pause_collection": {"behavior": behavior}})
    await advance(client, ctl, clock.id, end + 2 * HOUR)
    assert receiver.types() == [
        "customer.subscription.updated",
        *clocked("customer.subscription.updated", "invoice.created", "invoice.finalized", event),
    ]
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == "active"
    resumed = await client.v1.subscriptions.update_async(sub.id, {"pause_collection": ""})
    assert resumed.pause_collection is None
    await ctl.wait_idle()
    assert (
        receiver.events()[-1]["data"]["previous_attributes"]["pause_collection"]["behavior"]
        == behavior
    )


async def test_upgrade_changes_price_and_features_in_one_update(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """Replacing an item's price sends one `customer.subscription.updated` whose
    `previous_attributes.items` has the old price, then one entitlements summary with the
    new product's features. Source: https://docs.stripe.com/billing/subscriptions/change-price."""
    basic = await make_catalog(client, ("basic",), name="Basic", unit_amount=500)
    pro = await make_catalog(client, ("pro", "export"))
    customer = await client.v1.customers.create_async(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": basic.price.id}]}
    )
    await listen(client, receiver)
    item = sub["items"].data[0]
    await client.v1.subscriptions.update_async(
        sub.id, {"items": [{"id": item.id, "price": pro.price.id}], "proration_behavior": "none"}
    )
    await ctl.wait_idle()
    assert receiver.types() == ["customer.subscription.updated", SUMMARY]
    previous: dict[str, Any] = receiver.events()[0]["data"]["previous_attributes"]
    assert previous["items"]["data"][0]["price"]["id"] == basic.price.id
    summary = receiver.events()[1]["data"]["object"]
    assert sorted(e["lookup_key"] for e in summary["entitlements"]["data"]) == ["export", "pro"]


async def test_feature_changes_fire_no_event_and_wait_for_the_next_period(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """Attaching a feature to a product (or removing it) fires no event at all; existing
    subscriptions' active entitlements change only at their next billing period.
    Source: https://docs.stripe.com/billing/entitlements."""
    a = await make_catalog(client, ("pro",), name="A")
    customer = await client.v1.customers.create_async({})
    await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": a.price.id}], "trial_period_days": 5}
    )
    extra = await client.v1.entitlements.features.create_async({"name": "SSO", "lookup_key": "sso"})
    await listen(client, receiver)
    attached = await client.v1.products.features.create_async(
        a.product.id, {"entitlement_feature": extra.id}
    )
    await ctl.wait_idle()
    assert receiver.types() == []
    listed = await client.v1.entitlements.active_entitlements.list_async({"customer": customer.id})
    assert [e.lookup_key for e in listed.data] == ["pro"]
    await client.v1.products.features.delete_async(a.product.id, attached.id)
    await ctl.wait_idle()
    assert receiver.types() == []


async def test_two_subscriptions_union_and_cancel_one(client: stripe.StripeClient) -> None:
    """A customer's entitlements are the union of its subscriptions; canceling one keeps
    the other's features. Source: https://docs.stripe.com/billing/entitlements."""
    a = await make_catalog(client, ("pro",), name="A")
    b = await make_catalog(client, ("export",), name="B")
    customer = await client.v1.customers.create_async(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    first = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": a.price.id}]}
    )
    await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": b.price.id}]}
    )
    keys = [
        e.lookup_key
        for e in (
            await client.v1.entitlements.active_entitlements.list_async({"customer": customer.id})
        ).data
    ]
    assert sorted(keys) == ["export", "pro"]
    await client.v1.subscriptions.cancel_async(first.id)
    keys = [
        e.lookup_key
        for e in (
            await client.v1.entitlements.active_entitlements.list_async({"customer": customer.id})
        ).data
    ]
    assert keys == ["export"]


async def test_global_clock_renews_subscriptions_off_test_clocks(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """Objects not on a test clock follow the global clock: advancing it past a period end
    and the finalize delay renews and charges. Events older than 30 days of that clock are
    no longer listed, as Stripe keeps events for 30 days.
    Source: https://docs.stripe.com/billing/subscriptions/overview#invoice-lifecycle,
    https://docs.stripe.com/api/events."""
    catalog = await make_catalog(client, interval="day")
    customer = await client.v1.customers.create_async(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}]}
    )
    await listen(client, receiver)
    await ctl.advance_clock(DAY + HOUR + 5)
    await ctl.wait_idle()
    assert receiver.types() == [
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    renewed = await client.v1.subscriptions.retrieve_async(sub.id)
    assert renewed["items"].data[0].current_period_start == sub["items"].data[0].current_period_end
    await client.v1.subscriptions.cancel_async(sub.id)
    await ctl.advance_clock(31 * DAY)
    remaining = await client.v1.events.list_async({"limit": 100})
    assert [e.type for e in remaining.data] == []


async def test_declined_first_payment_leaves_incomplete_then_expires(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """With `payment_behavior=allow_incomplete` (the default) and a declining card, the new
    subscription is `incomplete` with an open invoice; 23 hours later it is
    `incomplete_expired` and the invoice is voided. `error_if_incomplete` instead answers 402
    and creates nothing. Source: https://docs.stripe.com/billing/subscriptions/overview#payment-status."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": START})
    customer = await card_customer(client, clock.id, "pm_card_chargeCustomerFail")
    await listen(client, receiver)
    with pytest.raises(stripe.CardError):
        await client.v1.subscriptions.create_async(
            {
                "customer": customer.id,
                "items": [{"price": catalog.price.id}],
                "payment_behavior": "error_if_incomplete",
            }
        )
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}]}
    )
    assert sub.status == "incomplete"
    await ctl.wait_idle()
    assert receiver.types() == [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.payment_failed",
    ]
    await advance(client, ctl, clock.id, START + 23 * HOUR + 1)
    assert since(receiver, 4) == clocked("customer.subscription.deleted", "invoice.voided")
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == "incomplete_expired"


async def test_default_incomplete_activates_when_its_invoice_is_paid(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """`payment_behavior=default_incomplete` leaves the subscription `incomplete` with its
    first invoice open until the payment is confirmed (`POST /v1/invoices/{id}/pay` here);
    then `invoice.paid`, `invoice.payment_succeeded`, `customer.subscription.updated` to
    `active`, and the entitlements summary.
    Source: https://docs.stripe.com/billing/subscriptions/build-subscriptions."""
    catalog = await make_catalog(client)
    customer = await client.v1.customers.create_async({"email": "di@example.com"})
    await listen(client, receiver)
    sub = await client.v1.subscriptions.create_async(
        {
            "customer": customer.id,
            "items": [{"price": catalog.price.id}],
            "payment_behavior": "default_incomplete",
        }
    )
    assert sub.status == "incomplete"
    await client.v1.invoices.pay_async(str(sub.latest_invoice), {"payment_method": "pm_card_visa"})
    await ctl.wait_idle()
    assert receiver.types() == [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "payment_method.attached",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
        SUMMARY,
    ]
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == "active"


async def test_quantity_changes_send_subscription_updated_with_the_old_quantity(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """Seats 8 -> 3 -> 0 on one item: each update is one `customer.subscription.updated` whose
    `previous_attributes.items` holds the old quantity, and the item reads back with the new one.
    Sources: https://docs.stripe.com/billing/subscriptions/quantities ("provide a quantity value
    when creating or updating the subscription"), https://docs.stripe.com/api/events/object
    (`data.previous_attributes`). Quantity 0 is an assumption (docs/fakestripe.md)."""
    team = await make_catalog(client, ("team",), name="Team", unit_amount=1000)
    customer = await client.v1.customers.create_async(
        {"payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": team.price.id, "quantity": 8}]}
    )
    item = sub["items"].data[0]
    assert item.quantity == 8
    await listen(client, receiver)
    for old, new in ((8, 3), (3, 0)):
        await client.v1.subscriptions.update_async(
            sub.id, {"items": [{"id": item.id, "quantity": new}], "proration_behavior": "none"}
        )
        await ctl.wait_idle()
        updated = [e for e in receiver.events() if e["type"] == "customer.subscription.updated"][-1]
        assert updated["data"]["previous_attributes"]["items"]["data"][0]["quantity"] == old
        assert updated["data"]["object"]["items"]["data"][0]["quantity"] == new
    again = await client.v1.subscriptions.retrieve_async(sub.id)
    assert again["items"].data[0].quantity == 0
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.subscriptions.update_async(sub.id, {"items": [{"id": item.id, "quantity": -1}]})
