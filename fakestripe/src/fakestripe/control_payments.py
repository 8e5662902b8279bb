"""`/_fake/*` routes for one-time payments: what a buyer, a bank or a card network does.

- `POST /_fake/payment_links/{id}/checkout` `{"client_reference_id"?}`: a buyer opens the link
  (the session Stripe's hosted link page would create);
- `POST /_fake/checkout/sessions/{id}/settle` `{"succeeded"?: bool}`: a bank debit settles
  (default: the test payment method's own outcome);
- `POST /_fake/charges/{id}/dispute` `{"reason"?, "inquiry"?: bool}`: the card holder disputes
  a charge (any charge, also a renewal's; Stripe's own way is the `pm_card_createDispute` card);
- `POST /_fake/disputes/{id}/resolve` `{"outcome": "won" | "lost"}`: what submitting
  `winning_evidence` / `losing_evidence` does on Stripe (https://docs.stripe.com/testing#disputes).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import checkout_payment, errors, payments, shapes_payments
from .api import fake_of, json_response
from .control import body_of

routes = web.RouteTableDef()
JSON = dict[str, Any]


def _options(body: JSON, allowed: dict[str, type | tuple[type, ...]]) -> None:
    unknown = set(body) - set(allowed)
    if unknown:
        raise errors.invalid_request(f"unknown option(s): {', '.join(sorted(unknown))}")
    for key, kind in allowed.items():
        if body.get(key) is not None and not isinstance(body[key], kind):
            raise errors.invalid_request(f"{key} has the wrong type")


def _find(table: dict[str, Any], object_id: str, label: str) -> Any:
    found = table.get(object_id)
    if found is None:
        raise errors.resource_missing(label, object_id)
    return found


@routes.post("/_fake/payment_links/{id}/checkout")
async def open_payment_link(request: web.Request) -> web.Response:
    body = await body_of(request)
    _options(body, {"client_reference_id": str})
    core = fake_of(request).core
    link = _find(core.store.payments.payment_links, request.match_info["id"], "payment_link")
    with core.operation():
        session = checkout_payment.open_link(core, link, body.get("client_reference_id"))
    return json_response(checkout_payment.session_json(core, session))


@routes.post("/_fake/checkout/sessions/{id}/settle")
async def settle_session(request: web.Request) -> web.Response:
    body = await body_of(request)
    _options(body, {"succeeded": bool})
    core = fake_of(request).core
    session = _find(core.store.sessions, request.match_info["id"], "checkout.session")
    with core.operation():
        checkout_payment.settle(core, session, body.get("succeeded"))
    return json_response(checkout_payment.session_json(core, session))


@routes.post("/_fake/charges/{id}/dispute")
async def dispute_charge(request: web.Request) -> web.Response:
    body = await body_of(request)
    _options(body, {"reason": str, "inquiry": bool})
    core = fake_of(request).core
    charge = _find(core.store.payments.charges, request.match_info["id"], "charge")
    with core.operation():
        dp = payments.open_dispute(core, charge, reason=body.get("reason") or "fraudulent",
                                   inquiry=bool(body.get("inquiry")))  # fmt: skip
    return json_response(shapes_payments.dispute(core.store, dp))


@routes.post("/_fake/disputes/{id}/resolve")
async def resolve_dispute(request: web.Request) -> web.Response:
    body = await body_of(request)
    _options(body, {"outcome": str})
    core = fake_of(request).core
    dp = _find(core.store.payments.disputes, request.match_info["id"], "dispute")
    with core.operation():
        payments.resolve_dispute(core, dp, str(body.get("outcome")))
    return json_response(shapes_payments.dispute(core.store, dp))
