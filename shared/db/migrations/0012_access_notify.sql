-- The api's answer cache of `GET /v1/check` (docs/contract.md §10) is kept current by Postgres
-- itself: every write to a table that `active_entitlements` reads (`customers`, `entitlements`)
-- sends `pg_notify('entitled_access', ...)`, one per customer written, delivered at commit and
-- deduplicated per transaction. Triggers catch every writer: the workers, `entitled` commands,
-- an operator's own SQL. `entitlement_limits` feeds only `GET /v1/access`, which is not cached.
--
-- The payload is JSON `{"c": customer_id, "u": [user ids]}`: the customer's user id before and
-- after the write (both when it changes). `*` means "drop everything": a TRUNCATE, a statement
-- touching more than 1,000 customers, or a payload past NOTIFY's 8,000-byte limit (an error
-- there would fail the writer's transaction). A row of `entitlements` has no user id: it is the
-- customer's as the statement sees it (a change of user id notifies both ids on its own).

-- One notification per customer of the pairs (customer_ids[i], user_ids[i]).
CREATE OR REPLACE FUNCTION entitled_notify_access(customer_ids text[], user_ids text[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    IF customer_ids IS NULL THEN
        RETURN;  -- the statement wrote no row, or none that decides access
    END IF;
    IF (SELECT count(DISTINCT c) FROM unnest(customer_ids) AS c) > 1000 THEN
        PERFORM pg_notify('entitled_access', '*');
        RETURN;
    END IF;
    FOR payload IN
        SELECT jsonb_build_object('c', c, 'u', coalesce(jsonb_agg(DISTINCT u) FILTER (WHERE u IS NOT NULL), '[]'))::text
        FROM unnest(customer_ids, user_ids) AS p(c, u) GROUP BY c
    LOOP
        PERFORM pg_notify('entitled_access', CASE WHEN octet_length(payload) > 7900 THEN '*' ELSE payload END);
    END LOOP;
END;
$$;

-- Only (customer_id, user_id) decides access in `customers`: an update of anything else
-- (email, updated_at: every sync upserts its customer) notifies nothing.
CREATE OR REPLACE FUNCTION entitled_customers_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cs text[];
    us text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(customer_id), array_agg(user_id) INTO cs, us FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(customer_id), array_agg(user_id) INTO cs, us FROM old_rows;
    ELSE
        SELECT array_agg(customer_id), array_agg(user_id) INTO cs, us FROM (
            (SELECT customer_id, user_id FROM old_rows EXCEPT SELECT customer_id, user_id FROM new_rows)
            UNION ALL
            (SELECT customer_id, user_id FROM new_rows EXCEPT SELECT customer_id, user_id FROM old_rows)
        ) d;
    END IF;
    PERFORM entitled_notify_access(cs, us);
    RETURN NULL;
END;
$$;

-- What decides a check in `entitlements`: (customer_id, feature, valid_until, quantity); an
-- update of `subscription_id` alone notifies nothing.
CREATE OR REPLACE FUNCTION entitled_entitlements_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cs text[];
    us text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(d.customer_id), array_agg(c.user_id) INTO cs, us
        FROM (SELECT DISTINCT customer_id FROM new_rows) d LEFT JOIN customers c USING (customer_id);
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(d.customer_id), array_agg(c.user_id) INTO cs, us
        FROM (SELECT DISTINCT customer_id FROM old_rows) d LEFT JOIN customers c USING (customer_id);
    ELSE
        SELECT array_agg(d.customer_id), array_agg(c.user_id) INTO cs, us
        FROM (
            SELECT customer_id FROM (
                (SELECT customer_id, feature, valid_until, quantity FROM old_rows
                 EXCEPT SELECT customer_id, feature, valid_until, quantity FROM new_rows)
                UNION ALL
                (SELECT customer_id, feature, valid_until, quantity FROM new_rows
                 EXCEPT SELECT customer_id, feature, valid_until, quantity FROM old_rows)
            ) e GROUP BY customer_id
        ) d LEFT JOIN customers c USING (customer_id);
    END IF;
    PERFORM entitled_notify_access(cs, us);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION entitled_truncate_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('entitled_access', '*');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS customers_notify_insert ON customers;
CREATE TRIGGER customers_notify_insert AFTER INSERT ON customers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION entitled_customers_notify();
DROP TRIGGER IF EXISTS customers_notify_update ON customers;
CREATE TRIGGER customers_notify_update AFTER UPDATE ON customers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION entitled_customers_notify();
DROP TRIGGER IF EXISTS customers_notify_delete ON customers;
CREATE TRIGGER customers_notify_delete AFTER DELETE ON customers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION entitled_customers_notify();
DROP TRIGGER IF EXISTS customers_notify_truncate ON customers;
CREATE TRIGGER customers_notify_truncate AFTER TRUNCATE ON customers
    FOR EACH STATEMENT EXECUTE FUNCTION entitled_truncate_notify();

DROP TRIGGER IF EXISTS entitlements_notify_insert ON entitlements;
CREATE TRIGGER entitlements_notify_insert AFTER INSERT ON entitlements
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION entitled_entitlements_notify();
DROP TRIGGER IF EXISTS entitlements_notify_update ON entitlements;
CREATE TRIGGER entitlements_notify_update AFTER UPDATE ON entitlements
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION entitled_entitlements_notify();
DROP TRIGGER IF EXISTS entitlements_notify_delete ON entitlements;
CREATE TRIGGER entitlements_notify_delete AFTER DELETE ON entitlements
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION entitled_entitlements_notify();
DROP TRIGGER IF EXISTS entitlements_notify_truncate ON entitlements;
CREATE TRIGGER entitlements_notify_truncate AFTER TRUNCATE ON entitlements
    FOR EACH STATEMENT EXECUTE FUNCTION entitled_truncate_notify();
