"""The one Stripe client of a process: the official SDK on aiohttp, rate-limited, retrying.

`StripeClient` retries nothing by default and, when it does retry, skips 429s unless Stripe says
`Stripe-Should-Retry: true`. We subclass its aiohttp transport to (1) pass every attempt,
retries included, through the shared `RateLimiter`, (2) retry 429s unless Stripe says not to,
on top of the SDK's own retries of 5xx, 409 and connection errors, with its exponential
backoff and jitter, and (3) count requests for `/metrics` and the benchmarks.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import stripe
from prometheus_client import Counter, Histogram

from shared.stripe_api.ratelimit import RateLimiter

REQUESTS = Counter(
    "entitled_stripe_requests_total",
    "Stripe API requests, by endpoint and HTTP status (0: no response).",
    ["endpoint", "status"],
)
REQUEST_SECONDS = Histogram(
    "entitled_stripe_request_seconds",
    "Stripe API request latency, rate-limit wait excluded.",
    ["endpoint"],
    buckets=(0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8),
)

MAX_NETWORK_RETRIES = 4
TIMEOUT = aiohttp.ClientTimeout(total=20, sock_connect=5, sock_read=15)

# Path words of the endpoints we call (SPEC section 8); any other segment is an object id.
_PATH_WORDS = frozenset(
    {"v1", "customers", "subscriptions", "products", "features", "checkout", "sessions",
     "entitlements", "active_entitlements", "test_helpers", "test_clocks", "events"}
)


def endpoint_of(method: str, url: str) -> str:
    """`GET /v1/customers/:id` for `GET https://api.stripe.com/v1/customers/cus_1?expand[]=x`."""
    path = urlsplit(url).path
    parts = [p if p in _PATH_WORDS else ":id" for p in path.strip("/").split("/") if p]
    return f"{method.upper()} /{'/'.join(parts)}"


class LimitedAIOHTTPClient(stripe.AIOHTTPClient):
    """The SDK's aiohttp transport, rate-limited per attempt and retrying 429s."""

    def __init__(self, limiter: RateLimiter, **kwargs: Any) -> None:
        super().__init__(timeout=TIMEOUT, **kwargs)
        self._limiter = limiter
        # Requests per endpoint since start, for the benchmarks' "requests per sync".
        self.tally: Tally[str] = Tally()

    async def request_stream_async(
        self, method: str, url: str, headers: Any, post_data: Any = None
    ) -> tuple[Any, int, Any]:
        endpoint = endpoint_of(method, url)
        await self._limiter.acquire(endpoint)
        self.tally[endpoint] += 1
        started = time.perf_counter()
        try:
            content, status, rheaders = await super().request_stream_async(method, url, headers, post_data)
        except stripe.APIConnectionError:
            REQUESTS.labels(endpoint, "0").inc()
            raise
        REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
        REQUESTS.labels(endpoint, str(status)).inc()
        return content, status, rheaders

    def _should_retry(
        self,
        response: tuple[Any, int, Any] | None,
        api_connection_error: stripe.APIConnectionError | None,
        num_retries: int,
        max_network_retries: int | None,
    ) -> bool:
        if response is not None and num_retries < (max_network_retries or 0):
            _, status, rheaders = response
            if status == 429:
                return rheaders is None or rheaders.get("stripe-should-retry") != "false"
        return bool(super()._should_retry(response, api_connection_error, num_retries, max_network_retries))


def create_client(api_key: str, api_base: str, limiter: RateLimiter) -> tuple[stripe.StripeClient, LimitedAIOHTTPClient]:
    """A StripeClient pinned to the SDK's API version; close the transport with `close_async()`."""
    http = LimitedAIOHTTPClient(limiter)
    client = stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        http_client=http,
        max_network_retries=MAX_NETWORK_RETRIES,
    )
    return client, http
