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
