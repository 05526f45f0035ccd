-- The SQLite schema after both of its migrations (0001_init, 0002_outbox_claims), in
-- PostgreSQL types: BIGINT ids and unix-ms times, TEXT for the order document (it is read and
-- written whole, and keeping it TEXT keeps the two backends byte-for-byte alike).

-- Orders: one JSON document (the domain Order) plus the columns we filter and look up by.
CREATE TABLE orders (
    id                BIGSERIAL PRIMARY KEY,
    original_order_id TEXT UNIQUE,
    order_uuid        TEXT UNIQUE,
    number            TEXT NOT NULL UNIQUE,
    store_id          TEXT NOT NULL,
    scheme            TEXT NOT NULL,
    state             TEXT NOT NULL,
    data              TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX orders_state ON orders (state, id);
CREATE INDEX orders_store ON orders (store_id, id);

-- Timeline and audit log: every inbound/outbound exchange, action and decision.
CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    order_id    BIGINT REFERENCES orders (id),
    outbox_id   BIGINT,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    direction   TEXT NOT NULL,
    event       TEXT,
    outcome     TEXT,
    method      TEXT,
    path        TEXT,
    status      BIGINT,
    latency_ms  BIGINT,
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
-- retry_since: the give-up clock starts here (reset when an operator replays a dead letter).
-- idempotency_key: unique per notification ever, even across a database restore.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    order_id        BIGINT NOT NULL REFERENCES orders (id),
    kind            TEXT NOT NULL DEFAULT 'notification',
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    lease_owner     TEXT,
    in_doubt        BOOLEAN NOT NULL DEFAULT FALSE,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    retry_since     BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_order ON outbox (order_id, id);
