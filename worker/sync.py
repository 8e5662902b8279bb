"""One sync: read Stripe's current state, decide with the policy, write, schedule the re-check.

`run_unit` is the arq job (`sync_unit`). It takes the unit through the coordination scripts
(`shared/coordination/coordinator.py` explains the promises), dispatches on the unit's kind and always
finishes the run, so that work that arrived meanwhile, or a failure, queues the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import replace

import structlog
from prometheus_client import Counter, Histogram

from shared import tracing
from shared.access import Access, CustomerFacts, Known, decide, judged_at, ref_id
from shared.bootstrap import Services
from shared.coordination import Outcome, Run, Unit, UnitKind
from worker import catalog, payments, reconcile, store
from worker.failures import is_fatal

log = structlog.get_logger(__name__)

SYNCS = Counter("entitled_syncs_total", "Runs of the sync job, by unit kind and outcome.", ["kind", "outcome"])
SYNC_SECONDS = Histogram(
    "entitled_sync_seconds", "Duration of customer syncs.", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
)
MISMATCHES = Counter(
    "entitled_stripe_entitlements_mismatch_total",
    "Syncs where Stripe's own active entitlements differ from ours (ours decide).",
    ["kind"],  # stripe_grants_more | stripe_grants_less
)
PARKED = Counter(
    "entitled_units_parked_total",
    "Units parked after repeated non-retryable failures (`entitled events --failed` lists them).",
    ["kind"],
)

SUMMARY_EVENT = "entitlements.active_entitlement_summary.updated"
# What a message's `reason` names first (docs/contract.md, messages): Stripe fires its
# entitlement summary event *after* the subscription, invoice or checkout event that caused it.
CAUSE_PREFIXES = ("customer.subscription.", "invoice.", "checkout.session.", "charge.")


def message_reason(events: Sequence[tuple[str, int | None]], fallback: str | None) -> str:
    """The reason of a sync's message, from the run's events as `(type, created)` in arrival
    order: the latest event that causes changes, else the latest that is not the summary, else
    the latest, else why the run was queued. Latest by Stripe's `created`, arrival breaking
    ties: the Events API poller may bring an old event in after the new one that caused the
    change (a thin webhook, say)."""
    ordered = [t for t, _ in sorted(events, key=lambda e: e[1] or 0)]
    causes = [t for t in ordered if t.removeprefix("v1.").startswith(CAUSE_PREFIXES)]
    others = [t for t in ordered if t.removeprefix("v1.") != SUMMARY_EVENT]
    for found in (causes, others, ordered):
        if found:
            return found[-1]
    return fallback or "sync"
RETRY_BASE_S = 5.0
RETRY_MAX_S = 300.0
# A catalog entry younger than this is not re-read when Stripe's entitlements disagree with ours.
CATALOG_RECHECK_AGE_S = 60.0


def retry_delay_ms(failures: int) -> int:
    """Exponential backoff with jitter for a failed run: 5 s, 10 s, 20 s ... at most 5 min."""
    base = min(RETRY_BASE_S * 2**failures, RETRY_MAX_S)
    return int(base * random.uniform(0.75, 1.0) * 1000)


def kind_label(unit: Unit) -> str:
    """The `kind` of metrics and log lines: customer, catalog, events, or resolve."""
    return "resolve" if unit.kind in (UnitKind.SUBSCRIPTION, UnitKind.CHECKOUT, UnitKind.CHARGE) else unit.kind.value


async def run_unit(deps: Services, wire: str, job_id: str) -> str:
    """The body of the `sync_unit` job. Returns what happened, for arq's log line."""
    unit = Unit.decode(wire)
    run = await deps.coordinator.begin(unit, job_id)
    kind = kind_label(unit)
    if run is None:
        SYNCS.labels(kind, "busy").inc()
        log.info("sync.busy", unit=unit, job_id=job_id)
        return "busy"
    began_at = time.time()
    with structlog.contextvars.bound_contextvars(customer_id=unit.wire, job_id=job_id), tracing.sync_span(run):
        heartbeat = asyncio.create_task(_heartbeat(deps, run))
        outcome: Outcome = "failed"
        settled: str | None = None
        try:
            if run.took_over:
                log.warning("sync.took_over", hint="the previous run's lease expired")
            settled = await _dispatch(deps, run)
            outcome = "ok"
        except asyncio.CancelledError:
            # Shutdown or arq's timeout: hand the unit on rather than hold it until the lease ends.
            await asyncio.shield(deps.coordinator.finish(run, outcome="failed", handled_events=0, retry_ms=0))
            raise
        except store.FencedOutError:
            # A newer run holds the customer; it sees everything this one would have written.
            SYNCS.labels(kind, "fenced").inc()
            log.warning("sync.fenced_out")
            outcome = "ok"
        except Exception as exc:
            outcome = "fatal" if is_fatal(exc) else "failed"
            await _failed(deps, run, exc, fatal=outcome == "fatal")
        finally:
            heartbeat.cancel()
        held_until = time.time()  # the unit is released inside `finish`, after this instant
        result = await deps.coordinator.finish(
            run, outcome=outcome, handled_events=len(run.events), retry_ms=retry_delay_ms(run.failures)
        )
        if result == "lost":
            log.warning("sync.lost_unit", hint="another run took over; its result stands")
        elif result == "parked":
            PARKED.labels(kind).inc()
            log.error("sync.parked", failures=run.failures + 1,
                      hint="not retried again; `entitled events --failed` lists it, `entitled replay` runs it")
        with contextlib.suppress(Exception):
            # Only a waiting `POST /v1/sync` listens; a lost announcement costs it a 202, no more.
            await deps.coordinator.announce(run, ok=outcome == "ok", customer_id=settled)
        # One line per run, with the interval it held the unit (tests check runs never overlap).
        log.info("sync.run", kind=kind, ok=outcome == "ok", next=result, events=len(run.events),
                 began_at=round(began_at, 4), ended_at=round(held_until, 4))
        return f"{kind}:{'ok' if outcome == 'ok' else 'failed'}:{result}"


async def _failed(deps: Services, run: Run, exc: Exception, *, fatal: bool) -> None:
    SYNCS.labels(kind_label(run.unit), "failed").inc()
    log.exception("sync.failed", error=type(exc).__name__, failures=run.failures + 1, retryable=not fatal)
    customer = run.unit.id if run.unit.kind is UnitKind.CUSTOMER else None
    with contextlib.suppress(Exception):
        await store.record_events(deps.pool, customer, run.events, outcome="failed",
                                  error=f"{type(exc).__name__}: {exc}"[:500])


async def _heartbeat(deps: Services, run: Run) -> None:
    interval = deps.coordinator.lease_ms / 3000
    while True:
        await asyncio.sleep(interval)
        if not await deps.coordinator.heartbeat(run):
            log.warning("sync.lease_lost")
            return


async def _dispatch(deps: Services, run: Run) -> str | None:
    """Run the unit; return the customer whose access the run settled (or handed over to)."""
    kind = run.unit.kind
    if kind is UnitKind.CUSTOMER:
        await sync_customer(deps, run)
        return run.unit.id
    elif kind is UnitKind.CATALOG:
        await reconcile.refresh_catalog(deps)
        SYNCS.labels(kind.value, "ok").inc()
    elif kind is UnitKind.EVENTS:
        await reconcile.poll_events(deps)
        SYNCS.labels(kind.value, "ok").inc()
    else:
        return await _resolve(deps, run)
    return None


async def _resolve(deps: Services, run: Run) -> str | None:
    """A payload named a subscription or a Checkout Session but no customer: find the customer
    and hand the events over to it (returned; None when there is none)."""
    unit = run.unit
    reason = run.reason
    if unit.kind is UnitKind.SUBSCRIPTION:
        obj = await deps.reader.subscription(unit.id)
        customer = ref_id(obj.get("customer")) if obj else None
    else:
        customer, purchase = await payments.resolve(deps.reader, unit)
        # docs/contract.md §5.1: the customer's run reads its purchases (a success page's sync)
        reason = "purchase" if purchase else reason
    if customer is None:
        log.info("sync.unresolved", unit=unit.wire)
        await store.record_events(deps.pool, None, run.events, outcome="unresolved")
        SYNCS.labels("resolve", "unresolved").inc()
        return None
    target = Unit.customer(customer)
    for event in run.events:
        await deps.coordinator.accept(target, event=event, reason=event.type)
    if not run.events or reason == "purchase":
        await deps.coordinator.accept(target, reason=reason)
    SYNCS.labels("resolve", "ok").inc()
    return customer


def checkout_user_plan(run: Run, prior: Known) -> tuple[str | None, bool]:
    """Where this sync takes the Checkout Session's user from: `(user, False)` without a
    request, or `(None, True)`: read the customer's sessions.

    A session's `client_reference_id` is set when it is created and never changes (Stripe's
    session update takes no such parameter: https://docs.stripe.com/api/checkout/sessions/update),
    so the value a signed snapshot event carries is the one the API would give, and the one we
    stored stays right. The sessions are read only when a checkout event came without it (a
    thin event), or an operator asked for a full resync (docs/contract.md §8: one request per sync).
    """
    checkout = [e for e in run.events if e.type.startswith("checkout.session.")]
    hinted = [e.client_reference_id or "" for e in checkout]
    # A caller waiting on the success page (`POST /v1/sync`, before any webhook) and a customer
    # whose user is still unknown read the sessions too: the user may be there already. Not
    # when the burst brought a completed session naming the user: that is the value a read
    # gives (a first purchase costs one request).
    named = bool(hinted) and bool(hinted[-1].strip())
    if run.reason in ("resync", "api.sync") or (prior.user_id is None and not named) or any(
        e.client_reference_id is None for e in checkout
    ):
        return None, True
    if hinted and hinted[-1].strip():
        return hinted[-1].strip(), False
    return (prior.user_id if prior.user_id_source == "checkout_session" else None), False


async def sync_customer(deps: Services, run: Run) -> None:
    """Load what Stripe and we know, decide with the pure policy (`shared.access`), write."""
    started = time.perf_counter()
    cid = run.unit.id
    fence = await store.bump_fence(deps.pool, cid)
    known = await store.load_known(deps.pool, cid)
    checkout_user, with_checkout = checkout_user_plan(run, known)
    # Stripe's own entitlements know no guest purchase (no Customer to list them for)
    audit = random.random() < deps.settings.stripe_entitlements_audit and not payments.is_guest(cid)
    if payments.is_guest(cid):
        facts = await payments.read_guest(deps.reader, cid)
    else:
        facts = await payments.read_customer(deps.reader, cid, run, known, with_checkout=with_checkout,
                                             with_entitlements=audit)
        if not with_checkout:
            facts = replace(facts, checkout_user_id=checkout_user)
    now, offset = judged_at(facts, time.time())
    entries = await catalog.entries_of(deps.pool, deps.reader, facts.product_ids)
    features_of = {pid: e.features for pid, e in entries.items()}
    limits_of = catalog.limits_of(entries)

    access = decide(facts, features_of, now, deps.policy, known=known, limits_of=limits_of)
    event_types = [e.type for e in run.events]
    if audit and facts.stripe_features != audited(access):
        access = await _compare_with_stripe(deps, facts, known, access, features_of, now,
                                            stripe_said_changed=SUMMARY_EVENT in event_types)

    reason = message_reason([(e.type, e.created) for e in run.events], run.reason)
    written = await store.write(deps.pool, fence=fence, facts=facts, access=access, offset_s=offset,
                                events=run.events, reason=reason)
    if written.message is not None:
        deps.outbox_ready.set()
    due_ms = None if access.next_check is None else int((access.next_check + offset) * 1000)
    await deps.coordinator.set_recheck(cid, due_ms)
    SYNCS.labels("customer", "changed" if written.changed else "unchanged").inc()
    SYNC_SECONDS.observe(time.perf_counter() - started)
    log.info("sync.done", changed=written.changed, version=written.version, features=sorted(access.features),
             user_id=access.user_id, statuses=[s.status for s in facts.subscriptions], events=len(run.events),
             reason=reason, next_check_in_s=None if access.next_check is None else access.next_check - now)


def audited(access: Access) -> frozenset[str]:
    """The features Stripe's own entitlements can know of: those a subscription grants (Stripe's
    Entitlements cover subscriptions only, not one-time purchases: docs/contract.md §5.1)."""
    return frozenset(f for f, g in access.grants.items() if not g.subscription_id.startswith("cs_"))


async def _compare_with_stripe(
    deps: Services,
    facts: CustomerFacts,
    known: Known,
    access: Access,
    features_of: dict[str, frozenset[str]],
    now: int,
    *,
    stripe_said_changed: bool,
) -> Access:
    """Stripe's own entitlements disagree with ours. Ours decide: Stripe keeps features alive on
    a subscription paused at trial end. But a feature attached to or removed from a product
    changes Stripe's entitlements (and fires a summary event) without telling us about the
    product: when Stripe just said so, or our catalog entries are old, re-read the products we
    grant from, once, and decide again."""
    # Products of subscriptions that grant now, whether or not we know features for them yet.
    granting = set(access.granting_products)
    candidates = granting if stripe_said_changed else await _stale_products(deps, granting)
    changed = await catalog.refresh(deps.pool, deps.reader, candidates) if candidates else set()
    if changed:
        entries = await catalog.entries_of(deps.pool, deps.reader, features_of.keys())
        features_of = {pid: e.features for pid, e in entries.items()}
        access = decide(facts, features_of, now, deps.policy, known=known, limits_of=catalog.limits_of(entries))
        # The product's other subscribers follow now, as after a catalog event: their own
        # summary events may be lost, and nothing else would tell them.
        for cid in await catalog.customers_with_products(deps.pool, changed):
            if cid != facts.customer_id:
                await deps.coordinator.accept(Unit.customer(cid), reason="catalog")
    more = facts.stripe_features - audited(access)
    less = audited(access) - facts.stripe_features
    if more:
        MISMATCHES.labels("stripe_grants_more").inc()
    if less:
        MISMATCHES.labels("stripe_grants_less").inc()
    if more or less:
        log.info(
            "sync.stripe_entitlements_differ",
            stripe_only=sorted(more),
            ours_only=sorted(less),
            statuses={s.id: s.status for s in facts.subscriptions},
        )
    return access


async def _stale_products(deps: Services, product_ids: set[str]) -> set[str]:
    if not product_ids:
        return set()
    rows = await deps.pool.fetch(
        "SELECT product_id FROM catalog_products WHERE product_id = ANY($1::text[])"
        " AND refreshed_at < now() - make_interval(secs => $2)",
        sorted(product_ids),
        CATALOG_RECHECK_AGE_S,
    )
    return {r["product_id"] for r in rows}
