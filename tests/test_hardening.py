"""Hardening: what an outside probe of the receiver and the local run found. Each test names the
item it holds us to. Real ingest and api apps served as `python -m` serves them
(`tests.support.served.ServedApp`), real Redis and Postgres; raw sockets where HTTP clients
would refuse to send what a probe sends."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis
import redis.asyncio
import stripe
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from api.app import create_app as create_api
from fakestripe import FakeStripe
from ingest import metrics as ingest_metrics
from ingest.app import create_app
from shared import db, logs
from shared.bootstrap import Services, bootstrap
from shared.coordination import PARK_AFTER_FATAL, Keys, Unit
from shared.embedded import RedisServer, free_port, start_postgres
from shared.settings import Settings, SettingsError, load
from tests.conftest import API_KEY, WEBHOOK_SECRET
from tests.support.served import ServedApp, raw_exchange, split_response
from tests.support.webhooks import event, sign, subscription
from worker.sync import run_unit


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings)

    async def boom(_request: web.Request) -> web.Response:
        raise RuntimeError("an unexpected failure")

    # A route of the test's own that fails as a bug would; the app is otherwise as served.
    app.router.add_get("/test-boom", boom)
    async with TestClient(ServedApp(app)) as c:
        yield c


NESTED = "<nested 300 levels>"


def signed(payload: dict[str, Any] | bytes) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    # orjson will not write JSON nested this deep (Stripe's parser reads it): spliced in as text
    body = body.replace(orjson.dumps(NESTED), b'{"x":' * 300 + b"1" + b"}" * 300)
    return body, {"Content-Type": "application/json", "Stripe-Signature": sign(body, [WEBHOOK_SECRET])}


def checkout(ref: Any) -> dict[str, Any]:
    return event("checkout.session.completed", {"id": "cs_test_1", "object": "checkout.session", "customer": "cus_ref",
                                                "status": "complete", "client_reference_id": ref})


def with_field(name: str, value: Any) -> dict[str, Any]:
    e = event("customer.subscription.updated", subscription("cus_fields"))
    e[name] = value
    return e


# --- item 1: every field copied into the queued record is checked ---------------------------------

@pytest.mark.parametrize("payload", [
    with_field("created", NESTED),
    with_field("created", "1700000000"),
    with_field("id", "evt_\x00x"),
    with_field("id", "evt_" + "a" * 5000),
    with_field("id", NESTED),
    with_field("id", "cus_not_an_event"),
    with_field("id", "evt_a b"),
    with_field("type", "customer.subscription.updated\x00"),
    with_field("type", "Customer.Subscription.Updated"),
    checkout("u" * 5000),
    checkout("u\x00v"),
    checkout("line\nbreak"),
], ids=["created-nested-300", "created-string", "id-nul", "id-5kb", "id-nested", "id-not-evt", "id-space",
        "type-nul", "type-uppercase", "ref-5kb", "ref-nul", "ref-newline"])
async def test_signed_event_with_a_field_of_the_wrong_shape_is_a_400(
    served: TestClient[Any, Any], redis_client: redis.asyncio.Redis, payload: dict[str, Any]
) -> None:
    """Item 1: a signed event whose `created`, id, type or copied hint is not of Stripe's shape
    is a JSON 400 `not_an_event`, and nothing is queued (no 500, no 200 for a record the worker
    or Postgres would refuse)."""
    body, headers = signed(payload)
    resp = await served.post("/webhooks/stripe", data=body, headers=headers)
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["reason"] == "not_an_event"
    assert await redis_client.dbsize() == 0


async def test_an_unexpected_error_is_a_json_500_logged_with_its_traceback(served: TestClient[Any, Any]) -> None:
    """Item 1: an exception no handler expected answers a JSON 500 (not aiohttp's text/plain),
    and is logged at error level with its traceback."""
    with structlog.testing.capture_logs() as captured:
        resp = await served.get("/test-boom")
    assert resp.status == 500
    assert resp.content_type == "application/json"
    assert (await resp.json())["error"]["reason"] == "internal_error"
    [line] = [c for c in captured if c["event"] == "http.failed"]
    assert line["log_level"] == "error"
    assert isinstance(line["exc_info"], RuntimeError)


async def test_the_api_answers_an_unexpected_error_with_a_json_500(settings: Settings) -> None:
    """Item 1 for the API: the same JSON 500, logged with the traceback."""
    app = create_api(settings.model_copy(update={"api_tokens": {"t": "s3cret"}}), with_console=False)

    async def boom(_request: web.Request) -> web.Response:
        raise RuntimeError("an unexpected failure")

    app.router.add_get("/v1/test-boom", boom)
    async with TestClient(ServedApp(app)) as c:
        with structlog.testing.capture_logs() as captured:
            resp = await c.get("/v1/test-boom", headers={"Authorization": "Bearer s3cret"})
        assert (resp.status, resp.content_type) == (500, "application/json")
        assert "Server" not in resp.headers
    assert any(c["event"] == "http.failed" and isinstance(c.get("exc_info"), RuntimeError) for c in captured)


def test_json_logs_carry_the_formatted_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 1: in JSON logs, an exception logged through the stdlib (aiohttp, arq, asyncpg) or
    through structlog carries the formatted traceback, never `<traceback object at 0x...>`."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("json", "INFO")
        structlog.configure(cache_logger_on_first_use=False)  # leave no logger bound to `stream`
        try:
            raise ValueError("stdlib boom")
        except ValueError:
            logging.getLogger("aiohttp.server").exception("Error handling request")
        try:
            raise KeyError("structlog boom")
        except KeyError as exc:
            structlog.get_logger("t").error("t.failed", exc_info=exc)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        structlog.reset_defaults()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2, lines
    for line, error in zip(lines, ["ValueError: stdlib boom", "KeyError: 'structlog boom'"], strict=True):
        assert "Traceback (most recent call last)" in line["exception"], line
        assert error in line["exception"]
        assert "<traceback object" not in orjson.dumps(line).decode()


# --- item 4: what the servers say about themselves ------------------------------------------------

async def test_no_response_carries_a_server_banner(served: TestClient[Any, Any], settings: Settings) -> None:
    """Item 4: no `Server:` header on any answer of ingest or the API: a 200, a 400, a 404, a
    405, a 500, a parser error."""
    body, headers = signed(event("customer.subscription.updated", subscription("cus_banner")))
    for method, path, data in [("POST", "/webhooks/stripe", body), ("POST", "/webhooks/stripe", b"x"),
                               ("GET", "/healthz", b""), ("GET", "/nope", b""), ("GET", "/webhooks/stripe", b""),
                               ("GET", "/test-boom", b"")]:
        resp = await served.request(method, path, data=data, headers=headers)
        assert "Server" not in resp.headers, (method, path, resp.status)
    port = served.port
    assert port is not None
    raw = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    assert "server" not in split_response(raw)[1]
    api = create_api(settings.model_copy(update={"api_tokens": {"t": "s3cret"}}), with_console=False)
    async with TestClient(ServedApp(api)) as c:
        for path in ("/healthz", "/v1/access", "/nope"):
            resp = await c.get(path)
            assert "Server" not in resp.headers, path


ECHO = "ECHO" + uuid.uuid4().hex


@pytest.mark.parametrize(("request_bytes", "reason"), [
    (b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 2\r\n"
     b"Stripe-Signature: " + ECHO.encode() + b"\r\n\r\n\x00\x00", "unsupported_content_encoding"),
    (b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: t=1," + ECHO.encode() * 1000 + b"\r\n\r\n",
     "header_too_large"),
    (b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz" + ECHO.encode()
     + b"\r\n\r\n", "bad_http_request"),
    (b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 1" + ECHO.encode() + b"\r\n\r\n",
     "bad_http_request"),
    (b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nX-" + ECHO.encode() + b": \x01\r\n\r\n", "bad_http_request"),
    (ECHO.encode() + b" / HTTP/1.1\r\n\r\n", "bad_method"),
], ids=["brotli", "oversized-signature", "bad-chunk", "bad-content-length", "control-char", "bad-method"])
async def test_parser_errors_answer_json_without_echoing_the_request(
    served: TestClient[Any, Any], redis_client: redis.asyncio.Redis, request_bytes: bytes, reason: str
) -> None:
    """Item 4: what aiohttp's HTTP parser refuses answers a JSON 400 naming the reason, with no
    byte of the request in the answer; it is logged at info with the reason (not at error
    level, and without the bytes), and nothing is queued."""
    assert served.port is not None
    with structlog.testing.capture_logs() as captured:
        raw = await raw_exchange(served.port, request_bytes)
    status, headers, body = split_response(raw)
    assert status == 400, raw[:300]
    assert headers["content-type"].startswith("application/json")
    assert orjson.loads(body)["error"]["reason"] == reason
    assert ECHO.encode() not in raw
    assert [(c["log_level"], c["reason"]) for c in captured if c["event"] == "http.rejected"] == [("info", reason)]
    assert ECHO not in repr(captured)
    assert not [c for c in captured if c["log_level"] in ("error", "critical", "exception")]
    assert await redis_client.dbsize() == 0


async def test_the_type_label_is_bounded(served: TestClient[Any, Any]) -> None:
    """Item 4: signed events of invented types count under `type="other"`; a documented type
    keeps its own label."""
    invented = [f"invented.type_{uuid.uuid4().hex[:8]}" for _ in range(5)]
    for event_type in [*invented, "charge.succeeded"]:
        body, headers = signed(event(event_type, {"id": "ch_1", "object": "charge"}))
        resp = await served.post("/webhooks/stripe", data=body, headers=headers)
        assert await resp.json() == {"received": True, "ignored": True}
    labels = {s.labels["type"] for m in REGISTRY.collect() if m.name == "entitled_ingest_events"
              for s in m.samples}
    assert not labels & set(invented)
    assert {"other", "charge.succeeded"} <= labels
    assert ingest_metrics.type_label("v1.customer.subscription.updated") == "v1.customer.subscription.updated"


# --- item 5: the embedded servers are private -------------------------------------------------------

def private(path: Path, *, traverse_ok: bool = False) -> list[str]:
    """Everything under `path` (itself included) that group or others may read, write or enter
    (with `traverse_ok`, folders they may pass through without listing them are let be)."""
    found = []
    for p in [path, *path.rglob("*")]:
        mode = p.lstat().st_mode
        allowed = 0o011 if traverse_ok and stat.S_ISDIR(mode) else 0
        if not stat.S_ISSOCK(mode) and not stat.S_ISLNK(mode) and mode & 0o077 & ~allowed:
            found.append(f"{p} {oct(mode & 0o777)}")
    return found


def test_embedded_redis_needs_its_password_and_keeps_its_files_private(tmp_path: Path) -> None:
    """Item 5: the embedded Redis (as `entitled run` starts it, with its append-only file)
    refuses a connection without its password, runs in protected mode, and its data folder
    and files are 0700/0600."""
    data = tmp_path / ".data" / "redis"
    server = RedisServer(data_dir=data, persist=True)
    server.start()
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port, password="wrong").ping()
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.set("k", "v")
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        client.close()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert list(data.rglob("*")), "redis wrote no file"
        assert private(data) == []
    finally:
        server.close()


@pytest.mark.skipif(os.environ.get("TEST_EMBEDDED_PG") == "0", reason="embedded Postgres disabled")
def test_embedded_postgres_keeps_its_socket_and_files_private(tmp_path: Path) -> None:
    """Item 5: the embedded Postgres's data folder (and the folder holding its unix socket, the
    only way in: it listens on no TCP port) let no other local user in. (Run as root, the
    package runs the server as a user of its own, who must pass through the parents: those
    may be execute-only, never listable; the data folder itself stays 0700.)"""
    folder = tmp_path / ".data" / "postgres"
    _, handle = start_postgres(folder, private_root=tmp_path / ".data")
    try:
        assert private(tmp_path / ".data", traverse_ok=os.geteuid() == 0) == []
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        socket_dir = Path(handle.get_postmaster_info().socket_dir)  # type: ignore[attr-defined]
        assert stat.S_IMODE(socket_dir.stat().st_mode) & 0o077 == 0, oct(socket_dir.stat().st_mode)
    finally:
        handle.cleanup()  # type: ignore[attr-defined]


@pytest.mark.skipif(os.environ.get("TEST_EMBEDDED_PG") == "0", reason="embedded Postgres disabled")
def test_embedded_postgres_still_stops_cleanly_once_redis_started_beside_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`entitled run` starts Postgres, then Redis, under one private `.data`. Redis's folder
    rule once closed the shared parents again, so (run as root) the server's own user could no
    longer reach its data: `pg_ctl stop` failed and the server was killed instead of stopped."""
    root = tmp_path / ".data"
    _, handle = start_postgres(root / "demo" / "postgres", private_root=root)
    redis_server = RedisServer(data_dir=root / "demo" / "redis", persist=True, private_root=root)
    redis_server.start()
    try:
        assert private(root, traverse_ok=os.geteuid() == 0) == []
    finally:
        redis_server.close()
        with caplog.at_level(logging.WARNING, logger="embedded_postgres"):
            handle.cleanup()  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if "Failed to stop" in r.getMessage()]


# --- item 6: Stripe's base URL, worker metrics ----------------------------------------------------

@pytest.mark.parametrize(("url", "ok"), [
    ("https://api.stripe.com", True), ("https://stripe.example.internal:8443", True),
    ("http://127.0.0.1:12111", True), ("http://localhost:12111", True), ("http://[::1]:12111", True),
    ("http://api.stripe.com", False), ("http://10.0.0.5", False), ("ftp://api.stripe.com", False),
    ("http://127.0.0.1.attacker.example", False), ("api.stripe.com", False), ("https://", False),
])
def test_stripe_api_base_must_be_https_except_to_loopback(url: str, ok: bool) -> None:
    """Item 6: the API key is never sent in clear: `STRIPE_API_BASE` is https://, or http:// to
    a loopback host (the fake); anything else is one line naming the variable."""
    if ok:
        assert load(stripe_api_base=url).stripe_api_base == url
        return
    with pytest.raises(SettingsError) as raised:
        load(stripe_api_base=url)
    assert str(raised.value).startswith("STRIPE_API_BASE: ")
    assert "\n" not in str(raised.value)


def test_a_process_refuses_to_start_with_a_clear_text_stripe_api_base() -> None:
    """Item 6, at start-up: `python -m worker` exits 2 with one line naming the variable."""
    env = {**os.environ, "STRIPE_API_BASE": "http://api.stripe.com", "STRIPE_API_KEY": "sk_test_x",
           "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    done = subprocess.run([sys.executable, "-m", "worker"], env=env, capture_output=True, timeout=60, check=False)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, lines
    assert "STRIPE_API_BASE" in lines[0]


# --- item 7: slow senders ---------------------------------------------------------------------------

async def test_a_connection_that_sends_no_head_in_time_is_closed(settings: Settings) -> None:
    """Item 7 (slowloris): a connection that has not sent a whole request head within the
    deadline is closed by the server, whether it sends nothing, or a byte at a time; one that
    sends its head in time is answered, and may then sit idle as keep-alive allows."""
    async with TestClient(ServedApp(create_app(settings), header_timeout_s=0.5)) as c:
        assert c.port is not None
        silent = await asyncio.open_connection("127.0.0.1", c.port)
        slow = await asyncio.open_connection("127.0.0.1", c.port)

        async def drip() -> None:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                slow[1].write(bytes([byte]))
                await asyncio.sleep(0.05)

        dripping = asyncio.create_task(drip())
        # The server closes both (EOF); the test's own bound is far above the deadline.
        assert await asyncio.wait_for(silent[0].read(), 60) == b""
        assert await asyncio.wait_for(slow[0].read(), 60) == b""
        dripping.cancel()
        for _, writer in (silent, slow):
            writer.close()

        prompt = await raw_exchange(c.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout_s=5)
        assert split_response(prompt)[0] == 200


async def test_two_thousand_concurrent_connections_are_all_answered(settings: Settings) -> None:
    """Item 7: the head deadline does not cost the 2,000-connection case: 2,000 connections
    open at once, each sends a request, each gets its answer."""
    async with TestClient(ServedApp(create_app(settings))) as c:
        port = c.port
        assert port is not None

        async def one() -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return split_response(await reader.read())[0]
            finally:
                writer.close()

        statuses = await asyncio.gather(*(one() for _ in range(2000)))
    assert statuses == [200] * 2000


# --- item 2: parking is visible in a metric ---------------------------------------------------------

@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    async with FakeStripe(api_keys=(API_KEY,), tick_interval_s=0.1).running() as running:
        yield running


@pytest.fixture
async def deps(settings: Settings, fake: Any) -> AsyncIterator[Services]:
    worker_settings = settings.model_copy(update={"stripe_api_base": fake.base_url, "stripe_rate_limit": 200.0,
                                                  "stripe_endpoint_rate_limit": 200.0})
    async with bootstrap(worker_settings, postgres=True, stripe_client=True,
                         keys=Keys(prefix=worker_settings.redis_prefix)) as services:
        async with services.pool.acquire() as conn:
            await db.migrate(conn)
        yield services


async def test_a_parked_unit_is_counted_by_the_parked_metric(deps: Services, fake: Any) -> None:
    """Item 2: a customer whose every sync Postgres refuses (a NUL byte in its user id) is parked
    after PARK_AFTER_FATAL runs, and `entitled_units_parked_total{kind="customer"}` counts it,
    once."""
    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(API_KEY, base_addresses={"api": fake.base_url}, http_client=http)
    try:
        cus = (await client.v1.customers.create_async({"metadata": {"user_id": "u\x00nul"}})).id
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
    sample = ("entitled_units_parked_total", {"kind": "customer"})
    before = REGISTRY.get_sample_value(*sample) or 0.0
    unit = Unit.customer(cus)
    await deps.coordinator.accept(unit, reason="test", delay_ms=0)
    results = []
    for _ in range(PARK_AFTER_FATAL):
        [job_id] = [m.decode() for m in await deps.redis.zrange(deps.keys.queue, 0, -1)]
        await deps.redis.zrem(deps.keys.queue, job_id)  # run it now, not after its back-off
        results.append(await run_unit(deps, unit.wire, job_id))
    assert results[-1] == "customer:failed:parked", results
    assert [p.unit for p in await deps.coordinator.parked_units()] == [unit]
    assert REGISTRY.get_sample_value(*sample) == before + 1


async def test_worker_metrics_need_the_token_when_one_is_set(stack_factory: Any) -> None:
    """Item 6: with METRICS_TOKEN set, a worker's metrics answer 401 (JSON, no banner) without
    `Authorization: Bearer <token>`, and the metrics with it."""
    token = f"tok-{uuid.uuid4().hex}"
    async with stack_factory(workers=0) as stack:
        port = free_port()
        stack.start_worker(WORKER_METRICS_PORT=str(port), METRICS_TOKEN=token)
        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession() as session:
            async def get(headers: dict[str, str]) -> tuple[int, str, dict[str, str]]:
                for _ in range(300):
                    try:
                        async with session.get(url, headers=headers) as resp:
                            return resp.status, await resp.text(), dict(resp.headers)
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)  # the worker is still starting
                raise AssertionError("the worker's metrics never answered")

            for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": token}]:
                status, text, response_headers = await get(headers)
                assert status == 401, headers
                assert orjson.loads(text)["error"]["reason"] == "unauthorized"
                assert token not in text
                assert "Server" not in response_headers
            status, text, _ = await get({"Authorization": f"Bearer {token}"})
            assert status == 200
            assert "entitled_syncs_total" in text
            # the image's HEALTHCHECK asks /healthz, which needs no token (deploy/healthcheck.py)
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert (resp.status, await resp.json()) == (200, {"ok": True})
