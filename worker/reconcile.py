"""Reconciliation: make every customer equal to what Stripe says, with or without webhooks.

- `poll_events`: reads `GET /v1/events` from a stored cursor and feeds each event through the
  same path as a webhook (deduplicated by id), so events whose deliveries were lost still act.
- `sweep`: lists every subscription and every customer, compares them with our copy and queues
  a sync for each customer that differs (keyed by customer, not by creation date: an old
  subscription that changed yesterday is found).
- `refresh_catalog`: the catalog job: the catalog poll (every `RECONCILE_CATALOG_EVERY`) and
  product and price events update the product -> features cache and resync the customers whose
  products changed.

Both cron jobs run once per schedule however many workers there are (`Coordinator.claim_cron`).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from shared.access import Customer, Subscription, parse_customer, parse_subscription
from shared.bootstrap import Services
from shared.coordination import (
    AcceptedEvent,
    BadEventError,
    EventSource,
    Unit,
    created_of,
    event_hints,
    route_snapshot,
)
from worker import catalog, listing
from worker.sweep_payments import sweep_payments

log = structlog.get_logger(__name__)

# Stripe keeps events for 30 days; warn well before the cursor falls out of that window.
CURSOR_WARN_AGE_S = 25 * 86400
EVENTS_WINDOW_S = 30 * 86400
# Re-read a little before the cursor: events created in the same second as the last one seen
# may have been listed after the poll; ids are deduplicated anyway.
CURSOR_OVERLAP_S = 60
FIRST_POLL_LOOKBACK_S = 3600
# Customers a sweep queues at once (one pipelined batch of accepts).
ACCEPT_BATCH = 500


async def _cursor(deps: Services, name: str) -> str | None:
    value: str | None = await deps.pool.fetchval("SELECT cursor FROM reconcile_state WHERE name = $1", name)
    return value


async def _save_cursor(deps: Services, name: str, cursor: str | None, info: Mapping[str, Any]) -> None:
    await deps.pool.execute(
        """
        INSERT INTO reconcile_state (name, cursor, info, updated_at) VALUES ($1, $2, $3, now())
        ON CONFLICT (name) DO UPDATE SET cursor = EXCLUDED.cursor, info = EXCLUDED.info, updated_at = now()
        """,
        name,
        cursor,
        dict(info),
    )


async def feed_event(deps: Services, event: Mapping[str, Any], source: EventSource) -> str:
    """Route one snapshot event like a webhook; returns the coordination outcome."""
    try:
        work = route_snapshot(event)
        created = created_of(event)
    except BadEventError as exc:
        log.warning("reconcile.event_refused", event_id=str(event.get("id"))[:80], reason=str(exc))
        return "refused"
    if work.unit is None:
        return "ignored"
    record = AcceptedEvent.now(str(event["id"]), str(event["type"]), source, created, **event_hints(event))
    return await deps.coordinator.accept(work.unit, event=record, dedupe_id=record.id, reason=record.type,
                                         catalog_item=work.catalog_item)


async def poll_events(deps: Services) -> dict[str, int]:
    """Feed every event since the cursor through the webhook path."""
    now = int(time.time())
    stored = await _cursor(deps, "events")
    # Events of objects on a test clock carry the clock's time as `created`, which may lie far
    # ahead of ours: the cursor never passes the moment of a poll, or one advanced clock would
    # hide every later event from the poller (events dated ahead are listed again; ids dedupe).
    cursor = min(int(stored), now) if stored else now - FIRST_POLL_LOOKBACK_S
    if now - cursor > CURSOR_WARN_AGE_S:
        log.warning("reconcile.events_cursor_old", age_days=round((now - cursor) / 86400, 1),
                    hint="events older than 30 days are gone from Stripe; run `entitled resync --all`")
    since = max(cursor - CURSOR_OVERLAP_S, now - EVENTS_WINDOW_S)
    events = await deps.reader.events_since(since, ())
    counts: dict[str, int] = defaultdict(int)
    newest = cursor
    for event in events:
        counts[await feed_event(deps, event, "events_api")] += 1
        newest = max(newest, min(int(event.get("created") or 0), now))
    await _save_cursor(deps, "events", str(newest), {"last_poll": now, "seen": len(events), **counts})
    if counts.get("scheduled") or counts.get("coalesced") or counts.get("running"):
        log.info("reconcile.events_found", **counts, hint="these events' webhooks had not arrived")
    log.info("reconcile.events_polled", events=len(events), cursor=newest)
    return dict(counts)


def _fingerprint(sub: Subscription) -> tuple[Any, ...]:
    """What of a subscription decides access; two equal fingerprints need no sync."""
    return (
        sub.status,
        tuple(sorted((i.product_id, i.current_period_end) for i in sub.items)),
        sub.trial_end,
        sub.cancel_at,
        sub.cancel_at_period_end,
    )


def _ts(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


async def _our_fingerprints(deps: Services) -> dict[str, dict[str, tuple[Any, ...]]]:
    rows = await deps.pool.fetch(
        "SELECT subscription_id, customer_id, status, items, trial_end, cancel_at, cancel_at_period_end FROM subscriptions"
    )
    ours: dict[str, dict[str, tuple[Any, ...]]] = defaultdict(dict)
    for r in rows:
        items = tuple(sorted((i["product"], i.get("current_period_end")) for i in r["items"]))
        ours[r["customer_id"]][r["subscription_id"]] = (
            r["status"], items, _ts(r["trial_end"]), _ts(r["cancel_at"]), r["cancel_at_period_end"]
        )
    return ours


async def _queue_all(deps: Services, customer_ids: set[str], *, reason: str = "reconcile") -> None:
    """Concurrent accepts share Redis round trips (coordination/batching.py): after an outage
    this queues every customer, 10,000 in 0.6 s rather than 2.9 s one at a time."""
    ordered = sorted(customer_ids)
    for start in range(0, len(ordered), ACCEPT_BATCH):
        await asyncio.gather(*(deps.coordinator.accept(Unit.customer(cid), reason=reason)
                               for cid in ordered[start:start + ACCEPT_BATCH]))


class _EarlyQueue:
    """Customers the sweep knows to differ before its lists end (we hold nothing of them: after
    a lost database, all of them), queued a batch at a time while the listing goes on, so their
    syncs start sooner and the sweep does not end with 10,000 accepts to make."""

    def __init__(self, deps: Services) -> None:
        self.deps = deps
        self.queued: set[str] = set()
        self.batch: set[str] = set()
        self.sends: list[asyncio.Task[None]] = []

    def add(self, customer_id: str) -> None:
        if customer_id in self.queued:
            return
        self.queued.add(customer_id)
        self.batch.add(customer_id)
        if len(self.batch) >= ACCEPT_BATCH:
            self.sends.append(asyncio.create_task(_queue_all(self.deps, self.batch)))
            self.batch = set()

    async def close(self) -> None:
        """Queue what is left; raises what a batch raised (the sweep then fails, as before)."""
        if self.batch:
            self.sends.append(asyncio.create_task(_queue_all(self.deps, self.batch)))
            self.batch = set()
        await asyncio.gather(*self.sends)


def _user_differs(customer: Customer, user_id: str | None, source: str | None, deleted: bool) -> bool:
    """Whether Stripe's customer may map to another user than the one we hold (or was deleted):
    a user from a Checkout Session is not on the customer, so only metadata can differ."""
    if deleted:
        return True
    if source == "checkout_session" or customer.metadata_user_id == user_id:
        return False
    return bool(customer.metadata_user_id) or source == "customer_metadata"


SUBSCRIPTIONS = "/v1/subscriptions"
CUSTOMERS = "/v1/customers"


async def _floors(deps: Services) -> dict[str, int]:
    """The oldest `created` each list had at the last sweep: nothing older can appear (objects
    are never created in the past, test clocks' aside, which are listed per clock), so the
    ranges start there rather than at Stripe's opening."""
    info = await deps.pool.fetchval("SELECT info FROM reconcile_state WHERE name = 'sweep'")
    if not isinstance(info, dict):
        return {}
    return {k.removeprefix("oldest:"): int(v) for k, v in info.items() if k.startswith("oldest:")}


async def _list_account(deps: Services, path: str, params: dict[str, Any], clocks: list[str],
                        floors: Mapping[str, int], oldest: dict[str, int],
                        take: Callable[[dict[str, Any]], None]) -> None:
    """Every object of a list (`take` each): the account's by `created` ranges from its floor,
    each test clock's by its cursor, all side by side (the client bounds what is in flight per
    endpoint); `oldest[path]` becomes the oldest `created` outside test clocks."""
    async def one(clock: str | None) -> None:
        if clock is None:
            found = listing.list_by_created(lambda p: deps.reader.page(path, p), params,
                                            floor=floors.get(path, listing.EPOCH))
        else:
            # A test clock holds a few customers (a test fixture): a page or so each, by its cursor.
            found = deps.reader.list_all(path, {**params, "test_clock": clock})
        async for raw in found:
            if clock is None:
                oldest[path] = min(oldest.get(path, 2**62), int(raw.get("created") or 0))
            take(raw)

    await asyncio.gather(*(one(clock) for clock in [None, *clocks]))


async def sweep(deps: Services, *, progress_every: int = 1000) -> dict[str, int]:
    """List everything, compare with our copy, queue a sync for each customer that differs."""
    started = time.monotonic()
    known = {
        r["customer_id"]: (r["user_id"], r["user_id_source"], r["deleted"])
        for r in await deps.pool.fetch("SELECT customer_id, user_id, user_id_source, deleted FROM customers")
    }
    clocks = [r["test_clock"] for r in await deps.pool.fetch(
        "SELECT DISTINCT test_clock FROM customers WHERE test_clock IS NOT NULL ORDER BY 1")]
    # Our copy is read while the lists are on their way: the rate limit sets the sweep's pace,
    # not this read (docs/benchmarks.md, "Reconciliation sweep").
    ours_read = asyncio.create_task(_our_fingerprints(deps))
    theirs: dict[str, dict[str, tuple[Any, ...]]] = defaultdict(dict)
    listed: set[str] = set()
    differing: set[str] = set()
    floors = await _floors(deps)
    oldest: dict[str, int] = {}
    early = _EarlyQueue(deps)

    def take_subscription(raw: dict[str, Any]) -> None:
        sub = parse_subscription(raw)
        theirs[sub.customer_id][sub.id] = _fingerprint(sub)
        if sub.customer_id not in known:
            early.add(sub.customer_id)  # we hold nothing of it: it differs whatever the rest says
        seen_subs.add(sub.id)
        if len(seen_subs) % progress_every == 0:
            log.info("reconcile.sweep_progress", subscriptions=len(seen_subs),
                     elapsed_s=round(time.monotonic() - started, 1))

    def take_customer(raw: dict[str, Any]) -> None:
        customer = parse_customer(raw)
        listed.add(customer.id)
        held = known.get(customer.id)
        if held is not None and _user_differs(customer, *held):
            differing.add(customer.id)

    seen_subs: set[str] = set()
    try:
        # Both lists, each by `created` ranges side by side (worker/listing.py): the shared rate
        # limit sets the pace, not one cursor's round trips (docs/benchmarks.md, "Reconciliation").
        # and paid one-time sessions and open disputes (worker/sweep_payments.py, docs/contract.md §12)
        _, _, payments = await asyncio.gather(
            _list_account(deps, SUBSCRIPTIONS, {"status": "all"}, clocks, floors, oldest, take_subscription),
            _list_account(deps, CUSTOMERS, {}, clocks, floors, oldest, take_customer),
            sweep_payments(deps))
        ours = await ours_read
    finally:
        ours_read.cancel()
        await early.close()
    seen = len(seen_subs)
    differing |= {c for c in set(ours) | set(theirs) if ours.get(c, {}) != theirs.get(c, {})}
    # Customers we hold that Stripe no longer lists were deleted.
    # (a guest purchase's `cs_...` is no Stripe Customer: the payment sweep covers it)
    differing |= {c for c, (_, _, deleted) in known.items()
                  if c not in listed and not deleted and not c.startswith("cs_")}

    # The catalog is the catalog poll's (RECONCILE_CATALOG_EVERY), not the sweep's.
    await _queue_all(deps, differing - early.queued)
    took = time.monotonic() - started
    result = {"subscriptions": seen, "customers": len(listed), "queued": len(differing), "seconds": int(took),
              **payments,
              **{f"oldest:{path}": ts for path, ts in oldest.items()}}
    await _save_cursor(deps, "sweep", datetime.now(UTC).isoformat(), result)
    log.info("reconcile.sweep_done", **result)
    return result


async def refresh_catalog(deps: Services) -> None:
    """The catalog job: poll the whole catalog (`*`: the cron, the sweep, a thin event naming
    nothing), or refresh the products the dirty set names; then resync the holders of every
    product that changed."""
    items = await deps.coordinator.take_catalog_items()
    try:
        if "*" in items:
            polled = await catalog.poll(deps.pool, deps.reader)
            changed, products = set(polled.changed), polled.held
        else:
            product_ids = {i.removeprefix("product:") for i in items if i.startswith("product:")}
            feature_ids = {i.removeprefix("feature:") for i in items if i.startswith("feature:")}
            if feature_ids:
                product_ids |= await catalog.products_with_features(deps.pool, feature_ids)
            changed, products = await catalog.refresh(deps.pool, deps.reader, product_ids), len(product_ids)
    except BaseException:
        await deps.coordinator.return_catalog_items(items)
        raise
    customers = await catalog.customers_with_products(deps.pool, changed) if changed else []
    await _queue_all(deps, set(customers), reason="catalog")
    log.info("catalog.done", items=sorted(items)[:20], products=products, changed=sorted(changed)[:20],
             resynced=len(customers))
