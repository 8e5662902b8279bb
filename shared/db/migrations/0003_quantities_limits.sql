-- docs/contract.md §5.2 and §7: each granted feature carries a quantity, and products may
-- carry numeric limits. Public: the `quantity` column of `active_entitlements`, and the view
-- `active_limits`. A grant for ever (a one-time purchase) has valid_until 'infinity'.

ALTER TABLE entitlements ADD COLUMN IF NOT EXISTS quantity bigint NOT NULL DEFAULT 1;

CREATE TABLE IF NOT EXISTS entitlement_limits (
    customer_id text NOT NULL,
    name        text NOT NULL,
    value       bigint NOT NULL,
    valid_until timestamptz NOT NULL,
    -- the subscription or purchase granting longest
    source_id   text NOT NULL,
    PRIMARY KEY (customer_id, name)
);

-- Columns may only be added at the end of a view that is replaced.
CREATE OR REPLACE VIEW active_entitlements AS
    SELECT e.customer_id, c.user_id, e.feature, e.valid_until, e.quantity
    FROM entitlements e
    JOIN customers c USING (customer_id)
    WHERE e.valid_until > now();

CREATE OR REPLACE VIEW active_limits AS
    SELECT l.customer_id, c.user_id, l.name, l.value, l.valid_until
    FROM entitlement_limits l
    JOIN customers c USING (customer_id)
    WHERE l.valid_until > now();
