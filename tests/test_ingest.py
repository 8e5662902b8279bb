"""The receiver answers exactly as docs/contract.md §4's table says, against a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from ingest.app import MAX_BODY_BYTES, create_app
from shared.coordination import CATALOG, Keys, Unit, UnitKind
from shared.settings import Settings
from tests.conftest import WEBHOOK_SECRET
from tests.support.aio import aw
from tests.support.redis_server import RedisServer
from tests.support.webhooks import body_of, event, sign, subscription

KEYS = Keys()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def post(client: TestClient[Any, Any], body: bytes, header: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    resp = await client.post("/webhooks/stripe", data=body, headers=headers)
    return resp.status, orjson.loads(await resp.read())


async def queued_events(r: redis.asyncio.Redis, unit: Unit | str) -> list[dict[str, Any]]:
    unit = Unit.customer(unit) if isinstance(unit, str) else unit
    return [orjson.loads(x) for x in await aw(r.lrange(KEYS.unit_events(unit), 0, -1))]


async def queue_size(r: redis.asyncio.Redis) -> int:
    return int(await r.zcard(KEYS.queue))


async def test_valid_event_is_queued_once(client: TestClient[Any, Any], redis_client: redis.asyncio.Redis) -> None:
    """A signed, fresh event gets 200 {"received": true} and exactly one queued job for its customer."""
    evt = event("customer.subscription.updated", subscription("cus_A"))
    status, body = await post(client, body_of(evt), sign(body_of(evt), [WEBHOOK_SECRET]))
    assert (status, body) == (200, {"received": True})
    assert [e["id"] for e in await queued_events(redis_client, "cus_A")] == [evt["id"]]
    assert await queue_size(redis_client) == 1
    job_id = (await redis_client.zrange(KEYS.queue, 0, -1))[0].decode()
    job = orjson.loads(await redis_client.get(f"arq:job:{job_id}"))
    assert job["f"] == "sync_unit"
    assert job["a"] == ["cus_A"]


async def test_duplicate_is_acknowledged_not_queued(client: TestClient[Any, Any], redis_client: redis.asyncio.Redis) -> None:
    """The same event id again answers 200 with "duplicate": true and queues nothing more."""
    evt = event("invoice.paid", {"id": "in_1", "object": "invoice", "customer": "cus_B"})
    raw = body_of(evt)
    assert (await post(client, raw, sign(raw, [WEBHOOK_SECRET])))[0] == 200
    status, body = await post(client, raw, sign(raw, [WEBHOOK_SECRET]))
    assert (status, body) == (200, {"received": True, "duplicate": True})
    assert len(await queued_events(redis_client, "cus_B")) == 1
    assert await queue_size(redis_client) == 1


async def test_unneeded_type_is_ignored(client: TestClient[Any, Any], redis_client: redis.asyncio.Redis) -> None:
    """An event type that needs no work is acknowledged as ignored; Redis stays empty of work."""
    evt = event("charge.succeeded", {"id": "ch_1", "object": "charge", "customer": "cus_C"})
    status, body = await post(client, body_of(evt), sign(body_of(evt), [WEBHOOK_SECRET]))
    assert (status, body) == (200, {"received": True, "ignored": True})
    assert await queue_size(redis_client) == 0
    assert await queued_events(redis_client, "cus_C") == []


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        ("v1=abc", "malformed_signature"),
        ("t=notanumber,v1=abc", "malformed_signature"),
        ("t=123", "malformed_signature"),
    ],
)
async def test_missing_or_malformed_signature(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, header: str | None, reason: str
) -> None:
    """A missing or unparseable Stripe-Signature is a 400 naming the reason; nothing is queued."""
    evt = event("customer.updated", {"id": "cus_D", "object": "customer"})
    status, body = await post(client, body_of(evt), header)
    assert status == 400
    assert body["error"]["reason"] == reason
    assert await queue_size(redis_client) == 0


async def test_wrong_signature(client: TestClient[Any, Any], redis_client: redis.asyncio.Redis) -> None:
    """A signature made with another secret, or over another body, is refused."""
    evt = event("customer.updated", {"id": "cus_E", "object": "customer"})
    raw = body_of(evt)
    status, body = await post(client, raw, sign(raw, ["whsec_someone_else"]))
    assert (status, body["error"]["reason"]) == (400, "invalid_signature")
    status, body = await post(client, raw + b" ", sign(raw, [WEBHOOK_SECRET]))
    assert (status, body["error"]["reason"]) == (400, "invalid_signature")
    assert await queue_size(redis_client) == 0


@pytest.mark.parametrize(("skew_s", "reason"), [(-301, "stale_timestamp"), (301, "future_timestamp")])
async def test_stale_and_future_timestamps(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, skew_s: int, reason: str
) -> None:
    """A correctly signed delivery more than 300 s old, or more than 300 s ahead, is refused."""
    evt = event("customer.updated", {"id": "cus_F", "object": "customer"})
    raw = body_of(evt)
    status, body = await post(client, raw, sign(raw, [WEBHOOK_SECRET], int(time.time()) + skew_s))
    assert (status, body["error"]["reason"]) == (400, reason)
    assert await queue_size(redis_client) == 0


async def test_timestamps_inside_tolerance_pass(client: TestClient[Any, Any]) -> None:
    """290 s old or ahead is still fresh (Stripe's clock and ours may differ a little)."""
    for skew in (-290, 290):
        evt = event("customer.updated", {"id": "cus_G", "object": "customer"})
        raw = body_of(evt)
        assert (await post(client, raw, sign(raw, [WEBHOOK_SECRET], int(time.time()) + skew)))[0] == 200


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"this is not json", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_signature"),
        (b"[1, 2, 3]", "not_an_event"),
        (b'{"object": "charge", "id": "ch_1"}', "not_an_event"),
        (b'{"object": "event", "type": "invoice.paid", "livemode": false}', "not_an_event"),
        (b'{"object": "event", "id": "evt_1", "livemode": false}', "not_an_event"),
        (b'{"object": "event", "id": "evt_1", "type": "invoice.paid", "livemode": false}', "not_an_event"),
    ],
)
async def test_signed_body_that_is_not_an_event(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, raw: bytes, reason: str
) -> None:
    """A valid signature over a body that is not a Stripe event is still a 400."""
    status, body = await post(client, raw, sign(raw, [WEBHOOK_SECRET]))
    assert (status, body["error"]["reason"]) == (400, reason)
    assert await queue_size(redis_client) == 0


def padded_event(size: int) -> bytes:
    """A valid event body padded with JSON whitespace to exactly `size` bytes."""
    raw = body_of(event("customer.updated", {"id": "cus_H", "object": "customer"}))
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


async def test_body_of_exactly_one_mib_is_accepted(client: TestClient[Any, Any]) -> None:
    """1 MiB is the limit, inclusive."""
    raw = padded_event(MAX_BODY_BYTES)
    assert len(raw) == MAX_BODY_BYTES
    status, _ = await post(client, raw, sign(raw, [WEBHOOK_SECRET]))
    assert status == 200


async def test_body_over_one_mib_is_413(client: TestClient[Any, Any], redis_client: redis.asyncio.Redis) -> None:
    """One byte more is a 413 with a JSON error; nothing is queued."""
    raw = padded_event(MAX_BODY_BYTES + 1)
    status, body = await post(client, raw, sign(raw, [WEBHOOK_SECRET]))
    assert (status, body["error"]["reason"]) == (413, "body_too_large")
    assert await queue_size(redis_client) == 0


async def test_body_over_limit_without_content_length(client: TestClient[Any, Any]) -> None:
    """A chunked body (no Content-Length) over the limit is refused too."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(17):
            yield b" " * 65536

    resp = await client.post("/webhooks/stripe", data=chunks(), headers={"Stripe-Signature": "t=1,v1=x"})
    assert resp.status == 413


async def test_wrong_mode_is_refused(client: TestClient[Any, Any], redis_client: redis.asyncio.Redis) -> None:
    """A live-mode event reaching a deployment with a test key is a 400."""
    evt = event("customer.updated", {"id": "cus_I", "object": "customer"}, livemode=True)
    status, body = await post(client, body_of(evt), sign(body_of(evt), [WEBHOOK_SECRET]))
    assert (status, body["error"]["reason"]) == (400, "wrong_mode")
    assert await queue_size(redis_client) == 0


async def test_secret_rotation(redis_url: str, database_url: str) -> None:
    """During a roll Stripe sends two v1= signatures; any configured secret may match either."""
    old, new = "whsec_old_secret_1", "whsec_new_secret_2"
    for configured, signers, expected in [
        ([new], [old, new], 200),
        ([old, new], [old], 200),
        ([old, new], [new], 200),
        ([new], [old], 400),
    ]:
        settings = Settings(redis_url=redis_url, database_url=database_url, stripe_webhook_secret=configured,
                            stripe_api_key="sk_test_x")
        async with TestClient(TestServer(create_app(settings))) as c:
            evt = event("customer.updated", {"id": "cus_J", "object": "customer"})
            status, _ = await post(c, body_of(evt), sign(body_of(evt), signers))
            assert status == expected, (configured, signers)


async def test_concurrent_deliveries_of_one_event_queue_once(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis
) -> None:
    """100 concurrent deliveries of one event id: one is queued, 99 are duplicates."""
    evt = event("customer.subscription.created", subscription("cus_K"))
    raw = body_of(evt)
    results = await asyncio.gather(*(post(client, raw, sign(raw, [WEBHOOK_SECRET])) for _ in range(100)))
    assert all(status == 200 for status, _ in results)
    assert sum(1 for _, body in results if not body.get("duplicate")) == 1
    assert len(await queued_events(redis_client, "cus_K")) == 1
    assert await queue_size(redis_client) == 1


async def test_burst_for_one_customer_is_one_job(client: TestClient[Any, Any], redis_client: redis.asyncio.Redis) -> None:
    """Ten different events of one customer within the coalescing window make one queued job."""
    for i in range(10):
        evt = event("customer.subscription.updated", subscription("cus_L"), event_id=f"evt_burst_{i}")
        assert (await post(client, body_of(evt), sign(body_of(evt), [WEBHOOK_SECRET])))[0] == 200
    assert len(await queued_events(redis_client, "cus_L")) == 10
    assert await queue_size(redis_client) == 1


@pytest.mark.parametrize(
    ("event_type", "obj", "unit"),
    [
        ("customer.subscription.deleted", subscription("cus_M1"), "cus_M1"),
        ("customer.subscription.paused", {"id": "sub_9", "object": "subscription", "customer": {"id": "cus_M2"}}, "cus_M2"),
        ("invoice.payment_failed", {"id": "in_1", "object": "invoice", "customer": "cus_M3"}, "cus_M3"),
        (
            "invoice.paid",
            {"id": "in_2", "object": "invoice", "customer": None,
             "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_M4"}}},
            "subscription:sub_M4",
        ),
        ("checkout.session.completed", {"id": "cs_1", "object": "checkout.session", "customer": "cus_M5"}, "cus_M5"),
        ("checkout.session.completed", {"id": "cs_2", "object": "checkout.session", "customer": None,
                                        "subscription": "sub_M6"}, "subscription:sub_M6"),
        ("customer.created", {"id": "cus_M7", "object": "customer"}, "cus_M7"),
        ("customer.deleted", {"id": "cus_M8", "object": "customer", "deleted": True}, "cus_M8"),
        ("entitlements.active_entitlement_summary.updated",
         {"object": "entitlements.active_entitlement_summary", "customer": "cus_M9",
          "entitlements": {"object": "list", "data": [], "has_more": False, "url": "/v1/x"}, "livemode": False},
         "cus_M9"),
    ],
)
async def test_customer_found_for_each_event_family(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, event_type: str, obj: dict[str, Any], unit: str
) -> None:
    """Each event family's customer (or, failing that, its subscription) keys the queued work."""
    evt = event(event_type, obj)
    status, _ = await post(client, body_of(evt), sign(body_of(evt), [WEBHOOK_SECRET]))
    assert status == 200
    assert [e["id"] for e in await queued_events(redis_client, Unit.decode(unit))] == [evt["id"]]


@pytest.mark.parametrize(
    ("event_type", "obj", "item"),
    [
        ("product.updated", {"id": "prod_1", "object": "product"}, "product:prod_1"),
        ("price.created", {"id": "price_1", "object": "price", "product": "prod_2"}, "product:prod_2"),
        ("entitlements.feature.updated", {"id": "feat_1", "object": "entitlements.feature"}, "feature:feat_1"),
    ],
)
async def test_catalog_events_are_catalog_work(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, event_type: str, obj: dict[str, Any], item: str
) -> None:
    """product.*, price.* and entitlements.feature.* queue catalog work naming what to refresh."""
    evt = event(event_type, obj)
    assert (await post(client, body_of(evt), sign(body_of(evt), [WEBHOOK_SECRET])))[0] == 200
    assert await aw(redis_client.smembers(KEYS.catalog_dirty)) == {item.encode()}
    assert [e["id"] for e in await queued_events(redis_client, CATALOG)] == [evt["id"]]


def thin_event(event_id: str, event_type: str, related: dict[str, str] | None) -> bytes:
    """A thin event as Stripe's event destinations send it (https://docs.stripe.com/api/v2/core/events/object)."""
    thin: dict[str, Any] = {"id": event_id, "object": "v2.core.event", "type": event_type,
                            "created": "2026-11-21T12:00:00.000Z", "livemode": False}
    if related is not None:
        thin["related_object"] = related
    return orjson.dumps(thin)


SUB_T1 = {"id": "sub_T1", "type": "subscription", "url": "/v1/subscriptions/sub_T1"}


@pytest.mark.parametrize("event_type", ["v1.customer.subscription.updated", "v1.customer.subscription.past_due",
                                        "v1.customer.subscription.paused"])
async def test_thin_v1_event_is_accepted(client: TestClient[Any, Any], redis_client: redis.asyncio.Redis,
                                         event_type: str) -> None:
    """Thin events about v1 resources carry Stripe's `v1.` prefix and route as the unprefixed type;
    thin-only types (`v1.customer.subscription.past_due`, stripe-python's `stripe.events`) queue
    work for the resource's customer. Repeats are duplicates."""
    raw = thin_event("evt_thin_1", event_type, SUB_T1)
    assert await post(client, raw, sign(raw, [WEBHOOK_SECRET])) == (200, {"received": True})
    assert await post(client, raw, sign(raw, [WEBHOOK_SECRET])) == (200, {"received": True, "duplicate": True})
    queued = await queued_events(redis_client, Unit(UnitKind.SUBSCRIPTION, "sub_T1"))
    assert [(e["id"], e["type"], e["created"]) for e in queued] == [("evt_thin_1", event_type, 1795262400)]


async def test_thin_customer_event_names_the_customer(client: TestClient[Any, Any],
                                                      redis_client: redis.asyncio.Redis) -> None:
    raw = thin_event("evt_thin_2", "v1.customer.updated",
                     {"id": "cus_T2", "type": "customer", "url": "/v1/customers/cus_T2"})
    assert await post(client, raw, sign(raw, [WEBHOOK_SECRET])) == (200, {"received": True})
    assert [e["id"] for e in await queued_events(redis_client, "cus_T2")] == ["evt_thin_2"]


async def test_thin_event_needing_no_work_is_ignored(client: TestClient[Any, Any],
                                                     redis_client: redis.asyncio.Redis) -> None:
    raw = thin_event("evt_thin_3", "v1.customer.tax_id.created",
                     {"id": "txi_1", "type": "tax_id", "url": "/v1/tax_ids/txi_1"})
    assert await post(client, raw, sign(raw, [WEBHOOK_SECRET])) == (200, {"received": True, "ignored": True})
    assert await redis_client.dbsize() == 0


@pytest.mark.parametrize("payload_id", ["__events__", "__catalog__", "internal:events", "internal:catalog"])
async def test_a_payload_cannot_name_an_internal_unit(client: TestClient[Any, Any], redis_client: redis.asyncio.Redis,
                                                      payload_id: str) -> None:
    """Internal units are out of payloads' reach: `"customer": "__events__"` once started an Events API poll, and
    `"__catalog__"` merged into the catalog unit. Such ids are refused, and nothing is queued."""
    evt = event("invoice.paid", {"id": "in_1", "object": "invoice", "customer": payload_id})
    status, body = await post(client, body_of(evt), sign(body_of(evt), [WEBHOOK_SECRET]))
    assert (status, body["error"]["reason"]) == (400, "not_an_event")
    assert await redis_client.dbsize() == 0


async def test_wrong_method(client: TestClient[Any, Any]) -> None:
    """GET on the webhook path is a JSON 405."""
    resp = await client.get("/webhooks/stripe")
    assert resp.status == 405
    assert (await resp.json())["error"]["reason"] == "method_not_allowed"


async def test_health_and_metrics(client: TestClient[Any, Any]) -> None:
    """/healthz and /readyz answer 200 with Redis up; /metrics exposes the receiver's counters."""
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    # The registry is the process's: other tests counted into it too. So compare this test's
    # requests with the counts just before them.
    queued = ("entitled_ingest_events_total", {"outcome": "queued", "type": "customer.updated"})
    refused = ("entitled_ingest_rejections_total", {"reason": "missing_signature"})
    timed: tuple[str, dict[str, str]] = ("entitled_ingest_enqueue_seconds_count", {})
    before = await scrape(client)
    evt = event("customer.updated", {"id": "cus_N", "object": "customer"})
    await post(client, body_of(evt), sign(body_of(evt), [WEBHOOK_SECRET]))
    await post(client, body_of(evt), sign(body_of(evt), [WEBHOOK_SECRET]))  # a duplicate: not queued again
    await post(client, body_of(evt), None)
    after = await scrape(client)
    assert [sample(after, *m) - sample(before, *m) for m in (queued, refused, timed)] == [1, 1, 2]


async def scrape(client: TestClient[Any, Any]) -> list[Any]:
    text = await (await client.get("/metrics")).text()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def sample(samples: list[Any], name: str, labels: dict[str, str]) -> float:
    return float(sum(s.value for s in samples if s.name == name and s.labels == labels))


async def test_redis_down_is_503_and_the_retry_succeeds(database_url: str) -> None:
    """With Redis stopped the answer is 503, never 200; once Redis is back, Stripe's retry is
    accepted and queued: nothing is lost."""
    server = RedisServer()
    server.start()
    try:
        settings = Settings(redis_url=server.url, database_url=database_url,
                            stripe_webhook_secret=[WEBHOOK_SECRET], stripe_api_key="sk_test_x")
        async with TestClient(TestServer(create_app(settings))) as c:
            evt = event("customer.subscription.updated", subscription("cus_O"))
            raw = body_of(evt)
            server.stop()
            status, body = await post(c, raw, sign(raw, [WEBHOOK_SECRET]))
            assert (status, body["error"]["reason"]) == (503, "queue_unavailable")
            assert (await c.get("/readyz")).status == 503
            server.start()
            status, body = await post(c, raw, sign(raw, [WEBHOOK_SECRET]))
            assert (status, body) == (200, {"received": True})
            r = redis.asyncio.Redis.from_url(server.url)
            assert [e["id"] for e in await queued_events(r, "cus_O")] == [evt["id"]]
            await r.aclose()
    finally:
        server.close()


async def test_metrics_token(redis_url: str, database_url: str) -> None:
    """With METRICS_TOKEN set, /metrics answers 401 without the bearer token, 200 with it."""
    settings = Settings(redis_url=redis_url, database_url=database_url, stripe_webhook_secret=[WEBHOOK_SECRET],
                        stripe_api_key="sk_test_x", metrics_token="s3cret-token")
    async with TestClient(TestServer(create_app(settings))) as c:
        assert (await c.get("/metrics")).status == 401
        assert (await c.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await c.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})).status == 200
