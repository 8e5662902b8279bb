-- The operator console searches customers by e-mail, whatever its case (docs/contract.md §11).
CREATE INDEX IF NOT EXISTS customers_email_lower ON customers (lower(email));
