"""The app-facing API under the receiver fuzz's treatment (docs/contract.md §10): random methods, paths,
query strings, bodies, headers and tokens against the real API app, real Postgres and Redis.

Invariants, for every request: never a 5xx; nothing under `/v1/` is answered without a valid
token (401 JSON); and no wrong 200: a 200 from `/v1/check` allows only the one feature that was
granted, to its user or customer, a 200 from `/v1/access` or the timeline only for that
customer or user, and `POST /v1/sync` never answers 200 for a body that names no customer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from shared import db
from shared.settings import Settings

SECRET = "fuzz-app-token-0123456789abcdef"
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
ids = st.sampled_from(["u_1", "cus_1", "pro", "cus_2", "u_2", "other", "", " ", "cus_1 ", "PRO"]) | st.text(max_size=40)
tokens = st.one_of(
    st.none(),
    st.just(f"Bearer {SECRET}"),
    st.sampled_from([f"bearer {SECRET}", f"Bearer  {SECRET}", f"Bearer {SECRET[:-1]}", f"Bearer {SECRET}x",
                     f"Basic {SECRET}", SECRET, "Bearer ", "Bearer", f"Token {SECRET}"]),
    header_text.map(lambda t: f"Bearer {t}"),
    header_text,
)
paths = st.sampled_from([
    "/v1/access", "/v1/check", "/v1/sync", "/v1/customers/cus_1/timeline", "/v1/customers/cus_2/timeline",
    "/v1/customers//timeline", "/v1/", "/v1", "/healthz", "/readyz", "/metrics", "/", "/v1/check/",
    "/V1/check", "/v1/customers/cus_1",
]) | st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/_-.%~", max_size=40).map(
    lambda p: "/" + p.lstrip("/"))  # "//x" would name another host
queries = st.dictionaries(
    st.sampled_from(["user_id", "customer_id", "feature", "limit", "cursor"]) | st.text(max_size=8),
    ids | st.integers(-5, 500).map(str),
    max_size=4,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
# the stdlib encoder: integers past 64 bits are JSON too (orjson refuses to write them)
bodies = st.one_of(st.binary(max_size=512), json_values.map(lambda v: json.dumps(v).encode()), st.just(b""))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])


@pytest.fixture
async def client(settings: Settings, database_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    conn = await db.connect(database_url)
    try:
        await conn.execute("INSERT INTO customers (customer_id, user_id) VALUES ('cus_1', 'u_1')")
        await conn.execute("INSERT INTO customer_sync (customer_id, version) VALUES ('cus_1', 3)")
        await conn.execute("INSERT INTO entitlements (customer_id, feature, valid_until, subscription_id)"
                           " VALUES ('cus_1', 'pro', $1, 'sub_1')", datetime.now(UTC) + timedelta(days=30))
    finally:
        await conn.close()
    app = create_app(settings.model_copy(update={"api_tokens": {"app": SECRET}}), with_console=False)
    async with TestClient(TestServer(app)) as c:
        yield c


def _expect_right_200(path: str, method: str, query: dict[str, str], answer: Any) -> None:
    """What a 200 may say, given what is in the database (one grant: cus_1 / u_1 / pro)."""
    if path == "/v1/check":
        if answer["allowed"]:
            assert query.get("feature") == "pro", (query, answer)
            assert query.get("user_id") == "u_1" or query.get("customer_id") == "cus_1", (query, answer)
    elif path == "/v1/access":
        assert query.get("user_id") == "u_1" or query.get("customer_id") == "cus_1", (query, answer)
    elif path.startswith("/v1/customers/"):
        assert path == "/v1/customers/cus_1/timeline", path
    elif path == "/v1/sync":
        raise AssertionError(f"{method} /v1/sync answered 200 to a body naming no customer")


@FUZZ
@given(method=methods, path=paths, query=queries, token=tokens, body=bodies,
       content_type=st.sampled_from(["application/json", "text/plain", ""]) | header_text)
async def test_random_requests_never_5xx_nor_a_wrong_200(
    client: TestClient[Any, Any], method: str, path: str, query: dict[str, str], token: str | None, body: bytes,
    content_type: str,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if token is not None:
        headers["Authorization"] = token
    resp = await client.request(method, path, params=query, data=body, headers=headers)
    raw = await resp.read()
    assert resp.status < 500, (method, path, query, resp.status, raw[:300])
    valid = token is not None and token.lower().startswith("bearer ") and token[7:].strip() == SECRET
    if resp.url.path.startswith("/v1/") and not valid:
        assert resp.status in (401, 404, 405), (method, path, token, resp.status)
    if resp.status == 200 and method != "HEAD" and resp.url.path.startswith("/v1/"):
        assert valid
        _expect_right_200(resp.url.path, method, query, orjson.loads(raw))
    if method != "HEAD" and resp.status >= 400:
        assert orjson.loads(raw)["error"]["reason"], raw[:200]
    assert (await client.get("/healthz")).status == 200
