"""Which features a product grants (docs/contract.md §5, first paragraph): pure.

Stripe Product Features (the lookup keys of the features attached to the product) and, for
accounts that do not use them, the product's `metadata.features` (comma-separated lookup keys).
`worker/catalog.py` reads both from Stripe and caches them; the choice between them is here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

FeatureSource = Literal["product_features", "metadata.features"]


@dataclass(frozen=True)
class ProductFeatures:
    """A product's features and where they came from (the "why" of docs/contract.md §5.3)."""

    features: frozenset[str]
    source: FeatureSource | None  # None: the product grants nothing


def metadata_features(metadata: Any) -> frozenset[str]:
    """The lookup keys in `metadata.features` (`"reports, api"`), blanks dropped."""
    if not isinstance(metadata, Mapping):
        return frozenset()
    raw = metadata.get("features")
    if not isinstance(raw, str):
        return frozenset()
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def product_features(attached: Iterable[str], from_metadata: Iterable[str]) -> ProductFeatures:
    """Attached Product Features when there are any, else `metadata.features`: a product with
    both is an account that moved to Product Features, and those decide."""
    attached = frozenset(attached)
    if attached:
        return ProductFeatures(attached, "product_features")
    listed = frozenset(from_metadata)
    return ProductFeatures(listed, "metadata.features" if listed else None)


# --- Limits (docs/contract.md §5.2): `metadata.entitled_limits` on a product -----------------

LIMITS_KEY = "entitled_limits"
# A limit's name: what an app looks up; kept to what reads unambiguously in `a=1,b=2`.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-:")
# Per unit, at most 15 digits: times any quantity Stripe takes it still fits Postgres' bigint
# once summed (the policy saturates there anyway).
MAX_LIMIT_DIGITS = 15


@dataclass(frozen=True)
class ProductLimits:
    """A product's limits per unit of quantity, or why it gives none (the "why" of §5.3).

    Parsing is strict: one malformed part and the product gives no limits at all, with
    `problem` saying which part; half a limit set read as the whole would be worse than none."""

    values: Mapping[str, int]
    problem: str | None = None


NO_LIMITS = ProductLimits({})


def parse_limits(metadata: Any) -> ProductLimits:
    """`metadata.entitled_limits` (`"api_calls=10000,projects=5"`): names to whole numbers."""
    if not isinstance(metadata, Mapping):
        return NO_LIMITS
    raw = metadata.get(LIMITS_KEY)
    if raw is None:
        return NO_LIMITS
    if not isinstance(raw, str):
        return ProductLimits({}, f"metadata.{LIMITS_KEY} is not text")
    values: dict[str, int] = {}
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue  # `a=1,` and blanks: as metadata.features reads them
        name, sep, number = (s.strip() for s in part.partition("="))
        if not sep or not name:
            return ProductLimits({}, f"metadata.{LIMITS_KEY}: {part!r} is not name=number")
        if not set(name) <= _NAME_CHARS:
            return ProductLimits({}, f"metadata.{LIMITS_KEY}: {name!r} is not a plain name (letters, digits, _ . - :)")
        if not number.isascii() or not number.isdigit() or len(number) > MAX_LIMIT_DIGITS:
            return ProductLimits({}, f"metadata.{LIMITS_KEY}: {name}={number!r} is not a whole number "
                                     f"(0 to {MAX_LIMIT_DIGITS} digits)")
        if name in values:
            return ProductLimits({}, f"metadata.{LIMITS_KEY}: {name!r} is given twice")
        values[name] = int(number)
    return ProductLimits(values)
