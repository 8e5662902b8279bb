"""`/v1/products`, `/v1/prices`, `/v1/entitlements/features` and `/v1/products/{id}/features`.

Attaching a feature to a product, or removing it, changes the entitlements of every customer
subscribed to that product: each of them gets one
`entitlements.active_entitlement_summary.updated` (at the end of the request).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import errors, shapes
from .api import fake_of, json_response, newest_first, paginate, params, respond
from .billing import apply_metadata
from .core import Core
from .events import previous_attributes
from .forms import UNSET, Arr, Bool, Endpoint, Enum, Int, Metadata, Obj, Range, Str, in_range
from .store import Feature, Price, Product, ProductFeature

routes = web.RouteTableDef()

_INTERVALS = ("day", "week", "month", "year")
_RECURRING = Obj(
    {
        "interval": Enum(_INTERVALS),
        "interval_count": Int(min=1, max=365),
        "usage_type": Enum(("licensed",)),
    },
    required=frozenset({"interval"}),
)
_PRICE_DATA = Obj(
    {"currency": Str(max_length=3), "unit_amount": Int(min=0), "recurring": _RECURRING},
    required=frozenset({"currency", "unit_amount"}),
)
CREATE_PRODUCT = Endpoint(
    {
        "id": Str(max_length=100),
        "name": Str(max_length=250),
        "active": Bool(),
        "description": Str(),
        "metadata": Metadata(),
        "default_price_data": _PRICE_DATA,
    },
    required=frozenset({"name"}),
)
UPDATE_PRODUCT = Endpoint(
    {
        "name": Str(max_length=250),
        "active": Bool(),
        "description": Str(allow_unset=True),
        "metadata": Metadata(),
        "default_price": Str(allow_unset=True),
    }
)
LIST_PRODUCTS = Endpoint(
    {"active": Bool(), "ids": Arr(Str()), "created": Range()}, list_params=True
)
CREATE_PRICE = Endpoint(
    {
        "product": Str(),
        "product_data": Obj(
            {"name": Str(max_length=250), "metadata": Metadata()}, frozenset({"name"})
        ),
        "currency": Str(max_length=3),
        "unit_amount": Int(min=0),
        "recurring": _RECURRING,
        "metadata": Metadata(),
        "nickname": Str(),
        "lookup_key": Str(max_length=200),
        "active": Bool(),
    },
    required=frozenset({"currency"}),
)
UPDATE_PRICE = Endpoint(
    {
        "active": Bool(),
        "metadata": Metadata(),
        "nickname": Str(allow_unset=True),
        "lookup_key": Str(allow_unset=True),
    }
)
LIST_PRICES = Endpoint(
    {
        "product": Str(),
        "active": Bool(),
        "type": Enum(("one_time", "recurring")),
        "created": Range(),
    },
    list_params=True,
)
CREATE_FEATURE = Endpoint(
    {"name": Str(max_length=80), "lookup_key": Str(max_length=80), "metadata": Metadata()},
    required=frozenset({"name", "lookup_key"}),
)
UPDATE_FEATURE = Endpoint({"name": Str(max_length=80), "metadata": Metadata(), "active": Bool()})
LIST_FEATURES = Endpoint({"lookup_key": Str(), "archived": Bool()}, list_params=True)
ATTACH_FEATURE = Endpoint(
    {"entitlement_feature": Str()}, required=frozenset({"entitlement_feature"})
)


def _order(obj: Any) -> tuple[int, int]:
    return (obj.created, obj.seq)


def _product(core: Core, product_id: str, param: str = "id") -> Product:
    product = core.store.products.get(product_id)
    if product is None:
        raise errors.resource_missing("product", product_id, param=param)
    return product


def _new_price(core: Core, product: Product, data: dict[str, Any]) -> Price:
    recurring = data.get("recurring")
    price = Price(
        id=core.store.new_id("price"),
        created=core.clock.now(),
        seq=core.store.next_seq(),
        product=product.id,
        currency=data["currency"].lower(),
        unit_amount=data.get("unit_amount", 0),
        interval=recurring["interval"] if recurring else None,
        interval_count=recurring.get("interval_count", 1) if recurring else 1,
        active=data.get("active", True),
        lookup_key=data.get("lookup_key"),
        nickname=data.get("nickname"),
    )
    apply_metadata(price.metadata, data.get("metadata", {}))
    core.store.prices[price.id] = price
    return price


@routes.post("/v1/products")
async def create_product(request: web.Request) -> web.Response:
    p = params(request, CREATE_PRODUCT)
    core = fake_of(request).core
    product_id = p.get("id") or core.store.new_id("product")
    if product_id in core.store.products:
        raise errors.invalid_request(
            f"Product already exists with that ID: {product_id}",
            param="id",
            code="resource_already_exists",
        )
    now = core.clock.now()
    product = Product(
        id=product_id,
        created=now,
        updated=now,
        seq=core.store.next_seq(),
        name=p["name"],
        active=p.get("active", True),
        description=p.get("description"),
    )
    apply_metadata(product.metadata, p.get("metadata", {}))
    core.store.products[product.id] = product
    price = None
    if "default_price_data" in p:
        price = _new_price(core, product, p["default_price_data"])
        product.default_price = price.id
    core.emit("product.created", shapes.product(product), None)
    if price is not None:
        core.emit("price.created", shapes.price(price), None)
    return respond(request, shapes.product(product), p)


@routes.post("/v1/products/{id}")
async def update_product(request: web.Request) -> web.Response:
    p = params(request, UPDATE_PRODUCT)
    core = fake_of(request).core
    product = _product(core, request.match_info["id"])
    before = shapes.product(product)
    if "name" in p:
        product.name = p["name"]
    if "active" in p:
        product.active = p["active"]
    if "description" in p:
        product.description = None if p["description"] is UNSET else p["description"]
    if "metadata" in p:
        apply_metadata(product.metadata, p["metadata"])
    if "default_price" in p:
        ref = p["default_price"]
        if ref is not UNSET:
            price = core.store.prices.get(ref)
            if price is None or price.product != product.id:
                raise errors.resource_missing("price", ref, param="default_price")
        product.default_price = None if ref is UNSET else ref
    product.updated = core.clock.now()
    after = shapes.product(product)
    changed = previous_attributes(before, after)
    changed.pop("updated", None)
    if changed:
        core.emit("product.updated", after, None, changed)
    return respond(request, after, p)


@routes.get("/v1/products/{id}")
async def retrieve_product(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    product = _product(fake_of(request).core, request.match_info["id"])
    return respond(request, shapes.product(product), p)


@routes.get("/v1/products")
async def list_products(request: web.Request) -> web.Response:
    p = params(request, LIST_PRODUCTS)
    core = fake_of(request).core
    found = [
        prod
        for prod in core.store.products.values()
        if ("active" not in p or prod.active == p["active"])
        and ("ids" not in p or prod.id in p["ids"])
        and in_range(prod.created, p.get("created"))
    ]
    page = paginate(
        newest_first(found, _order), lambda x: x.id, shapes.product, p, "/v1/products", "product"
    )
    return respond(request, page, p)


@routes.post("/v1/prices")
async def create_price(request: web.Request) -> web.Response:
    p = params(request, CREATE_PRICE)
    core = fake_of(request).core
    if ("product" in p) == ("product_data" in p):
        raise errors.invalid_request(
            "You must specify exactly one of these parameters: product, product_data.",
            param="product",
        )
    if "product" in p:
        product = _product(core, p["product"], param="product")
    else:
        now = core.clock.now()
        data = p["product_data"]
        product = Product(
            id=core.store.new_id("product"),
            created=now,
            updated=now,
            seq=core.store.next_seq(),
            name=data["name"],
        )
        apply_metadata(product.metadata, data.get("metadata", {}))
        core.store.products[product.id] = product
        core.emit("product.created", shapes.product(product), None)
    price = _new_price(core, product, p)
    core.emit("price.created", shapes.price(price), None)
    return respond(request, shapes.price(price), p)


@routes.post("/v1/prices/{id}")
async def update_price(request: web.Request) -> web.Response:
    p = params(request, UPDATE_PRICE)
    core = fake_of(request).core
    price = core.store.prices.get(request.match_info["id"])
    if price is None:
        raise errors.resource_missing("price", request.match_info["id"])
    before = shapes.price(price)
    if "active" in p:
        price.active = p["active"]
    if "metadata" in p:
        apply_metadata(price.metadata, p["metadata"])
    for key in ("nickname", "lookup_key"):
        if key in p:
            setattr(price, key, None if p[key] is UNSET else p[key])
    after = shapes.price(price)
    changed = previous_attributes(before, after)
    if changed:
        core.emit("price.updated", after, None, changed)
    return respond(request, after, p)


@routes.get("/v1/prices/{id}")
async def retrieve_price(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    price = fake_of(request).core.store.prices.get(request.match_info["id"])
    if price is None:
        raise errors.resource_missing("price", request.match_info["id"])
    return respond(request, shapes.price(price), p)


@routes.get("/v1/prices")
async def list_prices(request: web.Request) -> web.Response:
    p = params(request, LIST_PRICES)
    core = fake_of(request).core
    found = [
        price
        for price in core.store.prices.values()
        if ("product" not in p or price.product == p["product"])
        and ("active" not in p or price.active == p["active"])
        and ("type" not in p or (price.interval is not None) == (p["type"] == "recurring"))
        and in_range(price.created, p.get("created"))
    ]
    page = paginate(
        newest_first(found, _order), lambda x: x.id, shapes.price, p, "/v1/prices", "price"
    )
    return respond(request, page, p)


# Entitlement features --------------------------------------------------------------------


def _feature(core: Core, feature_id: str, param: str = "id") -> Feature:
    feature = core.store.features.get(feature_id)
    if feature is None:
        raise errors.resource_missing("entitlements.feature", feature_id, param=param)
    return feature


@routes.post("/v1/entitlements/features")
async def create_feature(request: web.Request) -> web.Response:
    p = params(request, CREATE_FEATURE)
    core = fake_of(request).core
    if any(f.lookup_key == p["lookup_key"] for f in core.store.features.values()):
        raise errors.invalid_request(
            f"A feature with lookup_key {p['lookup_key']} already exists.",
            param="lookup_key",
            code="resource_already_exists",
        )
    feature = Feature(
        id=core.store.new_id("feature"),
        created=core.clock.now(),
        seq=core.store.next_seq(),
        name=p["name"],
        lookup_key=p["lookup_key"],
    )
    apply_metadata(feature.metadata, p.get("metadata", {}))
    core.store.features[feature.id] = feature
    # Stripe has no `entitlements.feature.*` event types (stripe-python's `enabled_events`).
    return respond(request, shapes.feature(feature), p)


@routes.post("/v1/entitlements/features/{id}")
async def update_feature(request: web.Request) -> web.Response:
    p = params(request, UPDATE_FEATURE)
    core = fake_of(request).core
    feature = _feature(core, request.match_info["id"])
    if "name" in p:
        feature.name = p["name"]
    if "active" in p:
        feature.active = p["active"]
    if "metadata" in p:
        apply_metadata(feature.metadata, p["metadata"])
    # No event: Stripe has no `entitlements.feature.*` event types.
    return respond(request, shapes.feature(feature), p)


@routes.get("/v1/entitlements/features/{id}")
async def retrieve_feature(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    return respond(
        request, shapes.feature(_feature(fake_of(request).core, request.match_info["id"])), p
    )


@routes.get("/v1/entitlements/features")
async def list_features(request: web.Request) -> web.Response:
    p = params(request, LIST_FEATURES)
    core = fake_of(request).core
    found = [
        f
        for f in core.store.features.values()
        if ("lookup_key" not in p or f.lookup_key == p["lookup_key"])
        and ("archived" not in p or f.active != p["archived"])
    ]
    page = paginate(
        newest_first(found, _order),
        lambda x: x.id,
        shapes.feature,
        p,
        "/v1/entitlements/features",
        "entitlements.feature",
    )
    return respond(request, page, p)


@routes.post("/v1/products/{id}/features")
async def attach_feature(request: web.Request) -> web.Response:
    p = params(request, ATTACH_FEATURE)
    core = fake_of(request).core
    product = _product(core, request.match_info["id"])
    feature = _feature(core, p["entitlement_feature"], param="entitlement_feature")
    if any(
        pf.product == product.id and pf.feature == feature.id
        for pf in core.store.product_features.values()
    ):
        raise errors.invalid_request(
            "This feature is already attached to the product.", param="entitlement_feature"
        )
    pf = ProductFeature(
        id=core.store.new_id("product_feature"),
        seq=core.store.next_seq(),
        product=product.id,
        feature=feature.id,
    )
    core.store.product_features[pf.id] = pf
    # No event, and existing subscriptions' active entitlements change only at their next
    # period (https://docs.stripe.com/billing/entitlements): see `entitlements.snapshot`.
    return respond(request, shapes.product_feature(core.store, pf), p)


@routes.get("/v1/products/{id}/features")
async def list_product_features(request: web.Request) -> web.Response:
    p = params(request, Endpoint(list_params=True))
    core = fake_of(request).core
    product = _product(core, request.match_info["id"])
    found = sorted(
        (pf for pf in core.store.product_features.values() if pf.product == product.id),
        key=lambda pf: pf.seq,
        reverse=True,
    )
    page = paginate(
        found,
        lambda x: x.id,
        lambda pf: shapes.product_feature(core.store, pf),
        p,
        f"/v1/products/{product.id}/features",
        "product_feature",
    )
    return respond(request, page, p)


def _product_feature(core: Core, request: web.Request) -> ProductFeature:
    product = _product(core, request.match_info["id"])
    pf = core.store.product_features.get(request.match_info["pf"])
    if pf is None or pf.product != product.id:
        raise errors.resource_missing("product_feature", request.match_info["pf"])
    return pf


@routes.get("/v1/products/{id}/features/{pf}")
async def retrieve_product_feature(request: web.Request) -> web.Response:
    p = params(request, Endpoint())
    core = fake_of(request).core
    return respond(request, shapes.product_feature(core.store, _product_feature(core, request)), p)


@routes.delete("/v1/products/{id}/features/{pf}")
async def detach_feature(request: web.Request) -> web.Response:
    params(request, Endpoint())
    core = fake_of(request).core
    pf = _product_feature(core, request)
    # As for attaching: no event, existing subscriptions keep the feature until their next period.
    del core.store.product_features[pf.id]
    return json_response(shapes.deleted(pf.id, "product_feature"))
