-- The catalog poll (docs/contract.md §12): a digest of everything of a product that can change
-- access (active, metadata, attached features, its prices' active and metadata), so that a
-- change of any of them resyncs the product's holders, whatever the policy reads from it.
ALTER TABLE catalog_products ADD COLUMN IF NOT EXISTS digest text NOT NULL DEFAULT '';
