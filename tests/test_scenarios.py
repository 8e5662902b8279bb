"""docs/contract.md §9's scenarios, end to end: the fake Stripe sends its real event sequences to the
real ingest; real worker processes sync from the fake's API into Postgres and publish to Redis.
Assertions are on the `active_entitlements` view and the `access-changed` stream.

Time moves on Stripe test clocks (the worker judges a customer on a clock at its frozen_time),
or, for the re-check paths, on the wall clock with short graces.

Every scenario runs twice: with snapshot events, and with thin deliveries (the ingest endpoint
gets `v2.core.event` notifications typed `v1.customer.subscription.updated` and the like, plus
thin-only types such as `v1.customer.subscription.past_due`; docs/contract.md §4). The whole
family costs about as much again in thin mode (~45 s), so all of it is doubled.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from fakestripe import EndpointFaults
from fakestripe import Settings as FakeSettings
from tests.support.stack import DAY, Stack


@pytest.fixture(params=["snapshot", "thin"])
def stack_factory(stack_factory: Any, request: pytest.FixtureRequest) -> Any:
    """The conftest factory, with the ingest endpoint in snapshot or thin mode."""
    thin = request.param == "thin"

    def factory(**kwargs: Any) -> Any:
        return stack_factory(thin=thin, **kwargs)

    return factory


# Syncs of one test-clock customer read the clock; these scenarios move it past trial and period ends.
HOUR = 3600


async def test_scenario_1_trial_paused_at_trial_end(stack_factory: Any) -> None:
    """Payment Link, 1-day trial, no card. At the trial's end Stripe pauses the subscription,
    fires customer.subscription.paused and no entitlement event (its own entitlements stay).
    Access ends then, with one access-changed message listing the features as removed."""
    async with stack_factory(workers=2) as stack:
        _, price = await stack.product("Pro", ["pro", "export"])
        clock, t0 = await stack.clock()
        session = await stack.checkout(price, user="u_trial", clock=clock, card=None, trial_days=1,
                                       missing_payment_method="pause", payment_link="plink_test_1")
        cus = session["customer"]
        await stack.wait_features(cus, {"pro", "export"})
        assert await stack.user_of(cus) == "u_trial"
        # Every purchase event handled first (thin ones reach the customer through a resolve
        # run, later): else the run that sees the pause is the purchase's, and says so.
        await stack.settle()

        # Deliveries are stamped with the wall clock (the test clock is what moves below).
        advanced_at = time.time()
        await stack.advance(clock, t0 + 25 * HOUR)
        await stack.wait_features(cus, set())
        await stack.settle()
        summary = await stack.ctl.deliveries(type="entitlements.active_entitlement_summary.updated")
        before = [d for d in summary["deliveries"] if d["sent_at"] < advanced_at]
        assert before, "the purchase's own summary event was delivered (the filter below can see events)"
        summary_events = [d for d in summary["deliveries"] if d["sent_at"] >= advanced_at]
        assert summary_events == []  # Stripe's quirk: nothing tells us, and we still got it right
        stripe_view = await stack.stripe.v1.entitlements.active_entitlements.list_async({"customer": cus})
        assert {e.lookup_key for e in stripe_view.data} == {"pro", "export"}
        messages = await stack.messages(cus)
        assert [(m.version, m.added, m.removed) for m in messages] == [
            (1, ("export", "pro"), ()),
            (2, (), ("export", "pro")),
        ]
        assert messages[0].user_id == "u_trial"
        # thin or snapshot, and not the purchase's older event that the poller may bring in later
        assert messages[1].reason.removeprefix("v1.").startswith("customer.subscription."), messages[1].reason


async def test_scenario_4_checkout_burst_gives_one_message(stack_factory: Any) -> None:
    """One Checkout purchase: ~10 events within a second, shuffled, some twice (same id and new
    id). The user gets access once: one access-changed message, and at most two syncs."""
    faults = EndpointFaults(shuffle_window_s=0.5, duplicate_rate=0.3, duplicate_new_id_rate=0.2, max_in_flight=4,
                            seed=4)
    async with stack_factory(workers=2, faults=faults) as stack:
        _, price = await stack.product("Pro", ["pro"])
        session = await stack.checkout(price, user="u_burst")
        cus = session["customer"]
        await stack.settle()
        assert await stack.features(cus) == {"pro"}
        messages = await stack.messages(cus)
        assert len(messages) == 1
        assert (messages[0].user_id, messages[0].features, messages[0].version) == ("u_burst", ("pro",), 1)
        delivered = await stack.ctl.deliveries()
        assert len(delivered["deliveries"]) >= 10
        assert await stack.syncs_started(cus) <= 2


async def _active_subscriber(stack: Stack, *prices: str, clock: str | None = None) -> tuple[str, str]:
    cus = await stack.customer(clock=clock, metadata={"user_id": "u_sub"})
    sub = await stack.subscribe(cus, *prices)
    return cus, sub


async def test_scenario_5_cancel_at_period_end(stack_factory: Any) -> None:
    """cancel_at_period_end: access until the period's end (no grace), then removed."""
    async with stack_factory(workers=2) as stack:
        _, price = await stack.product("Pro", ["pro"])
        clock, t0 = await stack.clock()
        cus, sub = await _active_subscriber(stack, price, clock=clock)
        await stack.wait_features(cus, {"pro"})
        await stack.stripe.v1.subscriptions.update_async(sub, {"cancel_at_period_end": True})
        await stack.settle()
        period_end = (await stack.stripe.v1.subscriptions.retrieve_async(sub))["items"].data[0].current_period_end
        view = await stack.view(cus)
        # valid_until is the period end itself, no renewal grace (shifted to the wall clock)
        assert abs(view["pro"].timestamp() - (time.time() + period_end - t0)) < 120
        await stack.advance(clock, period_end - HOUR)
        await stack.settle()
        assert await stack.features(cus) == {"pro"}
        await stack.advance(clock, period_end + 60)
        await stack.wait_features(cus, set())
        assert [m.removed for m in await stack.messages(cus)][-1] == ("pro",)
        assert len(await stack.messages(cus)) == 2


async def test_scenario_6_upgrade_changes_the_set_in_one_message(stack_factory: Any) -> None:
    """Upgrade to a product with other features: the set changes in one message."""
    async with stack_factory(workers=2) as stack:
        _, basic = await stack.product("Basic", ["basic", "reports"])
        _, pro = await stack.product("Pro", ["basic", "pro", "export"])
        cus, sub = await _active_subscriber(stack, basic)
        await stack.wait_features(cus, {"basic", "reports"})
        item = (await stack.stripe.v1.subscriptions.retrieve_async(sub))["items"].data[0].id
        await stack.stripe.v1.subscriptions.update_async(sub, {"items": [{"id": item, "price": pro}]})
        await stack.wait_features(cus, {"basic", "pro", "export"})
        await stack.settle()
        messages = await stack.messages(cus)
        assert len(messages) == 2
        assert (messages[1].added, messages[1].removed, messages[1].version) == (("export", "pro"), ("reports",), 2)


async def test_scenario_7_two_subscriptions(stack_factory: Any) -> None:
    """Two subscriptions: the union; cancelling one keeps the other's features."""
    async with stack_factory(workers=2) as stack:
        _, base = await stack.product("Base", ["basic", "shared"])
        _, addon = await stack.product("Addon", ["addon", "shared"])
        cus, _ = await _active_subscriber(stack, base)
        addon_sub = await stack.subscribe(cus, addon)
        await stack.wait_features(cus, {"basic", "shared", "addon"})
        await stack.stripe.v1.subscriptions.cancel_async(addon_sub)
        await stack.wait_features(cus, {"basic", "shared"})
        await stack.settle()
        assert [m.removed for m in await stack.messages(cus)][-1] == ("addon",)


async def test_scenario_2_past_due_then_paid(stack_factory: Any) -> None:
    """A renewal fails (invoice.payment_failed, past_due): access stays through PAST_DUE_GRACE;
    the payment then succeeds: access never dropped."""
    async with stack_factory(workers=2, fake_settings=FakeSettings(invoice_finalize_delay_s=600)) as stack:
        _, price = await stack.product("Pro", ["pro"])
        clock, t0 = await stack.clock()
        cus = await stack.customer(clock=clock, card="pm_card_chargeCustomerFail", metadata={"user_id": "u_pd"})
        sub = await stack.subscribe(cus, price, trial_period_days=1)
        await stack.wait_features(cus, {"pro"})
        await stack.advance(clock, t0 + DAY + HOUR)  # trial ends, the renewal invoice fails
        await stack.settle()
        status = (await stack.stripe.v1.subscriptions.retrieve_async(sub)).status
        assert status == "past_due"
        assert await stack.features(cus) == {"pro"}
        await stack.advance(clock, t0 + 4 * DAY)  # a retry fails again, still within 7 days' grace
        await stack.settle()
        assert await stack.features(cus) == {"pro"}
        await stack.stripe.v1.customers.update_async(
            cus, {"invoice_settings": {"default_payment_method": "pm_card_visa"}})
        await stack.advance(clock, t0 + 6 * DAY + HOUR)  # the next retry succeeds
        await stack.settle()
        assert (await stack.stripe.v1.subscriptions.retrieve_async(sub)).status == "active"
        assert await stack.features(cus) == {"pro"}
        assert len(await stack.messages(cus)) == 1  # never dropped


async def test_scenario_2_retries_run_out(stack_factory: Any) -> None:
    """If the retries run out (here the account cancels), access ends."""
    async with stack_factory(workers=2, fake_settings=FakeSettings(invoice_finalize_delay_s=600,
                                                                   retry_exhausted_action="cancel")) as stack:
        _, price = await stack.product("Pro", ["pro"])
        clock, t0 = await stack.clock()
        cus = await stack.customer(clock=clock, card="pm_card_chargeCustomerFail", metadata={"user_id": "u_x"})
        await stack.subscribe(cus, price, trial_period_days=1)
        await stack.wait_features(cus, {"pro"})
        await stack.advance(clock, t0 + DAY + HOUR)
        await stack.settle()
        assert await stack.features(cus) == {"pro"}
        await stack.advance(clock, t0 + 9 * DAY)  # past the last retry (7 days after the first failure)
        await stack.wait_features(cus, set())
        assert [m.removed for m in await stack.messages(cus)][-1] == ("pro",)


async def test_deleted_customer_loses_everything(stack_factory: Any) -> None:
    """customer.deleted: Stripe cancels the subscriptions; access ends and the message still
    names the user whose access ended."""
    async with stack_factory(workers=1) as stack:
        _, price = await stack.product("Pro", ["pro"])
        cus, _ = await _active_subscriber(stack, price)
        await stack.wait_features(cus, {"pro"})
        await stack.stripe.v1.customers.delete_async(cus)
        await stack.wait_features(cus, set())
        await stack.settle()
        last = (await stack.messages(cus))[-1]
        assert (last.removed, last.user_id) == (("pro",), "u_sub")
        assert await stack.pool.fetchval("SELECT deleted FROM customers WHERE customer_id = $1", cus)
