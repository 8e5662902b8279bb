"""The product -> features catalog, cached in Postgres (`catalog_products`).

Features come from Stripe Product Features (the lookup keys of the features attached to a
product) and, for products with none attached, from `metadata.features` (comma-separated lookup
keys): SPEC section 5. A sync reads the cache and fills it for products it has never seen;
catalog jobs (`product.*`, `price.*`, `entitlements.feature.*` events) and the sweep refresh it,
then resync the customers whose products' features changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from shared.stripe_api import StripeReader

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CatalogEntry:
    product_id: str
    active: bool
    product_features: frozenset[str]
    feature_ids: frozenset[str]
    metadata_features: frozenset[str]

    @property
    def features(self) -> frozenset[str]:
        return self.product_features or self.metadata_features


def metadata_features(metadata: Any) -> frozenset[str]:
    if not isinstance(metadata, Mapping):
        return frozenset()
    raw = metadata.get("features")
    if not isinstance(raw, str):
        return frozenset()
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def entry_from(product_id: str, product: Mapping[str, Any] | None, features: Iterable[Mapping[str, Any]]) -> CatalogEntry:
    """Build a catalog entry from Stripe's product and its attached features (pure)."""
    live = [f for f in features if f.get("active", True) and isinstance(f.get("lookup_key"), str)]
    return CatalogEntry(
        product_id=product_id,
        active=bool(product.get("active", True)) if product else False,
        product_features=frozenset(str(f["lookup_key"]) for f in live),
        feature_ids=frozenset(str(f["id"]) for f in live if isinstance(f.get("id"), str)),
        metadata_features=metadata_features(product.get("metadata")) if product else frozenset(),
    )


async def fetch_entry(reader: StripeReader, product_id: str) -> CatalogEntry:
    product = await reader.product(product_id)
    features = await reader.product_features(product_id) if product is not None else []
    return entry_from(product_id, product, features)


async def load(conn: asyncpg.Connection | asyncpg.Pool, product_ids: Iterable[str]) -> dict[str, CatalogEntry]:
    rows = await conn.fetch(
        "SELECT product_id, active, product_features, feature_ids, metadata_features"
        " FROM catalog_products WHERE product_id = ANY($1::text[])",
        list(product_ids),
    )
    return {
        r["product_id"]: CatalogEntry(
            product_id=r["product_id"],
            active=r["active"],
            product_features=frozenset(r["product_features"]),
            feature_ids=frozenset(r["feature_ids"]),
            metadata_features=frozenset(r["metadata_features"]),
        )
        for r in rows
    }


async def save(conn: asyncpg.Connection | asyncpg.Pool, entries: Iterable[CatalogEntry]) -> None:
    await conn.executemany(
        """
        INSERT INTO catalog_products (product_id, active, product_features, feature_ids, metadata_features, refreshed_at)
        VALUES ($1, $2, $3, $4, $5, now())
        ON CONFLICT (product_id) DO UPDATE SET
            active = EXCLUDED.active, product_features = EXCLUDED.product_features,
            feature_ids = EXCLUDED.feature_ids, metadata_features = EXCLUDED.metadata_features,
            refreshed_at = now()
        """,
        [
            (e.product_id, e.active, sorted(e.product_features), sorted(e.feature_ids), sorted(e.metadata_features))
            for e in entries
        ],
    )


async def features_of(pool: asyncpg.Pool, reader: StripeReader, product_ids: Iterable[str]) -> dict[str, frozenset[str]]:
    """product -> features for these products, fetching (and caching) the ones never seen."""
    wanted = set(product_ids)
    cached = await load(pool, wanted)
    missing = [pid for pid in sorted(wanted) if pid not in cached]
    if missing:
        fetched = [await fetch_entry(reader, pid) for pid in missing]
        await save(pool, fetched)
        cached.update((e.product_id, e) for e in fetched)
        log.info("catalog.filled", products=missing)
    return {pid: entry.features for pid, entry in cached.items()}


async def refresh(pool: asyncpg.Pool, reader: StripeReader, product_ids: Iterable[str]) -> set[str]:
    """Re-read these products from Stripe; return the ids whose features changed."""
    ids = sorted(set(product_ids))
    if not ids:
        return set()
    before = await load(pool, ids)
    fresh = [await fetch_entry(reader, pid) for pid in ids]
    await save(pool, fresh)
    changed = {e.product_id for e in fresh if before.get(e.product_id) is None or before[e.product_id].features != e.features}
    log.info("catalog.refreshed", products=len(ids), changed=sorted(changed))
    return changed


async def products_with_features(pool: asyncpg.Pool, feature_ids: Iterable[str]) -> set[str]:
    rows = await pool.fetch(
        "SELECT product_id FROM catalog_products WHERE feature_ids && $1::text[]", list(feature_ids)
    )
    return {r["product_id"] for r in rows}


async def customers_with_products(pool: asyncpg.Pool, product_ids: Iterable[str]) -> list[str]:
    """Customers with a subscription (any status we keep) on one of these products."""
    rows = await pool.fetch(
        """
        SELECT DISTINCT customer_id FROM subscriptions, jsonb_array_elements(items) AS item
        WHERE item->>'product' = ANY($1::text[])
        """,
        list(product_ids),
    )
    return [r["customer_id"] for r in rows]


async def all_products(reader: StripeReader) -> list[str]:
    return [p["id"] async for p in reader.products()]
