"""Prometheus metrics of the API (served at `GET /metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "entitled_api_requests_total",
    "Requests answered, by route, status and token name.",
    ["route", "status", "token"],
)
REQUEST_SECONDS = Histogram(
    "entitled_api_request_seconds",
    "Time to answer, by route.",
    ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
SYNCS = Counter(
    "entitled_api_syncs_total",
    "POST /v1/sync calls, by outcome.",
    ["outcome"],  # done | queued | throttled | unavailable | unknown
)
