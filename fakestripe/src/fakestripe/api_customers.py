"""`/v1/customers`, `/v1/payment_methods` and `/v1/test_helpers/test_clocks`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import billing, errors, shapes
from .api import fake_of, json_response, newest_first, paginate, params, respond
from .clock import DAY_S
from .forms import Endpoint, Int, Metadata, Obj, Range, Str, in_range
from .invoicing import attach_payment_method, materialize_payment_method
from .store import Customer, TestClock

routes = web.RouteTableDef()

_INVOICE_SETTINGS = Obj({"default_payment_method": Str(allow_unset=True)})
_CUSTOMER_FIELDS: dict[str, Any] = {
    "email": Str(max_length=512, allow_unset=True),
    "name": Str(max_length=256, allow_unset=True),
    "description": Str(allow_unset=True),
    "phone": Str(max_length=20, allow_unset=True),
    "metadata": Metadata(),
    "invoice_settings": _INVOICE_SETTINGS,
}
CREATE_CUSTOMER = Endpoint({**_CUSTOMER_FIELDS, "test_clock": Str(), "payment_method": Str()})
UPDATE_CUSTOMER = Endpoint(dict(_CUSTOMER_FIELDS))
RETRIEVE = Endpoint()
LIST_CUSTOMERS = Endpoint(
    {"email": Str(max_length=512), "test_clock": Str(), "created": Range()}, list_params=True
)


@routes.post("/v1/customers")
async def create_customer(request: web.Request) -> web.Response:
    p = params(request, CREATE_CUSTOMER)
    core = fake_of(request).core
    customer = billing.create_customer(core, p)
    return respond(request, shapes.customer(customer), p)


@routes.get("/v1/customers")
async def list_customers(request: web.Request) -> web.Response:
    p = params(request, LIST_CUSTOMERS)
    core = fake_of(request).core
    clock = p.get("test_clock")

    def keep(c: Customer) -> bool:
        # Without `test_clock`, Stripe leaves out customers that live on a test clock.
        return (
            not c.deleted
            and c.test_clock == clock
            and ("email" not in p or c.email == p["email"])
            and in_range(c.created, p.get("created"))
        )

    # A bisect of the table's list order, then the page (dated.py), not a sort of every customer.
    data, has_more = core.store.customers.page(p, keep, shapes.customer, "customer")
    return respond(request, shapes.list_object(data, "/v1/customers", has_more), p)


def _order(obj: Any) -> tuple[int, int]:
    return (obj.created, obj.seq)


def _customer(request: web.Request) -> Customer:
    customer_id = request.match_info["id"]
    customer = fake_of(request).core.store.customers.get(customer_id)
    if customer is None:
        raise errors.resource_missing("customer", customer_id)
    return customer


@routes.get("/v1/customers/{id}")
async def retrieve_customer(request: web.Request) -> web.Response:
    p = params(request, RETRIEVE)
    customer = _customer(request)
    if customer.deleted:
        # Stripe answers 200 with the deleted stub for a customer that was deleted.
        return json_response(shapes.customer(customer))
    return respond(request, shapes.customer(customer), p)


@routes.post("/v1/customers/{id}")
async def update_customer(request: web.Request) -> web.Response:
    p = params(request, UPDATE_CUSTOMER)
    customer = _customer(request)
    if customer.deleted:
        raise errors.resource_missing("customer", customer.id)
    billing.update_customer(fake_of(request).core, customer, p)
    return respond(request, shapes.customer(customer), p)


@routes.delete("/v1/customers/{id}")
async def delete_customer(request: web.Request) -> web.Response:
    params(request, Endpoint())
    customer = _customer(request)
    if customer.deleted:
        raise errors.resource_missing("customer", customer.id)
    billing.delete_customer(fake_of(request).core, customer)
    return json_response(shapes.deleted(customer.id, "customer"))


# Payment methods ----------------------------------------------------------------------------


@routes.get("/v1/payment_methods/{id}")
async def retrieve_payment_method(request: web.Request) -> web.Response:
    p = params(request, RETRIEVE)
    pm_id = request.match_info["id"]
    pm = fake_of(request).core.store.payment_methods.get(pm_id)
    if pm is None:
        raise errors.resource_missing("PaymentMethod", pm_id)
    return respond(request, shapes.payment_method(pm), p)


@routes.post("/v1/payment_methods/{id}/attach")
async def attach(request: web.Request) -> web.Response:
    p = params(request, Endpoint({"customer": Str()}, required=frozenset({"customer"})))
    core = fake_of(request).core
    customer = billing.get_customer(core, p["customer"])
    pm = materialize_payment_method(core, request.match_info["id"], customer.test_clock, "id")
    attach_payment_method(core, pm, customer)
    return respond(request, shapes.payment_method(pm), p)


# Test clocks --------------------------------------------------------------------------------

CREATE_CLOCK = Endpoint(
    {"frozen_time": Int(min=0), "name": Str(max_length=300)}, required=frozenset({"frozen_time"})
)
ADVANCE_CLOCK = Endpoint({"frozen_time": Int(min=0)}, required=frozenset({"frozen_time"}))


def _clock(request: web.Request) -> TestClock:
    clock_id = request.match_info["id"]
    clock = fake_of(request).core.store.clocks.get(clock_id)
    if clock is None:
        raise errors.resource_missing("test_helpers.test_clock", clock_id)
    return clock


@routes.post("/v1/test_helpers/test_clocks")
async def create_clock(request: web.Request) -> web.Response:
    p = params(request, CREATE_CLOCK)
    core = fake_of(request).core
    created = core.clock.now()
    clock = TestClock(
        id=core.store.new_id("test_clock"),
        created=created,
        seq=core.store.next_seq(),
        frozen_time=p["frozen_time"],
        name=p.get("name"),
        deletes_after=created + 30 * DAY_S,
        now=p["frozen_time"],
    )
    core.store.clocks[clock.id] = clock
    core.emit("test_helpers.test_clock.created", shapes.test_clock(clock), None)
    return respond(request, shapes.test_clock(clock), p)


@routes.get("/v1/test_helpers/test_clocks")
async def list_clocks(request: web.Request) -> web.Response:
    p = params(request, Endpoint(list_params=True))
    clocks = newest_first(list(fake_of(request).core.store.clocks.values()), _order)
    page = paginate(
        clocks,
        lambda c: c.id,
        shapes.test_clock,
        p,
        "/v1/test_helpers/test_clocks",
        "test_helpers.test_clock",
    )
    return respond(request, page, p)


@routes.get("/v1/test_helpers/test_clocks/{id}")
async def retrieve_clock(request: web.Request) -> web.Response:
    p = params(request, RETRIEVE)
    return respond(request, shapes.test_clock(_clock(request)), p)


@routes.post("/v1/test_helpers/test_clocks/{id}/advance")
async def advance_clock(request: web.Request) -> web.Response:
    p = params(request, ADVANCE_CLOCK)
    fake = fake_of(request)
    clock = _clock(request)
    fake.lifecycle.start_advance(clock, p["frozen_time"])
    fake.spawn(fake.lifecycle.advance_later(clock.id, fake.core.settings.clock_advance_delay_s))
    return respond(request, shapes.test_clock(clock), p)


@routes.delete("/v1/test_helpers/test_clocks/{id}")
async def delete_clock(request: web.Request) -> web.Response:
    params(request, Endpoint())
    core = fake_of(request).core
    clock = _clock(request)
    store = core.store
    customers = {c.id for c in store.customers.values() if c.test_clock == clock.id}
    for table in (store.subscriptions, store.invoices):
        for object_id in [k for k, v in table.items() if v.test_clock == clock.id]:
            del table[object_id]
    for object_id in [k for k, v in store.sessions.items() if v.customer in customers]:
        del store.sessions[object_id]
    for customer_id in customers:
        del store.customers[customer_id]
    core.emit("test_helpers.test_clock.deleted", shapes.test_clock(clock), None)
    del store.clocks[clock.id]
    return json_response(shapes.deleted(clock.id, "test_helpers.test_clock"))
