"""Tracing (shared/tracing.py, README "Tracing"): one webhook's whole chain of spans, in this process.

The fake Stripe sends the webhooks of a purchase to the real ingest app in this event loop; an
arq worker in burst mode syncs the customer (fake Stripe, real Postgres and Redis) and the relay
publishes the message. The SDK's InMemorySpanExporter receives every span; the test follows
webhook.received → unit.accepted → (link by event id) → sync → stripe.request,
postgres.transaction → outbox.append → (link) → stream.publish, and the log lines' trace_id;
then the outbound webhook: outbox.append → (link) → webhook.deliver, to a real endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import structlog
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fakestripe import FakeStripe
from ingest.app import create_app
from shared import db, tracing
from shared.coordination import AcceptedEvent, Keys
from shared.publishing import Deliverer, DeliveryPolicy, endpoints
from shared.publishing.relay import Relay
from shared.settings import Duration, Settings
from tests.conftest import API_KEY
from tests.support.receiver import Receiver
from tests.support.redis_server import free_port
from tests.test_worker_inprocess import client as client
from tests.test_worker_inprocess import drain, subscribed_customer


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.use_exporter(exporter)
    yield exporter
    tracing.disable()


@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    async with FakeStripe(api_keys=(API_KEY,), tick_interval_s=0.1).running() as running:
        yield running


@pytest.fixture
async def traced_settings(settings: Settings, fake: Any) -> AsyncIterator[Settings]:
    """The receiver on a port of its own, registered with the fake; settings for the worker."""
    port = free_port()
    endpoint = fake.add_webhook_endpoint(f"http://127.0.0.1:{port}/webhooks/stripe")
    worker_settings = settings.model_copy(update={
        "stripe_api_base": fake.base_url, "stripe_webhook_secret": [endpoint.secret],
        "coalesce_window": Duration(0.05), "stripe_rate_limit": 200.0, "stripe_endpoint_rate_limit": 200.0,
    })
    runner = web.AppRunner(create_app(worker_settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield worker_settings
    finally:
        await runner.cleanup()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def children(spans: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    ctx: Any = parent.get_span_context()
    return [s for s in spans.get_finished_spans()
            if s.parent is not None and s.parent.span_id == ctx.span_id and s.parent.trace_id == ctx.trace_id]


async def accepted_subscription_event(spans: InMemorySpanExporter) -> ReadableSpan:
    for _ in range(200):
        for received in named(spans, "webhook.received"):
            found = attrs(received)
            if found.get("stripe.event_type") == "customer.subscription.created" and \
                    found.get("http.response.status_code") == 200:
                return received
        await asyncio.sleep(0.05)
    raise AssertionError("no customer.subscription.created webhook was accepted")


async def test_one_webhook_is_traced_from_receipt_to_the_stream(
    traced_settings: Settings, spans: InMemorySpanExporter, client: Any, redis_client: Any
) -> None:
    pool = await db.create_pool(traced_settings.database_url)
    endpoint_server = await Receiver().start()
    endpoint = await endpoints.add(pool, endpoint_server.url)
    endpoint_server.secret = endpoint.secret
    try:
        await _traced_chain(traced_settings, spans, client, redis_client, endpoint_server)
    finally:
        await endpoint_server.close()
        await pool.close()


async def _traced_chain(traced_settings: Settings, spans: InMemorySpanExporter, client: Any, redis_client: Any,
                        endpoint_server: Receiver) -> None:
    customer_id = await subscribed_customer(client, ["pro"])
    received = await accepted_subscription_event(spans)
    event_id = attrs(received)["stripe.event_id"]
    # ingest: the queueing is a child of the receipt
    assert [s.name for s in children(spans, received)] == ["unit.accepted"]

    trace_ids: Any = tracing.add_trace_ids
    with structlog.testing.capture_logs(processors=[trace_ids]) as logs:
        await drain(traced_settings)
    conn = await asyncpg.connect(traced_settings.database_url)
    try:  # whatever the worker's own relay left unpublished when the burst ended
        await Relay(traced_settings.database_url, redis_client, Keys(prefix=traced_settings.redis_prefix),
                    maxlen=1000, wake=asyncio.Event()).drain(conn)
    finally:
        await conn.close()

    # the worker's sync links to the webhook across the queue, by the event's id
    [sync] = [s for s in named(spans, "sync") if any(
        link.context.span_id == received.context.span_id for link in s.links)]
    [link] = [link for link in sync.links if link.context.span_id == received.context.span_id]
    assert dict(link.attributes or {})["stripe.event_id"] == event_id
    assert event_id in attrs(sync)["entitled.event_ids"]
    assert attrs(sync)["entitled.unit"] == customer_id

    under_sync = children(spans, sync)
    names = [s.name for s in under_sync]
    assert "stripe.request" in names
    assert "postgres.query" in names
    stripe_calls = {str(attrs(s)["entitled.endpoint"]): attrs(s)["http.response.status_code"]
                    for s in under_sync if s.name == "stripe.request"}
    assert stripe_calls.get("GET /v1/subscriptions") == 200, stripe_calls
    [write] = [s for s in under_sync if s.name == "postgres.transaction"]
    [appended] = [s for s in children(spans, write) if s.name == "outbox.append"]
    assert attrs(appended)["entitled.customer_id"] == customer_id
    # the statements of the write transaction are its children too
    assert any(s.name == "postgres.query" and "INSERT INTO outbox" in str(attrs(s)["db.query.text"])
               for s in children(spans, write))

    # the relay's publish links to the outbox row
    [published] = [s for s in named(spans, "stream.publish")
                   if any(link.context.span_id == appended.context.span_id for link in s.links)]
    message_id = attrs(appended)["entitled.message_id"]
    assert message_id in attrs(published)["entitled.message_ids"]
    entries = await redis_client.xrange("access-changed")
    assert any(message_id.encode() in fields[b"data"] for _id, fields in entries)

    # the sync's log lines carry its trace id
    trace_id = format(sync.context.trace_id, "032x")
    done = [line for line in logs if line["event"] == "sync.done" and line.get("trace_id") == trace_id]
    assert done
    assert done[0]["span_id"] == format(sync.context.span_id, "016x")

    # the outbound webhook of that message: a client span linked to the outbox row
    deliverer = Deliverer(traced_settings.database_url,
                          policy=DeliveryPolicy(timeout_s=2.0, idle_poll_s=0.05, endpoints_poll_s=0.05))
    task = asyncio.create_task(deliverer.run_forever())
    try:
        for _ in range(200):
            delivered = [s for s in named(spans, "webhook.deliver") if attrs(s)["entitled.message_id"] == message_id]
            if delivered:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [deliver] = delivered
    assert [link.context.span_id for link in deliver.links] == [appended.context.span_id]
    assert attrs(deliver)["http.response.status_code"] == 200
    assert attrs(deliver)["url.full"] == endpoint_server.url
    assert deliver.kind == trace.SpanKind.CLIENT
    assert any(message_id == r.message_id for r in endpoint_server.received if r.verified)


@pytest.mark.usefixtures("spans")
def test_the_record_carries_the_traceparent_across_the_queue() -> None:
    record = AcceptedEvent.now("evt_1", "invoice.paid", "webhook", 1)
    with tracing.span("webhook.received") as current:
        stamped = tracing.stamp(record)
    assert current is not None
    assert stamped.traceparent is not None
    assert AcceptedEvent.from_json(stamped.to_json()) == stamped
    assert f"{current.get_span_context().trace_id:032x}" in stamped.traceparent
    # a record queued by a release without tracing still reads
    assert AcceptedEvent.from_json(record.to_json()).traceparent is None


def test_tracing_off_changes_nothing() -> None:
    """No endpoint: no provider, the hooks do nothing, the record has no traceparent."""
    tracing.configure(Settings(otel_exporter_otlp_endpoint=""))
    assert not tracing.enabled()
    record = AcceptedEvent.now("evt_1", "invoice.paid", "webhook", 1)
    with tracing.span("x") as current:
        assert current is None
        assert tracing.stamp(record) is record
    assert tracing.add_trace_ids(None, "info", {"event": "e"}) == {"event": "e"}
