"""`/v1/charges`, `/v1/payment_intents`, `/v1/refunds`, `/v1/disputes`, `/v1/payment_links` and
`/v1/checkout/sessions/{id}/line_items` (one-time payments: `payments.py`, `checkout_payment.py`).

Parameters are the ones Stripe's API reference lists for each endpoint
(https://docs.stripe.com/api/charges/list, .../disputes/list, .../refunds/create,
.../payment_links/payment_links/create, .../checkout/sessions/line_items); unknown ones are
refused as everywhere in the fake.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from aiohttp import web

from . import checkout_payment, errors, payments, shapes_payments
from .api import fake_of, newest_first, paginate, params, respond
from .forms import Arr, Bool, Endpoint, Enum, Int, Metadata, Obj, Range, Str, in_range
from .payment_objects import Charge, Dispute, OnCharge, PaymentIntent, PaymentLink, Refund

routes = web.RouteTableDef()
JSON = dict[str, Any]

LIST_CHARGES = Endpoint(
    {"customer": Str(), "payment_intent": Str(), "transfer_group": Str(), "created": Range()},
    list_params=True,
)
LIST_DISPUTES = Endpoint({"charge": Str(), "payment_intent": Str(), "created": Range()}, list_params=True)
LIST_REFUNDS = Endpoint({"charge": Str(), "payment_intent": Str(), "created": Range()}, list_params=True)
CREATE_REFUND = Endpoint(
    {
        "charge": Str(),
        "payment_intent": Str(),
        "amount": Int(min=1),
        "reason": Enum(("duplicate", "fraudulent", "requested_by_customer")),
        "metadata": Metadata(),
    }
)
UPDATE_DISPUTE = Endpoint(
    {
        "evidence": Obj({key: Str(max_length=150000) for key in shapes_payments.EVIDENCE_KEYS}),
        "submit": Bool(),
        "metadata": Metadata(),
    }
)
CREATE_LINK = Endpoint(
    {
        "line_items": Arr(Obj({"price": Str(), "quantity": Int(min=1)}), max_items=20),
        "customer_creation": Enum(("always", "if_required")),
        "metadata": Metadata(),
        "after_completion": Obj(
            {
                "type": Enum(("hosted_confirmation", "redirect")),
                "redirect": Obj({"url": Str()}, frozenset({"url"})),
                "hosted_confirmation": Obj({"custom_message": Str()}),
            },
            frozenset({"type"}),
        ),
    },
    required=frozenset({"line_items"}),
)


def _order(obj: Any) -> tuple[int, int]:
    return (obj.created, obj.seq)


def _get(table: dict[str, Any], object_id: str, label: str) -> Any:
    found = table.get(object_id)
    if found is None:
        raise errors.resource_missing(label, object_id)
    return found


def _metadata(p: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in p.get("metadata", {}).items() if v is not None}


# Charges and PaymentIntents ----------------------------------------------------------------


@routes.get("/v1/charges")
async def list_charges(request: web.Request) -> web.Response:
    p = params(request, LIST_CHARGES)
    core = fake_of(request).core

    def keep(ch: Charge) -> bool:
        return (
            ("customer" not in p or ch.customer == p["customer"])
            and ("payment_intent" not in p or ch.payment_intent == p["payment_intent"])
            and "transfer_group" not in p
            and in_range(ch.created, p.get("created"))
        )

    found = newest_first([c for c in core.store.payments.charges.values() if keep(c)], _order)
    page = paginate(found, lambda c: c.id, lambda c: shapes_payments.charge(core.store, c), p,
                    "/v1/charges", "charge")  # fmt: skip
    return respond(request, page, p)


@routes.get("/v1/charges/{id}")
async def retrieve_charge(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    core = fake_of(request).core
    ch: Charge = _get(core.store.payments.charges, request.match_info["id"], "charge")
    return respond(request, shapes_payments.charge(core.store, ch), p)


@routes.get("/v1/payment_intents/{id}")
async def retrieve_payment_intent(request: web.Request) -> web.Response:
    p = params(request, Endpoint({"client_secret": Str()}))
    core = fake_of(request).core
    pi: PaymentIntent = _get(core.store.payments.payment_intents, request.match_info["id"], "payment_intent")
    return respond(request, shapes_payments.payment_intent(pi), p)


# Refunds -----------------------------------------------------------------------------------


@routes.post("/v1/refunds")
async def create_refund(request: web.Request) -> web.Response:
    p = params(request, CREATE_REFUND)
    core = fake_of(request).core
    found = core.store.payments
    if "charge" in p:
        ch: Charge = _get(found.charges, p["charge"], "charge")
    elif "payment_intent" in p:
        pi: PaymentIntent = _get(found.payment_intents, p["payment_intent"], "payment_intent")
        ch = _get(found.charges, pi.latest_charge or "", "charge")
    else:
        raise errors.invalid_request("One of `charge` or `payment_intent` is required.")
    re = payments.refund(core, ch, p.get("amount"), p.get("reason"), _metadata(p))
    return respond(request, shapes_payments.refund(core.store, re), p)


OC = TypeVar("OC", bound=OnCharge)


def _on_charge(objects: Iterable[OC], p: dict[str, Any]) -> list[OC]:
    """The refunds or disputes a list's `charge`, `payment_intent` and `created` filters keep."""
    return [
        o for o in objects
        if ("charge" not in p or o.charge == p["charge"])
        and ("payment_intent" not in p or o.payment_intent == p["payment_intent"])
        and in_range(o.created, p.get("created"))
    ]  # fmt: skip


@routes.get("/v1/refunds")
async def list_refunds(request: web.Request) -> web.Response:
    p = params(request, LIST_REFUNDS)
    core = fake_of(request).core
    found = _on_charge(core.store.payments.refunds.values(), p)
    page = paginate(newest_first(found, _order), lambda r: r.id,
                    lambda r: shapes_payments.refund(core.store, r), p, "/v1/refunds", "refund")  # fmt: skip
    return respond(request, page, p)


@routes.get("/v1/refunds/{id}")
async def retrieve_refund(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    core = fake_of(request).core
    re: Refund = _get(core.store.payments.refunds, request.match_info["id"], "refund")
    return respond(request, shapes_payments.refund(core.store, re), p)


# Disputes ----------------------------------------------------------------------------------


@routes.get("/v1/disputes")
async def list_disputes(request: web.Request) -> web.Response:
    p = params(request, LIST_DISPUTES)
    core = fake_of(request).core
    found = _on_charge(core.store.payments.disputes.values(), p)
    page = paginate(newest_first(found, _order), lambda d: d.id,
                    lambda d: shapes_payments.dispute(core.store, d), p, "/v1/disputes", "dispute")  # fmt: skip
    return respond(request, page, p)


def _dispute(request: web.Request) -> Dispute:
    found: Dispute = _get(fake_of(request).core.store.payments.disputes, request.match_info["id"], "dispute")
    return found


@routes.get("/v1/disputes/{id}")
async def retrieve_dispute(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    return respond(request, shapes_payments.dispute(fake_of(request).core.store, _dispute(request)), p)


@routes.post("/v1/disputes/{id}")
async def update_dispute(request: web.Request) -> web.Response:
    p = params(request, UPDATE_DISPUTE)
    core = fake_of(request).core
    text = p.get("evidence", {}).get("uncategorized_text")
    dp = payments.update_dispute(core, _dispute(request), text, p.get("submit", True), _metadata(p))
    return respond(request, shapes_payments.dispute(core.store, dp), p)


@routes.post("/v1/disputes/{id}/close")
async def close_dispute(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    core = fake_of(request).core
    dp = payments.close_dispute(core, _dispute(request))
    return respond(request, shapes_payments.dispute(core.store, dp), p)


# Checkout line items and Payment Links -----------------------------------------------------


@routes.get("/v1/checkout/sessions/{id}/line_items")
async def session_line_items(request: web.Request) -> web.Response:
    p = params(request, Endpoint(list_params=True))
    core = fake_of(request).core
    session_id = request.match_info["id"]
    session = _get(core.store.sessions, session_id, "checkout.session")
    items = shapes_payments.session_line_items(core.store, session)
    page = paginate(items, lambda i: str(i["id"]), lambda i: i, p,
                    f"/v1/checkout/sessions/{session_id}/line_items", "item")  # fmt: skip
    return respond(request, page, p)


@routes.post("/v1/payment_links")
async def create_payment_link(request: web.Request) -> web.Response:
    p = params(request, CREATE_LINK)
    link = checkout_payment.create_link(fake_of(request).core, p)
    return respond(request, shapes_payments.payment_link(link), p)


@routes.get("/v1/payment_links/{id}")
async def retrieve_payment_link(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    link: PaymentLink = _get(fake_of(request).core.store.payments.payment_links, request.match_info["id"], "payment_link")
    return respond(request, shapes_payments.payment_link(link), p)
