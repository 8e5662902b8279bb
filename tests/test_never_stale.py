"""Never stale (docs/contract.md §9, scenarios 3, 8, 9): access is right when webhooks come late, are
lost, or never come — re-checks, reconciliation and catalog changes, end to end.

Every test whose stack receives webhooks also runs with thin deliveries (`v1.`-prefixed
`v2.core.event` notifications), each thin case costing about what its snapshot case does
(7-23 s), but for: the lost renewal (22 s on the wall clock; the late renewal and the trial
that ends without any webhook are the re-check family's thin representatives), and the cron
and cursor tests, which receive no webhook at all.

The re-check tests run on the wall clock (the fake's global clock follows it) with short
graces, so that real seconds pass between a trial end and the re-check that finds it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from fakestripe import Settings as FakeSettings
from tests.support.stack import DAY, Stack

GRACE = {"RENEWAL_GRACE": "10s", "COALESCE_WINDOW": "0.3"}

# Snapshot events, or thin deliveries (`v1.`-prefixed `v2.core.event` notifications).
BOTH_MODES = pytest.mark.parametrize("thin", [False, True], ids=["snapshot", "thin"])


async def sample_until(stack: Stack, customer: str, until: float) -> list[tuple[float, set[str]]]:
    """Read the view every 100 ms until `until` (wall clock)."""
    samples = []
    while time.time() < until:
        samples.append((time.time(), await stack.features(customer)))
        await asyncio.sleep(0.1)
    return samples


async def test_scenario_3_renewal_webhooks_never_come(stack_factory: Any) -> None:
    """The renewal's webhooks are all lost: access does not lapse at the period end, because the
    re-check before `valid_until` finds the renewed period; access never flickers off.
    Snapshot events only: its timeline is 22 s of wall clock, and the late renewal's thin run
    covers the same re-check."""
    async with stack_factory(workers=2, worker_env=GRACE,
                             fake_settings=FakeSettings(invoice_finalize_delay_s=2)) as stack:
        _, price = await stack.product("Pro", ["pro"])
        cus = await stack.customer(metadata={"user_id": "u_r"})
        trial_end = int(time.time()) + 6
        await stack.subscribe(cus, price, trial_end=trial_end)
        # From now on every webhook is lost (the purchase's are already on their way): set
        # before the trial ends, however slow the setup (see the late renewal below).
        await stack.set_faults(drop_rate=1.0)
        await stack.wait_features(cus, {"pro"})
        await stack.settle()
        # valid_until = trial end + 10 s grace; the re-check runs 5 s before it.
        samples = await sample_until(stack, cus, trial_end + 16)
        assert all(features == {"pro"} for _, features in samples), "access flickered off"
        view = await stack.view(cus)
        assert view["pro"].timestamp() > time.time() + 20 * DAY  # the renewed period was found
        dropped = (await stack.ctl.deliveries())["dropped"]
        assert any(d["type"] == "customer.subscription.updated" for d in dropped)
        assert len(await stack.messages(cus)) == 1


@BOTH_MODES
async def test_scenario_3_renewal_webhooks_arrive_late(stack_factory: Any, thin: bool) -> None:
    """The renewal's webhooks arrive after the re-check already found the renewal: no gap, and
    the late events change nothing (no second message).

    The delay is set as soon as the subscription exists: the fake fixes a delivery's time when
    its event happens, so the purchase's events (already scheduled) still come at once, and only
    the renewal's are late. Setting it after the purchase settled raced the trial end: on a busy
    machine the setup outlasted the 6 s head start, the renewal's webhooks
    came on time and nothing was late."""
    async with stack_factory(workers=2, worker_env=GRACE, thin=thin,
                             fake_settings=FakeSettings(invoice_finalize_delay_s=2)) as stack:
        _, price = await stack.product("Pro", ["pro"])
        cus = await stack.customer(metadata={"user_id": "u_late"})
        trial_end = int(time.time()) + 6
        await stack.subscribe(cus, price, trial_end=trial_end)
        await stack.set_faults(delay_s=14.0)
        assert time.time() < trial_end, "the delay must be set before the renewal happens"
        await stack.wait_features(cus, {"pro"})
        renewed_at = None
        while time.time() < trial_end + 16:
            view = await stack.view(cus)
            assert set(view) == {"pro"}, "access flickered off"
            if renewed_at is None and view["pro"].timestamp() > time.time() + 20 * DAY:
                renewed_at = time.time()
            await asyncio.sleep(0.1)
        assert renewed_at is not None, "the re-check found the renewed period"
        await stack.settle()
        renewal = [d for d in (await stack.ctl.deliveries())["deliveries"]
                   if d["type"] == "customer.subscription.updated"]
        assert renewal, "the renewal's webhook did arrive"
        assert min(d["sent_at"] for d in renewal) > max(renewed_at, trial_end + 10)  # late, after the re-check
        assert len(await stack.messages(cus)) == 1


@BOTH_MODES
async def test_access_ends_on_time_without_any_webhook(stack_factory: Any, thin: bool) -> None:
    """A trial without a card that Stripe cancels at its end, and every webhook lost: the
    re-check just after the trial end removes access and tells everyone."""
    async with stack_factory(thin=thin, workers=2, worker_env=GRACE) as stack:
        _, price = await stack.product("Pro", ["pro"])
        cus = await stack.customer(card=None, metadata={"user_id": "u_end"})
        trial_end = int(time.time()) + 5
        await stack.subscribe(cus, price, trial_end=trial_end,
                              trial_settings={"end_behavior": {"missing_payment_method": "cancel"}})
        await stack.set_faults(drop_rate=1.0)  # before the trial ends (the purchase's are on their way)
        await stack.wait_features(cus, {"pro"})
        await stack.settle()
        await stack.wait_features(cus, set(), timeout_s=15)
        assert time.time() < trial_end + 5
        messages = await stack.messages(cus)
        assert [m.removed for m in messages] == [(), ("pro",)]
        assert messages[-1].reason == "recheck"


# The catalog poll alone: no webhook reaches ingest, the Events API poller and the sampled audit
# of Stripe's own entitlements are off.
CATALOG_POLL_ONLY = {"RECONCILE_CATALOG_EVERY": "2s", "RECONCILE_EVENTS_EVERY": "1d", "RECONCILE_SWEEP_EVERY": "1d",
                     "STRIPE_ENTITLEMENTS_AUDIT": "0"}


@BOTH_MODES
async def test_scenario_8_feature_attached_and_removed(stack_factory: Any, thin: bool) -> None:
    """A feature attached to or removed from a product: its subscribers' sets follow, found by
    the catalog poll alone (Stripe fires no event for it; here no webhook arrives at all)."""
    async with stack_factory(thin=thin, workers=2, worker_env=CATALOG_POLL_ONLY) as stack:
        product, price = await stack.product("Pro", ["pro"])
        customers = []
        for n in range(3):
            cus = await stack.customer(metadata={"user_id": f"u_{n}"})
            await stack.subscribe(cus, price)
            customers.append(cus)
        for cus in customers:
            await stack.wait_features(cus, {"pro"})
        # `settle()` would never see the workers quiet: the poll runs every 2 s.
        await asyncio.sleep(3)
        await stack.set_faults(drop_rate=1.0, retry=False)
        ai = await stack.feature("ai")
        await stack.stripe.v1.products.features.create_async(product, {"entitlement_feature": ai})
        for cus in customers:
            await stack.wait_features(cus, {"pro", "ai"})
        attached = await stack.stripe.v1.products.features.list_async(product)
        pro = next(pf.id for pf in attached.data if pf.entitlement_feature.lookup_key == "pro")
        await stack.stripe.v1.products.features.delete_async(product, pro)
        for cus in customers:
            await stack.wait_features(cus, {"ai"})
        await asyncio.sleep(3)
        for cus in customers:
            assert [(m.added, m.removed) for m in await stack.messages(cus)] == [
                (("pro",), ()), (("ai",), ()), ((), ("pro",))
            ]


@BOTH_MODES
async def test_scenario_8_metadata_features(stack_factory: Any, thin: bool) -> None:
    """An account without Product Features: metadata.features on the product; a product.updated
    event (thin: `v1.product.updated`) refreshes the catalog and resyncs its subscribers."""
    async with stack_factory(workers=2, thin=thin) as stack:
        product, price = await stack.product("Legacy", [], metadata_features="reports, api")
        cus = await stack.customer(metadata={"user_id": "u_meta"})
        await stack.subscribe(cus, price)
        await stack.wait_features(cus, {"reports", "api"})
        await stack.stripe.v1.products.update_async(product, {"metadata": {"features": "reports,sso"}})
        await stack.wait_features(cus, {"reports", "sso"})


async def _outage(stack: Stack, n: int) -> dict[str, set[str]]:
    """n customers on Basic; then, with the webhook endpoint down for an hour of fake time, each
    changes. Returns what each customer's features must be."""
    _, basic = await stack.product("Basic", ["basic"])
    _, pro = await stack.product("Pro", ["basic", "pro"])
    _, addon = await stack.product("Addon", ["addon"])
    subs = {}
    for i in range(n):
        cus = await stack.customer(metadata={"user_id": f"u_{i}"})
        subs[cus] = await stack.subscribe(cus, basic)
    await stack.settle()
    await stack.set_faults(drop_rate=1.0)
    expected: dict[str, set[str]] = {}
    for i, (cus, sub) in enumerate(subs.items()):
        kind = i % 5
        if kind == 0:
            await stack.stripe.v1.subscriptions.cancel_async(sub)
            expected[cus] = set()
        elif kind == 1:
            item = (await stack.stripe.v1.subscriptions.retrieve_async(sub))["items"].data[0].id
            await stack.stripe.v1.subscriptions.update_async(sub, {"items": [{"id": item, "price": pro}]})
            expected[cus] = {"basic", "pro"}
        elif kind == 2:
            await stack.subscribe(cus, addon)
            expected[cus] = {"basic", "addon"}
        elif kind == 3:
            await stack.stripe.v1.customers.update_async(cus, {"metadata": {"user_id": f"u_{i}_new"}})
            expected[cus] = {"basic"}
        else:
            expected[cus] = {"basic"}
    await stack.ctl.advance_clock(3600)
    await stack.ctl.wait_idle(timeout_s=30)
    await stack.set_faults(drop_rate=0.0)
    return expected


async def _assert_matches(stack: Stack, expected: dict[str, set[str]], timeout_s: float) -> None:
    async def all_match() -> bool:
        for cus, features in expected.items():
            if await stack.features(cus) != features:
                return False
        return True

    try:
        await stack.wait_for(all_match, timeout_s, "every customer to match Stripe")
    except AssertionError:
        wrong = {c: (sorted(await stack.features(c)), sorted(f)) for c, f in expected.items()
                 if await stack.features(c) != f}
        raise AssertionError(f"{len(wrong)} customers differ (view, truth): {wrong}") from None
    for i, cus in enumerate(expected):
        if i % 5 == 3:
            assert await stack.user_of(cus) == f"u_{i}_new"


@BOTH_MODES
async def test_scenario_9_outage_recovered_by_the_events_poller(stack_factory: Any, thin: bool) -> None:
    """Webhooks missed entirely for an hour of fake time while 50 customers change: the Events
    API poller brings every customer back to what Stripe says, without any webhook."""
    env = {"RECONCILE_EVENTS_EVERY": "5s", "RECONCILE_SWEEP_EVERY": "1d"}
    async with stack_factory(thin=thin, workers=2, worker_env=env) as stack:
        expected = await _outage(stack, 50)
        await _assert_matches(stack, expected, timeout_s=120)
        sources = {r["source"] for r in await stack.pool.fetch("SELECT DISTINCT source FROM event_ledger")}
        assert "events_api" in sources


@BOTH_MODES
async def test_scenario_9_outage_recovered_by_the_sweep(stack_factory: Any, thin: bool) -> None:
    """The same outage with the Events API poller off: the full sweep, keyed by customer, finds
    every customer that differs and resyncs it."""
    env = {"RECONCILE_EVENTS_EVERY": "1d", "RECONCILE_SWEEP_EVERY": "10s"}
    async with stack_factory(thin=thin, workers=2, worker_env=env) as stack:
        expected = await _outage(stack, 50)
        await _assert_matches(stack, expected, timeout_s=120)
        reasons = Counter(m.reason for m in await stack.messages())
        assert reasons["reconcile"] > 0


async def test_each_cron_job_runs_once_per_schedule_with_three_workers(stack_factory: Any) -> None:
    """Three workers, a 2-second schedule: every slot of every cron job is run by exactly one."""
    env = {"RECONCILE_EVENTS_EVERY": "2s", "RECONCILE_SWEEP_EVERY": "2s"}
    async with stack_factory(workers=3, worker_env=env) as stack:
        await asyncio.sleep(9)
        runs = Counter(
            (r["cron"], r["slot"]) for r in stack.worker_logs() if r.get("event") == "cron.ran"
        )
    by_job = Counter(cron for cron, _ in runs)
    assert by_job["reconcile_events"] >= 3
    assert by_job["reconcile_sweep"] >= 3
    assert set(runs.values()) == {1}, f"a slot ran twice: {runs}"


@BOTH_MODES
async def test_sweep_sees_customers_on_test_clocks(stack_factory: Any, thin: bool) -> None:
    """Stripe's lists leave out test-clock objects unless asked per clock: the sweep asks for
    each clock we know, so it neither resyncs unchanged clock customers every time nor misses
    one whose webhooks were lost."""
    env = {"RECONCILE_EVENTS_EVERY": "1d", "RECONCILE_SWEEP_EVERY": "5s"}
    async with stack_factory(thin=thin, workers=1, worker_env=env) as stack:
        _, price = await stack.product("Pro", ["pro"])
        clock, _ = await stack.clock()
        cus = await stack.customer(clock=clock, metadata={"user_id": "u_clock"})
        sub = await stack.subscribe(cus, price)
        await stack.wait_features(cus, {"pro"})
        await stack.settle()
        started = time.time()

        async def swept_after_setup() -> bool:
            info = await stack.pool.fetchval("SELECT info FROM reconcile_state WHERE name = 'sweep'")
            updated = await stack.pool.fetchval("SELECT updated_at FROM reconcile_state WHERE name = 'sweep'")
            return info is not None and updated.timestamp() > started

        await stack.wait_for(swept_after_setup, 20, "a sweep")
        info = await stack.pool.fetchval("SELECT info FROM reconcile_state WHERE name = 'sweep'")
        assert (info["subscriptions"], info["queued"]) == (1, 0)  # seen through its clock; unchanged
        await stack.set_faults(drop_rate=1.0)
        await stack.stripe.v1.subscriptions.cancel_async(sub)
        await stack.wait_features(cus, set(), timeout_s=30)
        assert (await stack.messages(cus))[-1].reason == "reconcile"


async def test_events_poller_warns_when_its_cursor_is_old(stack_factory: Any) -> None:
    """Stripe keeps events 30 days: a cursor older than 25 days is said loudly, with the remedy."""
    env = {"RECONCILE_EVENTS_EVERY": "2s", "RECONCILE_SWEEP_EVERY": "1d"}
    async with stack_factory(workers=1, worker_env=env) as stack:
        await stack.pool.execute(
            "INSERT INTO reconcile_state (name, cursor) VALUES ('events', $1)", str(int(time.time()) - 26 * DAY)
        )

        async def warned() -> bool:
            return any(r.get("event") == "reconcile.events_cursor_old" for r in stack.worker_logs())

        await stack.wait_for(warned, 30, "the old-cursor warning")
        warning = next(r for r in stack.worker_logs() if r.get("event") == "reconcile.events_cursor_old")
        assert warning["level"] == "warning"
        assert "resync --all" in warning["hint"]
