"""`/v1/events`, `/v2/core/events/{id}`, `/v1/webhook_endpoints` and active entitlements."""

from __future__ import annotations

import fnmatch
import re

from aiohttp import web

from . import errors, shapes
from .api import fake_of, json_response, newest_first, paginate, params, respond
from .billing import apply_metadata, get_customer
from .core import Core
from .entitlements import active_entitlements
from .events import Event
from .forms import Arr, Bool, Endpoint, Metadata, Range, Str, in_range
from .store import WebhookEndpoint

routes = web.RouteTableDef()

LIST_EVENTS = Endpoint(
    {
        "type": Str(),
        "types": Arr(Str(), max_items=20),
        "created": Range(),
        "delivery_success": Bool(),
    },
    list_params=True,
)


def visible(core: Core, event: Event) -> bool:
    """Stripe keeps events for 30 days, counted on the clock the event's object lives on."""
    return event.created >= core.now(event.clock) - core.settings.event_retention_s


@routes.get("/v1/events")
async def list_events(request: web.Request) -> web.Response:
    p = params(request, LIST_EVENTS)
    core = fake_of(request).core
    if "type" in p and "types" in p:
        raise errors.invalid_request("You may only specify one of these parameters: type, types.")
    pattern = p.get("type")
    types = set(p.get("types", []))

    def keep(event: Event) -> bool:
        if pattern is not None and not fnmatch.fnmatchcase(event.type, pattern):
            return False
        if types and event.type not in types:
            return False
        if "delivery_success" in p and (event.pending_webhooks == 0) != p["delivery_success"]:
            return False
        return visible(core, event) and in_range(event.created, p.get("created"))

    found = newest_first([e for e in core.events.events if keep(e)], lambda e: (e.created, e.seq))
    page = paginate(found, lambda e: e.id, Event.to_json, p, "/v1/events", "event")
    return respond(request, page, p)


@routes.get("/v1/events/{id}")
async def retrieve_event(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    core = fake_of(request).core
    event = core.events.by_id.get(request.match_info["id"])
    if event is None or not visible(core, event):
        raise errors.resource_missing("event", request.match_info["id"])
    return respond(request, event.to_json(), p)


@routes.get("/v2/core/events/{id}")
async def retrieve_v2_event(request: web.Request) -> web.Response:
    core = fake_of(request).core
    event = core.events.by_thin_id.get(request.match_info["id"])
    if event is None:
        raise errors.resource_missing("event", request.match_info["id"])
    return json_response(event.v2_json())


# Webhook endpoints -------------------------------------------------------------------------

_EVENT_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")

CREATE_ENDPOINT = Endpoint(
    {
        "url": Str(max_length=5000),
        "enabled_events": Arr(Str(), max_items=500),
        "description": Str(allow_unset=True),
        "metadata": Metadata(),
        "api_version": Str(),
        "connect": Bool(),
    },
    required=frozenset({"url", "enabled_events"}),
)
UPDATE_ENDPOINT = Endpoint(
    {
        "url": Str(max_length=5000),
        "enabled_events": Arr(Str(), max_items=500),
        "description": Str(allow_unset=True),
        "metadata": Metadata(),
        "disabled": Bool(),
    }
)


def check_enabled_events(names: list[str]) -> list[str]:
    if not names:
        raise errors.missing_parameter("enabled_events")
    for index, name in enumerate(names):
        if name != "*" and not _EVENT_NAME.match(name):
            raise errors.invalid_value(
                f"enabled_events[{index}]",
                f"Invalid enabled_events[{index}]: must be an event type or *",
            )
    return names


def create_endpoint(
    core: Core, url: str, enabled_events: list[str], description: str | None = None
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        id=core.store.new_id("webhook_endpoint"),
        created=core.clock.now(),
        seq=core.store.next_seq(),
        url=url,
        enabled_events=check_enabled_events(enabled_events),
        description=description,
    )
    core.store.webhook_endpoints[endpoint.id] = endpoint
    return endpoint


def _endpoint(request: web.Request) -> WebhookEndpoint:
    endpoint_id = request.match_info["id"]
    endpoint = fake_of(request).core.store.webhook_endpoints.get(endpoint_id)
    if endpoint is None:
        raise errors.resource_missing("webhook_endpoint", endpoint_id)
    return endpoint


@routes.post("/v1/webhook_endpoints")
async def create_webhook_endpoint(request: web.Request) -> web.Response:
    p = params(request, CREATE_ENDPOINT)
    fake = fake_of(request)
    endpoint = create_endpoint(fake.core, p["url"], p["enabled_events"], p.get("description"))
    apply_metadata(endpoint.metadata, p.get("metadata", {}))
    endpoint.api_version = p.get("api_version")
    secret = fake.webhooks.register(endpoint)
    return respond(request, shapes.webhook_endpoint(endpoint, secret), p)


@routes.get("/v1/webhook_endpoints")
async def list_webhook_endpoints(request: web.Request) -> web.Response:
    p = params(request, Endpoint(list_params=True))
    core = fake_of(request).core
    found = newest_first(list(core.store.webhook_endpoints.values()), lambda w: (w.created, w.seq))
    page = paginate(
        found,
        lambda w: w.id,
        shapes.webhook_endpoint,
        p,
        "/v1/webhook_endpoints",
        "webhook_endpoint",
    )
    return respond(request, page, p)


@routes.get("/v1/webhook_endpoints/{id}")
async def retrieve_webhook_endpoint(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    return respond(request, shapes.webhook_endpoint(_endpoint(request)), p)


@routes.post("/v1/webhook_endpoints/{id}")
async def update_webhook_endpoint(request: web.Request) -> web.Response:
    p = params(request, UPDATE_ENDPOINT)
    endpoint = _endpoint(request)
    if "url" in p:
        endpoint.url = p["url"]
    if "enabled_events" in p:
        endpoint.enabled_events = check_enabled_events(p["enabled_events"])
    if "description" in p:
        endpoint.description = p["description"] if isinstance(p["description"], str) else None
    if "metadata" in p:
        apply_metadata(endpoint.metadata, p["metadata"])
    if "disabled" in p:
        endpoint.status = "disabled" if p["disabled"] else "enabled"
    return respond(request, shapes.webhook_endpoint(endpoint), p)


@routes.delete("/v1/webhook_endpoints/{id}")
async def delete_webhook_endpoint(request: web.Request) -> web.Response:
    params(request, Endpoint())
    fake = fake_of(request)
    endpoint = _endpoint(request)
    del fake.core.store.webhook_endpoints[endpoint.id]
    fake.webhooks.unregister(endpoint.id)
    return json_response(shapes.deleted(endpoint.id, "webhook_endpoint"))


# Active entitlements -----------------------------------------------------------------------

LIST_ENTITLEMENTS = Endpoint(
    {"customer": Str()}, required=frozenset({"customer"}), list_params=True
)


@routes.get("/v1/entitlements/active_entitlements")
async def list_active_entitlements(request: web.Request) -> web.Response:
    p = params(request, LIST_ENTITLEMENTS)
    core = fake_of(request).core
    customer = get_customer(core, p["customer"])
    found = active_entitlements(core.store, customer.id)
    page = paginate(
        found,
        lambda e: str(e["id"]),
        lambda e: e,
        p,
        "/v1/entitlements/active_entitlements",
        "entitlements.active_entitlement",
    )
    return respond(request, page, p)


@routes.get("/v1/entitlements/active_entitlements/{id}")
async def retrieve_active_entitlement(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    core = fake_of(request).core
    wanted = request.match_info["id"]
    for (customer_id, _), entitlement_id in list(core.store.entitlement_ids.items()):
        if entitlement_id == wanted:
            for entitlement in active_entitlements(core.store, customer_id):
                if entitlement["id"] == wanted:
                    return respond(request, entitlement, p)
    raise errors.resource_missing("entitlements.active_entitlement", wanted)
