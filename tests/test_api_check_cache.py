"""`GET /v1/check`'s answer cache (api/check_cache.py, api/check_feed.py; docs/contract.md §10)
against a real Postgres, through the real app.

A write made with `session_replication_role = replica` fires no trigger, so Postgres sends no
notification: the cache cannot hear it. That shows which answers came from the cache (they keep
the old answer) and which from Postgres; the same write made plainly is seen by the next check
within a moment (the notification dropped the answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.check_feed import APPLICATION_NAME
from api.context import CHECK_CACHE
from shared.settings import Duration, Settings
from tests.support.proxy import CuttableProxy
from tests.test_api import AUTH, SECRET, grant

TTL_S = 30.0


def cache_settings(settings: Settings, ttl_s: float = TTL_S, database_url: str | None = None) -> Settings:
    update: dict[str, Any] = {"api_tokens": {"app": SECRET}, "api_check_cache_ttl": Duration(ttl_s)}
    if database_url is not None:
        update["database_url"] = database_url
    return settings.model_copy(update=update)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    yield p
    await p.close()


async def serving(settings: Settings) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, with_console=False)))
    await client.start_server()
    await eventually(lambda: _usable(client), "the check cache listening")
    return client


async def _usable(client: TestClient[Any, Any]) -> bool:
    return client.app is not None and client.app[CHECK_CACHE].usable


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    c = await serving(cache_settings(settings))
    yield c
    await c.close()


async def eventually(ok: Callable[[], Awaitable[bool]], what: str, within_s: float = 5.0) -> float:
    """Seconds until `ok()` held; fails after `within_s`."""
    started = time.monotonic()
    while not await ok():
        assert time.monotonic() - started < within_s, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def check(client: TestClient[Any, Any], user: str, feature: str = "pro") -> dict[str, Any]:
    resp = await client.get(f"/v1/check?user_id={user}&feature={feature}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def unheard(pool: asyncpg.Pool, sql: str, *args: Any) -> None:
    """A write Postgres tells no one about: no trigger fires (nor would a restore's)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, *args)


def allowed(client: TestClient[Any, Any], user: str, want: bool, feature: str = "pro") -> Callable[[], Awaitable[bool]]:
    async def ok() -> bool:
        return (await check(client, user, feature))["allowed"] is want
    return ok


async def test_a_plain_sql_write_is_seen_by_the_next_check(client: TestClient[Any, Any], pool: asyncpg.Pool) -> None:
    """Answers come from the cache (an unheard revoke is not seen), and a write of any writer,
    here plain SQL, drops them: the grant, the revoke, a user id moved, a first customer."""
    await grant(pool, "cus_1", "u_1", "pro", until="infinity")
    assert (await check(client, "u_1"))["allowed"] is True
    await unheard(pool, "DELETE FROM entitlements WHERE customer_id = 'cus_1'")
    assert (await check(client, "u_1"))["allowed"] is True  # the cached answer: Postgres was not asked
    assert (await check(client, "u_new"))["allowed"] is False  # an unknown user, cached too

    await pool.execute("INSERT INTO entitlements (customer_id, feature, valid_until, subscription_id, quantity)"
                       " VALUES ('cus_1', 'pro', 'infinity', 'sub_1', 7)")
    await eventually(lambda: _quantity(client, "u_1", 7), "the plain insert seen")
    await pool.execute("UPDATE customers SET user_id = 'u_2' WHERE customer_id = 'cus_1'")
    await eventually(allowed(client, "u_1", False), "u_1 lost cus_1")
    assert (await check(client, "u_2"))["quantity"] == 7
    await pool.execute("INSERT INTO customers (customer_id, user_id) VALUES ('cus_new', 'u_new')")
    await pool.execute("INSERT INTO entitlements (customer_id, feature, valid_until, subscription_id)"
                       " VALUES ('cus_new', 'pro', 'infinity', 'sub_2')")
    await eventually(allowed(client, "u_new", True), "the new customer's grant")
    await pool.execute("TRUNCATE entitlements")
    await eventually(allowed(client, "u_2", False), "a TRUNCATE drops everything")


async def _quantity(client: TestClient[Any, Any], user: str, quantity: int) -> bool:
    got: int = (await check(client, user))["quantity"]
    return got == quantity


async def test_a_cached_grant_ends_at_its_valid_until(client: TestClient[Any, Any], pool: asyncpg.Pool) -> None:
    """No write at all: a grant stops at valid_until, as the view says, and of two grants the
    earlier end changes the quantity."""
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    await grant(pool, "cus_a", "u_a", "pro", until=soon, quantity=2)
    await grant(pool, "cus_b", "u_a", "pro", until=soon + timedelta(seconds=1), quantity=3)
    assert (await check(client, "u_a"))["quantity"] == 5
    await unheard(pool, "UPDATE entitlements SET quantity = 100 WHERE customer_id = 'cus_b'")
    assert (await check(client, "u_a"))["quantity"] == 5  # cached: Postgres would say 102
    # Past the first end the answer is read again: Postgres's 100, the unheard write included.
    await eventually(lambda: _quantity(client, "u_a", 100), "the first grant's end", within_s=3.0)
    assert datetime.now(UTC) >= soon - timedelta(milliseconds=20)  # not before (clocks of one machine)
    await eventually(allowed(client, "u_a", False), "the second grant's end", within_s=3.0)


async def test_the_cap_bounds_what_no_notification_reaches(settings: Settings, pool: asyncpg.Pool) -> None:
    """API_CHECK_CACHE_TTL: an unheard write is seen once the cached answer's cap is over."""
    c = await serving(cache_settings(settings, ttl_s=1.0))
    try:
        await grant(pool, "cus_1", "u_1", "pro", until="infinity")
        assert (await check(c, "u_1"))["allowed"] is True
        await unheard(pool, "DELETE FROM entitlements")
        assert (await check(c, "u_1"))["allowed"] is True
        took = await eventually(allowed(c, "u_1", False), "the cap", within_s=3.0)
        assert took > 0.5
    finally:
        await c.close()


async def _kill_feed(pool: asyncpg.Pool) -> int:
    killed: int = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
        APPLICATION_NAME)
    return killed


async def test_losing_the_listen_connection_bypasses_the_cache_until_it_is_back(
        client: TestClient[Any, Any], pool: asyncpg.Pool) -> None:
    """The LISTEN connection killed: answers are read from Postgres again (the unheard revoke is
    seen), and once it is back the cache is used again, from empty."""
    await grant(pool, "cus_1", "u_1", "pro", until="infinity")
    assert (await check(client, "u_1"))["allowed"] is True
    await unheard(pool, "DELETE FROM entitlements")
    assert (await check(client, "u_1"))["allowed"] is True
    assert await _kill_feed(pool) == 1
    await eventually(allowed(client, "u_1", False), "the cache dropped with its connection", within_s=2.0)
    await eventually(lambda: _usable(client), "listening again")
    await grant(pool, "cus_2", "u_2", "pro", until="infinity")
    assert (await check(client, "u_2"))["allowed"] is True
    await unheard(pool, "DELETE FROM entitlements")
    assert (await check(client, "u_2"))["allowed"] is True  # cached again
    resp = await client.get("/metrics")
    text = await resp.text()
    assert "entitled_api_check_cache_listening 1.0" in text
    assert 'entitled_api_check_cache_total{outcome="hit"}' in text


async def test_postgres_cut_after_caching_is_503(settings: Settings, database_url: str, pool: asyncpg.Pool) -> None:
    """Postgres unreachable while answers are cached: the LISTEN connection goes with it, so
    checks are 503 as without a cache, and cached again once it is back."""
    await grant(pool, "cus_1", "u_1", "pro", until="infinity")
    parts = urlsplit(database_url)
    proxy = CuttableProxy("127.0.0.1", parts.port or 5432)
    await proxy.start()
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    through = urlunsplit((parts.scheme, f"{user}127.0.0.1:{proxy.port}", parts.path, parts.query, parts.fragment))
    c = await serving(cache_settings(settings, database_url=through))
    try:
        assert (await check(c, "u_1"))["allowed"] is True
        assert (await check(c, "u_1"))["allowed"] is True
        await proxy.cut()
        resp = await c.get("/v1/check?user_id=u_1&feature=pro", headers=AUTH)
        assert resp.status == 503
        assert (await resp.json())["error"]["reason"] == "database_unavailable"
        await proxy.restore()
        await eventually(lambda: _usable(c), "listening again", within_s=10.0)
        assert (await check(c, "u_1"))["allowed"] is True
    finally:
        await c.close()
        await proxy.close()


async def test_ttl_0_turns_the_cache_off(settings: Settings, pool: asyncpg.Pool) -> None:
    """No LISTEN connection at all; every check reads Postgres (an unheard write is seen)."""
    c: TestClient[Any, Any] = TestClient(TestServer(create_app(cache_settings(settings, ttl_s=0),
                                                               with_console=False)))
    await c.start_server()
    try:
        await grant(pool, "cus_1", "u_1", "pro", until="infinity")
        assert (await check(c, "u_1"))["allowed"] is True
        await unheard(pool, "DELETE FROM entitlements")
        assert (await check(c, "u_1"))["allowed"] is False
        assert await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                                   APPLICATION_NAME) == 0
    finally:
        await c.close()
