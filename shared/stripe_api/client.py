"""The one Stripe client of a process: the official SDK on aiohttp, rate-limited, retrying.

`StripeClient` retries nothing by default and, when it does retry, skips 429s unless Stripe says
`Stripe-Should-Retry: true`. We subclass its aiohttp transport to (1) pass every attempt,
retries included, through the shared `RateLimiter`, (2) bound the requests in flight per
endpoint, (3) retry 429s unless Stripe says not to, on top of the SDK's own retries of 5xx, 409
and connection errors, with its exponential backoff and jitter, and (4) count requests for
`/metrics` and the benchmarks.

Stripe runs a concurrency limiter beside its rate limiter (https://docs.stripe.com/rate-limits,
"API limiters"): a burst of concurrent requests to one endpoint is shed with 429 and
`stripe-rate-limited-reason: endpoint-concurrency`, often without `Retry-After` or
`Stripe-Should-Retry`. Such a 429 is always retried, with a budget of its own
(`MAX_CONCURRENCY_RETRIES`): it says nothing about the request, only about the moment.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import stripe
from prometheus_client import Counter, Gauge, Histogram

from shared import tracing
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
IN_FLIGHT = Gauge("entitled_stripe_in_flight", "Stripe requests in flight in this process, by endpoint.", ["endpoint"])
SHED = Counter(
    "entitled_stripe_shed_total",
    "429 answers by Stripe's stripe-rate-limited-reason (none: no reason given).",
    ["endpoint", "reason"],
)

MAX_NETWORK_RETRIES = 4
# An endpoint-concurrency 429 is about the moment, not the request: retry it longer (the SDK's
# backoff, 0.5 s doubling to 5 s with jitter: about 30 s in all).
MAX_CONCURRENCY_RETRIES = 8
CONCURRENCY_REASON = "endpoint-concurrency"
DEFAULT_ENDPOINT_CONCURRENCY = 5
TIMEOUT = aiohttp.ClientTimeout(total=20, sock_connect=5, sock_read=15)

# Path words of the endpoints we call (docs/contract.md §8); any other segment is an object id.
_PATH_WORDS = frozenset(
    {"v1", "customers", "subscriptions", "subscription_items", "products", "features", "prices",
     "checkout", "sessions", "line_items", "entitlements", "active_entitlements", "test_helpers",
     "test_clocks", "events", "charges", "disputes", "payment_intents", "invoices", "webhook_endpoints"}
)


def endpoint_of(method: str, url: str) -> str:
    """`GET /v1/customers/:id` for `GET https://api.stripe.com/v1/customers/cus_1?expand[]=x`."""
    path = urlsplit(url).path
    parts = [p if p in _PATH_WORDS else ":id" for p in path.strip("/").split("/") if p]
    return f"{method.upper()} /{'/'.join(parts)}"


def _header(rheaders: Any, name: str) -> str | None:
    if rheaders is None:
        return None
    value = rheaders.get(name)
    return None if value is None else str(value)


class LimitedAIOHTTPClient(stripe.AIOHTTPClient):
    """The SDK's aiohttp transport: rate-limited per attempt, in flight bounded per endpoint,
    retrying 429s."""

    def __init__(self, limiter: RateLimiter, *, endpoint_concurrency: int = DEFAULT_ENDPOINT_CONCURRENCY,
                 **kwargs: Any) -> None:
        super().__init__(timeout=TIMEOUT, **kwargs)
        self._limiter = limiter
        self.endpoint_concurrency = endpoint_concurrency
        self._slots: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(endpoint_concurrency)
        )
        # Requests per endpoint since start, for the benchmarks' "requests per sync".
        self.tally: Tally[str] = Tally()
        # Most requests ever in flight at once per endpoint (tests and benchmarks check the bound).
        self.in_flight: Tally[str] = Tally()
        self.peak_in_flight: Tally[str] = Tally()

    async def request_async(
        self, method: str, url: str, headers: Any, post_data: Any = None
    ) -> tuple[Any, int, Any]:
        """One attempt: an in-flight slot of its endpoint (held until the body is read), then a
        slot of the shared rate limit. The slot comes first so that a request waiting for
        capacity here never holds a rate-limit slot it cannot use."""
        endpoint = endpoint_of(method, url)
        async with tracing.span("stripe.request", {"http.request.method": method, "entitled.endpoint": endpoint}), \
                self._slots[endpoint]:
            self.in_flight[endpoint] += 1
            self.peak_in_flight[endpoint] = max(self.peak_in_flight[endpoint], self.in_flight[endpoint])
            IN_FLIGHT.labels(endpoint).inc()
            try:
                return await self._attempt(endpoint, method, url, headers, post_data)
            finally:
                self.in_flight[endpoint] -= 1
                IN_FLIGHT.labels(endpoint).dec()

    async def _attempt(self, endpoint: str, method: str, url: str, headers: Any,
                       post_data: Any) -> tuple[Any, int, Any]:
        await self._limiter.acquire(endpoint)
        self.tally[endpoint] += 1
        started = time.perf_counter()
        try:
            stream, status, rheaders = await super().request_stream_async(method, url, headers, post_data)
            content = await stream.read()
        except stripe.APIConnectionError:
            REQUESTS.labels(endpoint, "0").inc()
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The body failed after the headers came: a connection error, which the SDK retries.
            REQUESTS.labels(endpoint, "0").inc()
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
                f"reading the response failed: {exc!r}", should_retry=True
            ) from exc
        REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
        REQUESTS.labels(endpoint, str(status)).inc()
        tracing.note(**{"http.response.status_code": status})
        if status == 429:
            SHED.labels(endpoint, _header(rheaders, "stripe-rate-limited-reason") or "none").inc()
        return content, status, rheaders

    def _should_retry(
        self,
        response: tuple[Any, int, Any] | None,
        api_connection_error: stripe.APIConnectionError | None,
        num_retries: int,
        max_network_retries: int | None,
    ) -> bool:
        if response is not None and response[1] == 429:
            return should_retry_429(response[2], num_retries, max_network_retries or 0)
        return bool(super()._should_retry(response, api_connection_error, num_retries, max_network_retries))


def should_retry_429(rheaders: Any, num_retries: int, max_retries: int) -> bool:
    """A 429 is retried unless Stripe says not to; one for endpoint concurrency always is, with
    its own, longer budget."""
    if _header(rheaders, "stripe-rate-limited-reason") == CONCURRENCY_REASON:
        return num_retries < max(MAX_CONCURRENCY_RETRIES, max_retries)
    return num_retries < max_retries and _header(rheaders, "stripe-should-retry") != "false"


def create_client(
    api_key: str, api_base: str, limiter: RateLimiter, *, endpoint_concurrency: int = DEFAULT_ENDPOINT_CONCURRENCY
) -> tuple[stripe.StripeClient, LimitedAIOHTTPClient]:
    """A StripeClient pinned to the SDK's API version; close the transport with `close_async()`."""
    http = LimitedAIOHTTPClient(limiter, endpoint_concurrency=endpoint_concurrency)
    client = stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        http_client=http,
        max_network_retries=MAX_NETWORK_RETRIES,
    )
    return client, http
