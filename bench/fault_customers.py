"""Customers going through random lifecycles on the fake Stripe, the way an app's users would.

Each customer gets a script (`KINDS`), picked at random with a per-customer seed. Most live on
a test clock of their own, so that months pass in a few advances: trials ending with and
without a card and each `missing_payment_method` behaviour, renewals, failed payments and
retries (whatever `retry_exhausted_action` the account has at that moment), card replaced,
`cancel_at_period_end`, `cancel_at`, upgrades and downgrades, a second subscription,
`pause_collection`, resumed subscriptions, deleted customers. The rest live on the wall
clock with trials and cancel times a few seconds away, so that the re-checks run in real time.

Requests go through the official SDK, like an app's; only what a buyer does in a browser
(completing a Checkout) goes through the fake's control API. The scripts spread their steps
over the time they are given.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import stripe
from fakestripe.buyer import buy
from stripe.params import CustomerCreateParams, SubscriptionCreateParams, SubscriptionUpdateParams

from fakestripe import FakeStripe, FakeStripeControl

DAY = 86_400
HOUR = 3_600
MONTH = 31 * DAY
CARD = "pm_card_visa"
FAILING_CARD = "pm_card_chargeCustomerFail"



@dataclass(frozen=True)
class Catalog:
    """Prices (one per product) and the ids needed to change the catalog mid-run."""

    basic: str
    pro: str
    addon: str
    legacy: str
    pro_product: str
    features: dict[str, str]  # lookup key -> feature id
    # seats: a product with `metadata.entitled_limits` (docs/contract.md §5.2)
    team: str = ""
    # one-time prices (docs/contract.md §5.1): a lifetime deal, and a 30-day pass
    lifetime: str = ""
    pass30: str = ""


async def make_catalog(client: stripe.StripeClient) -> Catalog:
    features: dict[str, str] = {}
    for key in ("basic", "reports", "pro", "export", "addon", "ai", "team"):
        created = await client.v1.entitlements.features.create_async({"name": key.title(), "lookup_key": key})
        features[key] = created.id

    async def product(name: str, keys: list[str], metadata_features: str | None = None,
                      limits: str | None = None) -> tuple[str, str]:
        metadata = {"features": metadata_features} if metadata_features else {}
        if limits:
            metadata["entitled_limits"] = limits
        prod = await client.v1.products.create_async({"name": name, "metadata": metadata})
        for key in keys:
            await client.v1.products.features.create_async(prod.id, {"entitlement_feature": features[key]})
        price = await client.v1.prices.create_async(
            {"product": prod.id, "unit_amount": 1000, "currency": "usd", "recurring": {"interval": "month"}})
        return prod.id, price.id

    _, basic = await product("Basic", ["basic", "reports"])
    pro_product, pro = await product("Pro", ["basic", "pro", "export"])
    _, addon = await product("Addon", ["addon"])
    _, legacy = await product("Legacy", [], metadata_features="legacy, reports")
    _, team = await product("Team", ["team"], limits="projects=5,api_calls=1000")

    async def one_time(name: str, key: str, metadata: dict[str, str]) -> str:
        created = await client.v1.entitlements.features.create_async({"name": key.title(), "lookup_key": key})
        prod = await client.v1.products.create_async({"name": name})
        await client.v1.products.features.create_async(prod.id, {"entitlement_feature": created.id})
        price = await client.v1.prices.create_async(
            {"product": prod.id, "unit_amount": 9900, "currency": "usd", "metadata": metadata})
        return price.id

    lifetime = await one_time("Lifetime", "lifetime", {})
    pass30 = await one_time("Pass", "pass", {"entitled_duration": "30d"})
    return Catalog(basic, pro, addon, legacy, pro_product, features, team, lifetime, pass30)


@dataclass
class Customer:
    n: int
    kind: str
    id: str | None = None
    clock: str | None = None
    subs: list[str] = field(default_factory=list)
    done: bool = False


@dataclass
class World:
    """What every script shares: the SDK client, the fake, the catalog, and the tallies."""

    client: stripe.StripeClient
    ctl: FakeStripeControl
    fake: FakeStripe
    catalog: Catalog
    actions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    async def clock_ready(self, clock_id: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.fake.core.store.clocks[clock_id].status == "advancing":
            if time.monotonic() > deadline:
                raise TimeoutError(f"test clock {clock_id} still advancing after {timeout_s:.0f}s")
            await asyncio.sleep(0.05)


class Script:
    """One customer's run: the steps, spaced evenly (with jitter) until `end_at`."""

    def __init__(self, world: World, customer: Customer, rng: random.Random, end_at: float, steps: int) -> None:
        self.d = world
        self.c = customer
        self.rng = rng
        self.end_at = end_at
        self.steps_left = steps
        self.user = f"u_{customer.n}"

    async def pause(self) -> None:
        self.steps_left = max(1, self.steps_left - 1)
        gap = (self.end_at - time.time()) / self.steps_left
        await asyncio.sleep(max(0.2, gap * self.rng.uniform(0.5, 1.5)))

    @property
    def client(self) -> stripe.StripeClient:
        return self.d.client

    @property
    def catalog(self) -> Catalog:
        return self.d.catalog

    def act(self, name: str) -> None:
        self.d.actions[name] += 1

    # --- clocks -----------------------------------------------------------------------------

    async def new_clock(self) -> None:
        clock = await self.client.v1.test_helpers.test_clocks.create_async({"frozen_time": int(time.time())})
        self.c.clock = clock.id

    def clock_now(self) -> int:
        assert self.c.clock is not None
        return self.d.fake.core.store.clocks[self.c.clock].frozen_time

    async def advance(self, seconds: int) -> None:
        await self.advance_to(self.clock_now() + seconds)

    async def advance_to(self, frozen_time: int) -> None:
        assert self.c.clock is not None
        await self.client.v1.test_helpers.test_clocks.advance_async(self.c.clock, {"frozen_time": frozen_time})
        self.act("clock_advance")
        await self.d.clock_ready(self.c.clock)

    def period_end(self, sub: str) -> int:
        """The subscription's current period end, as the fake holds it."""
        return max(i.current_period_end for i in self.d.fake.core.store.subscriptions[sub].items)

    # --- customers and subscriptions ----------------------------------------------------------

    async def customer(self, card: str | None) -> str:
        params: dict[str, Any] = {"email": f"c{self.c.n}@example.com", "metadata": {"user_id": self.user}}
        if self.c.clock:
            params["test_clock"] = self.c.clock
        if card:
            params["payment_method"] = card
            params["invoice_settings"] = {"default_payment_method": card}
        created = await self.client.v1.customers.create_async(cast(CustomerCreateParams, params))
        self.c.id = created.id
        self.act("customer_created")
        return created.id

    async def set_card(self, card: str) -> None:
        assert self.c.id is not None
        await self.client.v1.customers.update_async(self.c.id, {"invoice_settings": {"default_payment_method": card}})
        self.act("card_replaced")

    async def subscribe(self, price: str, **extra: Any) -> str:
        assert self.c.id is not None
        params = {"customer": self.c.id, "items": [{"price": price}], **extra}
        sub = await self.client.v1.subscriptions.create_async(cast(SubscriptionCreateParams, params))
        self.c.subs.append(sub.id)
        self.act("subscription_created")
        return sub.id

    async def checkout(self, price: str, *, card: str | None, trial_days: int | None = None,
                       trial_end: int | None = None, missing: str | None = None) -> str:
        done = await buy(self.client, self.d.ctl, price, user=self.user, card=card, clock=self.c.clock,
                         trial_days=trial_days, trial_end=trial_end, missing_payment_method=missing)
        self.c.id = str(done["customer"])
        self.c.subs.append(str(done["subscription"]))
        self.act("checkout_completed")
        return str(done["subscription"])

    async def update(self, sub: str, params: dict[str, Any], action: str) -> None:
        await self.client.v1.subscriptions.update_async(sub, cast(SubscriptionUpdateParams, params))
        self.act(action)

    async def set_quantity(self, sub: str, quantity: int) -> None:
        """Seats up or down on the first item (docs/contract.md §5.2)."""
        current = await self.client.v1.subscriptions.retrieve_async(sub)
        item = current["items"].data[0].id
        await self.update(sub, {"items": [{"id": item, "quantity": quantity}], "proration_behavior": "none"},
                          "quantity_changed")

    async def change_price(self, sub: str, price: str) -> None:
        current = await self.client.v1.subscriptions.retrieve_async(sub)
        item = current["items"].data[0].id
        await self.update(sub, {"items": [{"id": item, "price": price}]}, "plan_changed")

    async def cancel(self, sub: str) -> None:
        await self.client.v1.subscriptions.cancel_async(sub)
        self.act("canceled_now")
