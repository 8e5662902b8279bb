-- Outbound webhooks (docs/contract.md §10): endpoints, and one durable delivery row per message and
-- endpoint. The rows are made by a trigger on `outbox`, so in the very transaction that commits
-- the change: a message that exists is owed to every endpoint that existed when it was made.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id          text PRIMARY KEY,
    url         text NOT NULL,
    -- whsec_<base64>, as the Standard Webhooks specification names it
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- `entitled endpoints remove` keeps the row (the timeline still names it)
    removed_at  timestamptz
);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              bigserial PRIMARY KEY,
    endpoint_id     text NOT NULL REFERENCES webhook_endpoints (id),
    outbox_id       bigint NOT NULL,
    customer_id     text NOT NULL,
    version         bigint NOT NULL,
    message_id      text NOT NULL,
    message         text NOT NULL,
    -- pending | delivered | failed (gave up after the retry period) | canceled (endpoint removed)
    status          text NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- a worker holds the row while its request is in flight; another may take it once this passed
    leased_until    timestamptz,
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, outbox_id)
);
-- What a worker claims next, per endpoint.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (endpoint_id, id) WHERE status = 'pending';
-- The "an earlier version is still owed" check that keeps each customer's messages in order.
CREATE INDEX IF NOT EXISTS webhook_deliveries_chain
    ON webhook_deliveries (endpoint_id, customer_id, version) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_customer ON webhook_deliveries (customer_id, created_at DESC);
CREATE INDEX IF NOT EXISTS webhook_deliveries_failed ON webhook_deliveries (created_at) WHERE status = 'failed';

CREATE OR REPLACE FUNCTION entitled_outbox_to_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, outbox_id, customer_id, version, message_id, message)
    SELECT e.id, NEW.id, NEW.customer_id, NEW.version, NEW.message::jsonb ->> 'id', NEW.message
    FROM webhook_endpoints e
    WHERE e.removed_at IS NULL
    ON CONFLICT (endpoint_id, outbox_id) DO NOTHING;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS outbox_to_deliveries ON outbox;
CREATE TRIGGER outbox_to_deliveries AFTER INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION entitled_outbox_to_deliveries();
