"""Seats and limits through the worker's write path into a real Postgres (docs/contract.md §5.2,
§6, §7), and `entitled explain` reading them back (§5.3).

Syncs are committed with `worker.store.write` and a decision of the policy itself; the view, the
outbox message and the explanation are read back as their readers read them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from shared import db
from shared.access import (
    Customer,
    CustomerFacts,
    Item,
    PolicyConfig,
    ProductLimits,
    Subscription,
    decide,
    parse_limits,
)
from shared.coordination import AcceptedEvent
from worker import explain_cli, store

FAR = 4_000_000_000
TEAM = {"prod_team": frozenset({"team"})}
LIMITS = {"prod_team": parse_limits({"entitled_limits": "projects=5,api_calls=10000"})}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url)
    yield p
    await p.close()


async def seats(pool: asyncpg.Pool, n: int, *, limits: dict[str, ProductLimits] | None = None) -> store.Written:
    fence = await store.bump_fence(pool, "cus_q")
    sub = Subscription("sub_q", "cus_q", "active", (Item("si_q", "price_team", "prod_team", 1, FAR, quantity=n),),
                       created=1)
    facts = CustomerFacts("cus_q", Customer("cus_q", metadata_user_id="u_q"), (sub,), None, frozenset())
    access = decide(facts, TEAM, int(time.time()), PolicyConfig(86400, 7 * 86400),
                    limits_of=LIMITS if limits is None else limits)
    event = AcceptedEvent.now(f"evt_{n}_{time.time_ns()}", "customer.subscription.updated", "webhook")
    return await store.write(pool, fence=fence, facts=facts, access=access, offset_s=0, events=[event],
                             reason=event.type)


async def view(pool: asyncpg.Pool) -> tuple[list[tuple[str, int]], dict[str, int]]:
    ents = await pool.fetch("SELECT feature, quantity FROM active_entitlements WHERE customer_id = 'cus_q'")
    lims = await pool.fetch("SELECT name, value, user_id FROM active_limits WHERE customer_id = 'cus_q'")
    assert all(r["user_id"] == "u_q" for r in lims)
    return [(r["feature"], r["quantity"]) for r in ents], {r["name"]: r["value"] for r in lims}


async def test_seats_8_3_0_reach_the_view_and_the_messages(pool: asyncpg.Pool) -> None:
    """Each seat change alone is one message with `quantities` and `limits`; the view follows;
    the same count again publishes nothing."""
    assert (await seats(pool, 8)).changed
    assert await view(pool) == ([("team", 8)], {"projects": 40, "api_calls": 80_000})
    assert not (await seats(pool, 8)).changed
    three = await seats(pool, 3)
    assert three.message is not None
    assert (three.message.features, dict(three.message.quantities), dict(three.message.limits)) == (
        ("team",), {"team": 3}, {"api_calls": 30_000, "projects": 15})
    assert await view(pool) == ([("team", 3)], {"projects": 15, "api_calls": 30_000})
    zero = await seats(pool, 0)
    assert zero.message is not None
    assert (zero.message.removed, dict(zero.message.quantities), dict(zero.message.limits)) == (("team",), {}, {})
    assert await view(pool) == ([], {})
    stored = [orjson.loads(r["message"]) for r in await pool.fetch(
        "SELECT message FROM outbox WHERE customer_id = 'cus_q' ORDER BY version")]
    assert [(m["quantities"], m["limits"].get("projects")) for m in stored] == [
        ({"team": 8}, 40), ({"team": 3}, 15), ({}, None)]


async def test_a_limit_change_alone_is_published(pool: asyncpg.Pool) -> None:
    await seats(pool, 2)
    raised = await seats(pool, 2, limits={"prod_team": parse_limits({"entitled_limits": "projects=7"})})
    assert raised.message is not None
    assert (raised.message.added, raised.message.removed, dict(raised.message.limits)) == ((), (), {"projects": 14})


async def test_explain_words_the_view_and_the_last_decision(pool: asyncpg.Pool) -> None:
    """`entitled explain`: the access now from the views, the why from the last sync's record,
    refused limits metadata included; a user resolves to its customers; unknown is empty."""
    await seats(pool, 8, limits={"prod_team": parse_limits({"entitled_limits": "projects=5,seats=lots"})})
    out = await explain_cli.explain(pool, user="u_q")
    text = "\n".join(out)
    assert out[0] == "customer cus_q (user u_q)"
    assert out[1].startswith("  team: granted until ")
    assert out[1].endswith(" by sub_q, quantity 8 [active]")
    assert "why, as decided by the sync at " in text
    assert "si_q (prod_team) x8 grants team until " in text
    assert "team: quantity 8" in text
    assert "prod_team gives no limits: metadata.entitled_limits: 'seats=lots'" not in text  # the name is fine
    assert "prod_team gives no limits: metadata.entitled_limits: seats='lots' is not a whole number" in text
    await seats(pool, 3)
    text = "\n".join(await explain_cli.explain(pool, customer="cus_q"))
    assert "limit projects = 15 until " in text
    assert "5 x 3 from si_q (prod_team)" in text
    assert await explain_cli.explain(pool, customer="cus_nobody") == []
    await pool.execute("DELETE FROM sync_log")
    assert explain_cli.KEEP_NOTE.format(cid="cus_q") in "\n".join(await explain_cli.explain(pool, customer="cus_q"))
