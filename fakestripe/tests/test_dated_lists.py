"""Lists read from the tables kept in list order (dated.py) answer as a sort of every object did,
and the seeding route makes what the API makes."""

from __future__ import annotations

import random
from typing import Any

import stripe

from fakestripe import FakeStripe, FakeStripeControl


def _reference(fake: FakeStripe, p: dict[str, Any]) -> tuple[list[str], bool]:
    """What the list answered before the tables were ordered: filter, sort, slice."""
    lo = p.get("created", {}).get("gte", -(2**62))
    hi = p.get("created", {}).get("lt", 2**62)
    ordered = sorted((c for c in fake.core.store.customers.values() if lo <= c.created < hi and not c.deleted),
                     key=lambda c: (c.created, c.seq), reverse=True)
    ids = [c.id for c in ordered]
    limit = p.get("limit", 10)
    if "starting_after" in p:
        start = ids.index(p["starting_after"]) + 1
        return ids[start:start + limit], start + limit < len(ids)
    if "ending_before" in p:
        end = ids.index(p["ending_before"])
        start = max(0, end - limit)
        return ids[start:end], start > 0
    return ids[:limit], len(ids) > limit


async def test_pages_match_a_sort_of_every_object(fake: FakeStripe, client: stripe.StripeClient) -> None:
    rng = random.Random(7)
    ids = [(await client.v1.customers.create_async({"email": f"d{n}@example.com"})).id for n in range(60)]
    base = 1_700_000_000
    for cid in ids:  # backdated in bursts: many share a second (dated.py re-files them)
        fake.core.store.customers[cid].created = base + rng.randrange(12)
    await client.v1.customers.delete_async(ids[5])
    for _ in range(80):
        p: dict[str, Any] = {"limit": rng.choice([1, 3, 10, 100])}
        if rng.random() < 0.7:
            lo = base + rng.randrange(12)
            p["created"] = {"gte": lo, "lt": lo + rng.randrange(1, 8)}
        expected_all, _ = _reference(fake, {**p, "limit": 1000})
        if expected_all and rng.random() < 0.6:
            p[rng.choice(["starting_after", "ending_before"])] = rng.choice(expected_all)
        page = await client.v1.customers.list_async(p)  # type: ignore[arg-type]
        assert ([c.id for c in page.data], page.has_more) == _reference(fake, p), p


async def test_seeded_subscribers_are_what_the_api_makes(
    fake: FakeStripe, client: stripe.StripeClient, ctl: FakeStripeControl
) -> None:
    product = await client.v1.products.create_async({"name": "Pro"})
    price = await client.v1.prices.create_async(
        {"product": product.id, "unit_amount": 1000, "currency": "usd", "recurring": {"interval": "month"}}
    )
    out = await ctl.seed_subscribers(price.id, 250, per_second=100, start=1_700_000_000)
    assert out["customers"] == 250
    subs = [s async for s in (await client.v1.subscriptions.list_async({"limit": 100})).auto_paging_iter()]
    assert len(subs) == 250
    assert {s.status for s in subs} == {"active"}
    assert sorted(s.created for s in subs)[::100] == [1_700_000_000, 1_700_000_001, 1_700_000_002]
    one = await client.v1.customers.retrieve_async(subs[0].customer)  # type: ignore[arg-type]
    assert one.invoice_settings is not None
    assert one.invoice_settings.default_payment_method is not None
    mine = await client.v1.subscriptions.list_async({"customer": one.id})
    assert [s.id for s in mine.data] == [subs[0].id]
    types = [e.type for e in fake.core.events.events if e.object.get("customer") == one.id or e.object["id"] == one.id]
    assert {"customer.created", "customer.subscription.created", "invoice.paid"} <= set(types)
