"""The demo `entitled run` plays when no STRIPE_API_KEY is set: scenarios of docs/contract.md
(section 9) on the fake Stripe.

Each scenario acts as an app and its buyers would (Checkout, card changes, cancellations) and
moves Stripe test clocks forward days at a time, so that a minute shows trials ending, renewals
failing and subscriptions ending. The launcher prints what the service does meanwhile. Every
check waits for the sync that proves it (a status, a flag of our copy of the subscription),
never only for time to pass; the demo ends with a pass/fail line per scenario, and `play`
returns how many failed (the launcher's exit code says so).
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import asyncpg
import stripe
from fakestripe.buyer import buy
from stripe.params import CustomerCreateParams, SubscriptionCreateParams

from fakestripe import FakeStripeControl

DAY = 86_400
HOUR = 3600
WIDTH = 80
Say = Callable[[str], None]


@dataclass
class Scene:
    """One numbered scenario and the checks that failed in it."""

    number: int
    title: str
    failures: list[str] = field(default_factory=list)


class Demo:
    def __init__(self, client: stripe.StripeClient, control: FakeStripeControl, pool: asyncpg.Pool, say: Say) -> None:
        self.stripe = client
        self.control = control
        self.pool = pool
        self.say = say
        self._features: dict[str, str] = {}
        self.scenes: list[Scene] = []

    def begin(self, title: str, text: str) -> None:
        scene = Scene(len(self.scenes) + 1, title)
        self.scenes.append(scene)
        self.say("\n" + textwrap.fill(f"▶ {scene.number}. {title}: {text}", WIDTH, subsequent_indent="   "))

    def fail(self, text: str) -> None:
        self.say(textwrap.fill(f"   ✗ {text}", WIDTH, subsequent_indent="     "))
        if self.scenes:
            self.scenes[-1].failures.append(text)

    async def features(self, customer: str) -> set[str]:
        rows = await self.pool.fetch("SELECT feature FROM active_entitlements WHERE customer_id = $1", customer)
        return {r["feature"] for r in rows}

    async def expect(self, customer: str, features: set[str], timeout_s: float = 20.0) -> None:
        """Wait until the view shows `features`, and say so."""
        deadline = time.monotonic() + timeout_s
        while (held := await self.features(customer)) != features:
            if time.monotonic() > deadline:
                self.fail(f"expected {sorted(features)} for {customer}, the view has {sorted(held)}")
                return
            await asyncio.sleep(0.2)
        self.say(f"   ✓ active_entitlements for {customer}: {sorted(features) or 'nothing'}")

    async def expect_status(self, customer: str, status: str, timeout_s: float = 20.0) -> None:
        """Wait until our copy of the customer's subscription has this status."""
        deadline = time.monotonic() + timeout_s
        while not await self.pool.fetchval(
            "SELECT 1 FROM subscriptions WHERE customer_id = $1 AND status = $2", customer, status
        ):
            if time.monotonic() > deadline:
                self.fail(f"{customer}'s subscription never became {status}")
                return
            await asyncio.sleep(0.2)
        self.say(f"   ✓ subscription of {customer} is {status}")

    async def expect_cancel_at_period_end(self, customer: str, timeout_s: float = 20.0) -> None:
        """Wait for the sync that saw the cancellation: our copy of the subscription has the flag."""
        deadline = time.monotonic() + timeout_s
        while not await self.pool.fetchval(
            "SELECT 1 FROM subscriptions WHERE customer_id = $1 AND cancel_at_period_end", customer
        ):
            if time.monotonic() > deadline:
                self.fail(f"no sync of {customer} saw cancel_at_period_end")
                return
            await asyncio.sleep(0.2)
        self.say(f"   ✓ a sync saw {customer}'s cancel_at_period_end")

    async def pause(self, seconds: float = 1.5) -> None:
        await asyncio.sleep(seconds)

    async def advance(self, clock: str, to: int, label: str) -> None:
        self.say(f"   ⏩ test clock +{label}")
        await self.stripe.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": to})
        await self.control.wait_idle(timeout_s=30)

    async def product(self, name: str, features: list[str]) -> str:
        product = await self.stripe.v1.products.create_async({"name": name})
        for key in features:
            if key not in self._features:
                created = await self.stripe.v1.entitlements.features.create_async({"name": key.title(), "lookup_key": key})
                self._features[key] = created.id
            await self.stripe.v1.products.features.create_async(product.id, {"entitlement_feature": self._features[key]})
        price = await self.stripe.v1.prices.create_async(
            {"product": product.id, "unit_amount": 1500, "currency": "usd", "recurring": {"interval": "month"}}
        )
        return price.id

    async def clock(self) -> tuple[str, int]:
        now = int(time.time())
        created = await self.stripe.v1.test_helpers.test_clocks.create_async({"frozen_time": now})
        return created.id, now

    async def checkout(self, price: str, user: str, clock: str, *, card: str | None, trial_days: int | None = None,
                       behavior: str | None = None) -> str:
        done = await buy(self.stripe, self.control, price, user=user, card=card, clock=clock, trial_days=trial_days,
                         missing_payment_method=behavior)
        await self.control.wait_idle(timeout_s=30)
        return str(done["customer"])

    async def trial_without_card(self, pro: str) -> None:
        self.begin("Trial without a card", "a Payment Link, 1-day trial, no card. Stripe pauses it at "
                   "the trial's end, and its own Entitlements keep the features (no event says otherwise).")
        clock, t0 = await self.clock()
        customer = await self.checkout(pro, "u_trial", clock, card=None, trial_days=1, behavior="pause")
        await self.expect(customer, {"pro", "export"})
        await self.pause()
        await self.advance(clock, t0 + 25 * HOUR, "25 hours")
        await self.expect(customer, set())

    async def failed_renewal(self, pro: str) -> None:
        self.begin("Failed renewal", "the renewal payment fails; past_due keeps access through "
                   "PAST_DUE_GRACE, and a new card pays it.")
        clock, t0 = await self.clock()
        customer = (await self.stripe.v1.customers.create_async(cast(CustomerCreateParams, {
            "email": "late@example.com", "metadata": {"user_id": "u_late_payer"}, "test_clock": clock,
            "payment_method": "pm_card_chargeCustomerFail",
            "invoice_settings": {"default_payment_method": "pm_card_chargeCustomerFail"}}))).id
        await self.stripe.v1.subscriptions.create_async(cast(SubscriptionCreateParams, {
            "customer": customer, "items": [{"price": pro}], "trial_period_days": 1}))
        await self.control.wait_idle(timeout_s=30)
        await self.expect(customer, {"pro", "export"})
        await self.advance(clock, t0 + DAY + 2 * HOUR, "26 hours: the first charge fails")
        await self.expect_status(customer, "past_due")
        await self.expect(customer, {"pro", "export"})
        await self.pause()
        self.say("   💳 the customer replaces the card")
        await self.stripe.v1.customers.update_async(customer, {"invoice_settings": {"default_payment_method": "pm_card_visa"}})
        await self.advance(clock, t0 + 5 * DAY, "3 more days: Stripe retries, and it succeeds")
        await self.expect_status(customer, "active")
        await self.expect(customer, {"pro", "export"})

    async def upgrade_then_cancel(self, basic: str, pro: str) -> None:
        self.begin("Upgrade, then cancel", "Checkout on Basic, an upgrade to Pro (one message), then "
                   "cancel at the period's end.")
        clock, t0 = await self.clock()
        customer = await self.checkout(basic, "u_upgrader", clock, card="pm_card_visa")
        await self.expect(customer, {"basic"})
        await self.pause()
        sub = (await self.stripe.v1.subscriptions.list_async({"customer": customer})).data[0]
        self.say("   ⬆ upgrade to Pro")
        await self.stripe.v1.subscriptions.update_async(sub.id, {"items": [{"id": sub["items"].data[0].id, "price": pro}]})
        await self.control.wait_idle(timeout_s=30)
        await self.expect(customer, {"pro", "export"})
        await self.pause()
        self.say("   ✋ cancel at the period's end: access stays until then")
        await self.stripe.v1.subscriptions.update_async(sub.id, {"cancel_at_period_end": True})
        await self.control.wait_idle(timeout_s=30)
        await self.expect_cancel_at_period_end(customer)
        await self.expect(customer, {"pro", "export"})
        await self.advance(clock, t0 + 32 * DAY, "32 days: the period ends")
        await self.expect(customer, set())

    async def play(self) -> int:
        """Play every scenario; say how each went; return how many failed."""
        self.say("Setting up the catalog: Basic → [basic], Pro → [pro, export]")
        basic = await self.product("Basic", ["basic"])
        pro = await self.product("Pro", ["pro", "export"])
        scenes: list[Callable[[], Awaitable[None]]] = [
            lambda: self.trial_without_card(pro),
            lambda: self.failed_renewal(pro),
            lambda: self.upgrade_then_cancel(basic, pro),
        ]
        for scene in scenes:
            await scene()
            await self.pause()
        return summarise(self.scenes, self.say)


def summarise(scenes: list[Scene], say: Say) -> int:
    """A pass/fail line per scenario, then the count; returns how many failed."""
    say("\nSummary")
    for done in scenes:
        say(f"   {'✓ pass' if not done.failures else '✗ FAIL'}  {done.number}. {done.title}")
    failed = sum(1 for done in scenes if done.failures)
    say(f"{len(scenes) - failed} of {len(scenes)} scenarios passed")
    return failed
