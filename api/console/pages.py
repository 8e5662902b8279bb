"""The console's pages: search, a customer, failed events and deliveries, and their buttons
(docs/contract.md §11). Each handler reads (api/console/queries.py), lets the pure modules
shape (spans, picture), and renders a template; buttons are plain forms (POST, then 303 back),
so every page works without JavaScript."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web

from api import timeline
from api.access import iso
from api.console import picture, queries, spans
from api.console.guard import ROOT, SESSION, guarded, refuse, render
from api.context import services
from shared import replay
from shared.publishing import endpoints

log = structlog.get_logger(__name__)

TIMELINE_LIMIT = 100
RESYNC_WAIT_S = 8.0
MAX_ID = 255


def _id(value: str | None) -> str | None:
    value = (value or "").strip()
    return value if value and len(value) <= MAX_ID and value.isprintable() else None


def anchor(kind: str, item: dict[str, Any]) -> str:
    """The timeline item's element id, which the picture's marks link to."""
    if kind == "event":
        return f"event-{item['id']}"
    return f"{kind}-{item['at']}".replace(":", "").replace(".", "")


@guarded
async def search_page(request: web.Request) -> web.StreamResponse:
    text = _id(request.query.get("q"))
    results = await queries.search(services(request).pool, text) if text else []
    return render(request, "search.html", {"q": text or "", "results": results})


def _marks(syncs: list[tuple[datetime, dict[str, Any], dict[str, Any]]], events: list[Any]) -> list[picture.MarkAt]:
    marks = [picture.MarkAt(e["received_at"], "event", f"event-{e['event_id']}",
                            f"{e['type']} ({e['source']}) {e['event_id']}") for e in events]
    for at, _stripe, decision in syncs:
        item = {"at": iso(at)}
        marks.append(picture.MarkAt(at, "sync", anchor("sync", item),
                                    f"sync: {', '.join(sorted(decision.get('features') or {})) or 'no features'}"))
    return marks


@guarded
async def customer_page(request: web.Request) -> web.StreamResponse:
    customer_id = _id(request.match_info["customer_id"])
    pool = services(request).pool
    found = await queries.customer(pool, customer_id) if customer_id else None
    if customer_id is None or found is None:
        return refuse(request, 404, f"No customer {customer_id!r} is known here.")
    grants, why = await queries.access_now(pool, customer_id)
    syncs = await queries.syncs(pool, customer_id)
    events = await queries.events(pool, customer_id)
    now = datetime.now(UTC)
    shaped = spans.spans((spans.observation(at, stripe, decision) for at, stripe, decision in syncs), now)
    drawn = picture.layout(shaped, _marks(syncs, events), now)
    raw_cursor = request.query.get("cursor")
    cursor = timeline.decode_cursor(raw_cursor) if raw_cursor else None
    page = await timeline.timeline(pool, customer_id, limit=TIMELINE_LIMIT, cursor=cursor)
    items = [] if page is None else page["items"]
    for item in items:
        item["anchor"] = anchor(item["kind"], item)
    return render(request, "customer.html", {
        "customer": found, "grants": grants, "why": why, "picture": drawn, "items": items,
        "next_cursor": None if page is None else page["next_cursor"], "notice": request.query.get("notice"),
    })


async def _synced_at(request: web.Request, customer_id: str) -> datetime | None:
    value: datetime | None = await services(request).pool.fetchval(
        "SELECT synced_at FROM customer_sync WHERE customer_id = $1", customer_id)
    return value


async def _wait_for_sync(request: web.Request, customer_id: str, since: datetime) -> bool:
    deadline = asyncio.get_running_loop().time() + RESYNC_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        synced = await _synced_at(request, customer_id)
        if synced is not None and synced >= since:
            return True
        await asyncio.sleep(0.2)
    return False


def _back(customer_id: str, notice: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{ROOT}/customers/{quote(customer_id, safe='')}?notice={quote(notice)}#timeline")


@guarded
async def resync_customer(request: web.Request) -> web.StreamResponse:
    customer_id = _id(request.match_info["customer_id"])
    if customer_id is None:
        return refuse(request, 400, "That is not a customer id.")
    before = datetime.now(UTC)
    await replay.resync(services(request).coordinator, customer_id, reason="console.resync")
    log.info("console.resync", customer_id=customer_id, token=request[SESSION].token_name)
    done = await _wait_for_sync(request, customer_id, before)
    raise _back(customer_id, "Synced just now." if done else "Resync queued; no worker has run it yet.")


@guarded
async def replay_event(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    target = _id(str(form.get("target", "")))
    if target is None:
        return refuse(request, 400, "Say which event or parked unit to replay.")
    deps = services(request)
    try:
        done = await replay.replay(deps.pool, deps.coordinator, target)
    except replay.ReplayError as exc:
        return refuse(request, 404, str(exc))
    log.info("console.replay", target=target, customer_id=done.customer_id, token=request[SESSION].token_name)
    if form.get("back") == "customer" and done.customer_id:
        before = datetime.now(UTC)
        synced = await _wait_for_sync(request, done.customer_id, before)
        raise _back(done.customer_id, f"Replayed {target}." if synced else f"Replay of {target} queued.")
    raise web.HTTPSeeOther(f"{ROOT}/failed?notice={quote(f'Replay of {target} queued.')}")


@guarded
async def failed_page(request: web.Request) -> web.StreamResponse:
    deps = services(request)
    return render(request, "failed.html", {
        "events": await queries.failed_events(deps.pool),
        "parked": await deps.coordinator.parked_units(queries.FAILED_LIMIT),
        "deliveries": await endpoints.failed_deliveries(deps.pool, queries.FAILED_LIMIT),
        "notice": request.query.get("notice"),
    })


@guarded
async def retry_delivery(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["delivery_id"]
    if not raw.isdigit():
        return refuse(request, 400, "That is not a delivery id.")
    if not await endpoints.retry_failed(services(request).pool, int(raw)):
        return refuse(request, 404, f"Delivery {raw} is not a failed delivery of a configured endpoint.")
    log.info("console.retry_delivery", delivery_id=int(raw), token=request[SESSION].token_name)
    raise web.HTTPSeeOther(f"{ROOT}/failed?notice={quote(f'Delivery {raw} is being tried again.')}")
