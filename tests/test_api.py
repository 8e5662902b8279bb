"""The app-facing API answers as docs/contract.md §10's table says, from a real Postgres and Redis.

Rows are written the way a sync writes them (customers, entitlements, entitlement_limits,
customer_sync); the API reads the public views, so what it says is what the view says.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from api.app import create_app
from api.auth import Tokens
from shared import db
from shared.settings import Settings

SECRET = "s3cret-app-token-0123456789"
AUTH = {"Authorization": f"Bearer {SECRET}"}
FOREVER = datetime(9999, 12, 31, tzinfo=UTC)  # stands in for 'infinity' in a few rows below


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_tokens": {"app": SECRET, "console": "other-secret-abcdefgh"}})


@pytest.fixture
async def client(api_settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(api_settings, with_console=False))) as c:
        yield c


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url)
    yield p
    await p.close()


async def grant(pool: asyncpg.Pool, customer_id: str, user_id: str | None, feature: str, *,
                until: datetime | str, quantity: int = 1, source: str = "sub_1", version: int = 1) -> None:
    await pool.execute(
        "INSERT INTO customers (customer_id, user_id) VALUES ($1, $2) ON CONFLICT (customer_id) DO NOTHING",
        customer_id, user_id,
    )
    await pool.execute(
        "INSERT INTO entitlements (customer_id, feature, valid_until, subscription_id, quantity)"
        " VALUES ($1, $2, $3::text::timestamptz, $4, $5)",
        customer_id, feature, until if isinstance(until, str) else until.isoformat(), source, quantity,
    )
    await pool.execute(
        "INSERT INTO customer_sync (customer_id, version) VALUES ($1, $2)"
        " ON CONFLICT (customer_id) DO UPDATE SET version = EXCLUDED.version",
        customer_id, version,
    )


async def get(client: TestClient[Any, Any], path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    resp = await client.get(path, headers=AUTH if headers is None else headers)
    body = await resp.read()
    assert resp.content_type == "application/json", body
    return resp.status, orjson.loads(body)


def test_tokens_match_by_name_in_constant_time_shape() -> None:
    """A secret maps to its token's name; near misses, prefixes and other schemes do not."""
    tokens = Tokens({"app": "abcdef", "ops": "uvwxyz"})
    assert tokens.match("uvwxyz") == "ops"
    assert tokens.match("abcde") is None
    assert tokens.match("abcdefg") is None
    assert tokens.from_header("Bearer abcdef") == "app"
    assert tokens.from_header("bearer abcdef") == "app"
    assert tokens.from_header("Basic abcdef") is None
    assert tokens.from_header("Bearer ") is None
    assert tokens.from_header(None) is None


async def test_every_v1_route_needs_a_token(client: TestClient[Any, Any]) -> None:
    """No token, a wrong token or another scheme is 401 JSON on every /v1 route; health needs none."""
    for path in ("/v1/access?user_id=u", "/v1/check?user_id=u&feature=f", "/v1/customers/cus_1/timeline"):
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {SECRET}"}):
            status, body = await get(client, path, headers)
            assert status == 401, (path, headers)
            assert body["error"]["reason"] == "unauthorized"
    assert (await get(client, "/healthz", {}))[0] == 200
    status, body = await get(client, "/readyz", {})
    assert (status, body["status"]) == (200, "ready")


async def test_logs_name_the_token_never_the_secret(client: TestClient[Any, Any]) -> None:
    """Each request logs one api.request line with the token's name; the secret appears nowhere."""
    with capture_logs() as logs:
        await get(client, "/v1/check?user_id=u&feature=f")
        await get(client, "/v1/check?user_id=u&feature=f", {"Authorization": "Bearer wrong-secret"})
    lines = [entry for entry in logs if entry["event"] == "api.request"]
    assert [(entry["token"], entry["status"]) for entry in lines] == [("app", 200), ("-", 401)]
    assert SECRET not in repr(logs)
    assert "wrong-secret" not in repr(logs)


async def test_check_answers_from_the_view(client: TestClient[Any, Any], pool: asyncpg.Pool) -> None:
    """Allowed while valid_until is in the future, not after; for ever is valid_until null; an
    unknown user is not allowed; two customers of one user add their quantities."""
    soon = datetime.now(UTC) + timedelta(hours=2)
    await grant(pool, "cus_1", "u_1", "pro", until=soon, quantity=3)
    await grant(pool, "cus_1", "u_1", "old", until=datetime.now(UTC) - timedelta(seconds=1))
    await grant(pool, "cs_guest", "u_1", "pro", until="infinity", quantity=2, source="cs_guest")
    await grant(pool, "cus_2", "u_2", "pro", until=soon, quantity=5)

    status, body = await get(client, "/v1/check?user_id=u_1&feature=pro")
    assert (status, body) == (200, {"allowed": True, "valid_until": None, "quantity": 5})
    status, body = await get(client, "/v1/check?user_id=u_2&feature=pro")
    assert body["allowed"] is True
    assert datetime.fromisoformat(body["valid_until"]) == soon.replace(microsecond=soon.microsecond)
    assert body["valid_until"].endswith("Z")
    assert (await get(client, "/v1/check?user_id=u_1&feature=old"))[1]["allowed"] is False
    assert (await get(client, "/v1/check?user_id=nobody&feature=pro"))[1] == {
        "allowed": False, "valid_until": None, "quantity": 0}
    assert (await get(client, "/v1/check?customer_id=cus_2&feature=pro"))[1]["quantity"] == 5


async def test_access_is_the_union_of_a_users_customers(client: TestClient[Any, Any], pool: asyncpg.Pool) -> None:
    """GET /v1/access has the contract's fields: customers, features, grants with source, limits, versions."""
    soon = datetime.now(UTC) + timedelta(days=3)
    await grant(pool, "cus_1", "u_1", "pro", until=soon, quantity=3, version=4)
    await grant(pool, "cs_guest", "u_1", "export", until="infinity", source="cs_guest", version=1)
    await pool.execute(
        "INSERT INTO entitlement_limits (customer_id, name, value, valid_until, source_id)"
        " VALUES ('cus_1', 'projects', 15, $1, 'sub_1'), ('cs_guest', 'projects', 5, 'infinity', 'cs_guest')",
        soon,
    )
    status, body = await get(client, "/v1/access?user_id=u_1")
    assert status == 200
    assert body["customer_ids"] == ["cs_guest", "cus_1"]
    assert body["user_id"] == "u_1"
    assert body["features"] == ["export", "pro"]
    assert body["grants"][0] == {"feature": "export", "valid_until": None, "quantity": 1,
                                 "customer_id": "cs_guest", "source": "cs_guest"}
    assert body["grants"][1]["source"] == "sub_1"
    assert body["limits"] == {"projects": 20}
    assert body["versions"] == {"cs_guest": 1, "cus_1": 4}
    status, body = await get(client, "/v1/access?customer_id=cus_1")
    assert (status, body["features"]) == (200, ["pro"])


async def test_limits_and_quantities_end_with_their_valid_until(client: TestClient[Any, Any],
                                                                 pool: asyncpg.Pool) -> None:
    """docs/contract.md §10 reads §7's views: a limit past its valid_until is not answered; each
    grant carries its own quantity, and `/v1/check` sums them."""
    now = datetime.now(UTC)
    await grant(pool, "cus_9", "u_9", "team", until=now + timedelta(days=1), quantity=8)
    await pool.execute(
        "INSERT INTO entitlement_limits (customer_id, name, value, valid_until, source_id)"
        " VALUES ('cus_9', 'projects', 40, $1, 'sub_1'), ('cus_9', 'api_calls', 9, $2, 'sub_1')",
        now + timedelta(days=1), now - timedelta(seconds=1),
    )
    body = (await get(client, "/v1/access?customer_id=cus_9"))[1]
    assert body["limits"] == {"projects": 40}
    assert [(g["feature"], g["quantity"]) for g in body["grants"]] == [("team", 8)]
    assert (await get(client, "/v1/check?user_id=u_9&feature=team"))[1]["quantity"] == 8


async def test_bad_input_is_json_400_or_404(client: TestClient[Any, Any]) -> None:
    """Unknown subjects are 404; missing, doubled or absurd parameters are 400; other routes 404/405."""
    cases = {
        "/v1/access?user_id=nobody": (404, "not_found"),
        "/v1/access": (400, "invalid_parameter"),
        "/v1/access?user_id=a&customer_id=b": (400, "invalid_parameter"),
        "/v1/check?user_id=u": (400, "missing_parameter"),
        "/v1/check?feature=f": (400, "invalid_parameter"),
        f"/v1/check?user_id={'x' * 300}&feature=f": (400, "invalid_parameter"),
        "/v1/check?user_id=%00&feature=f": (400, "invalid_parameter"),
        "/v1/nothing": (404, "not_found"),
    }
    for path, (status, reason) in cases.items():
        got_status, body = await get(client, path)
        assert (got_status, body["error"]["reason"]) == (status, reason), path
    resp = await client.post("/v1/check", headers=AUTH)
    assert resp.status == 405
    assert (await resp.json())["error"]["reason"] == "method_not_allowed"


def test_refuses_to_start_without_api_tokens() -> None:
    """`python -m api` without API_TOKENS exits at once with one line naming the variable."""
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://127.0.0.1:1/none"}
    out = subprocess.run([sys.executable, "-m", "api"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "API_TOKENS" in lines[0]
