-- The customer timeline (docs/contract.md §10, GET /v1/customers/C/timeline): one row per customer
-- sync with a compact summary of what Stripe said and of the decision with its why. Kept
-- 7 days (pruned by the workers' delivery housekeeping), like the outbox.
CREATE TABLE IF NOT EXISTS sync_log (
    id          bigserial PRIMARY KEY,
    customer_id text NOT NULL,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL,
    -- the ids of the events this sync handled
    event_ids   text[] NOT NULL DEFAULT '{}',
    changed     boolean NOT NULL,
    version     bigint NOT NULL,
    -- {"customer": ..., "subscriptions": [...], "checkout_user_id": ..., "clock_now": ...}
    stripe      jsonb NOT NULL,
    -- {"features": {...}, "user_id": ..., "why": [...], "next_check": ...}
    decision    jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS sync_log_customer ON sync_log (customer_id, synced_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS sync_log_synced_at ON sync_log (synced_at);
-- The timeline reads a customer's messages newest first.
CREATE INDEX IF NOT EXISTS outbox_customer_created ON outbox (customer_id, created_at DESC);
