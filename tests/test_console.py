"""The operator console's sign-in and guard (docs/contract.md §11), with aiohttp's test client
against this test's own Postgres and Redis: no cookie, an expired or forged cookie and a bad
CSRF token are refused; sign-in attempts are rate-limited and logged with the token's name."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from api.app import create_app
from api.console.guard import COOKIE, SIGN_IN_LIMIT
from api.console.session import Signer
from shared import db
from shared.publishing import endpoints
from shared.settings import Settings
from tests.support.receiver import Receiver
from tests.test_webhooks import Clock, change, delivering, receiver, settled, until

SECRET = "console-test-secret-0123456789"
TOKENS = {"support": SECRET, "app": "another-secret-abcdefghij"}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings.model_copy(update={"api_tokens": TOKENS}))
    async with TestClient(TestServer(app)) as c:
        yield c


async def sign_in(client: TestClient[Any, Any], secret: str = SECRET, target: str = "/console/overview") -> Any:
    """Through the form, as a browser does: its page sets the form's own CSRF cookie."""
    form = await (await client.get("/console/sign-in")).text()
    return await client.post("/console/sign-in", data={"secret": secret, "next": target, "csrf": csrf_of(form)},
                             allow_redirects=False)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has a form with a CSRF token"
    return found.group(1)


async def test_pages_need_a_session(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/console/", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"].startswith("/console/sign-in?next=/console/")
    resp = await client.post("/console/customers/cus_x/resync", data={"csrf": "x"}, allow_redirects=False)
    assert resp.status == 403


async def test_sign_in_sets_a_strict_httponly_expiring_cookie(client: TestClient[Any, Any]) -> None:
    with capture_logs() as logs:
        resp = await sign_in(client)
    assert resp.status == 303
    assert resp.headers["Location"] == "/console/overview"
    [header] = [h for h in resp.headers.getall("Set-Cookie") if h.startswith(f"{COOKIE}=")]
    assert "HttpOnly" in header
    assert "SameSite=Strict" in header
    assert re.search(r"Max-Age=\d+", header)
    assert "Path=/console" in header
    assert SECRET not in header
    signed = [e for e in logs if e["event"] == "console.sign_in"]
    assert [(e["outcome"], e["token"]) for e in signed] == [("signed_in", "support")]
    page = await client.get("/console/")
    assert page.status == 200
    assert "signed in as" in await page.text()


async def test_a_wrong_secret_is_refused_and_logged(client: TestClient[Any, Any]) -> None:
    with capture_logs() as logs:
        resp = await sign_in(client, "not-a-secret")
    assert resp.status == 401
    assert COOKIE not in resp.cookies
    assert [(e["outcome"], e["token"]) for e in logs if e["event"] == "console.sign_in"] == [("refused", "-")]


async def test_sign_in_attempts_are_rate_limited(client: TestClient[Any, Any]) -> None:
    for _ in range(SIGN_IN_LIMIT):
        assert (await sign_in(client, "wrong")).status == 401
    with capture_logs() as logs:
        resp = await sign_in(client)  # even the right secret, once the limit is reached
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "60"
    assert [e["outcome"] for e in logs if e["event"] == "console.sign_in"] == ["rate_limited"]


async def test_the_sign_in_form_needs_its_own_csrf_token(client: TestClient[Any, Any]) -> None:
    """No other site can sign a browser in: without the form's cookie, or with another value, 403."""
    with capture_logs() as logs:
        resp = await client.post("/console/sign-in", data={"secret": SECRET, "csrf": "x"}, allow_redirects=False)
    assert resp.status == 403
    assert COOKIE not in resp.cookies
    assert [e["outcome"] for e in logs if e["event"] == "console.sign_in"] == ["csrf_refused"]
    await client.get("/console/sign-in")  # the cookie is set now; the value must still match
    resp = await client.post("/console/sign-in", data={"secret": SECRET, "csrf": "x"}, allow_redirects=False)
    assert resp.status == 403
    assert (await sign_in(client)).status == 303


async def test_an_expired_or_forged_cookie_is_refused(client: TestClient[Any, Any]) -> None:
    signer = Signer(TOKENS)
    expired, _ = signer.issue("support", time.time() - 10, ttl_s=5)
    forged, _ = Signer({"support": "guessed-secret-0000000000"}).issue("support", time.time())
    for cookie in (expired, forged, expired.split(".")[0] + ".AAAA", "garbage"):
        client.session.cookie_jar.clear()
        client.session.cookie_jar.update_cookies({COOKIE: cookie})
        resp = await client.get("/console/", allow_redirects=False)
        assert resp.status == 303, cookie
    good, _ = signer.issue("support", time.time())
    client.session.cookie_jar.update_cookies({COOKIE: good})
    assert (await client.get("/console/", allow_redirects=False)).status == 200


async def test_a_session_ends_with_its_token(settings: Settings) -> None:
    cookie, _ = Signer(TOKENS).issue("support", time.time())
    app = create_app(settings.model_copy(update={"api_tokens": {"app": TOKENS["app"]}}))
    async with TestClient(TestServer(app)) as c:
        c.session.cookie_jar.update_cookies({COOKIE: cookie})
        assert (await c.get("/console/", allow_redirects=False)).status == 303


async def test_changing_forms_need_the_csrf_token(client: TestClient[Any, Any]) -> None:
    assert (await sign_in(client)).status == 303
    token = csrf_of(await (await client.get("/console/")).text())
    for bad in ("", "x" * len(token), csrf_of_other_session()):
        resp = await client.post("/console/sign-out", data={"csrf": bad}, allow_redirects=False)
        assert resp.status == 403, bad
        assert "CSRF" in await resp.text()
    resp = await client.post("/console/sign-out", data={"csrf": token}, allow_redirects=False)
    assert resp.status == 303
    assert (await client.get("/console/", allow_redirects=False)).status == 303


def csrf_of_other_session() -> str:
    signer = Signer(TOKENS)
    _, session = signer.issue("support", time.time())
    return signer.csrf(session)


async def test_next_never_leaves_the_console(client: TestClient[Any, Any]) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/v1/access", "/console\\x"):
        resp = await sign_in(client, target=target)
        assert resp.headers["Location"] == "/console/", target


async def test_search_of_nobody_and_an_unknown_customer(client: TestClient[Any, Any]) -> None:
    assert (await sign_in(client)).status == 303
    page = await client.get("/console/", params={"q": "nobody@example.com"})
    assert "No customer has that" in await page.text()
    assert (await client.get("/console/customers/cus_unknown")).status == 404
    assert (await client.get("/console/failed")).status == 200
    assert (await client.get("/console/overview")).status == 200


async def test_failed_events_are_listed_and_replayed(stack_factory: Any) -> None:
    """A sync fails while Stripe answers 500s: the failed page lists its event; its Replay form
    processes it again once Stripe is back (shared/replay.py, as `entitled replay` does)."""
    async with stack_factory(workers=1) as stack:
        _, price = await stack.product("Pro", ["pro"])
        cus = await stack.customer(metadata={"user_id": "u_failed"})
        await stack.subscribe(cus, price)
        await stack.wait_features(cus, {"pro"})
        await stack.settle()
        await stack.ctl.set_api_faults(rate_500=1.0, methods=["GET"])
        await stack.stripe.v1.customers.update_async(cus, {"metadata": {"user_id": "u_failed", "x": "1"}})

        async def failed() -> bool:
            return bool(await stack.pool.fetchval("SELECT count(*) FROM event_ledger WHERE outcome = 'failed'"))

        await stack.wait_for(failed, 60, "a failed sync in the ledger")
        event_id = await stack.pool.fetchval("SELECT event_id FROM event_ledger WHERE outcome = 'failed' LIMIT 1")
        await stack.ctl.clear_api_faults()
        settings = Settings(database_url=stack.database_url, redis_url=stack.redis_url, stripe_api_key="sk_test_x",
                            api_tokens=TOKENS, log_format="json")
        async with TestClient(TestServer(create_app(settings))) as client:
            assert (await sign_in(client)).status == 303
            page = await (await client.get("/console/failed")).text()
            assert event_id in page
            resp = await client.post("/console/replay", data={"csrf": csrf_of(page), "target": event_id},
                                     allow_redirects=False)
            assert resp.status == 303
            assert resp.headers["Location"].startswith("/console/failed?notice=")
            await stack.settle()
            outcome = await stack.pool.fetchval("SELECT outcome FROM event_ledger WHERE event_id = $1", event_id)
            assert outcome in ("changed", "unchanged")
            assert event_id not in await (await client.get("/console/failed")).text()
            missing = await client.post("/console/replay", data={"csrf": csrf_of(page), "target": "evt_nope"})
            assert missing.status == 404
            # search finds the customer by its user id and shows its features now
            found = await (await client.get("/console/", params={"q": "u_failed"})).text()
            assert cus in found
            assert '<span class="feature">pro</span>' in found


async def test_a_failed_delivery_is_retried_from_the_console(client: TestClient[Any, Any], database_url: str) -> None:
    """A delivery given up on (the real Deliverer, its clock moved 3 days) is listed; Retry makes
    one more attempt now, which an endpoint that answers again receives."""
    pool = await db.create_pool(database_url)
    made: list[Receiver] = []
    try:
        refused: set[str] = set()
        r, ep = await receiver(made, pool, answer=lambda b: 500 if b["id"] in refused else 200)
        refused.add(await change(pool, "cus_d", 1))
        clock = Clock()
        async with delivering(database_url, clock=clock) as deliverer:
            await until(lambda: len(r.received) == 1, "the first attempt")
            await until(lambda: settled(pool, clock), "its outcome written")
            clock.advance(3 * 86400)
            deliverer.poke()

            async def given_up() -> bool:
                return bool(await endpoints.failed_deliveries(pool, 10))

            await until(given_up, "the delivery given up on")
            [failed] = await endpoints.failed_deliveries(pool, 10)
            assert (await sign_in(client)).status == 303
            page = await (await client.get("/console/failed")).text()
            assert ep.id in page
            assert f"/console/deliveries/{failed['id']}/retry" in page
            refused.clear()
            resp = await client.post(f"/console/deliveries/{failed['id']}/retry", data={"csrf": csrf_of(page)},
                                     allow_redirects=False)
            assert resp.status == 303
            deliverer.poke()
            await until(lambda: r.versions("cus_d") == [1], "the retried delivery")
            again = await client.post(f"/console/deliveries/{failed['id']}/retry", data={"csrf": csrf_of(page)})
            assert again.status == 404  # delivered now: nothing to retry
    finally:
        for made_receiver in made:
            await made_receiver.close()
        await pool.close()


async def test_the_overview_stream_sends_rendered_parts(client: TestClient[Any, Any]) -> None:
    """`/console/overview/live` is a server-sent event stream of the overview's parts, for a
    signed-in browser only."""
    assert (await client.get("/console/overview/live", allow_redirects=False)).status == 303
    assert (await sign_in(client)).status == 303
    resp = await client.get("/console/overview/live")
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head:
        head += await resp.content.readany()
    event, data = [line for line in head.decode().splitlines() if line][:2]
    assert event == "event: overview"
    parts = orjson.loads(data.removeprefix("data: "))
    assert set(parts) == {"figures", "chart", "latest"}
    assert 'id="fig-queue"' in parts["figures"]
    assert "<polyline" in parts["chart"]
    resp.close()
