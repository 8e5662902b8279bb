"""The lifecycles of the fault run, one function per kind, and the driver that runs them.

Each script acts through `Script` (bench/fault_customers.py) and calls `pause()` between
steps, so that its steps spread over the time the run gives it. Scripts on a test clock move
it with `advance()`; `wall_` scripts use trials and cancel times a few seconds ahead.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import stripe

from bench import fault_purchases
from bench.fault_customers import CARD, DAY, FAILING_CARD, HOUR, MONTH, Customer, Script, World

Kind = Callable[[Script], Awaitable[None]]


async def trial_card_renewals(s: Script) -> None:
    """Checkout with a card and a 7-day trial; the trial converts; upgrade; a renewal;
    cancel_at_period_end; the period ends."""
    sub = await s.checkout(s.catalog.basic, card=CARD, trial_days=7)
    await s.pause()
    await s.advance(7 * DAY + 2 * HOUR)
    await s.pause()
    await s.change_price(sub, s.catalog.pro)
    await s.pause()
    await s.advance(MONTH)
    await s.pause()
    await s.update(sub, {"cancel_at_period_end": True}, "cancel_at_period_end")
    await s.pause()
    await s.advance(MONTH)


async def trial_pause_resume(s: Script) -> None:
    """Checkout without a card, trial ending `pause` (docs/contract.md §9 scenario 1); often resumed later."""
    sub = await s.checkout(s.catalog.pro, card=None, trial_days=3, missing="pause")
    await s.pause()
    await s.advance(3 * DAY + HOUR)
    await s.pause()
    if s.rng.random() < 0.6:
        await s.set_card(CARD)
        await s.client.v1.subscriptions.resume_async(sub)
        s.act("resumed")
        await s.pause()
        await s.advance(MONTH)


async def trial_cancel_then_buy(s: Script) -> None:
    """A trial without a card ending `cancel`; then the customer buys with a card."""
    await s.customer(card=None)
    await s.subscribe(s.catalog.basic, trial_period_days=2,
                      trial_settings={"end_behavior": {"missing_payment_method": "cancel"}})
    await s.pause()
    await s.advance(2 * DAY + HOUR)
    await s.pause()
    await s.set_card(CARD)
    await s.subscribe(s.catalog.pro)
    await s.pause()
    await s.advance(MONTH)


async def dunning(s: Script) -> None:
    """A trial without a card ending `create_invoice`: the invoice fails, past_due, three
    retries fail, then whatever the account does (cancel, unpaid, or stay past_due). A
    subscription left past_due renews and its new invoice fails too: it has been past_due
    since the first failure, so the renewal must not bring access back (the clock stops a day
    into the new period, inside PAST_DUE_GRACE of the new invoice), nor later."""
    await s.customer(card=None)
    sub = await s.subscribe(s.catalog.basic, trial_period_days=1)
    await s.pause()
    await s.advance(DAY + 2 * HOUR)
    await s.pause()
    await s.advance(3 * DAY)
    await s.pause()
    await s.advance(2 * DAY)
    await s.pause()
    await s.advance(2 * DAY + HOUR)
    await s.pause()
    await s.advance_to(s.period_end(sub) + DAY)
    if s.rng.random() < 0.5:  # the others end the run inside that window
        await s.pause()
        await s.advance(7 * DAY)


async def dunning_recovers(s: Script) -> None:
    """A renewal fails (past_due); the card is replaced; the next retry succeeds (scenario 2)."""
    await s.customer(card=FAILING_CARD)
    await s.subscribe(s.catalog.pro, trial_period_days=1)
    await s.pause()
    await s.advance(DAY + 2 * HOUR)
    await s.pause()
    await s.set_card(CARD)
    await s.pause()
    await s.advance(3 * DAY)


async def plan_changes(s: Script) -> None:
    """Upgrade, downgrade, a renewal, then cancelled at once (scenario 6)."""
    await s.customer(card=CARD)
    sub = await s.subscribe(s.catalog.basic)
    await s.pause()
    await s.change_price(sub, s.catalog.pro)
    await s.pause()
    await s.change_price(sub, s.catalog.basic)
    await s.pause()
    await s.advance(MONTH)
    await s.pause()
    await s.cancel(sub)


async def seat_changes(s: Script) -> None:
    """Seats up and down, to none and back, across a renewal (scenario 11; docs/contract.md §5.2)."""
    await s.customer(card=CARD)
    sub = await s.subscribe(s.catalog.team, items=[{"price": s.catalog.team, "quantity": 5}])
    await s.pause()
    await s.set_quantity(sub, 8)
    await s.pause()
    await s.set_quantity(sub, 3)
    await s.pause()
    await s.set_quantity(sub, 0)
    await s.pause()
    await s.advance(MONTH)
    await s.pause()
    await s.set_quantity(sub, 2)


async def two_subscriptions(s: Script) -> None:
    """A second subscription; it ends at its period's end while the first renews (scenario 7)."""
    await s.customer(card=CARD)
    base = await s.subscribe(s.catalog.basic)
    addon = await s.subscribe(s.catalog.addon)
    await s.pause()
    await s.update(addon, {"cancel_at_period_end": True}, "cancel_at_period_end")
    await s.pause()
    await s.advance(MONTH)
    await s.pause()
    await s.cancel(base)


async def pause_collection(s: Script) -> None:
    """pause_collection over a renewal (access stays), then collection resumed."""
    await s.customer(card=CARD)
    sub = await s.subscribe(s.catalog.pro)
    await s.pause()
    behavior = s.rng.choice(["void", "mark_uncollectible", "keep_as_draft"])
    await s.update(sub, {"pause_collection": {"behavior": behavior}}, "collection_paused")
    await s.pause()
    await s.advance(MONTH)
    await s.pause()
    await s.update(sub, {"pause_collection": ""}, "collection_resumed")
    await s.pause()
    await s.advance(MONTH)


async def cancel_at(s: Script) -> None:
    """cancel_at in the middle of a period: access until then, no grace."""
    await s.customer(card=CARD)
    sub = await s.subscribe(s.catalog.basic)
    await s.pause()
    await s.update(sub, {"cancel_at": s.clock_now() + s.rng.randint(5, 20) * DAY}, "cancel_at_set")
    await s.pause()
    await s.advance(21 * DAY)


async def incomplete(s: Script) -> None:
    """A first payment declined: incomplete (no access), expired a day later; then bought."""
    await s.customer(card=FAILING_CARD)
    await s.subscribe(s.catalog.basic)
    await s.pause()
    await s.advance(DAY)
    await s.pause()
    await s.set_card(CARD)
    await s.subscribe(s.catalog.basic)


async def deleted(s: Script) -> None:
    """The customer is deleted (its subscriptions end with it)."""
    await s.customer(card=CARD)
    await s.subscribe(s.catalog.pro)
    await s.pause()
    assert s.c.id is not None
    await s.client.v1.customers.delete_async(s.c.id)
    s.act("customer_deleted")


async def legacy_metadata(s: Script) -> None:
    """A product without Product Features (metadata.features), then a move to Basic."""
    await s.customer(card=CARD)
    sub = await s.subscribe(s.catalog.legacy)
    await s.pause()
    await s.change_price(sub, s.catalog.basic)
    await s.pause()
    await s.advance(MONTH)


def _soon(s: Script, low: int = 5, high: int = 25) -> int:
    return int(time.time()) + s.rng.randint(low, high)


async def wall_trial_card(s: Script) -> None:
    """Wall clock: a trial of a few seconds with a card converts; upgrade; cancelled."""
    await s.customer(card=CARD)
    sub = await s.subscribe(s.catalog.basic, trial_end=_soon(s))
    await s.pause()
    await s.change_price(sub, s.catalog.pro)
    await s.pause()
    await s.cancel(sub)


async def wall_trial_cancel(s: Script) -> None:
    """Wall clock: a trial without a card ends `cancel`; access ends at the trial's end."""
    await s.customer(card=None)
    await s.subscribe(s.catalog.basic, trial_end=_soon(s),
                      trial_settings={"end_behavior": {"missing_payment_method": "cancel"}})
    await s.pause()
    await s.set_card(CARD)
    await s.subscribe(s.catalog.addon)


async def wall_trial_pause(s: Script) -> None:
    """Wall clock: Checkout without a card, the trial ends `pause`; sometimes resumed."""
    sub = await s.checkout(s.catalog.pro, card=None, trial_end=_soon(s), missing="pause")
    await s.pause()
    if s.rng.random() < 0.5 and s.d.fake.core.store.subscriptions[sub].status == "paused":
        await s.set_card(CARD)
        await s.client.v1.subscriptions.resume_async(sub)
        s.act("resumed")


async def wall_dunning(s: Script) -> None:
    """Wall clock: the trial converts without a card, the invoice fails (past_due, access
    stays through PAST_DUE_GRACE); sometimes cancelled."""
    await s.customer(card=None)
    sub = await s.subscribe(s.catalog.basic, trial_end=_soon(s))
    await s.pause()
    await s.pause()
    if s.rng.random() < 0.5:
        await s.cancel(sub)


async def wall_cancel_at(s: Script) -> None:
    """Wall clock: cancel_at a few seconds ahead; nothing tells us at that moment but the
    deletion webhook (or the re-check)."""
    await s.customer(card=CARD)
    sub = await s.subscribe(s.catalog.pro)
    await s.pause()
    await s.update(sub, {"cancel_at": _soon(s, 5, 30)}, "cancel_at_set")


async def wall_plan_changes(s: Script) -> None:
    """Wall clock: Checkout, upgrade, a new user id on the customer, downgrade, cancel."""
    sub = await s.checkout(s.catalog.basic, card=CARD)
    await s.pause()
    await s.change_price(sub, s.catalog.pro)
    await s.pause()
    assert s.c.id is not None
    await s.client.v1.customers.update_async(s.c.id, {"metadata": {"user_id": f"{s.user}_moved"}})
    s.act("customer_updated")
    await s.change_price(sub, s.catalog.basic)
    await s.pause()
    await s.cancel(sub)


# kind -> (script, weight, steps); `wall_` kinds live on the wall clock, the others on a test clock each
KINDS: dict[str, tuple[Kind, int, int]] = {
    "trial_card_renewals": (trial_card_renewals, 10, 6),
    "trial_pause_resume": (trial_pause_resume, 8, 4),
    "trial_cancel_then_buy": (trial_cancel_then_buy, 6, 4),
    "dunning": (dunning, 10, 7),
    "dunning_recovers": (dunning_recovers, 8, 4),
    "plan_changes": (plan_changes, 8, 5),
    "two_subscriptions": (two_subscriptions, 8, 4),
    "seat_changes": (seat_changes, 6, 6),
    "pause_collection": (pause_collection, 6, 5),
    "cancel_at": (cancel_at, 6, 3),
    "incomplete": (incomplete, 4, 3),
    "deleted": (deleted, 3, 2),
    "legacy_metadata": (legacy_metadata, 3, 3),
    "wall_trial_card": (wall_trial_card, 4, 3),
    "wall_trial_cancel": (wall_trial_cancel, 3, 2),
    "wall_trial_pause": (wall_trial_pause, 3, 2),
    "wall_dunning": (wall_dunning, 3, 3),
    "wall_cancel_at": (wall_cancel_at, 3, 2),
    "wall_plan_changes": (wall_plan_changes, 4, 4),
    # one-time purchases, refunds and disputes (bench/fault_purchases.py), on the wall clock
    "guest_purchase": (fault_purchases.guest_purchase, 10, 3),
    "customer_purchase": (fault_purchases.customer_purchase, 10, 3),
}
# Kinds outside the wall share that still need no test clock (a guest purchase has no Customer
# to put on one).
NO_CLOCK = frozenset({"guest_purchase", "customer_purchase"})


class Driver:
    """Runs every customer's script; what was done and what failed are tallied in `world`."""

    def __init__(self, world: World, seed: int, wall_share: float) -> None:
        self.world = world
        self.seed = seed
        self.wall_share = wall_share
        self.customers: list[Customer] = []

    def pick(self, rng: random.Random) -> str:
        wall = rng.random() < self.wall_share
        names = [k for k in KINDS if k.startswith("wall_") == wall]
        return rng.choices(names, weights=[KINDS[k][1] for k in names])[0]

    async def run_customer(self, n: int, start_at: float, end_at: float) -> None:
        rng = random.Random(self.seed * 1_000_003 + n)
        kind = self.pick(rng)
        customer = Customer(n, kind)
        self.customers.append(customer)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        script_fn, _, steps = KINDS[kind]
        script = Script(self.world, customer, rng, end_at, steps)
        try:
            if not kind.startswith("wall_") and kind not in NO_CLOCK:
                await script.new_clock()
            await script_fn(script)
        except (stripe.StripeError, TimeoutError) as exc:
            code = getattr(exc, "code", None) or ""
            self.world.errors[f"{kind}: {type(exc).__name__} {code}".strip()] += 1
        finally:
            customer.done = True

    def ids(self) -> list[str]:
        return [c.id for c in self.customers if c.id is not None]
