"""The product -> features catalog, cached in Postgres (`catalog_products`), and its poll.

Features come from Stripe Product Features (the lookup keys of the features attached to a
product) and, for products with none attached, from `metadata.features` (comma-separated lookup
keys): docs/contract.md §5, a rule of the policy (`shared.access.product_features`); this module
reads both and caches them. A sync reads the cache and fills it for products it has never seen.
Catalog jobs refresh it and resync the customers whose products changed: `product.*` and
`price.*` events name one product (`refresh`), and the catalog poll (`poll`, every
`RECONCILE_CATALOG_EVERY`) re-reads every product anyone holds. The poll is the only way to
learn that a feature was attached to or removed from a product: Stripe fires no event for that
(docs/contract.md §4; its entitlements guide: existing subscriptions' active entitlements change
only at their next billing period, https://docs.stripe.com/billing/entitlements).

What can change access is summed up in a digest (the product's `active` and `metadata`, its
attached features, its prices' `active` and `metadata`): any change of it resyncs the holders,
whichever of those fields the policy reads. The product's `metadata.entitled_limits`
(docs/contract.md §5.2) is parsed by the policy's rule (`shared.access.parse_limits`) and cached
beside its features.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import structlog

from shared.access import (
    NO_LIMITS,
    ProductFeatures,
    ProductLimits,
    metadata_features,
    parse_limits,
    product_features,
)
from shared.stripe_api import StripeReader

log = structlog.get_logger(__name__)

# Products whose features are read side by side during a poll (the client bounds the requests in
# flight per endpoint and the shared rate limit paces them; this only bounds the tasks).
POLL_CONCURRENCY = 16
# Products that someone holds: their catalog entries are kept fresh by the poll. Entries of other
# products are dropped by it, so a first sync on one reads it afresh.
HELD_PRODUCTS_SQL = (
    "SELECT DISTINCT item->>'product' AS product_id FROM subscriptions, jsonb_array_elements(items) AS item",
    # one-time purchases' products (docs/contract.md §5.1)
    "SELECT DISTINCT product #>> '{}' AS product_id FROM purchases, jsonb_array_elements(products) AS product",
)


@dataclass(frozen=True)
class CatalogEntry:
    product_id: str
    active: bool
    product_features: frozenset[str]
    feature_ids: frozenset[str]
    metadata_features: frozenset[str]
    digest: str = ""
    # docs/contract.md §5.2: `metadata.entitled_limits`, parsed; None: cached before limits were
    # read (migration 0008), so the entry is read again
    limits: ProductLimits | None = NO_LIMITS

    @property
    def granted(self) -> ProductFeatures:
        return product_features(self.product_features, self.metadata_features)

    @property
    def features(self) -> frozenset[str]:
        return self.granted.features


@dataclass(frozen=True)
class PollResult:
    products: int
    held: int
    changed: frozenset[str]


def _ref(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def digest_of(
    product: Mapping[str, Any] | None, features: Iterable[Mapping[str, Any]], prices: Iterable[Mapping[str, Any]]
) -> str:
    """What of a product can change access, as one short string (pure)."""
    summary = {
        "active": bool(product.get("active", True)) if product else None,
        "metadata": dict(product.get("metadata") or {}) if product else None,
        "features": sorted((str(f.get("id")), str(f.get("lookup_key")), bool(f.get("active", True)))
                           for f in features),
        "prices": sorted((str(p.get("id")), bool(p.get("active", True)), sorted((p.get("metadata") or {}).items()))
                         for p in prices),
    }
    return hashlib.sha256(orjson.dumps(summary, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def entry_from(
    product_id: str,
    product: Mapping[str, Any] | None,
    features: Iterable[Mapping[str, Any]],
    prices: Iterable[Mapping[str, Any]] = (),
) -> CatalogEntry:
    """Build a catalog entry from Stripe's product, its attached features and its prices (pure)."""
    features = list(features)
    live = [f for f in features if f.get("active", True) and isinstance(f.get("lookup_key"), str)]
    return CatalogEntry(
        product_id=product_id,
        active=bool(product.get("active", True)) if product else False,
        product_features=frozenset(str(f["lookup_key"]) for f in live),
        feature_ids=frozenset(str(f["id"]) for f in live if isinstance(f.get("id"), str)),
        metadata_features=metadata_features(product.get("metadata")) if product else frozenset(),
        digest=digest_of(product, features, prices),
        limits=parse_limits(product.get("metadata")) if product else NO_LIMITS,
    )


def changed_products(before: Mapping[str, CatalogEntry], fresh: Iterable[CatalogEntry]) -> set[str]:
    """Products whose entry changed (pure). A product never seen counts as changed; an entry
    written before digests existed (`""`) only when its features differ, or the first poll
    after an upgrade would resync every customer."""
    changed = set()
    for entry in fresh:
        old = before.get(entry.product_id)
        if old is None or old.features != entry.features or (old.digest and old.digest != entry.digest) or (
            old.limits is None and entry.limits != NO_LIMITS  # limits read for the first time (0008)
        ):
            changed.add(entry.product_id)
    return changed


async def fetch_entry(reader: StripeReader, product_id: str) -> CatalogEntry:
    product = await reader.product(product_id)
    if product is None:
        return entry_from(product_id, None, [])
    features, prices = await asyncio.gather(
        reader.product_features(product_id), _all(reader.prices(product_id))
    )
    return entry_from(product_id, product, features, prices)


async def _all(items: Any) -> list[dict[str, Any]]:
    return [item async for item in items]


async def load(conn: asyncpg.Connection | asyncpg.Pool, product_ids: Iterable[str]) -> dict[str, CatalogEntry]:
    rows = await conn.fetch(
        "SELECT product_id, active, product_features, feature_ids, metadata_features, digest,"
        " limits, limits_problem FROM catalog_products WHERE product_id = ANY($1::text[])",
        list(product_ids),
    )
    return {
        r["product_id"]: CatalogEntry(
            product_id=r["product_id"],
            active=r["active"],
            product_features=frozenset(r["product_features"]),
            feature_ids=frozenset(r["feature_ids"]),
            metadata_features=frozenset(r["metadata_features"]),
            digest=r["digest"],
            limits=_limits_from_row(r["limits"], r["limits_problem"]),
        )
        for r in rows
    }


def _limits_from_row(limits: Any, problem: str | None) -> ProductLimits | None:
    if limits is None:
        return None
    return ProductLimits({str(k): int(v) for k, v in dict(limits).items()}, problem)


async def save(conn: asyncpg.Connection | asyncpg.Pool, entries: Iterable[CatalogEntry]) -> None:
    await conn.executemany(
        """
        INSERT INTO catalog_products
            (product_id, active, product_features, feature_ids, metadata_features, digest, limits, limits_problem,
             refreshed_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
        ON CONFLICT (product_id) DO UPDATE SET
            active = EXCLUDED.active, product_features = EXCLUDED.product_features,
            feature_ids = EXCLUDED.feature_ids, metadata_features = EXCLUDED.metadata_features,
            digest = EXCLUDED.digest, limits = EXCLUDED.limits, limits_problem = EXCLUDED.limits_problem,
            refreshed_at = now()
        """,
        [
            (e.product_id, e.active, sorted(e.product_features), sorted(e.feature_ids), sorted(e.metadata_features),
             e.digest, None if e.limits is None else dict(e.limits.values),
             None if e.limits is None else e.limits.problem)
            for e in entries
        ],
    )


async def entries_of(pool: asyncpg.Pool, reader: StripeReader, product_ids: Iterable[str]) -> dict[str, CatalogEntry]:
    """The catalog entries of these products, fetching (and caching) the ones never seen, and
    those cached before their limits were read (migration 0008)."""
    wanted = set(product_ids)
    cached = await load(pool, wanted)
    missing = [pid for pid in sorted(wanted) if pid not in cached or cached[pid].limits is None]
    if missing:
        fetched = [await fetch_entry(reader, pid) for pid in missing]
        await save(pool, fetched)
        cached.update((e.product_id, e) for e in fetched)
        log.info("catalog.filled", products=missing)
    return cached


async def features_of(pool: asyncpg.Pool, reader: StripeReader, product_ids: Iterable[str]) -> dict[str, frozenset[str]]:
    """product -> features for these products, fetching (and caching) the ones never seen."""
    return {pid: entry.features for pid, entry in (await entries_of(pool, reader, product_ids)).items()}


def limits_of(entries: Mapping[str, CatalogEntry]) -> dict[str, ProductLimits]:
    """product -> its limits (docs/contract.md §5.2), for `decide(limits_of=...)`."""
    return {pid: e.limits or NO_LIMITS for pid, e in entries.items()}


async def refresh(pool: asyncpg.Pool, reader: StripeReader, product_ids: Iterable[str]) -> set[str]:
    """Re-read these products from Stripe; return the ids whose entries changed."""
    ids = sorted(set(product_ids))
    if not ids:
        return set()
    before = await load(pool, ids)
    fresh = [await fetch_entry(reader, pid) for pid in ids]
    await save(pool, fresh)
    changed = changed_products(before, fresh)
    log.info("catalog.refreshed", products=len(ids), changed=sorted(changed))
    return changed


async def held_products(pool: asyncpg.Pool) -> set[str]:
    held: set[str] = set()
    for sql in HELD_PRODUCTS_SQL:
        held |= {r["product_id"] for r in await pool.fetch(sql) if r["product_id"]}
    return held


async def _features_side_by_side(reader: StripeReader, product_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    gate = asyncio.Semaphore(POLL_CONCURRENCY)

    async def one(pid: str) -> tuple[str, list[dict[str, Any]]]:
        async with gate:
            return pid, await reader.product_features(pid)

    return dict(await asyncio.gather(*(one(pid) for pid in product_ids)))


async def poll(pool: asyncpg.Pool, reader: StripeReader) -> PollResult:
    """The catalog poll: every product and price in lists of 100, then the attached features of
    each product someone holds, side by side; store, and return the products that changed.

    Requests: ceil(products / 100) + ceil(prices / 100) + held products (Stripe lists no
    product's features but one product at a time)."""
    products: dict[str, dict[str, Any]] = {}
    prices: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)

    async def list_products() -> None:
        async for product in reader.products():
            products[str(product["id"])] = product

    async def list_prices() -> None:
        async for price in reader.prices():
            if (pid := _ref(price.get("product"))) is not None:
                prices[pid].append(price)

    (_, _), held = await asyncio.gather(asyncio.gather(list_products(), list_prices()), held_products(pool))
    targets = sorted(held)
    features = await _features_side_by_side(reader, targets)
    fresh = [entry_from(pid, products.get(pid), features[pid], prices.get(pid, ())) for pid in targets]
    before = await load(pool, targets)
    async with pool.acquire() as conn, conn.transaction():
        await save(conn, fresh)
        await conn.execute("DELETE FROM catalog_products WHERE NOT (product_id = ANY($1::text[]))", targets)
    changed = changed_products(before, fresh)
    log.info("catalog.polled", products=len(products), held=len(targets), changed=sorted(changed)[:20])
    return PollResult(products=len(products), held=len(targets), changed=frozenset(changed))


async def products_with_features(pool: asyncpg.Pool, feature_ids: Iterable[str]) -> set[str]:
    rows = await pool.fetch(
        "SELECT product_id FROM catalog_products WHERE feature_ids && $1::text[]", list(feature_ids)
    )
    return {r["product_id"] for r in rows}


async def customers_with_products(pool: asyncpg.Pool, product_ids: Iterable[str]) -> list[str]:
    """Customers with a subscription (any status we keep) or a purchase of one of these products."""
    rows = await pool.fetch(
        """
        SELECT DISTINCT customer_id FROM subscriptions, jsonb_array_elements(items) AS item
        WHERE item->>'product' = ANY($1::text[])
        UNION
        SELECT DISTINCT customer_id FROM purchases, jsonb_array_elements(products) AS product
        WHERE product #>> '{}' = ANY($1::text[])
        """,
        list(product_ids),
    )
    return [r["customer_id"] for r in rows]
