-- `entitled events` (without --failed) lists the newest events of the whole ledger: an index on
-- received_at keeps that one index read however long the ledger grows.
CREATE INDEX IF NOT EXISTS event_ledger_received ON event_ledger (received_at DESC);
