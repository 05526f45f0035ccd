-- Orders: one JSON document (the domain Order) plus the columns we filter and look up by.
CREATE TABLE orders (
    id                INTEGER PRIMARY KEY,
    original_order_id TEXT UNIQUE,
    order_uuid        TEXT UNIQUE,
    number            TEXT NOT NULL UNIQUE,
    store_id          TEXT NOT NULL,
    scheme            TEXT NOT NULL,
    state             TEXT NOT NULL,
    data              TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX orders_state ON orders (state, id);
CREATE INDEX orders_store ON orders (store_id, id);

-- Timeline and audit log: every inbound/outbound exchange, action and decision.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    order_id    INTEGER REFERENCES orders (id),
    outbox_id   INTEGER,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    direction   TEXT NOT NULL,
    event       TEXT,
    outcome     TEXT,
    method      TEXT,
    path        TEXT,
    status      INTEGER,
    latency_ms  INTEGER,
    headers     TEXT,
    body        TEXT,
    response    TEXT,
    detail      TEXT,
    request_id  TEXT
);
CREATE INDEX events_order ON events (order_id, id);
CREATE INDEX events_outbox ON events (outbox_id);
CREATE INDEX events_at ON events (at);

-- Transactional outbox: written in the same transaction as the state change.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    order_id        INTEGER NOT NULL REFERENCES orders (id),
    kind            TEXT NOT NULL DEFAULT 'notification',
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    lease_owner     TEXT,
    in_doubt        INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_order ON outbox (order_id, id);
