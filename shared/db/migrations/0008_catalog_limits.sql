-- docs/contract.md §5.2: a product's `metadata.entitled_limits`, cached with its features.
-- `limits` is NULL for an entry cached before this migration: the worker re-reads such a
-- product on its next sync (and the catalog poll counts the first read as a change), so limits
-- appear without waiting for the product to change. `limits_problem`: why the metadata was
-- refused (strict parsing: then the product gives no limits), for the "why" (§5.3).
-- Internal, like the rest of catalog_products; the public `quantity` column of
-- active_entitlements and the view active_limits came with 0003.
ALTER TABLE catalog_products ADD COLUMN IF NOT EXISTS limits jsonb;
ALTER TABLE catalog_products ADD COLUMN IF NOT EXISTS limits_problem text;
