"""Security (docs/contract.md §4): replayed deliveries, rotated-out secrets and the wrong mode are refused;
no secret and no payload reaches the logs; metrics are bound or protected as the README says.

Everything runs against the real ingest app (in-process), real worker processes, a real Redis
and Postgres, and the fake Stripe.
"""

from __future__ import annotations

import asyncio
import stat
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio
import stripe
import structlog
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from fakestripe import FakeStripe
from ingest.app import create_app
from shared.coordination import Keys, Unit
from shared.embedded import PARENTS_MODE, private_dir
from shared.settings import Settings
from tests.conftest import WEBHOOK_SECRET
from tests.support.aio import aw
from tests.support.redis_server import free_port
from tests.support.stack import API_KEY, Stack
from tests.support.webhooks import body_of, event, sign, subscription

KEYS = Keys()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def post(client: TestClient[Any, Any], body: bytes, header: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/webhooks/stripe", data=body,
                             headers={"Content-Type": "application/json", "Stripe-Signature": header})
    return resp.status, orjson.loads(await resp.read())


async def queued(r: redis.asyncio.Redis, unit: str) -> int:
    return int(await aw(r.llen(KEYS.unit_events(Unit.customer(unit)))))


async def test_a_replayed_delivery_is_refused_once_its_timestamp_is_old(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis
) -> None:
    """A delivery captured and sent again: within the 300 s tolerance it is a duplicate (not
    queued twice); once its signed timestamp is more than 300 s old it is refused, though its
    signature is still valid. Its header on another body, or an old delivery never seen
    before, is refused too."""
    body = body_of(event("customer.subscription.updated", subscription("cus_replay")))
    signed_at = int(time.time()) - 292
    header = sign(body, [WEBHOOK_SECRET], signed_at)
    assert await post(client, body, header) == (200, {"received": True})
    assert await post(client, body, header) == (200, {"received": True, "duplicate": True})

    other = body_of(event("customer.subscription.updated", subscription("cus_replay")))
    status, answer = await post(client, other, header)
    assert (status, answer["error"]["reason"]) == (400, "invalid_signature")

    await asyncio.sleep(max(0.0, signed_at + 301 - time.time()))
    status, answer = await post(client, body, header)
    assert (status, answer["error"]["reason"]) == (400, "stale_timestamp")

    old = body_of(event("customer.subscription.updated", subscription("cus_old")))
    status, answer = await post(client, old, sign(old, [WEBHOOK_SECRET], int(time.time()) - 3600))
    assert (status, answer["error"]["reason"]) == (400, "stale_timestamp")
    assert (await queued(redis_client, "cus_replay"), await queued(redis_client, "cus_old")) == (1, 0)


async def test_a_secret_rotated_out_is_refused(redis_url: str, database_url: str) -> None:
    """The fake Stripe rolls the endpoint's secret (the old one expires after a second) and the
    deployment keeps only the new one: Stripe's deliveries are accepted, and an event signed
    with the old secret, as whoever still holds it could sign, is refused."""
    port = free_port()
    fake = FakeStripe(api_keys=(API_KEY,), tick_interval_s=0.1)
    async with fake.running() as running, running.control() as ctl:
        endpoint = running.add_webhook_endpoint(f"http://127.0.0.1:{port}/webhooks/stripe", secret="whsec_old_0123")
        rolled = await ctl.roll_secret(endpoint.id, expires_in_s=1.0)
        new = str(rolled["secret"])
        assert new != endpoint.secret
        await asyncio.sleep(1.2)
        settings = Settings(redis_url=redis_url, database_url=database_url, stripe_webhook_secret=[new],
                            stripe_api_key=API_KEY)
        async with TestClient(TestServer(create_app(settings), port=port)) as client:
            http = stripe.AIOHTTPClient()
            sdk = stripe.StripeClient(API_KEY, base_addresses={"api": running.base_url}, http_client=http)
            created = await sdk.v1.customers.create_async({"email": "rotation@example.com"})
            await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
            await ctl.wait_idle(timeout_s=10)
            statuses = {d["status"] for d in (await ctl.deliveries())["deliveries"]}
            assert statuses == {200}

            forged = body_of(event("customer.updated", {"id": created.id, "object": "customer"}))
            status, answer = await post(client, forged, sign(forged, [endpoint.secret]))
            assert (status, answer["error"]["reason"]) == (400, "invalid_signature")
            r = redis.asyncio.Redis.from_url(redis_url)
            assert await queued(r, created.id) == 1  # Stripe's customer.created only
            await r.aclose()


@pytest.mark.parametrize(("api_key", "livemode"), [("sk_test_x", True), ("sk_live_x", False), ("rk_live_x", False)])
async def test_an_event_of_the_other_mode_is_refused(
    redis_client: redis.asyncio.Redis, redis_url: str, database_url: str, api_key: str, livemode: bool
) -> None:
    """A live event at a deployment with a test key, or a test event at one with a live key
    (secret or restricted), is refused with `wrong_mode`; nothing is queued."""
    settings = Settings(redis_url=redis_url, database_url=database_url, stripe_webhook_secret=[WEBHOOK_SECRET],
                        stripe_api_key=api_key)
    async with TestClient(TestServer(create_app(settings))) as client:
        body = body_of(event("customer.subscription.updated", subscription("cus_mode"), livemode=livemode))
        status, answer = await post(client, body, sign(body, [WEBHOOK_SECRET]))
    assert (status, answer["error"]["reason"]) == (400, "wrong_mode")
    assert await redis_client.dbsize() == 0


# --- logs --------------------------------------------------------------------------------------


def leaks(lines: list[str], forbidden: dict[str, str]) -> list[str]:
    """`what: line` for every line containing a forbidden string."""
    return [f"{what}: {line[:300]}" for line in lines for what, text in forbidden.items() if text in line]


async def _bad_requests(url: str, secret: str, marker: str) -> None:
    """Deliveries the receiver must refuse, each carrying the secret's signature or the marker."""
    good = body_of(event("customer.updated", {"id": "cus_logs", "object": "customer", "description": marker}))
    not_json = b"{" + marker.encode()
    live = body_of(event("customer.updated", {"id": "cus_logs", "description": marker}, livemode=True))
    requests: list[tuple[bytes, dict[str, str], int]] = [
        (good, {"Stripe-Signature": sign(good, ["whsec_not_ours_123"])}, 400),
        (good, {"Stripe-Signature": sign(good, [secret], int(time.time()) - 1000)}, 400),
        (good + b" ", {"Stripe-Signature": sign(good, [secret])}, 400),
        (not_json, {"Stripe-Signature": sign(not_json, [secret])}, 400),
        (live, {"Stripe-Signature": sign(live, [secret])}, 400),
        (good, {}, 400),
        (b" " * (2 * 1024 * 1024), {"Stripe-Signature": "t=1,v1=00"}, 413),
    ]
    async with ClientSession() as http:
        for body, headers, expected in requests:
            async with http.post(url, data=body, headers=headers) as resp:
                assert resp.status == expected


async def test_no_secret_and_no_payload_reaches_the_logs(stack_factory: Any) -> None:
    """Checkout, renewals, plan changes, a failing sync, duplicates, and refused deliveries
    (wrong secret, stale, tampered, not JSON, wrong mode), with every log at DEBUG: neither the
    webhook secret, nor the API key, nor the metrics token, nor any payload (marked with a
    unique string in the customer's email, description and metadata) appears in any log line
    of ingest (captured in-process) or of the workers (their JSON log files)."""
    marker = f"leakmarker{uuid.uuid4().hex}"
    env = {"LOG_LEVEL": "DEBUG", "WORKER_METRICS_PORT": str(free_port()), "COALESCE_WINDOW": "0.2"}
    with structlog.testing.capture_logs() as captured:
        async with stack_factory(workers=1, worker_env=env,
                                 ingest_overrides={"metrics_token": f"token{marker}"}) as stack:
            await _drive_for_logs(stack, marker)
            secret = (await stack.ctl.webhook_endpoints())[0]["secret"]
            await _bad_requests(stack.ingest_url, secret, marker)
            await stack.settle()
            worker_lines = [line for path in sorted(stack.log_dir.glob("worker-*.log"))
                            for line in path.read_text(errors="replace").splitlines()]
    ingest_lines = [orjson.dumps(entry, default=str).decode() for entry in captured]
    assert any(entry.get("event") == "ingest.rejected" for entry in captured), "the capture saw nothing"
    assert any('"sync.done"' in line for line in worker_lines), "the workers logged no sync"
    assert any('"sync.failed"' in line for line in worker_lines), "no failing sync was logged"
    forbidden = {"webhook secret": secret, "webhook secret (bare)": secret.removeprefix("whsec_"),
                 "API key": API_KEY, "metrics token": f"token{marker}", "payload": marker}
    assert leaks(ingest_lines, forbidden) == []
    assert leaks(worker_lines, forbidden) == []


async def _drive_for_logs(stack: Stack, marker: str) -> None:
    _, price = await stack.product("Pro", ["pro"])
    _, basic = await stack.product("Basic", ["basic"])
    clock, t0 = await stack.clock()
    session = await stack.checkout(price, user="u_logs", clock=clock, trial_days=1)
    cus = session["customer"]
    await stack.stripe.v1.customers.update_async(
        cus, {"email": f"{marker}@example.com", "description": marker, "metadata": {"note": marker}})
    await stack.wait_features(cus, {"pro"})
    await stack.set_faults(duplicate_rate=1.0)
    await stack.advance(clock, t0 + 2 * 86_400)  # the trial converts; every webhook twice
    await stack.set_faults()
    sub = session["subscription"]
    item = (await stack.stripe.v1.subscriptions.retrieve_async(sub))["items"].data[0].id
    await stack.ctl.set_api_faults(rate_500=1.0, methods=["GET"])  # this sync fails, and is retried
    await stack.stripe.v1.subscriptions.update_async(sub, {"items": [{"id": item, "price": basic}]})

    async def failed() -> bool:
        return bool(await stack.pool.fetchval("SELECT count(*) FROM event_ledger WHERE outcome = 'failed'"))

    await stack.wait_for(failed, 30, "a sync to fail")
    await stack.ctl.clear_api_faults()
    await stack.wait_features(cus, {"basic"}, timeout_s=60)


# --- metrics -----------------------------------------------------------------------------------


async def test_ingest_metrics_need_the_token_when_one_is_set(redis_url: str, database_url: str) -> None:
    """With METRICS_TOKEN set, /metrics answers 401 to no token, a wrong one, or the right one
    in the wrong form, and 200 only to `Authorization: Bearer <token>`; the 401 does not echo it."""
    token = f"tok-{uuid.uuid4().hex}"
    settings = Settings(redis_url=redis_url, database_url=database_url, stripe_webhook_secret=[WEBHOOK_SECRET],
                        stripe_api_key="sk_test_x", metrics_token=token)
    async with TestClient(TestServer(create_app(settings))) as c:
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                        {"Authorization": f"bearer {token}"}, {"Authorization": f"Basic {token}"},
                        {"Authorization": f"Bearer {token}x"}]:
            resp = await c.get("/metrics", headers=headers)
            assert resp.status == 401, headers
            assert token not in await resp.text()
        resp = await c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200
        assert "entitled_ingest_events_total" in await resp.text()


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


LOOPBACK = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it
ANY = {"00000000", "00000000000000000000000000000000"}


async def _metrics(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())

    deadline = time.monotonic() + 30
    while True:
        try:
            return await asyncio.to_thread(get)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_worker_metrics_are_bound_to_loopback_by_default(stack_factory: Any) -> None:
    """A worker with WORKER_METRICS_PORT serves its metrics on 127.0.0.1 only (not 0.0.0.0)
    unless METRICS_HOST says otherwise."""
    async with stack_factory(workers=0) as stack:
        default_port, open_port = free_port(), free_port()
        stack.start_worker(WORKER_METRICS_PORT=str(default_port))
        stack.start_worker(WORKER_METRICS_PORT=str(open_port), METRICS_HOST="0.0.0.0")
        assert "entitled_syncs_total" in await _metrics(default_port)
        await _metrics(open_port)
        assert listening_addresses(default_port) == {LOOPBACK}
        assert listening_addresses(open_port) & ANY


def test_private_folders_never_close_a_shared_parent(tmp_path: Path) -> None:
    """The embedded servers' folders are made private up to their root, but a shared, sticky
    folder on the way (such as /tmp, when the root is its child) is left as it is: closing it
    would lock every other user and program out of it."""
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    shared_tmp.chmod(0o1777)
    data = shared_tmp / "run" / "redis"
    private_dir(data, up_to=shared_tmp)
    assert stat.S_IMODE(shared_tmp.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared_tmp / "run").stat().st_mode) == PARENTS_MODE
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    (tmp_path / "elsewhere").mkdir(mode=0o755)
    (tmp_path / "elsewhere").chmod(0o755)
    private_dir(tmp_path / "elsewhere" / "x", up_to=shared_tmp)  # not an ancestor: parents untouched
    assert stat.S_IMODE((tmp_path / "elsewhere").stat().st_mode) == 0o755
