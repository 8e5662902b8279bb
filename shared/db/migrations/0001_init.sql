-- entitled: initial schema.
-- Public (docs/contract.md §7): the `customers` table and the `active_entitlements` view.
-- Everything else is internal and may change between releases.

CREATE TABLE IF NOT EXISTS customers (
    customer_id     text PRIMARY KEY,
    user_id         text,
    -- where user_id came from: checkout_session | customer_metadata | subscription_metadata
    user_id_source  text,
    email           text,
    livemode        boolean NOT NULL DEFAULT false,
    deleted         boolean NOT NULL DEFAULT false,
    test_clock      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS customers_user_id ON customers (user_id);

-- Per-customer sync bookkeeping: the fencing token and the access version (docs/contract.md §6).
CREATE TABLE IF NOT EXISTS customer_sync (
    customer_id     text PRIMARY KEY,
    -- bumped when a sync starts; a sync may only write while it still holds the newest fence
    fence           bigint NOT NULL DEFAULT 0,
    -- increases by one per change of the customer's features or user_id
    version         bigint NOT NULL DEFAULT 0,
    synced_at       timestamptz,
    next_check_at   timestamptz,
    last_reason     text,
    -- Stripe's own active entitlements at the last sync, for comparison (see worker/sync.py)
    stripe_features text[] NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS subscriptions (
    subscription_id      text PRIMARY KEY,
    customer_id          text NOT NULL,
    status               text NOT NULL,
    -- [{"id": "si_...", "price": "price_...", "product": "prod_...", "current_period_start": ..., "current_period_end": ...}]
    items                jsonb NOT NULL DEFAULT '[]',
    trial_end            timestamptz,
    cancel_at            timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    paused_collection    boolean NOT NULL DEFAULT false,
    current_period_end   timestamptz,
    -- first time we saw it past_due (fallback when Stripe gives no better moment)
    past_due_since       timestamptz,
    test_clock           text,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS subscriptions_customer ON subscriptions (customer_id);
CREATE INDEX IF NOT EXISTS subscriptions_items ON subscriptions USING gin (items jsonb_path_ops);

CREATE TABLE IF NOT EXISTS entitlements (
    customer_id     text NOT NULL,
    feature         text NOT NULL,
    valid_until     timestamptz NOT NULL,
    -- the subscription that grants it (the one granting longest when several do)
    subscription_id text NOT NULL,
    PRIMARY KEY (customer_id, feature)
);

CREATE OR REPLACE VIEW active_entitlements AS
    SELECT e.customer_id, c.user_id, e.feature, e.valid_until
    FROM entitlements e
    JOIN customers c USING (customer_id)
    WHERE e.valid_until > now();

-- product -> features cache, refreshed by catalog jobs and the sweep.
CREATE TABLE IF NOT EXISTS catalog_products (
    product_id        text PRIMARY KEY,
    active            boolean NOT NULL DEFAULT true,
    -- lookup keys of attached Stripe Product Features
    product_features  text[] NOT NULL DEFAULT '{}',
    -- their feature ids (to find the products a feature event concerns)
    feature_ids       text[] NOT NULL DEFAULT '{}',
    -- lookup keys from metadata.features, for accounts without Product Features
    metadata_features text[] NOT NULL DEFAULT '{}',
    refreshed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS catalog_products_feature_ids ON catalog_products USING gin (feature_ids);

-- Transactional outbox of access-changed messages (docs/contract.md §6).
CREATE TABLE IF NOT EXISTS outbox (
    id           bigserial PRIMARY KEY,
    customer_id  text NOT NULL,
    version      bigint NOT NULL,
    message      text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    UNIQUE (customer_id, version)
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Every accepted event and what became of it.
CREATE TABLE IF NOT EXISTS event_ledger (
    event_id     text PRIMARY KEY,
    type         text NOT NULL,
    customer_id  text,
    source       text NOT NULL DEFAULT 'webhook',
    received_at  timestamptz NOT NULL,
    processed_at timestamptz,
    -- changed | unchanged | failed
    outcome      text,
    attempts     integer NOT NULL DEFAULT 0,
    error        text
);
CREATE INDEX IF NOT EXISTS event_ledger_customer ON event_ledger (customer_id, received_at DESC);
CREATE INDEX IF NOT EXISTS event_ledger_failed ON event_ledger (received_at) WHERE outcome = 'failed';

-- Cursors of the reconciliation jobs and of `entitled resync --all`.
CREATE TABLE IF NOT EXISTS reconcile_state (
    name       text PRIMARY KEY,
    cursor     text,
    info       jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);
