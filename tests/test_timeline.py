"""`GET /v1/customers/C/timeline` (docs/contract.md §10): events, syncs (what Stripe said), decisions
with their why, messages and deliveries, newest first, paginated.

Syncs are committed through the worker's write path (`worker.store.write`), which records the
sync summary in the same transaction; the real API app reads them back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from shared import db
from shared.access import Customer, CustomerFacts, Item, PolicyConfig, Subscription, decide
from shared.coordination import AcceptedEvent
from shared.publishing import endpoints
from shared.settings import Settings
from worker import store

SECRET = "timeline-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {SECRET}"}
FAR = 4_000_000_000


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings.model_copy(update={"api_tokens": {"app": SECRET}}), with_console=False)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url)
    yield p
    await p.close()


async def sync(pool: asyncpg.Pool, cid: str, status: str, features: set[str], event: AcceptedEvent) -> None:
    """One sync of a customer with one subscription in `status`, as the worker writes it."""
    fence = await store.bump_fence(pool, cid)
    sub = Subscription("sub_1", cid, status, (Item("si_1", "price_1", "prod_1", 1, FAR),), created=1)
    facts = CustomerFacts(cid, Customer(cid, metadata_user_id="u_1"), (sub,), None, frozenset())
    # The decision is the policy's own, so the timeline shows its why.
    access = decide(facts, {"prod_1": frozenset(features)}, int(time.time()), PolicyConfig(86400, 7 * 86400))
    await store.write(pool, fence=fence, facts=facts, access=access, offset_s=0,
                      events=[event], reason=event.type)


async def page(client: TestClient[Any, Any], path: str) -> tuple[int, Any]:
    resp = await client.get(path, headers=AUTH)
    return resp.status, orjson.loads(await resp.read())


async def test_timeline_tells_the_story_newest_first(client: TestClient[Any, Any], pool: asyncpg.Pool) -> None:
    """A purchase then a cancellation: each event (with its source), each sync with what Stripe
    said and the why, each message and its delivery to an endpoint, newest first."""
    endpoint = await endpoints.add(pool, "http://127.0.0.1:9/hooks")
    await sync(pool, "cus_t", "active", {"pro"}, AcceptedEvent.now("evt_1", "checkout.session.completed", "webhook"))
    await sync(pool, "cus_t", "canceled", set(), AcceptedEvent.now("evt_2", "customer.subscription.deleted",
                                                                    "events_api"))
    status, body = await page(client, "/v1/customers/cus_t/timeline")
    assert status == 200
    items = body["items"]
    assert [i["at"] for i in items] == sorted((i["at"] for i in items), reverse=True)
    kinds = [(i["kind"], i.get("version")) for i in items]
    assert sorted(kinds, key=str) == sorted([("event", None), ("event", None), ("sync", 1), ("sync", 2),
                                             ("message", 1), ("message", 2), ("delivery", 1), ("delivery", 2)],
                                            key=str)
    events = {i["id"]: i for i in items if i["kind"] == "event"}
    assert (events["evt_1"]["source"], events["evt_2"]["source"]) == ("webhook", "events_api")
    assert events["evt_2"]["type"] == "customer.subscription.deleted"
    syncs = {i["version"]: i for i in items if i["kind"] == "sync"}
    assert syncs[1]["stripe"]["subscriptions"][0]["status"] == "active"
    assert list(syncs[1]["decision"]["features"]) == ["pro"]
    assert syncs[1]["decision"]["why"][0].startswith("sub_1 is active: si_1 (prod_1) grants pro until")
    assert syncs[1]["decision"]["why"][0].endswith("[active]")
    assert syncs[2]["decision"]["why"][0].startswith("sub_1 is canceled: si_1 (prod_1) grants nothing")
    assert syncs[2]["event_ids"] == ["evt_2"]
    assert syncs[2]["changed"] is True
    messages = {i["version"]: i for i in items if i["kind"] == "message"}
    assert messages[2]["message"]["removed"] == ["pro"]
    deliveries = [i for i in items if i["kind"] == "delivery"]
    assert {d["endpoint_id"] for d in deliveries} == {endpoint.id}
    assert {d["message_id"] for d in deliveries} == {m["id"] for m in messages.values()}
    assert all(d["status"] == "pending" and d["next_attempt_at"] for d in deliveries)


async def test_pages_walk_the_whole_timeline_once(client: TestClient[Any, Any], pool: asyncpg.Pool) -> None:
    """Pages of 3 give every item of the full timeline exactly once, in the same order."""
    await endpoints.add(pool, "http://127.0.0.1:9/hooks")
    for n in range(6):
        await sync(pool, "cus_p", "active" if n % 2 == 0 else "canceled", {"pro"} if n % 2 == 0 else set(),
                   AcceptedEvent.now(f"evt_{n}", "customer.subscription.updated", "webhook"))
    _, full = await page(client, "/v1/customers/cus_p/timeline?limit=200")
    assert len(full["items"]) == 6 * 4
    assert full["next_cursor"] is None
    walked: list[Any] = []
    path = "/v1/customers/cus_p/timeline?limit=3"
    while True:
        status, body = await page(client, path)
        assert status == 200
        assert len(body["items"]) <= 3
        walked.extend(body["items"])
        if body["next_cursor"] is None:
            break
        path = f"/v1/customers/cus_p/timeline?limit=3&cursor={body['next_cursor']}"
    assert walked == full["items"]


async def test_unknown_customers_and_bad_parameters(client: TestClient[Any, Any]) -> None:
    """404 for a customer never seen; 400 for a bad limit or cursor; 401 without a token."""
    status, body = await page(client, "/v1/customers/cus_nobody/timeline")
    assert (status, body["error"]["reason"]) == (404, "not_found")
    for query in ("limit=0", "limit=201", "limit=x", "cursor=nope", "cursor=W10"):
        status, body = await page(client, f"/v1/customers/cus_nobody/timeline?{query}")
        assert status == 400, query
    resp = await client.get("/v1/customers/cus_nobody/timeline")
    assert resp.status == 401
