"""`expand[]`: replace ids with the objects they name, along dotted paths, as Stripe does.

Only fields Stripe marks expandable can be expanded (others answer 400 "This property cannot
be expanded"), paths through a list start with `data`, ids met on the way are expanded too,
and a path may have at most four segments: Stripe answers 400 `property_expansion_max_depth`
to `data.items.data.price.product` on a list (five), while `items.data.price.product` works on
a retrieve (https://docs.stripe.com/expand, "Expansions have a maximum depth of four levels").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import errors

JSON = dict[str, Any]
Resolver = Callable[[str], JSON | None]

MAX_DEPTH = 4

# Expandable fields per object type, as dotted paths relative to the object.
EXPANDABLE: dict[str, frozenset[str]] = {
    "customer": frozenset(
        {"test_clock", "default_source", "invoice_settings.default_payment_method"}
    ),
    "subscription": frozenset(
        {
            "customer",
            "latest_invoice",
            "test_clock",
            "default_payment_method",
            "default_source",
            "schedule",
            "pending_setup_intent",
        }
    ),
    "invoice": frozenset(
        {
            "customer",
            "test_clock",
            "default_payment_method",
            "default_source",
            "parent.subscription_details.subscription",
            # includable (payments.py adds it when asked for)
            "payments",
        }
    ),
    "checkout.session": frozenset(
        {"customer", "subscription", "invoice", "payment_intent", "setup_intent", "payment_link"}
    ),
    "price": frozenset({"product"}),
    "product": frozenset({"default_price"}),
    "entitlements.active_entitlement": frozenset({"feature"}),
    "payment_method": frozenset({"customer"}),
    "line_item": frozenset(),
    "item": frozenset({"price.product"}),
    "charge": frozenset({"customer", "payment_intent", "payment_method"}),
    "payment_intent": frozenset({"customer", "latest_charge", "payment_method"}),
    "dispute": frozenset({"charge", "payment_intent"}),
    "refund": frozenset({"charge", "payment_intent"}),
    "subscription_item": frozenset(),
}


def check_depth(paths: list[str]) -> None:
    for path in paths:
        if len(path.split(".")) > MAX_DEPTH:
            raise errors.invalid_request(
                f"You cannot expand more than {MAX_DEPTH} levels of a property. Property: {path}",
                param="expand",
                code="property_expansion_max_depth",
            )


def expand(obj: JSON, paths: list[str], resolve: Resolver) -> JSON:
    """Expand `paths` in place in `obj` (a Stripe object or a list object) and return it."""
    check_depth(paths)
    for path in paths:
        _walk(obj, path.split("."), path, resolve, None, "")
    return obj


def _not_expandable(path: str) -> errors.StripeError:
    return errors.invalid_request(f"This property cannot be expanded ({path}).", param="expand")


def _walk(
    node: Any, segments: list[str], path: str, resolve: Resolver, kind: str | None, rel: str
) -> None:
    """Expand `segments` below `node`; `kind` is the object type whose field `rel` (a dotted
    prefix, empty at an object's top) is being walked."""
    if not segments or node is None:
        return
    if isinstance(node, list):
        for item in node:
            _walk(item, segments, path, resolve, kind, rel)
        return
    if not isinstance(node, dict):
        raise _not_expandable(path)
    if rel:
        _walk_field(node, segments, path, resolve, kind, rel)
        return
    if node.get("object") == "list":
        # Paths through a list object go through its `data`.
        if segments[0] != "data":
            raise _not_expandable(path)
        _walk(node.get("data"), segments[1:], path, resolve, None, "")
        return
    object_type = node.get("object")
    _walk_field(
        node, segments, path, resolve, object_type if isinstance(object_type, str) else kind, ""
    )


def _walk_field(
    node: JSON, segments: list[str], path: str, resolve: Resolver, kind: str | None, rel: str
) -> None:
    head, rest = segments[0], segments[1:]
    if head not in node:
        raise _not_expandable(path)
    value = node[head]
    relative = f"{rel}{head}"
    if relative in EXPANDABLE.get(kind or "", frozenset()):
        if isinstance(value, str):
            resolved = resolve(value)
            if resolved is None:
                raise _not_expandable(path)
            node[head] = value = resolved
        _walk(value, rest, path, resolve, None, "")
        return
    if not rest or not isinstance(value, dict | list):
        raise _not_expandable(path)
    if isinstance(value, dict) and "object" in value:
        _walk(value, rest, path, resolve, None, "")
    else:
        _walk(value, rest, path, resolve, kind, relative + ".")
