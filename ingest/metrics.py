"""Prometheus metrics of the receiver (served at `GET /metrics`)."""

from __future__ import annotations

import typing
from functools import cache

from prometheus_client import Counter, Histogram

EVENTS_RECEIVED = Counter(
    "entitled_ingest_events_total",
    "Verified events received, by type (Stripe's known types; the rest as `other`) and by what became of them.",
    ["type", "outcome"],  # outcome: queued | duplicate | ignored
)
REJECTIONS = Counter(
    "entitled_ingest_rejections_total",
    "Requests refused, by reason.",
    ["reason"],
)
ENQUEUE_SECONDS = Histogram(
    "entitled_ingest_enqueue_seconds",
    "Time to put an event durably into Redis (one script call).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

OTHER_TYPE = "other"


@cache
def known_types() -> frozenset[str]:
    """Every event type the stripe SDK knows: snapshot types (the `Event.type` literal), their
    `v1.` thin forms, and the SDK's thin event classes. Bounded, so the label is too."""
    import stripe
    from stripe.events import _event_classes

    snapshot = typing.get_args(typing.get_type_hints(stripe.Event)["type"])
    thin = getattr(_event_classes, "_V2_EVENT_CLASS_LOOKUP", {})  # private: absent is fine
    return frozenset({*snapshot, *(f"v1.{t}" for t in snapshot), *thin})


def type_label(event_type: str) -> str:
    """The `type` label: a type Stripe documents, else `other` (a signed sender could otherwise
    grow the metric without bound, one series per invented type)."""
    return event_type if event_type in known_types() else OTHER_TYPE



def received(event_type: str, outcome: str) -> Counter:
    """`EVENTS_RECEIVED`'s child for a type and outcome, looked up once per label: `labels()`
    takes a lock and builds a key on every call."""
    return _received(type_label(event_type), outcome)


@cache  # bounded: keyed by the label (known types + `other`), not by the type as sent
def _received(label: str, outcome: str) -> Counter:
    return EVENTS_RECEIVED.labels(label, outcome)
