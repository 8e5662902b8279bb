"""OpenTelemetry tracing, off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (README, "Tracing").

One webhook's path, as spans:

    webhook.received (ingest, SERVER)
      └ unit.accepted          the Redis script that queues the customer's work
    ~~ queue ~~  the accepted event's record carries its traceparent (`stamp`)
    sync (worker, CONSUMER)    one link per accepted event, attribute `stripe.event_id` on each
      ├ stripe.request         one per attempt (rate-limit wait included)
      ├ postgres.query         one per statement (an autocommit one is its own transaction)
      ├ postgres.transaction   the sync's write
      │   └ outbox.append      the access-changed message, written with the change
    ~~ outbox ~~ the relay links to the outbox.append of each row it publishes
    stream.publish (relay, PRODUCER)   XADD + PUBLISH of a batch

A sync coalesces a burst of events, and a relay publishes a batch of rows, so both start a trace
of their own and *link* to what they carry (OpenTelemetry's advice for batches) instead of
being a child of one of them. The relay's links come from this process's memory: a row written
by another worker process is published without a link (its span still names the message ids).

Every hook is a no-op, and costs a check of one global, while tracing is off or the
`otel` extra is not installed. Log lines carry `trace_id` and `span_id` (`add_trace_ids`).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Tracer

    from shared.coordination import Run
    from shared.settings import Settings

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the `otel` extra is not installed: tracing stays off
    trace = None  # type: ignore[assignment]

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_propagator = TraceContextTextMapPropagator() if trace is not None else None
# (customer_id, version) -> the outbox.append span of that row, for the relay's links.
_OUTBOX_SPANS: OrderedDict[tuple[str, int], SpanContext] = OrderedDict()
_OUTBOX_REMEMBERED = 10_000
# message id -> the outbox.append span of that message, for the deliveries' links (kept after
# the relay's publish: each endpoint's delivery, and each retry, links to it as well).
_MESSAGE_SPANS: OrderedDict[str, SpanContext] = OrderedDict()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Stamped(Protocol):
    @property
    def traceparent(self) -> str | None: ...


_R = TypeVar("_R", bound=_Stamped)


def enabled() -> bool:
    return _tracer is not None


def configure(settings: Settings) -> None:
    """Export spans over OTLP/HTTP when an endpoint is configured; once per process."""
    endpoint = (settings.otel_exporter_otlp_endpoint or "").strip()
    if _tracer is not None or not endpoint or trace is None:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The exporter reads the signal-specific variable itself; the generic one needs the path.
    traces_url = None if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") else f"{endpoint.rstrip('/')}/v1/traces"
    provider = _install(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url)))
    atexit.register(provider.shutdown)


def use_exporter(exporter: SpanExporter) -> TracerProvider:
    """Tests: send every span to `exporter` as it ends (the SDK's InMemorySpanExporter)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    return _install(SimpleSpanProcessor(exporter))


def disable() -> None:
    """Tests: back to no tracing."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None
    _OUTBOX_SPANS.clear()


def _install(processor: Any) -> TracerProvider:
    global _tracer, _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win when set (Resource.create reads them).
    attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "entitled"}
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("entitled")
    return provider


@contextlib.contextmanager
def _span(name: str, kind: SpanKind | None, links: Sequence[Link], attrs: Mapping[str, Any]) -> Iterator[Span | None]:
    if _tracer is None:
        yield None
        return
    clean = {k: v for k, v in attrs.items() if v is not None}
    with _tracer.start_as_current_span(name, kind=kind or trace.SpanKind.INTERNAL, links=links,
                                       attributes=clean) as current:
        yield current


class span:  # noqa: N801 - used like a function: `with tracing.span(...)` / `async with ...`
    """A span as the current one for the block, sync or async; nothing while tracing is off
    (not even the context manager: the receiver opens one per event)."""

    def __init__(self, name: str, attributes: Mapping[str, Any] | None = None, *,
                 kind: SpanKind | None = None, links: Sequence[Link] = (), **attrs: Any) -> None:
        self._cm = None if _tracer is None else _span(name, kind, links, {**(attributes or {}), **attrs})

    def __enter__(self) -> Span | None:
        return None if self._cm is None else self._cm.__enter__()

    def __exit__(self, *exc: Any) -> bool | None:
        return None if self._cm is None else self._cm.__exit__(*exc)

    async def __aenter__(self) -> Span | None:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> bool | None:
        return self.__exit__(*exc)


def note(**attrs: Any) -> None:
    """Set attributes on the current span (say, the status of a Stripe answer)."""
    if _tracer is not None:
        current = trace.get_current_span()
        for key, value in attrs.items():
            if value is not None:
                current.set_attribute(key, value)


# --- ingest -------------------------------------------------------------------------------------

def webhook_handler(handler: Handler) -> Handler:
    """The receiver's route inside a `webhook.received` span (HTTP attributes, answer status)."""

    async def traced(request: web.Request) -> web.StreamResponse:
        if _tracer is None:
            return await handler(request)
        with span("webhook.received", {"http.request.method": request.method, "url.path": request.path},
                  kind=trace.SpanKind.SERVER) as current:
            response = await handler(request)
            if current is not None:
                current.set_attribute("http.response.status_code", response.status)
            return response

    return traced


def stamp(record: _R) -> _R:
    """The accepted event's record with the current span's traceparent, for the sync's link;
    the span gets the event's id and type."""
    if _tracer is None or _propagator is None:
        return record
    current = trace.get_current_span()
    current.set_attribute("stripe.event_id", getattr(record, "id", ""))
    current.set_attribute("stripe.event_type", getattr(record, "type", ""))
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return dataclasses.replace(record, traceparent=carrier.get("traceparent"))  # type: ignore[type-var]


# --- worker ------------------------------------------------------------------------------------

def _context_of(traceparent: str | None) -> SpanContext | None:
    if not traceparent or _propagator is None:
        return None
    ctx = trace.get_current_span(_propagator.extract({"traceparent": traceparent})).get_span_context()
    return ctx if ctx.is_valid else None


def sync_span(run: Run) -> span:
    """The run of one unit, linked to the webhook of every event it handles."""
    if _tracer is None:
        return span("sync")
    links = []
    for event in run.events:
        ctx = _context_of(getattr(event, "traceparent", None))
        if ctx is not None:
            links.append(trace.Link(ctx, {"stripe.event_id": event.id, "stripe.event_type": event.type}))
    return span("sync", {
        "entitled.unit": run.unit.wire, "entitled.reason": run.reason or None,
        "entitled.event_ids": [e.id for e in run.events] or None, "entitled.took_over": run.took_over,
    }, kind=trace.SpanKind.CONSUMER, links=links)


def watch_queries(conn: Any) -> None:
    """One `postgres.query` span per statement of this connection, under the current span."""
    if _tracer is not None:
        conn.add_query_logger(_query_done)


def _query_done(record: Any) -> None:
    # asyncpg calls this with call_soon, in a copy of the caller's context: the caller's span
    # is the parent. The span is drawn after the fact, from the statement's measured time.
    if _tracer is None:
        return
    end = time.time_ns()
    query = " ".join(str(record.query).split())
    current = _tracer.start_span("postgres.query", start_time=end - int(record.elapsed * 1e9), attributes={
        "db.system.name": "postgresql", "db.query.text": query[:500],
        "db.operation.name": query.split(" ", 1)[0].upper() if query else "",
    })
    if record.exception is not None:
        current.set_status(trace.StatusCode.ERROR, type(record.exception).__name__)
    current.end(end_time=end)


def outbox_appended(customer_id: str, version: int, message_id: str) -> None:
    """The access-changed message is in the outbox (inside the write's transaction)."""
    if _tracer is None:
        return
    with span("outbox.append", {"entitled.customer_id": customer_id, "entitled.version": version,
                                "entitled.message_id": message_id}) as current:
        if current is not None:
            _OUTBOX_SPANS[(customer_id, version)] = current.get_span_context()
            _MESSAGE_SPANS[message_id] = current.get_span_context()
            while len(_OUTBOX_SPANS) > _OUTBOX_REMEMBERED:
                _OUTBOX_SPANS.popitem(last=False)
            while len(_MESSAGE_SPANS) > _OUTBOX_REMEMBERED:
                _MESSAGE_SPANS.popitem(last=False)


def publish_span(messages: Iterable[str | bytes]) -> span:
    """The relay's XADD + PUBLISH of a batch, linked to each row's outbox.append."""
    if _tracer is None:
        return span("stream.publish")
    links, ids = [], []
    for raw in messages:
        message = orjson.loads(raw)
        ids.append(str(message.get("id")))
        ctx = _OUTBOX_SPANS.pop((str(message.get("customer_id")), int(message.get("version") or 0)), None)
        if ctx is not None:
            links.append(trace.Link(ctx, {"entitled.message_id": ids[-1]}))
    return span("stream.publish", {
        "messaging.system": "redis", "messaging.destination.name": "access-changed",
        "messaging.batch.message_count": len(ids), "entitled.message_ids": ids,
    }, kind=trace.SpanKind.PRODUCER, links=links)


def delivery_span(*, message_id: str, customer_id: str, version: int, endpoint_id: str, url: str,
                  attempt: int) -> span:
    """One outbound webhook delivery attempt (a POST to an endpoint), linked to the outbox.append
    of its message when this process wrote it; the message id is an attribute either way."""
    attrs = {"http.request.method": "POST", "url.full": url, "entitled.message_id": message_id,
             "entitled.customer_id": customer_id, "entitled.version": version,
             "entitled.endpoint_id": endpoint_id, "entitled.attempt": attempt}
    if _tracer is None:
        return span("webhook.deliver")
    ctx = _MESSAGE_SPANS.get(message_id)
    links = [trace.Link(ctx, {"entitled.message_id": message_id})] if ctx is not None else []
    return span("webhook.deliver", attrs, kind=trace.SpanKind.CLIENT, links=links)


# --- logs --------------------------------------------------------------------------------------

def add_trace_ids(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current span's trace_id and span_id on every line."""
    if _tracer is not None:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
            event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict
