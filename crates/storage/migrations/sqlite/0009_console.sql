-- The operator console (issue #11).

-- Who made a change (operator:NAME, api-key:NAME, cli): the timeline names them.
ALTER TABLE events ADD COLUMN actor TEXT;

-- Console sessions, shared by every process on the database (they survive a restart). Only
-- the SHA-256 of the cookie's token is kept: a copy of the database opens no session.
CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY,
    operator_id  INTEGER NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX sessions_operator ON sessions (operator_id);

-- What the board searches by, kept beside the order document so that each search is an
-- index lookup. customer_name is lower-cased by the application (SQLite's lower() knows only
-- ASCII); NULL means "not filled in yet", and the application fills those in at start-up.
ALTER TABLE orders ADD COLUMN phone_key TEXT;
ALTER TABLE orders ADD COLUMN customer_name TEXT;
ALTER TABLE orders ADD COLUMN pickup_code TEXT;
ALTER TABLE orders ADD COLUMN anomalies INTEGER NOT NULL DEFAULT 0;
CREATE INDEX orders_phone_key ON orders (phone_key);
CREATE INDEX orders_pickup_code ON orders (pickup_code);
-- A part of a name is found by scanning this narrow index, never the documents.
CREATE INDEX orders_customer_name ON orders (customer_name);
CREATE INDEX orders_scheme ON orders (scheme, id);

-- "Needs attention" is the union of a few small sets, each behind its own index.
CREATE INDEX orders_with_anomalies ON orders (id) WHERE anomalies > 0;
CREATE INDEX outbox_dead_by_order ON outbox (order_id) WHERE status = 'dead';
CREATE INDEX events_reconciliation ON events (id, order_id) WHERE kind = 'reconciliation';
-- Refused webhooks (no order) for the outbox page.
CREATE INDEX events_without_order ON events (id) WHERE order_id IS NULL;
-- The health page's "last error from Kuper": the newest failed notification attempt.
CREATE INDEX events_kuper_failures ON events (id) WHERE kind = 'notification' AND outcome IN ('retry', 'dead');
