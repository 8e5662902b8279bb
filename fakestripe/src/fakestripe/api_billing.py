"""`/v1/subscriptions`, `/v1/invoices` and `/v1/checkout/sessions`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import billing, checkout, errors, shapes, shapes_billing
from .api import fake_of, newest_first, paginate, params, respond
from .core import Core
from .forms import (
    Arr,
    Bool,
    Endpoint,
    Enum,
    Int,
    Metadata,
    Obj,
    Range,
    Str,
    Timestamp,
    created_between,
    in_range,
)
from .invoicing import attach_payment_method, materialize_payment_method, pay_manually
from .store import CheckoutSession, Invoice, Subscription

routes = web.RouteTableDef()

_END_BEHAVIOR = Obj(
    {"missing_payment_method": Enum(("cancel", "create_invoice", "pause"))},
    required=frozenset({"missing_payment_method"}),
)
_TRIAL_SETTINGS = Obj({"end_behavior": _END_BEHAVIOR}, required=frozenset({"end_behavior"}))
_PRORATION = Enum(("create_prorations", "none", "always_invoice"))
_PAYMENT_BEHAVIOR = Enum(
    ("allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete")
)
_STATUSES = (
    "active",
    "all",
    "canceled",
    "ended",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
)

CREATE_SUBSCRIPTION = Endpoint(
    {
        "customer": Str(),
        "items": Arr(
            Obj(
                # Quantity 0 is accepted (docs/fakestripe.md, assumptions): the seats of
                # https://docs.stripe.com/billing/subscriptions/quantities may go down to none.
                {"price": Str(), "quantity": Int(min=0), "metadata": Metadata()},
                frozenset({"price"}),
            ),
            max_items=20,
        ),
        "trial_period_days": Int(min=0, max=730),
        "trial_end": Timestamp(allow_now=True),
        "trial_settings": _TRIAL_SETTINGS,
        "payment_behavior": _PAYMENT_BEHAVIOR,
        "default_payment_method": Str(),
        "cancel_at_period_end": Bool(),
        "cancel_at": Timestamp(),
        "metadata": Metadata(),
        "description": Str(max_length=500),
        "collection_method": Enum(("charge_automatically", "send_invoice")),
        "days_until_due": Int(min=0, max=730),
        "billing_mode": Obj({"type": Enum(("classic", "flexible"))}, frozenset({"type"})),
        "proration_behavior": _PRORATION,
        "off_session": Bool(),
    },
    required=frozenset({"customer", "items"}),
)
UPDATE_SUBSCRIPTION = Endpoint(
    {
        "cancel_at_period_end": Bool(),
        "cancel_at": Timestamp(allow_unset=True),
        "pause_collection": Obj(
            {
                "behavior": Enum(("keep_as_draft", "mark_uncollectible", "void")),
                "resumes_at": Timestamp(),
            },
            allow_unset=True,
        ),
        "items": Arr(
            Obj(
                {
                    "id": Str(),
                    "price": Str(),
                    "quantity": Int(min=0),  # as on create (docs/fakestripe.md, assumptions)
                    "deleted": Bool(),
                    "metadata": Metadata(),
                }
            ),
            max_items=20,
        ),
        "proration_behavior": _PRORATION,
        "metadata": Metadata(),
        "default_payment_method": Str(allow_unset=True),
        "trial_end": Timestamp(allow_now=True),
        "trial_settings": _TRIAL_SETTINGS,
        "description": Str(max_length=500, allow_unset=True),
        "payment_behavior": _PAYMENT_BEHAVIOR,
        "off_session": Bool(),
        "cancellation_details": Obj(
            {
                "comment": Str(allow_unset=True),
                "feedback": Enum(
                    (
                        "customer_service",
                        "low_quality",
                        "missing_features",
                        "other",
                        "switched_service",
                        "too_complex",
                        "too_expensive",
                        "unused",
                    ),
                    allow_unset=True,
                ),
            }
        ),
    }
)
CANCEL_SUBSCRIPTION = Endpoint(
    {
        "invoice_now": Bool(),
        "prorate": Bool(),
        "cancellation_details": Obj({"comment": Str(), "feedback": Str()}),
    }
)
LIST_SUBSCRIPTIONS = Endpoint(
    {
        "customer": Str(),
        "status": Enum(_STATUSES),
        "price": Str(),
        "test_clock": Str(),
        "created": Range(),
        "collection_method": Enum(("charge_automatically", "send_invoice")),
    },
    list_params=True,
)


def _order(obj: Any) -> tuple[int, int]:
    return (obj.created, obj.seq)


def _metadata(p: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    billing.apply_metadata(out, p.get("metadata", {}))
    return out


def _subscription(request: web.Request) -> Subscription:
    return billing.get_subscription(fake_of(request).core, request.match_info["id"])


def _sub_json(request: web.Request, sub: Subscription) -> dict[str, Any]:
    return shapes_billing.subscription(fake_of(request).core.store, sub)


@routes.post("/v1/subscriptions")
async def create_subscription(request: web.Request) -> web.Response:
    p = params(request, CREATE_SUBSCRIPTION)
    core = fake_of(request).core
    customer = billing.get_customer(core, p["customer"])
    now = core.now(customer.test_clock)
    trial_end = billing.trial_end_from(p, now)
    behavior = p.get("payment_behavior", "allow_incomplete")
    default_pm = None
    if "default_payment_method" in p:
        pm = materialize_payment_method(
            core, p["default_payment_method"], customer.test_clock, "default_payment_method"
        )
        attach_payment_method(core, pm, customer)
        default_pm = pm.id
    if behavior == "error_if_incomplete" and trial_end is None:
        ref = default_pm or customer.default_payment_method
        pm_obj = core.store.payment_methods.get(ref) if ref else None
        if pm_obj is None:
            raise errors.invalid_request(
                "This customer has no attached payment source or default payment method. "
                "Please consider adding a default payment method.",
                code="resource_missing",
            )
        if pm_obj.fails:
            raise errors.card_declined()
    spec = billing.NewSubscription(
        items=[(item["price"], item.get("quantity", 1)) for item in p["items"]],
        trial_end=trial_end,
        trial_end_behavior=p.get("trial_settings", {})
        .get("end_behavior", {})
        .get("missing_payment_method", "create_invoice"),
        default_payment_method=default_pm,
        metadata=_metadata(p),
        description=p.get("description"),
        cancel_at_period_end=p.get("cancel_at_period_end", False),
        cancel_at=p.get("cancel_at"),
        flow="incomplete" if behavior == "default_incomplete" else "charge",
        billing_mode=p.get("billing_mode", {}).get("type", "flexible"),
        collection_method=p.get("collection_method", "charge_automatically"),
        days_until_due=p.get("days_until_due"),
    )
    sub = billing.create_subscription(core, customer, spec)
    return respond(request, _sub_json(request, sub), p)


def _require_customer(core: Core, p: dict[str, Any]) -> None:
    if "customer" in p and p["customer"] not in core.store.customers:
        # A customer that never existed, or went with its deleted test clock (assumption:
        # docs/fakestripe.md); a deleted customer's stub still lists its canceled subscriptions.
        raise errors.resource_missing("customer", p["customer"], param="customer")


@routes.get("/v1/subscriptions")
async def list_subscriptions(request: web.Request) -> web.Response:
    p = params(request, LIST_SUBSCRIPTIONS)
    core = fake_of(request).core
    status = p.get("status")
    _require_customer(core, p)

    def keep(sub: Subscription) -> bool:
        if "customer" in p and sub.customer != p["customer"]:
            return False
        # Stripe leaves out test-clock subscriptions unless `test_clock` or `customer` is given.
        if "test_clock" in p:
            if sub.test_clock != p["test_clock"]:
                return False
        elif "customer" not in p and sub.test_clock is not None:
            return False
        ended = sub.status in ("canceled", "incomplete_expired")
        if status is None and ended:
            return False
        if status == "ended" and not ended:
            return False
        if status not in (None, "all", "ended") and sub.status != status:
            return False
        if "price" in p and all(item.price != p["price"] for item in sub.items):
            return False
        return in_range(sub.created, p.get("created"))

    return respond(request, _subscriptions_page(core, p, keep), p)


def _subscriptions_page(core: Core, p: dict[str, Any], keep: Callable[[Subscription], bool]) -> dict[str, Any]:
    def render(sub: Subscription) -> dict[str, Any]:
        return shapes_billing.subscription(core.store, sub)

    if "customer" in p:
        # A customer's few subscriptions (its index), sorted as the list orders them.
        found = newest_first([s for s in core.store.subscriptions_of(p["customer"]) if keep(s)], _order)
        return paginate(found, lambda s: s.id, render, p, "/v1/subscriptions", "subscription")
    # A bisect of the table's list order, then the page (dated.py), not a sort of every one.
    data, has_more = core.store.subscriptions.page(p, keep, render, "subscription")
    return shapes.list_object(data, "/v1/subscriptions", has_more)


@routes.get("/v1/subscriptions/{id}")
async def retrieve_subscription(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    return respond(request, _sub_json(request, _subscription(request)), p)


@routes.post("/v1/subscriptions/{id}")
async def update_subscription(request: web.Request) -> web.Response:
    p = params(request, UPDATE_SUBSCRIPTION)
    sub = _subscription(request)
    billing.update_subscription(fake_of(request).core, sub, p)
    return respond(request, _sub_json(request, sub), p)


@routes.delete("/v1/subscriptions/{id}")
async def cancel_subscription(request: web.Request) -> web.Response:
    p = params(request, CANCEL_SUBSCRIPTION)
    sub = _subscription(request)
    billing.cancel_now(fake_of(request).core, sub)
    return respond(request, _sub_json(request, sub), p)


@routes.post("/v1/subscriptions/{id}/resume")
async def resume_subscription(request: web.Request) -> web.Response:
    p = params(
        request,
        Endpoint(
            {
                "billing_cycle_anchor": Enum(("now", "unchanged")),
                "proration_behavior": _PRORATION,
                "payment_behavior": Enum(("resume_on_payment_attempt",)),
            }
        ),
    )
    sub = _subscription(request)
    billing.resume(fake_of(request).core, sub)
    return respond(request, _sub_json(request, sub), p)


# Subscription items -------------------------------------------------------------------------

LIST_SUBSCRIPTION_ITEMS = Endpoint({"subscription": Str()}, required=frozenset({"subscription"}), list_params=True)


@routes.get("/v1/subscription_items")
async def list_subscription_items(request: web.Request) -> web.Response:
    """A subscription's items, in the order the subscription lists them (its embedded `items`
    holds only the first page: https://docs.stripe.com/api/subscription_items/list)."""
    p = params(request, LIST_SUBSCRIPTION_ITEMS)
    core = fake_of(request).core
    sub = core.store.subscriptions.get(p["subscription"])
    if sub is None:
        raise errors.resource_missing("subscription", p["subscription"], param="subscription")
    page = paginate(
        sub.items,
        lambda i: i.id,
        lambda i: shapes_billing.subscription_item(core.store, sub, i),
        p,
        "/v1/subscription_items",
        "subscription_item",
    )
    return respond(request, page, p)


@routes.get("/v1/subscription_items/{id}")
async def retrieve_subscription_item(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    core = fake_of(request).core
    item_id = request.match_info["id"]
    for sub in core.store.subscriptions.values():
        for item in sub.items:
            if item.id == item_id:
                return respond(request, shapes_billing.subscription_item(core.store, sub, item), p)
    raise errors.resource_missing("subscription_item", item_id)


# Invoices ----------------------------------------------------------------------------------

LIST_INVOICES = Endpoint(
    {
        "customer": Str(),
        "subscription": Str(),
        "status": Enum(("draft", "open", "paid", "uncollectible", "void")),
        "created": Range(),
    },
    list_params=True,
)


def _invoice(request: web.Request) -> Invoice:
    invoice_id = request.match_info["id"]
    inv = fake_of(request).core.store.invoices.get(invoice_id)
    if inv is None:
        raise errors.resource_missing("invoice", invoice_id)
    return inv


@routes.get("/v1/invoices/{id}")
async def retrieve_invoice(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    return respond(
        request, shapes_billing.invoice(fake_of(request).core.store, _invoice(request)), p
    )


@routes.get("/v1/invoices")
async def list_invoices(request: web.Request) -> web.Response:
    p = params(request, LIST_INVOICES)
    core = fake_of(request).core
    found = [
        inv
        for inv in core.store.invoices.values()
        if ("customer" not in p or inv.customer == p["customer"])
        and ("subscription" not in p or inv.subscription == p["subscription"])
        and ("status" not in p or inv.status == p["status"])
        and in_range(inv.created, p.get("created"))
    ]
    page = paginate(
        newest_first(found, _order),
        lambda i: i.id,
        lambda i: shapes_billing.invoice(core.store, i),
        p,
        "/v1/invoices",
        "invoice",
    )
    return respond(request, page, p)


@routes.post("/v1/invoices/{id}/pay")
async def pay_invoice(request: web.Request) -> web.Response:
    p = params(
        request, Endpoint({"payment_method": Str(), "off_session": Bool(), "paid_out_of_band": Bool()})
    )
    core = fake_of(request).core
    inv = _invoice(request)
    pm = None
    if "payment_method" in p:
        pm = materialize_payment_method(core, p["payment_method"], inv.test_clock, "payment_method")
        attach_payment_method(core, pm, billing.get_customer(core, inv.customer))
    pay_manually(core, inv, pm, out_of_band=p.get("paid_out_of_band", False))
    return respond(request, shapes_billing.invoice(core.store, inv), p)


# Checkout Sessions -------------------------------------------------------------------------

CREATE_SESSION = Endpoint(
    {
        "mode": Enum(("payment", "setup", "subscription")),
        "line_items": Arr(Obj({"price": Str(), "quantity": Int(min=1)})),
        "success_url": Str(),
        "cancel_url": Str(),
        "client_reference_id": Str(max_length=200),
        "customer": Str(),
        "customer_email": Str(max_length=512),
        "metadata": Metadata(),
        "subscription_data": Obj(
            {
                "trial_period_days": Int(min=1, max=730),
                "trial_end": Timestamp(),
                "trial_settings": _TRIAL_SETTINGS,
                "metadata": Metadata(),
                "description": Str(max_length=500),
            }
        ),
        "payment_method_collection": Enum(("always", "if_required")),
        # mode=payment only (checkout_payment.py)
        "customer_creation": Enum(("always", "if_required")),
        # Not a Stripe parameter: Stripe creates a Payment Link's sessions itself. The fake lets
        # a test create one "as if from" a Payment Link, so that `payment_link` is filled.
        "payment_link": Str(),
        "allow_promotion_codes": Bool(),
        "billing_address_collection": Enum(("auto", "required")),
        "payment_method_types": Arr(Enum(("card",))),
        "locale": Str(),
        "ui_mode": Enum(("hosted",)),
    },
    required=frozenset({"mode"}),
)
LIST_SESSIONS = Endpoint(
    {
        "customer": Str(),
        "subscription": Str(),
        "status": Enum(("open", "complete", "expired")),
        "payment_link": Str(),
        "payment_intent": Str(),
        "created": Range(),
        "customer_details": Obj({"email": Str()}, frozenset({"email"})),
    },
    list_params=True,
)


@routes.post("/v1/checkout/sessions")
async def create_session(request: web.Request) -> web.Response:
    p = params(request, CREATE_SESSION)
    if p["mode"] in ("subscription", "payment") and "line_items" not in p:
        raise errors.missing_parameter("line_items")
    core = fake_of(request).core
    session = checkout.create_session(core, p)
    return respond(request, checkout.session_json(core, session), p)


@routes.get("/v1/checkout/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    p = params(request, LIST_SESSIONS)
    core = fake_of(request).core
    email = p.get("customer_details", {}).get("email")
    found = [
        s
        for s in created_between(core.store.sessions.values(), p.get("created"))
        if ("customer" not in p or s.customer == p["customer"])
        and ("subscription" not in p or s.subscription == p["subscription"])
        and ("status" not in p or s.status == p["status"])
        and ("payment_link" not in p or s.payment_link == p["payment_link"])
        and ("payment_intent" not in p or s.payment_intent == p["payment_intent"])
        and (email is None or (s.customer_details or {}).get("email") == email)
        and in_range(s.created, p.get("created"))
    ]
    page = paginate(
        newest_first(found, _order),
        lambda s: s.id,
        lambda s: checkout.session_json(core, s),
        p,
        "/v1/checkout/sessions",
        "checkout.session",
    )
    return respond(request, page, p)


def _session_of(request: web.Request) -> CheckoutSession:
    session_id = request.match_info["id"]
    session = fake_of(request).core.store.sessions.get(session_id)
    if session is None:
        raise errors.resource_missing("checkout.session", session_id)
    return session


@routes.get("/v1/checkout/sessions/{id}")
async def retrieve_session(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    return respond(request, checkout.session_json(fake_of(request).core, _session_of(request)), p)


@routes.post("/v1/checkout/sessions/{id}/expire")
async def expire_session(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    core = fake_of(request).core
    session = checkout.expire(core, _session_of(request))
    return respond(request, checkout.session_json(core, session), p)
