"""`POST /v1/sync` end to end (scenario 12), and the API under Redis and Postgres outages.

The whole service runs (fake Stripe, ingest, real worker processes); the API is the real app,
served in this test's event loop against the same Postgres and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from shared.settings import Settings
from tests.support.proxy import CuttableProxy
from tests.support.redis_server import RedisServer
from tests.support.stack import API_KEY, Stack

SECRET = "sync-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def api_settings(database_url: str, redis_url: str) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, stripe_api_key=API_KEY,
                    api_tokens={"app": SECRET}, log_format="json")


@contextlib.asynccontextmanager
async def api_client(database_url: str, redis_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(api_settings(database_url, redis_url), with_console=False)
    async with TestClient(TestServer(app)) as client:
        yield client


async def post_sync(client: TestClient[Any, Any], body: dict[str, Any]) -> tuple[int, Any]:
    resp = await client.post("/v1/sync", data=orjson.dumps(body), headers=AUTH)
    return resp.status, orjson.loads(await resp.read())


@pytest.mark.slow
async def test_success_page_sync_sees_the_purchase_before_its_webhooks(stack_factory: Any) -> None:
    """Scenario 12: the webhooks are held back 4 s; POST /v1/sync with the session id answers at
    once with the new access; the webhooks that follow publish nothing more; a second call
    within 5 s is 429."""
    async with stack_factory(workers=1) as stack:
        stack_: Stack = stack
        _, price = await stack_.product("Pro", ["pro"])
        await stack_.set_faults(delay_s=(4.0, 4.5))
        async with api_client(stack_.database_url, stack_.redis_url) as client:
            session = await stack_.checkout(price, user="u_success")
            started = time.monotonic()
            status, body = await post_sync(client, {"checkout_session_id": session["id"]})
            took = time.monotonic() - started
            assert status == 200, body
            customer = session["customer"]
            assert body["customer_ids"] == [customer]
            assert body["user_id"] == "u_success"
            assert body["features"] == ["pro"]
            assert body["grants"][0]["source"] == session["subscription"]
            assert body["versions"] == {customer: 1}
            assert took < 4.0, "the answer came only after the webhooks"

            status, body = await post_sync(client, {"checkout_session_id": session["id"]})
            assert status == 429
            assert body["error"]["reason"] == "too_many_syncs"

            await stack_.settle()
            messages = await stack_.messages(customer)
            assert [(m.version, m.added) for m in messages] == [(1, ("pro",))]

            status, body = await post_sync(client, {"customer_id": customer})
            assert (status, body["features"]) == (200, ["pro"])


@pytest.mark.slow
async def test_sync_answers_202_when_no_worker_runs_it(database_url: str, redis_url: str) -> None:
    """No worker: the call waits its 10 s and answers 202 {"queued": true}; the work stays queued."""
    async with api_client(database_url, redis_url) as client:
        started = time.monotonic()
        status, body = await post_sync(client, {"customer_id": "cus_nobody_runs"})
        assert (status, body) == (202, {"queued": True})
        assert 9.5 < time.monotonic() - started < 12


async def test_sync_rejects_bad_bodies(database_url: str, redis_url: str) -> None:
    """Bodies that are not one valid Stripe id are 400 JSON, and never queue anything."""
    async with api_client(database_url, redis_url) as client:
        bad: list[Any] = [
            {}, [], "cs_x", {"customer_id": 5}, {"customer_id": "sub_123"}, {"customer_id": "__catalog__"},
            {"checkout_session_id": "cus_123"}, {"customer_id": "cus_1", "checkout_session_id": "cs_1"},
            {"customer_id": "cus_" + "x" * 300}, {"customer_id": "cus_a b"},
        ]
        for body in bad:
            status, answer = await post_sync(client, body)
            assert status == 400, body
            assert "error" in answer
        resp = await client.post("/v1/sync", data=b"{nope", headers=AUTH)
        assert resp.status == 400
        resp = await client.post("/v1/sync", data=b"x" * 70_000, headers=AUTH)
        assert resp.status == 413
        assert (await resp.json())["error"]["reason"] == "request_entity_too_large"


async def test_redis_down_sync_is_503_and_checks_still_answer(database_url: str) -> None:
    """With Redis gone, POST /v1/sync is 503 and GET /v1/check still answers from Postgres."""
    redis = RedisServer()
    redis.start()
    try:
        async with api_client(database_url, redis.url) as client:
            redis.close()
            status, body = await post_sync(client, {"customer_id": "cus_down"})
            assert (status, body["error"]["reason"]) == (503, "queue_unavailable")
            resp = await client.get("/v1/check?user_id=u&feature=f", headers=AUTH)
            assert (resp.status, await resp.json()) == (200, {"allowed": False, "valid_until": None, "quantity": 0})
            resp = await client.get("/readyz")
            assert (resp.status, (await resp.json())["status"]) == (200, "degraded")
    finally:
        redis.close()


def _through(database_url: str, port: int) -> str:
    parts = urlsplit(database_url)
    netloc = parts.netloc.rsplit("@", 1)
    user = f"{netloc[0]}@" if len(netloc) == 2 else ""
    return urlunsplit((parts.scheme, f"{user}127.0.0.1:{port}", parts.path, parts.query, parts.fragment))


async def test_postgres_down_is_503_then_recovers(database_url: str, redis_url: str) -> None:
    """Postgres unreachable: reads are 503 JSON (never a 200 or a 500), /readyz is 503; when it is
    back, the API answers again without a restart."""
    host_port = urlsplit(database_url).port or 5432
    proxy = CuttableProxy("127.0.0.1", host_port)
    await proxy.start()
    try:
        async with api_client(_through(database_url, proxy.port), redis_url) as client:
            resp = await client.get("/v1/check?user_id=u&feature=f", headers=AUTH)
            assert resp.status == 200
            await proxy.cut()
            for path in ("/v1/check?user_id=u&feature=f", "/v1/access?user_id=u"):
                resp = await client.get(path, headers=AUTH)
                assert resp.status == 503, path
                assert (await resp.json())["error"]["reason"] == "database_unavailable"
            assert (await client.get("/readyz")).status == 503
            await proxy.restore()
            for _ in range(50):
                resp = await client.get("/v1/check?user_id=u&feature=f", headers=AUTH)
                if resp.status == 200:
                    break
                await asyncio.sleep(0.1)
            assert resp.status == 200
    finally:
        await proxy.close()
