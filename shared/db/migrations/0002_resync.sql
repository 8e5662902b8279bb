-- `entitled resync --all`: the customers of the current run, so that an interrupted run resumes.
CREATE TABLE IF NOT EXISTS resync_items (
    customer_id text PRIMARY KEY,
    enqueued_at timestamptz,
    done_at     timestamptz
);
