"""Prometheus metrics of the receiver (served at `GET /metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_RECEIVED = Counter(
    "entitled_ingest_events_total",
    "Verified events received, by type and by what became of them.",
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
