-- docs/contract.md §5.1: one-time purchases (payment-mode Checkout Sessions) as the last sync
-- judged them, so that the sweep finds the paid sessions we do not hold and the catalog poll
-- keeps their products fresh; and, per customer, whether its syncs read purchases and charges
-- (a plain subscription customer's do not).

CREATE TABLE IF NOT EXISTS purchases (
    session_id     text PRIMARY KEY,
    customer_id    text NOT NULL,
    -- the row of docs/contract.md §5.1 the purchase stood in (shared/access/purchase_policy.py)
    row            text NOT NULL,
    products       jsonb NOT NULL DEFAULT '[]'::jsonb,
    payment_intent text,
    charge_id      text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS purchases_customer ON purchases (customer_id);

ALTER TABLE customer_sync ADD COLUMN IF NOT EXISTS reads_payments boolean NOT NULL DEFAULT false;
