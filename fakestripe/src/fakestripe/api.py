"""The HTTP machinery every `/v1` route shares: auth, errors, faults, idempotency, lists, expand.

Each response carries `Request-Id: req_...` and errors use Stripe's JSON error body. Requests
to `/v1` and `/v2` go through, in order: the API faults (`rps_limit`, latency, injected reset /
429 / 500), authentication (`Authorization: Bearer <key>` or HTTP basic with the key as user),
idempotency (`Idempotency-Key` on POST replays the first answer, as Stripe does for 24 hours),
then the handler inside one `Core.operation()`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from . import errors, payments, shapes, shapes_billing, shapes_payments
from .clock import API_VERSION
from .core import Core
from .events import CURRENT_REQUEST
from .expand import Resolver, expand
from .faults import ApiFaults, RateWindow, RequestLog, Stats
from .forms import Endpoint, parse_form, parse_query
from .lifecycle import Lifecycle
from .webhooks import Webhooks

JSON = dict[str, Any]
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

IDEMPOTENCY_TTL_S = 24 * 3600


@dataclass
class Replay:
    fingerprint: str
    status: int
    body: bytes
    stored_at: float


@dataclass
class Fake:
    """Everything the HTTP layer needs; one per running fake."""

    core: Core
    lifecycle: Lifecycle
    webhooks: Webhooks
    api_keys: set[str]
    faults: ApiFaults = field(default_factory=ApiFaults)
    stats: Stats = field(default_factory=Stats)
    rate_window: RateWindow = field(default_factory=RateWindow)
    requests: RequestLog = field(default_factory=RequestLog)
    # Requests in flight per endpoint ("GET /v1/customers/{id}"), for `endpoint_concurrency`.
    in_flight: dict[str, int] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], Replay] = field(default_factory=dict)
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def reset(self) -> None:
        self.core.reset()
        self.webhooks.reset()
        self.lifecycle.advancing.clear()
        self.faults = ApiFaults()
        self.stats.reset()
        self.rate_window.clear()
        self.requests.clear()
        self.in_flight.clear()
        self.idempotency.clear()


FAKE = web.AppKey("fakestripe", Fake)
RAW_PARAMS = web.RequestKey("fakestripe_params", dict[str, Any])
WAS_RESET = web.RequestKey("fakestripe_reset", bool)


def fake_of(request: web.Request) -> Fake:
    return request.app[FAKE]


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers
    )


def error_response(exc: errors.StripeError) -> web.Response:
    return json_response(exc.body(), status=exc.status, headers=dict(exc.headers))


def unrecognized(request: web.Request) -> errors.StripeError:
    return errors.StripeError(
        404,
        f"Unrecognized request URL ({request.method}: {request.path}). Please see "
        "https://stripe.com/docs or we can help at https://support.stripe.com/.",
    )


def route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def presented_key(request: web.Request) -> str | None:
    """The API key the request carries (`Bearer`, or HTTP basic with the key as user)."""
    header = request.headers.get("Authorization", "")
    key: str | None = None
    if header.startswith("Bearer "):
        key = header[len("Bearer ") :].strip()
    elif header.startswith("Basic "):
        try:
            key = base64.b64decode(header[len("Basic ") :]).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            key = None
    return key


def authenticate(request: web.Request, keys: set[str]) -> str:
    key = presented_key(request)
    if key is None or key not in keys:
        raise errors.authentication_failed(key)
    return key


async def read_params(request: web.Request) -> dict[str, Any]:
    if request.method in ("GET", "DELETE", "HEAD"):
        return parse_query(request.query_string)
    body = await request.text()
    pairs = parse_qsl(request.query_string, keep_blank_values=True)
    pairs += parse_qsl(body, keep_blank_values=True)
    return parse_form(pairs)


def params(request: web.Request, endpoint: Endpoint) -> dict[str, Any]:
    """The request's parameters checked against what the endpoint accepts."""
    raw: dict[str, Any] = request[RAW_PARAMS]
    return endpoint.check(raw)


async def _apply_faults(fake: Fake, request: web.Request) -> web.StreamResponse | None:
    """The injected API faults; a response means the request ends here (a reset connection)."""
    faults = fake.faults
    if not faults.applies_to(request.method):
        return None
    if faults.rps_limit is not None:
        now = time.monotonic()
        if fake.rate_window.count(now) >= faults.rps_limit:
            raise errors.rate_limited()
        fake.rate_window.add(now)
    latency = faults.latency_s()
    if latency > 0:
        await asyncio.sleep(latency)
    outcome = faults.roll()
    if outcome == "reset" and request.transport is not None:
        request[WAS_RESET] = True
        request.transport.abort()
        return web.Response(status=500)
    if outcome == "429":
        raise errors.rate_limited()
    if outcome == "500":
        raise errors.api_error()
    return None


def _fingerprint(request: web.Request) -> str:
    raw = sorted(request[RAW_PARAMS].items())
    return hashlib.sha256(f"{request.method} {request.path} {raw!r}".encode()).hexdigest()


def _replay(fake: Fake, key: str, idem_key: str, fingerprint: str) -> web.Response | None:
    """The first answer to this `Idempotency-Key`, if one is stored and still fresh
    (https://docs.stripe.com/api/idempotent_requests)."""
    replay = fake.idempotency.get((key, idem_key))
    if replay is None or time.time() - replay.stored_at >= IDEMPOTENCY_TTL_S:
        return None
    if replay.fingerprint != fingerprint:
        raise errors.StripeError(
            400,
            "Keys for idempotent requests can only be used with the same parameters "
            "they were first used with. Try using a key other than "
            f"'{idem_key}' if you meant to execute a different request.",
            type_="idempotency_error",
        )
    return web.Response(
        body=replay.body,
        status=replay.status,
        content_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )


def _remember(
    fake: Fake, key: str, idem_key: str, fingerprint: str, response: web.StreamResponse
) -> None:
    # Stripe does not store 5xx or 429 answers: a retry with the same key runs again.
    if not isinstance(response, web.Response) or response.status >= 500 or response.status == 429:
        return
    body = response.body if isinstance(response.body, bytes) else b""
    fake.idempotency[(key, idem_key)] = Replay(fingerprint, response.status, body, time.time())


async def _run_handler(
    fake: Fake, request: web.Request, handler: Handler, request_id: str, idem_key: str | None
) -> web.StreamResponse:
    token = CURRENT_REQUEST.set((request_id, idem_key))
    try:
        with fake.core.operation():
            try:
                return await handler(request)
            except errors.StripeError as exc:
                return error_response(exc)
    finally:
        CURRENT_REQUEST.reset(token)


async def _serve_api(
    fake: Fake, request: web.Request, handler: Handler, request_id: str
) -> web.StreamResponse:
    """One API request, counted in flight on its endpoint while it runs."""
    endpoint = f"{request.method} {route_template(request)}"
    limit = fake.faults.endpoint_concurrency
    if (
        limit is not None
        and fake.faults.applies_to(request.method)
        and fake.in_flight.get(endpoint, 0) >= limit
    ):
        raise errors.endpoint_concurrency_limited()
    fake.in_flight[endpoint] = fake.in_flight.get(endpoint, 0) + 1
    try:
        return await _serve_api_request(fake, request, handler, request_id)
    finally:
        fake.in_flight[endpoint] -= 1


async def _serve_api_request(
    fake: Fake, request: web.Request, handler: Handler, request_id: str
) -> web.StreamResponse:
    faulted = await _apply_faults(fake, request)
    if faulted is not None:
        return faulted
    key = authenticate(request, fake.api_keys)
    request[RAW_PARAMS] = await read_params(request)
    idem_key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
    if not idem_key:
        return await _run_handler(fake, request, handler, request_id, None)
    fingerprint = _fingerprint(request)
    replayed = _replay(fake, key, idem_key, fingerprint)
    if replayed is not None:
        return replayed
    response = await _run_handler(fake, request, handler, request_id, idem_key)
    _remember(fake, key, idem_key, fingerprint, response)
    return response


@web.middleware
async def stripe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    fake = fake_of(request)
    request_id = fake.core.store.new_id("request")
    is_api = request.path.startswith(("/v1/", "/v2/"))
    if is_api:
        fake.stats.arrived()
        fake.requests.record(
            presented_key(request) or "",
            request.method,
            route_template(request),
            request.path,
            parse_qsl(request.query_string, keep_blank_values=True),
        )
    response: web.StreamResponse
    try:
        if is_api:
            response = await _serve_api(fake, request, handler, request_id)
        else:
            response = await handler(request)
    except errors.StripeError as exc:
        response = error_response(exc)
    except web.HTTPException as exc:
        if exc.status not in (404, 405):
            raise
        response = error_response(unrecognized(request))
    response.headers["Request-Id"] = request_id
    if is_api:
        response.headers["Stripe-Version"] = API_VERSION
        _log_shape(fake, request, response)
        status = "reset" if request.get(WAS_RESET) else str(response.status)
        fake.stats.finished(request.method, route_template(request), status)
    return response


def _log_shape(fake: Fake, request: web.Request, response: web.StreamResponse) -> None:
    log = fake.core.shape_log
    if log is None or not isinstance(response, web.Response) or response.status >= 400:
        return
    if response.content_type == "application/json" and isinstance(response.body, bytes):
        log.check(f"{request.method} {route_template(request)}", orjson.loads(response.body))


# Rendering --------------------------------------------------------------------------------


def resolver(core: Core) -> Resolver:
    """Renders the object an id names, for `expand[]`; None when there is none."""
    store = core.store
    # Id prefix → (the store's table, the renderer of one of its objects).
    tables: dict[str, tuple[Mapping[str, Any], Callable[[Any], JSON]]] = {
        "cus_": (store.customers, shapes.customer),
        "sub_": (store.subscriptions, lambda s: shapes_billing.subscription(store, s)),
        "in_": (store.invoices, lambda i: shapes_billing.invoice(store, i)),
        "clock_": (store.clocks, shapes.test_clock),
        "price_": (store.prices, shapes.price),
        "prod_": (store.products, shapes.product),
        "feat_": (store.features, shapes.feature),
        "pm_": (store.payment_methods, shapes.payment_method),
        "cs_": (store.sessions, lambda s: shapes_billing.checkout_session(store, s)),
    }

    def resolve(object_id: str) -> JSON | None:
        prefix = object_id.split("_", 1)[0] + "_"
        table = tables.get(prefix)
        if table is None or object_id not in table[0]:
            return shapes_payments.resolve(store, object_id)
        return table[1](table[0][object_id])

    return resolve


def respond(request: web.Request, obj: JSON, p: dict[str, Any]) -> web.Response:
    if p.get("expand"):
        core = fake_of(request).core
        payments.include(core, obj, p["expand"])
        expand(obj, p["expand"], resolver(core))
    return json_response(obj)


def newest_first(objects: Sequence[T], key: Callable[[T], tuple[int, int]]) -> list[T]:
    return sorted(objects, key=key, reverse=True)


def paginate(
    ordered: Sequence[T],
    id_of: Callable[[T], str],
    render: Callable[[T], JSON],
    p: dict[str, Any],
    url: str,
    label: str,
) -> JSON:
    """One page of an already ordered list, with Stripe's `limit`/`starting_after`/`ending_before`."""
    if "starting_after" in p and "ending_before" in p:
        raise errors.invalid_request(
            "You may only specify one of these parameters: ending_before, starting_after."
        )
    limit = p.get("limit", 10)
    ids = [id_of(o) for o in ordered]
    if "starting_after" in p:
        cursor = p["starting_after"]
        if cursor not in ids:
            raise errors.resource_missing(label, cursor, param="starting_after")
        start = ids.index(cursor) + 1
        window = list(ordered[start : start + limit])
        has_more = start + limit < len(ordered)
    elif "ending_before" in p:
        cursor = p["ending_before"]
        if cursor not in ids:
            raise errors.resource_missing(label, cursor, param="ending_before")
        end = ids.index(cursor)
        start = max(0, end - limit)
        window = list(ordered[start:end])
        has_more = start > 0
    else:
        window = list(ordered[:limit])
        has_more = len(ordered) > limit
    return shapes.list_object([render(o) for o in window], url, has_more)
