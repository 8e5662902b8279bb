"""Stripe's form encoding: `a[b][c]=v`, `expand[]=x`, `items[0][price]=p`, and the checks on it.

`parse_form` turns the flat pairs into nested dicts (array indexes stay string keys); a schema
made of the small classes below then validates and converts the tree the way Stripe does:
unknown keys are refused (`parameter_unknown`), required ones must be there
(`parameter_missing`), integers must parse (`parameter_invalid_integer`), an empty string
means "unset" only where Stripe allows it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl

from . import errors


class _HasCreated(Protocol):
    @property
    def created(self) -> int: ...


_Dated = TypeVar("_Dated", bound=_HasCreated)

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


class _Unset:
    """The value of a parameter sent as an empty string where Stripe allows unsetting."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def split_key(key: str) -> list[str]:
    m = _KEY.match(key)
    if not m:
        raise errors.invalid_request(f"Invalid parameter name: {key}", param=key)
    return [m.group(1), *_PART.findall(m.group(2))]


def parse_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nested dicts from `a[b][0][c]=v` pairs; `[]` appends (as the next numeric key)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = split_key(key)
        node = root
        for part in parts[:-1]:
            name = part if part != "" else str(len(node))
            child = node.get(name)
            if child is None:
                child = {}
                node[name] = child
            elif not isinstance(child, dict):
                raise errors.invalid_request(f"Invalid object: {key}", param=key)
            node = child
        last = parts[-1] if parts[-1] != "" else str(len(node))
        if isinstance(node.get(last), dict):
            raise errors.invalid_request(f"Invalid object: {key}", param=key)
        node[last] = value
    return root


def parse_query(query: str) -> dict[str, Any]:
    return parse_form(parse_qsl(query, keep_blank_values=True))


def child_name(parent: str, key: str | int) -> str:
    return f"{parent}[{key}]" if parent else str(key)


class Schema:
    """One parameter's rule; `coerce` returns the cleaned value or raises `StripeError`."""

    def coerce(self, value: Any, name: str) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Str(Schema):
    max_length: int = 5000
    allow_unset: bool = False

    def coerce(self, value: Any, name: str) -> Any:
        if not isinstance(value, str):
            raise errors.invalid_request(f"Invalid string: {_render(value)}", param=name)
        if value == "":
            if self.allow_unset:
                return UNSET
            raise errors.invalid_empty(name)
        if len(value) > self.max_length:
            raise errors.invalid_request(
                f"Invalid string: {value[:20]}...; must be at most {self.max_length} characters",
                param=name,
                code="parameter_invalid_string",
            )
        return value


@dataclass(frozen=True)
class Int(Schema):
    min: int | None = None
    max: int | None = None
    allow_unset: bool = False

    def coerce(self, value: Any, name: str) -> Any:
        if value == "" and self.allow_unset:
            return UNSET
        if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value.strip()):
            raise errors.invalid_integer(name, _render(value))
        number = int(value)
        if self.min is not None and number < self.min:
            raise errors.invalid_value(
                name, f"Invalid {name}: must be greater than or equal to {self.min}"
            )
        if self.max is not None and number > self.max:
            raise errors.invalid_value(
                name, f"Invalid {name}: must be less than or equal to {self.max}"
            )
        return number


@dataclass(frozen=True)
class Bool(Schema):
    def coerce(self, value: Any, name: str) -> Any:
        if value in ("true", "True", "1"):
            return True
        if value in ("false", "False", "0"):
            return False
        raise errors.invalid_request(f"Invalid boolean: {_render(value)}", param=name)


@dataclass(frozen=True)
class Enum(Schema):
    values: tuple[str, ...]
    allow_unset: bool = False

    def coerce(self, value: Any, name: str) -> Any:
        if value == "" and self.allow_unset:
            return UNSET
        if not isinstance(value, str) or value not in self.values:
            raise errors.invalid_value(
                name, f"Invalid {name}: must be one of {', '.join(self.values)}"
            )
        return value


@dataclass(frozen=True)
class Timestamp(Schema):
    """A Unix timestamp; `allow_now` also accepts the literal `now` (as `trial_end` does)."""

    allow_now: bool = False
    allow_unset: bool = False

    def coerce(self, value: Any, name: str) -> Any:
        if value == "" and self.allow_unset:
            return UNSET
        if self.allow_now and value == "now":
            return "now"
        return Int(min=0).coerce(value, name)


@dataclass(frozen=True)
class Obj(Schema):
    fields: Mapping[str, Schema]
    required: frozenset[str] = frozenset()
    allow_unset: bool = False

    def coerce(self, value: Any, name: str) -> Any:
        if value == "" and self.allow_unset:
            return UNSET
        if not isinstance(value, dict):
            raise errors.invalid_request("Invalid object", param=name)
        return validate(value, self, name)


@dataclass(frozen=True)
class Arr(Schema):
    item: Schema
    max_items: int = 100

    def coerce(self, value: Any, name: str) -> Any:
        if value == "":
            return []
        if not isinstance(value, dict) or not all(k.isdigit() for k in value):
            raise errors.invalid_request("Invalid array", param=name)
        keys = sorted(value, key=int)
        if len(keys) > self.max_items:
            raise errors.invalid_value(
                name, f"Invalid array: {name} must have at most {self.max_items} elements"
            )
        return [self.item.coerce(value[k], child_name(name, k)) for k in keys]


@dataclass(frozen=True)
class Metadata(Schema):
    """Stripe metadata: string values; `metadata[k]=""` deletes k, `metadata=""` clears all."""

    def coerce(self, value: Any, name: str) -> Any:
        if value == "":
            return UNSET
        if not isinstance(value, dict):
            raise errors.invalid_request("Invalid object", param=name)
        if len(value) > 50:
            raise errors.invalid_value(name, "Invalid metadata: at most 50 keys are allowed")
        out: dict[str, str | None] = {}
        for key, item in value.items():
            if not isinstance(item, str):
                raise errors.invalid_request("Invalid string", param=child_name(name, key))
            out[key] = item if item != "" else None
        return out


@dataclass(frozen=True)
class Range(Schema):
    """A `created` filter: a timestamp, or `created[gt|gte|lt|lte]`."""

    def coerce(self, value: Any, name: str) -> Any:
        if isinstance(value, str):
            return {"eq": Int().coerce(value, name)}
        if not isinstance(value, dict):
            raise errors.invalid_request("Invalid object", param=name)
        out: dict[str, int] = {}
        for key, item in value.items():
            if key not in ("gt", "gte", "lt", "lte"):
                raise errors.unknown_parameter(child_name(name, key))
            out[key] = Int().coerce(item, child_name(name, key))
        return out


def created_between(objects: Iterable[_Dated], rng: Mapping[str, int] | None) -> list[_Dated]:
    """The objects whose `created` is in `rng`: the test of `in_range`, with its bounds worked
    out once per request. A list endpoint filters every object of the account for each page;
    at 100,000 objects a per-object check of every condition took a fifth of a second a page
    (the sweep's benchmark, docs/benchmarks.md), this prefilter a few milliseconds. The
    endpoint's other conditions then run on what is left."""
    if not rng:
        return list(objects)
    far = 2**62
    lo = max(rng.get("gte", -far), rng.get("gt", -far) + 1)
    hi = min(rng.get("lt", far), rng.get("lte", far - 1) + 1)
    return [o for o in objects if lo <= o.created < hi]


def in_range(ts: int, rng: Mapping[str, int] | None) -> bool:
    if not rng:
        return True
    checks = {
        "eq": ts == rng.get("eq", ts),
        "gt": ts > rng.get("gt", ts - 1),
        "gte": ts >= rng.get("gte", ts),
        "lt": ts < rng.get("lt", ts + 1),
        "lte": ts <= rng.get("lte", ts),
    }
    return all(checks.values())


def validate(params: Mapping[str, Any], schema: Obj, prefix: str = "") -> dict[str, Any]:
    """Check `params` against `schema` and return the converted values (only keys given)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        rule = schema.fields.get(key)
        name = child_name(prefix, key)
        if rule is None:
            raise errors.unknown_parameter(name)
        out[key] = rule.coerce(value, name)
    for key in sorted(schema.required):
        if key not in params:
            raise errors.missing_parameter(child_name(prefix, key))
    return out


@dataclass(frozen=True)
class Endpoint:
    """The parameters one endpoint takes; `expand` is always allowed, like on Stripe."""

    fields: dict[str, Schema] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    list_params: bool = False

    def schema(self) -> Obj:
        fields: dict[str, Schema] = {"expand": Arr(Str(), max_items=200), **self.fields}
        if self.list_params:
            fields.update(
                limit=Int(min=1, max=100),
                starting_after=Str(),
                ending_before=Str(),
            )
        return Obj(fields, self.required)

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return validate(params, self.schema())


def _render(value: Any) -> str:
    return value if isinstance(value, str) else "an object"
