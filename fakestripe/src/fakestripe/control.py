"""`/_fake/*`: the control API a test uses to drive the fake (JSON in, JSON out, no auth).

See docs/fakestripe.md for every route with examples; `client.FakeStripeControl` wraps them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import billing, checkout, errors, shapes
from .api import Fake, fake_of, json_response
from .api_events import create_endpoint
from .clock import RETRY_EXHAUSTED_ACTIONS
from .faults import ApiFaults
from .webhooks import EndpointFaults

routes = web.RouteTableDef()
JSON = dict[str, Any]


async def body_of(request: web.Request) -> JSON:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise errors.invalid_request(f"The body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise errors.invalid_request("The body must be a JSON object.")
    return body


def _bad(message: str) -> errors.StripeError:
    return errors.invalid_request(message)


@routes.get("/_fake/health")
async def health(_request: web.Request) -> web.Response:
    return json_response({"ok": True})


@routes.post("/_fake/reset")
async def reset(request: web.Request) -> web.Response:
    fake_of(request).reset()
    return json_response({"reset": True})


# Clocks and settings -----------------------------------------------------------------------


def clock_json(fake: Fake) -> JSON:
    return {
        "now": fake.core.clock.now(),
        "offset_s": fake.core.clock.offset_s,
        "test_clocks": [
            {"id": c.id, "frozen_time": c.frozen_time, "status": c.status}
            for c in fake.core.store.clocks.values()
        ],
    }


@routes.get("/_fake/clock")
async def get_clock(request: web.Request) -> web.Response:
    return json_response(clock_json(fake_of(request)))


@routes.post("/_fake/clock/advance")
async def advance_clock(request: web.Request) -> web.Response:
    body = await body_of(request)
    seconds = body.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise _bad("seconds must be a number >= 0")
    fake = fake_of(request)
    fake.core.clock.advance(float(seconds))
    ran = fake.lifecycle.run_global()
    return json_response({**clock_json(fake), "transitions": ran})


@routes.get("/_fake/settings")
async def get_settings(request: web.Request) -> web.Response:
    return json_response(fake_of(request).core.settings.to_json())


def _exhausted_action(name: str, value: Any) -> str:
    if value not in RETRY_EXHAUSTED_ACTIONS:
        raise _bad(f"{name} must be one of {', '.join(RETRY_EXHAUSTED_ACTIONS)}")
    return str(value)


def _days(name: str, value: Any) -> list[float]:
    if not isinstance(value, list) or not all(_is_number(d) and d >= 0 for d in value):
        raise _bad(f"{name} must be a list of numbers of days")
    if value != sorted(value):
        raise _bad(f"{name} must be increasing")
    return [float(d) for d in value]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole_seconds(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(f"{name} must be an integer >= 0")
    return value


def _seconds(name: str, value: Any) -> float:
    if not _is_number(value) or value < 0:
        raise _bad(f"{name} must be a number >= 0")
    return float(value)


# How each setting of `clock.Settings` is checked; a setting missing here cannot be changed.
SETTING_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "retry_exhausted_action": _exhausted_action,
    "retry_schedule_days": _days,
    "invoice_finalize_delay_s": _whole_seconds,
    "incomplete_expiry_s": _whole_seconds,
    "trial_will_end_before_s": _whole_seconds,
    "event_retention_s": _whole_seconds,
    "clock_advance_delay_s": _seconds,
}


@routes.post("/_fake/settings")
async def update_settings(request: web.Request) -> web.Response:
    """Change settings; on a bad value nothing changes."""
    body = await body_of(request)
    settings = fake_of(request).core.settings
    unknown = set(body) - set(SETTING_PARSERS)
    if unknown:
        raise _bad(f"unknown setting(s): {', '.join(sorted(unknown))}")
    parsed = {name: SETTING_PARSERS[name](name, value) for name, value in body.items()}
    for name, value in parsed.items():
        setattr(settings, name, value)
    return json_response(settings.to_json())


# Checkout ----------------------------------------------------------------------------------


@routes.post("/_fake/checkout/sessions/{id}/complete")
async def complete_session(request: web.Request) -> web.Response:
    body = await body_of(request)
    unknown = set(body) - {"payment_method", "test_clock", "email", "name"}
    if unknown:
        raise _bad(f"unknown option(s): {', '.join(sorted(unknown))}")
    for key in ("payment_method", "test_clock", "email", "name"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _bad(f"{key} must be a string or null")
    core = fake_of(request).core
    session = core.store.sessions.get(request.match_info["id"])
    if session is None:
        raise errors.resource_missing("checkout.session", request.match_info["id"])
    with core.operation():
        checkout.complete(
            core,
            session,
            payment_method=body.get("payment_method"),
            test_clock=body.get("test_clock"),
            email=body.get("email"),
            name=body.get("name"),
        )
    return json_response(checkout.session_json(core, session))


# Seeding -----------------------------------------------------------------------------------

SEED_YIELD_EVERY = 500


@routes.post("/_fake/seed/subscribers")
async def seed_subscribers(request: web.Request) -> web.Response:
    """`count` customers, each with `pm_card_visa` as default and one subscription to `price`
    (active, paid), made by the same model code as `POST /v1/customers` + `POST
    /v1/subscriptions` (same objects, same events), dated `start` + i / `per_second`: a benchmark
    population in seconds rather than two requests a customer."""
    body = await body_of(request)
    unknown = set(body) - {"price", "count", "per_second", "start", "email_prefix"}
    if unknown:
        raise _bad(f"unknown option(s): {', '.join(sorted(unknown))}")
    core = fake_of(request).core
    price = body.get("price")
    if not isinstance(price, str) or price not in core.store.prices:
        raise errors.resource_missing("price", str(price), param="price")
    count = _whole_seconds("count", body.get("count"))
    per_second = _seconds("per_second", body.get("per_second", 100))
    if per_second <= 0:
        raise _bad("per_second must be > 0")
    start = _whole_seconds("start", body.get("start", int(core.clock.now() - count / per_second)))
    prefix = body.get("email_prefix", "seed")
    if not isinstance(prefix, str):
        raise _bad("email_prefix must be a string")
    started = time.monotonic()
    ids = []
    for i in range(count):
        with core.operation(), core.pinned(None, start + int(i / per_second)):
            customer = billing.create_customer(core, {
                "email": f"{prefix}{i}@example.com",
                "payment_method": "pm_card_visa",
                "invoice_settings": {"default_payment_method": "pm_card_visa"},
            })
            billing.create_subscription(core, customer, billing.NewSubscription(items=[(price, 1)]))
        ids.append(customer.id)
        if i % SEED_YIELD_EVERY == SEED_YIELD_EVERY - 1:
            await asyncio.sleep(0)  # the fake keeps answering (health checks) while it seeds
    return json_response({"customers": len(ids), "first": ids[:1], "last": ids[-1:],
                          "seconds": round(time.monotonic() - started, 3)})


# Webhook endpoints -------------------------------------------------------------------------


def endpoint_json(fake: Fake, endpoint_id: str) -> JSON:
    endpoint = fake.core.store.webhook_endpoints[endpoint_id]
    state = fake.webhooks.endpoints[endpoint_id]
    now = time.time()
    return {
        **shapes.webhook_endpoint(endpoint),
        "secret": state.secrets[0][0],
        "secrets": [
            {"secret": s, "expires_at": e} for s, e in state.secrets if e is None or e > now
        ],
        "thin": state.thin,
        "faults": state.faults.to_json(),
    }


def _endpoint_id(request: web.Request) -> str:
    endpoint_id = request.match_info["id"]
    fake = fake_of(request)
    if (
        endpoint_id not in fake.webhooks.endpoints
        or endpoint_id not in fake.core.store.webhook_endpoints
    ):
        raise errors.resource_missing("webhook_endpoint", endpoint_id)
    return endpoint_id


@routes.post("/_fake/webhook_endpoints")
async def add_endpoint(request: web.Request) -> web.Response:
    body = await body_of(request)
    unknown = set(body) - {"url", "enabled_events", "secret", "thin", "faults"}
    if unknown:
        raise _bad(f"unknown option(s): {', '.join(sorted(unknown))}")
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise _bad("url is required")
    events = body.get("enabled_events", ["*"])
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise _bad("enabled_events must be a list of event types")
    secret = body.get("secret")
    if secret is not None and (not isinstance(secret, str) or not secret.startswith("whsec_")):
        raise _bad("secret must be a string starting with whsec_")
    fake = fake_of(request)
    faults = _faults(body.get("faults", {}))
    endpoint = create_endpoint(fake.core, url, events)
    fake.webhooks.register(endpoint, secret)
    fake.webhooks.set_faults(endpoint.id, faults)
    fake.webhooks.endpoints[endpoint.id].thin = bool(body.get("thin", False))
    return json_response(endpoint_json(fake, endpoint.id))


@routes.get("/_fake/webhook_endpoints")
async def list_endpoints(request: web.Request) -> web.Response:
    fake = fake_of(request)
    ids = [i for i in fake.webhooks.endpoints if i in fake.core.store.webhook_endpoints]
    return json_response({"data": [endpoint_json(fake, i) for i in ids]})


@routes.post("/_fake/webhook_endpoints/{id}/roll_secret")
async def roll_secret(request: web.Request) -> web.Response:
    body = await body_of(request)
    expires_in_s = body.get("expires_in_s", 24 * 3600)
    if (
        not isinstance(expires_in_s, int | float)
        or isinstance(expires_in_s, bool)
        or expires_in_s < 0
    ):
        raise _bad("expires_in_s must be a number >= 0")
    fake = fake_of(request)
    endpoint_id = _endpoint_id(request)
    secret, expires_at = fake.webhooks.roll_secret(endpoint_id, float(expires_in_s))
    return json_response(
        {**endpoint_json(fake, endpoint_id), "secret": secret, "previous_expires_at": expires_at}
    )


def _faults(body: Any) -> EndpointFaults:
    if not isinstance(body, dict):
        raise _bad("faults must be a JSON object")
    try:
        return EndpointFaults.from_json(body)
    except ValueError as exc:
        raise _bad(str(exc)) from exc


@routes.post("/_fake/webhook_endpoints/{id}/faults")
async def set_faults(request: web.Request) -> web.Response:
    body = await body_of(request)
    fake = fake_of(request)
    endpoint_id = _endpoint_id(request)
    fake.webhooks.set_faults(endpoint_id, _faults(body))
    return json_response(endpoint_json(fake, endpoint_id))


@routes.post("/_fake/webhook_endpoints/{id}/options")
async def set_options(request: web.Request) -> web.Response:
    body = await body_of(request)
    unknown = set(body) - {"thin"}
    if unknown:
        raise _bad(f"unknown option(s): {', '.join(sorted(unknown))}")
    fake = fake_of(request)
    endpoint_id = _endpoint_id(request)
    if "thin" in body:
        if not isinstance(body["thin"], bool):
            raise _bad("thin must be true or false")
        fake.webhooks.endpoints[endpoint_id].thin = body["thin"]
    return json_response(endpoint_json(fake, endpoint_id))


# Deliveries --------------------------------------------------------------------------------


@routes.get("/_fake/deliveries")
async def deliveries(request: web.Request) -> web.Response:
    fake = fake_of(request)
    query = request.query

    def keep(record: JSON) -> bool:
        return all(
            query.get(key) in (None, record.get(key)) for key in ("endpoint_id", "event_id", "type")
        )

    return json_response(
        {
            "deliveries": [r for r in fake.webhooks.records if keep(r)],
            "dropped": [r for r in fake.webhooks.dropped if keep(r)],
            "pending": fake.webhooks.pending(),
        }
    )


def is_idle(fake: Fake, include_retries: bool) -> bool:
    return not fake.lifecycle.advancing and fake.webhooks.pending(include_retries) == 0


@routes.post("/_fake/deliveries/wait_idle")
async def wait_idle(request: web.Request) -> web.Response:
    body = await body_of(request)
    timeout_s = body.get("timeout_s", 10.0)
    include_retries = body.get("include_retries", True)
    if not isinstance(timeout_s, int | float) or timeout_s < 0:
        raise _bad("timeout_s must be a number >= 0")
    fake = fake_of(request)
    deadline = time.monotonic() + float(timeout_s)
    while True:
        if is_idle(fake, bool(include_retries)) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.01)
    idle = is_idle(fake, bool(include_retries))
    result = {
        "idle": idle,
        "pending": fake.webhooks.pending(bool(include_retries)),
        "clocks_advancing": sorted(fake.lifecycle.advancing),
    }
    return json_response(result, status=200 if idle else 408)


# API faults and stats ----------------------------------------------------------------------


@routes.get("/_fake/api_faults")
async def get_api_faults(request: web.Request) -> web.Response:
    return json_response(fake_of(request).faults.to_json())


@routes.post("/_fake/api_faults")
async def set_api_faults(request: web.Request) -> web.Response:
    body = await body_of(request)
    try:
        faults = ApiFaults.from_json(body)
    except ValueError as exc:
        raise _bad(str(exc)) from exc
    fake = fake_of(request)
    fake.faults = faults
    fake.rate_window.clear()
    return json_response(faults.to_json())


@routes.delete("/_fake/api_faults")
async def clear_api_faults(request: web.Request) -> web.Response:
    fake = fake_of(request)
    fake.faults = ApiFaults()
    return json_response(fake.faults.to_json())


@routes.get("/_fake/stats")
async def stats(request: web.Request) -> web.Response:
    return json_response(fake_of(request).stats.to_json())


@routes.get("/_fake/requests")
async def requests(request: web.Request) -> web.Response:
    return json_response({"requests": fake_of(request).requests.to_json()})


@routes.get("/_fake/shapes")
async def shapes_checked(request: web.Request) -> web.Response:
    """What `check_shapes` found: `{"enabled", "checked", "types", "problems"}`."""
    log = fake_of(request).core.shape_log
    if log is None:
        return json_response({"enabled": False, "checked": 0, "types": [], "problems": []})
    return json_response({"enabled": True, **log.to_json()})


@routes.post("/_fake/stats/reset")
async def reset_stats(request: web.Request) -> web.Response:
    fake = fake_of(request)
    fake.stats.reset()
    return json_response(fake.stats.to_json())
