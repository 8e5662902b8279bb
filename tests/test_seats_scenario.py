"""Scenario 11 of docs/contract.md §9, end to end with real processes: a Team plan bought for 5
seats is raised to 8 (the scenario), then cut to 3 and to 0, through the fake Stripe
(`customer.subscription.updated` with `previous_attributes`), and the view (§7), the stream
(§6), the API (§10) and `entitled explain` (§5.3) follow, with the product's
`metadata.entitled_limits` scaled by the seats (§5.2)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.stack import Stack
from tests.test_api_sync import AUTH, api_client
from tests.test_cli import entitled


async def seats_view(stack: Stack, cus: str) -> tuple[dict[str, int], dict[str, int]]:
    ents = await stack.pool.fetch("SELECT feature, quantity FROM active_entitlements WHERE customer_id = $1", cus)
    lims = await stack.pool.fetch("SELECT name, value FROM active_limits WHERE customer_id = $1", cus)
    return {r["feature"]: r["quantity"] for r in ents}, {r["name"]: r["value"] for r in lims}


@pytest.mark.slow
async def test_seats_5_8_3_0_through_view_stream_api_and_explain(stack_factory: Any) -> None:
    async with stack_factory(workers=1) as stack:
        product, price = await stack.product("Team", ["team"])
        await stack.stripe.v1.products.update_async(product, {"metadata": {"entitled_limits": "projects=5"}})
        cus = await stack.customer(metadata={"user_id": "u_team"})
        sub = await stack.subscribe(cus, items=[{"price": price, "quantity": 5}])
        await stack.wait_features(cus, {"team"})
        await stack.settle()
        assert await seats_view(stack, cus) == ({"team": 5}, {"projects": 25})
        item = (await stack.stripe.v1.subscriptions.retrieve_async(sub))["items"].data[0].id

        for n in (8, 3, 0):
            await stack.stripe.v1.subscriptions.update_async(
                sub, {"items": [{"id": item, "quantity": n}], "proration_behavior": "none"})

            async def follows(n: int = n) -> bool:
                return await seats_view(stack, cus) == (({"team": n}, {"projects": 5 * n}) if n else ({}, {}))

            await stack.wait_for(follows, 30, f"{n} seats in the view")
            await stack.settle()
            if n == 3:
                async with api_client(stack.database_url, stack.redis_url) as client:
                    body = await (await client.get("/v1/access?user_id=u_team", headers=AUTH)).json()
                    check = await (await client.get("/v1/check?user_id=u_team&feature=team", headers=AUTH)).json()
                assert ([(g["feature"], g["quantity"], g["source"]) for g in body["grants"]], body["limits"]) == (
                    [("team", 3, sub)], {"projects": 15})
                assert (check["allowed"], check["quantity"]) == (True, 3)
                code, out, _ = await entitled(stack, "explain", "--user", "u_team")
                assert code == 0
                assert "team: granted until " in out
                assert f"by {sub}, quantity 3 [active]" in out
                assert "limit projects = 15 " in out

        messages = await stack.messages(cus)
        assert [(m.features, dict(m.quantities), dict(m.limits)) for m in messages] == [
            (("team",), {"team": 5}, {"projects": 25}),
            (("team",), {"team": 8}, {"projects": 40}),
            (("team",), {"team": 3}, {"projects": 15}),
            ((), {}, {}),
        ]
