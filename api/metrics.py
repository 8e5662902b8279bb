"""Prometheus metrics of the API (served at `GET /metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
CHECK_CACHE = Counter(
    "entitled_api_check_cache_total",
    "GET /v1/check answers, by where they came from.",
    ["outcome"],  # hit | miss (read Postgres) | bypass (the cache is off or its LISTEN is down)
)
CHECK_CACHE_HIT = CHECK_CACHE.labels("hit")
CHECK_CACHE_MISS = CHECK_CACHE.labels("miss")
CHECK_CACHE_BYPASS = CHECK_CACHE.labels("bypass")
CHECK_CACHE_DROPS = Counter(
    "entitled_api_check_cache_dropped_total",
    "Cached check answers dropped by a notification of Postgres (entitled_access).",
)
CHECK_CACHE_UP = Gauge(
    "entitled_api_check_cache_listening",
    "1 while the LISTEN on entitled_access is in place and the check cache is used.",
)
