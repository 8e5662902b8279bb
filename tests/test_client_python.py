"""The Python client (clients/python) against a real `python -m api` process, Postgres and Redis
(docs/contract.md §10): checks from memory, kept current by the stream, valid_until as an entry's
end of life, the caller's choice when the API is down, and signed webhooks."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest
from entitled_client import EntitledClient, WebhookError
from entitled_client.cache import Cache, entry_from_access
from standardwebhooks import Webhook

from shared import db
from tests.support.api_process import FOREVER, ApiProcess, relaying, running_api, set_access


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url)
    yield p
    await p.close()


@pytest.fixture
async def api(database_url: str, redis_url: str) -> AsyncIterator[ApiProcess]:
    async with running_api(database_url, redis_url) as proc:
        yield proc


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_checks_answer_from_memory_and_as_told_when_the_api_is_down(
    database_url: str, redis_url: str, pool: asyncpg.Pool
) -> None:
    """Once fetched, a user's checks need no API; a user the API must be asked about while it is
    down is allowed or denied as the client was built to."""
    await set_access(pool, "cus_1", "u_1", {"pro": FOREVER})
    async with running_api(database_url, redis_url) as api:
        deny = await EntitledClient(api.url, api.token, when_unreachable="deny").start()
        allow = await EntitledClient(api.url, api.token, when_unreachable="allow").start()
        assert deny.cached("u_1", "pro") is None
        assert await deny.check("u_1", "pro") is True
        assert await deny.check("u_1", "export") is False
        assert await deny.check("nobody", "pro") is False  # unknown: no access, cached too
        assert deny.cached("u_1", "pro") is True
        assert deny.cached("nobody", "pro") is False
    try:
        # the API process is gone now
        assert await deny.check("u_1", "pro") is True
        assert await deny.check("u_2", "pro") is False
        assert await allow.check("u_2", "pro") is True
        assert allow.cached("u_2", "pro") is None  # an outage's answer is not cached
    finally:
        await deny.close()
        await allow.close()


async def test_the_stream_keeps_the_cache_current(
    api: ApiProcess, database_url: str, redis_url: str, pool: asyncpg.Pool
) -> None:
    """A change published on access-changed drops the entry and the client refetches it: a
    removed feature is denied, an added one allowed, without waiting for the entry to age."""
    await set_access(pool, "cus_1", "u_1", {"pro": FOREVER})
    async with relaying(database_url, redis_url), EntitledClient(
        api.url, api.token, when_unreachable="deny", redis_url=redis_url, max_age_s=3600
    ) as client:
        assert client.following
        assert await client.check("u_1", "pro") is True
        await set_access(pool, "cus_1", "u_1", {"export": FOREVER})
        await until(lambda: client.cached("u_1", "export") is True, "the refetched entry")
        assert await client.check("u_1", "pro") is False
        # a second customer of the same user (a guest purchase) is added to the union
        await set_access(pool, "cs_guest", "u_1", {"pro": FOREVER})
        await until(lambda: client.cached("u_1", "pro") is True, "the guest purchase")
        assert client.cache.entries["u_1"].versions == {"cs_guest": 1, "cus_1": 2}
    group_names = [g["name"] for g in await _groups(redis_url)]
    assert group_names == []  # its own group is gone with it


async def _groups(redis_url: str) -> list[dict[str, object]]:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        return list(await client.xinfo_groups("access-changed"))
    finally:
        await client.aclose()


async def test_valid_until_ends_an_entry(api: ApiProcess, pool: asyncpg.Pool) -> None:
    """A grant ending in 1.5 s is allowed from memory until then, and denied after."""
    await set_access(pool, "cus_1", "u_1", {"pro": int(time.time()) + 2, "base": FOREVER})
    async with EntitledClient(api.url, api.token, when_unreachable="allow", max_age_s=3600) as client:
        assert await client.check("u_1", "pro") is True
        ends = client.cache.entries["u_1"].expires_at - time.monotonic()
        assert 0 < ends <= 2.5
        await until(lambda: client.cached("u_1", "pro") is None, "the end of the entry", 5)
        assert await client.check("u_1", "pro") is False
        assert await client.check("u_1", "base") is True


async def test_signed_webhooks_keep_the_cache_current_and_forgeries_change_nothing(
    api: ApiProcess, pool: asyncpg.Pool
) -> None:
    """A message signed as Standard Webhooks says (signed here by the `standardwebhooks` package,
    as the service signs) drops the entry; a wrong signature, an old timestamp or a replayed id
    do not."""
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    await set_access(pool, "cus_1", "u_1", {"pro": FOREVER})
    async with EntitledClient(api.url, api.token, when_unreachable="deny", webhook_secret=secret,
                              refresh_on_change=False) as client:
        assert await client.check("u_1", "pro") is True
        message = {"id": "m-1", "customer_id": "cus_1", "user_id": "u_1", "features": [], "added": [],
                   "removed": ["pro"], "quantities": {}, "limits": {}, "version": 2, "reason": "test",
                   "livemode": False, "occurred_at": "2026-12-01T00:00:00Z"}
        body = orjson.dumps(message)
        now = datetime.now(UTC)
        good = Webhook(secret).sign("m-1", now, body.decode())
        headers = {"webhook-id": "m-1", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": good}
        for bad in ({**headers, "webhook-signature": "v1,AAAA"},
                    {**headers, "webhook-timestamp": str(int(now.timestamp()) - 3600)},
                    {k: v for k, v in headers.items() if k != "webhook-id"}):
            with pytest.raises(WebhookError):
                client.handle_webhook(bad, body)
            assert client.cached("u_1", "pro") is True
        with pytest.raises(WebhookError):
            client.handle_webhook(headers, body.replace(b'"version":2', b'"version":3'))
        assert client.handle_webhook(headers, body) == {"u_1"}
        assert client.cached("u_1", "pro") is None
        await set_access(pool, "cus_1", "u_1", {})
        assert await client.check("u_1", "pro") is False
        assert client.handle_webhook(headers, body) == set()  # the same id again
        assert client.cache.skipped == 1


def test_a_fetch_overtaken_by_a_message_is_not_kept_and_old_versions_change_nothing() -> None:
    """A fetch that started before a message about its user may hold the old state: not stored.
    A message at or below the version an entry reflects leaves the entry alone."""
    body = {"user_id": "u_1", "features": ["pro"], "versions": {"cus_1": 5},
            "grants": [{"feature": "pro", "quantity": 1, "valid_until": None}]}
    cache = Cache()
    cache.begin("u_1")
    assert cache.apply({"id": "a", "customer_id": "cus_1", "user_id": "u_1", "version": 6}) == set()
    assert cache.finish(entry_from_access("u_1", body, max_age_s=60, now=0, wall_now=0)) is False
    assert cache.get("u_1", now=1) is None
    cache.begin("u_1")
    assert cache.finish(entry_from_access("u_1", body, max_age_s=60, now=0, wall_now=0)) is True
    assert cache.apply({"id": "b", "customer_id": "cus_1", "user_id": "u_1", "version": 5}) == set()
    assert cache.get("u_1", now=1) is not None
    assert cache.apply({"id": "c", "customer_id": "cus_1", "user_id": "u_9", "version": 6}) == {"u_1"}
    assert cache.get("u_1", now=1) is None
    assert cache.users_of == {}
