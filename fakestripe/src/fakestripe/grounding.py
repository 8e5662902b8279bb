"""The fake checked against stripe-python's own definitions (the SDK pinned in pyproject.toml).

Nothing here is copied from Stripe's docs by hand: every set below is read out of the installed
SDK at run time, so a fake that drifts from Stripe's published types fails its checks.

- `snapshot_event_types()`: the types a webhook endpoint can subscribe to (the `enabled_events`
  literal of `WebhookEndpointCreateParams`), i.e. every snapshot event type Stripe sends.
- `thin_event_types()`: the `LOOKUP_TYPE` of every `stripe.events` class (`v1.`-prefixed types
  of thin events about API v1 resources, and `v2.` ones).
- `object_problems(obj)`: the keys of a Stripe JSON object that its SDK resource class does not
  declare, and the keys the class declares non-optional that are missing, through nested
  objects, lists and expanded objects.
- `params_problems(cls, query)`: query parameters that an SDK params TypedDict does not declare.

A deleted object (`{"id", "object", "deleted": true}`) has no class of its own in the SDK; it
is checked as exactly those three keys, each of which the resource class declares.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
import typing
from functools import cache
from typing import Any, Literal, Union
from urllib.parse import parse_qsl

import stripe
import stripe.events
from stripe._object_classes import get_object_class
from stripe._request_options import RequestOptions
from stripe._stripe_object import StripeObject
from stripe.events._event_classes import get_v2_event_class
from stripe.params import WebhookEndpointCreateParams

JSON = dict[str, Any]

DELETED_KEYS = frozenset({"id", "object", "deleted"})
LIST_KEYS = frozenset({"object", "data", "has_more", "url"})
# Keys of every params TypedDict that are request options, never sent as parameters.
REQUEST_OPTION_KEYS = frozenset(RequestOptions.__annotations__)


@cache
def snapshot_event_types() -> frozenset[str]:
    """Every event type a webhook endpoint may list in `enabled_events` (without `*`)."""
    annotation = WebhookEndpointCreateParams.__annotations__["enabled_events"]
    (literal,) = typing.get_args(annotation)
    return frozenset(t for t in typing.get_args(literal) if t != "*")


@cache
def thin_event_types() -> frozenset[str]:
    """The `LOOKUP_TYPE` of every event class in `stripe.events`."""
    found: set[str] = set()
    for module_info in pkgutil.iter_modules(stripe.events.__path__):
        module = importlib.import_module(f"stripe.events.{module_info.name}")
        for value in vars(module).values():
            lookup = getattr(value, "LOOKUP_TYPE", None) if inspect.isclass(value) else None
            if isinstance(lookup, str):
                found.add(lookup)
    return frozenset(found)


def event_type_problems(snapshot: set[str] | frozenset[str], thin: set[str] | frozenset[str]) -> list[str]:
    """Which of these snapshot and thin event types the SDK does not know."""
    problems = [
        f"snapshot event type {t!r} is not in the SDK's enabled_events list"
        for t in sorted(set(snapshot) - snapshot_event_types())
    ]
    problems += [
        f"thin event type {t!r} is no stripe.events class's LOOKUP_TYPE"
        for t in sorted(set(thin) - thin_event_types())
    ]
    return problems


# Objects ----------------------------------------------------------------------------------


def resource_class(object_name: str, event_type: str | None = None) -> type[StripeObject] | None:
    """The SDK class of an `object` value (`subscription`, `v2.core.event`), if it has one. A
    `v2.core.event` of a known `type` is that type's `stripe.events` class (which declares its
    `related_object`)."""
    if object_name == "v2.core.event" and event_type is not None:
        typed: type[StripeObject] = get_v2_event_class(event_type)
        if typed is not StripeObject:
            return typed
    mode: Literal["V1", "V2"] = "V2" if object_name.startswith("v2.") else "V1"
    cls = get_object_class(mode, object_name)
    return None if cls is StripeObject else cls


_DECLARED: dict[str, tuple[frozenset[str], frozenset[str]]] = {}


def declared(cls: type[StripeObject]) -> tuple[frozenset[str], frozenset[str]]:
    """(every key `cls` declares, the keys it declares non-optional)."""
    name = f"{cls.__module__}.{cls.__qualname__}"
    if name not in _DECLARED:
        _DECLARED[name] = _declared(cls)
    return _DECLARED[name]


def _declared(cls: type[StripeObject]) -> tuple[frozenset[str], frozenset[str]]:
    keys: set[str] = set()
    required: set[str] = set()
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, StripeObject)):
            continue
        if klass.__module__ in ("stripe._stripe_object", "stripe._api_resource"):
            continue
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if name.startswith("_") or typing.get_origin(annotation) is typing.ClassVar:
                continue
            keys.add(name)
            if not _optional(annotation):
                required.add(name)
    return frozenset(keys), frozenset(required)


def _optional(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return type(None) in typing.get_args(annotation)
    return False


def object_problems(obj: JSON, where: str = "") -> list[str]:
    """What in `obj` (a Stripe object with an `object` key) the SDK does not declare."""
    name = obj.get("object")
    label = where or str(name)
    if name == "list":
        return _list_problems(obj, label)
    if not isinstance(name, str):
        return [f"{label}: no `object` key"]
    event_type = obj.get("type")
    cls = resource_class(name, event_type if isinstance(event_type, str) else None)
    if cls is None:
        return [f"{label}: object type {name!r} has no SDK class"]
    if obj.get("deleted") is True:
        keys, _ = declared(cls)
        extra = set(obj) - DELETED_KEYS
        missing = DELETED_KEYS - set(obj)
        out = [f"{label}: deleted {name} has extra keys {sorted(extra)}"] if extra else []
        out += [f"{label}: deleted {name} lacks {sorted(missing)}"] if missing else []
        return out + [f"{label}: {cls.__name__} does not declare `deleted`"] * ("deleted" not in keys)
    return _fields_problems(obj, cls, label)


def _list_problems(obj: JSON, label: str) -> list[str]:
    out = [f"{label}: list has extra keys {sorted(set(obj) - LIST_KEYS)}"] * bool(set(obj) - LIST_KEYS)
    out += [f"{label}: list lacks {sorted(LIST_KEYS - set(obj))}"] * bool(LIST_KEYS - set(obj))
    for index, item in enumerate(obj.get("data") or []):
        if isinstance(item, dict):
            out += object_problems(item, f"{label}.data[{index}]")
    return out


def _fields_problems(obj: JSON, cls: type[StripeObject], label: str) -> list[str]:
    keys, required = declared(cls)
    out = []
    extra = set(obj) - keys
    if extra:
        out.append(f"{label}: {cls.__qualname__} does not declare {sorted(extra)}")
    missing = required - set(obj)
    if missing:
        out.append(f"{label}: {cls.__qualname__} declares non-optional {sorted(missing)}, absent")
    inner: dict[str, type[StripeObject]] = getattr(cls, "_inner_class_types", {})
    for key, value in obj.items():
        out += _value_problems(value, inner.get(key), f"{label}.{key}")
    return out


def _value_problems(value: Any, nested: type[StripeObject] | None, label: str) -> list[str]:
    if isinstance(value, list):
        out: list[str] = []
        for index, item in enumerate(value):
            out += _value_problems(item, nested, f"{label}[{index}]")
        return out
    if not isinstance(value, dict):
        return []
    if nested is not None:
        # A nested class of the parent's (`Event.Data`, whose `object` key is the payload).
        return _fields_problems(value, nested, label)
    if "object" in value:
        # An expanded or embedded object is checked against its own class.
        return object_problems(value, label)
    # A free-form hash (metadata, previous_attributes): nothing declared to check against.
    return []


# Requests ---------------------------------------------------------------------------------


def params_problems(cls: type, query_string: str) -> list[str]:
    """Query parameters (`expand[]`, `created[gte]` name `expand`, `created`) that the params
    TypedDict `cls` does not declare."""
    declared_params = set(cls.__annotations__) - REQUEST_OPTION_KEYS
    names = {raw.split("[", 1)[0]: raw for raw, _ in parse_qsl(query_string, keep_blank_values=True)}
    return [
        f"parameter {raw!r} is not in {cls.__name__}"
        for name, raw in sorted(names.items())
        if name not in declared_params
    ]


def expand_paths(query_string: str) -> list[str]:
    return [v for k, v in parse_qsl(query_string, keep_blank_values=True) if k in ("expand[]", "expand")]


__all__ = [
    "event_type_problems",
    "expand_paths",
    "object_problems",
    "params_problems",
    "resource_class",
    "snapshot_event_types",
    "thin_event_types",
]
