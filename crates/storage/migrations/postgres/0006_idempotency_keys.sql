-- Idempotency-Key of merchant actions: a store system that retries an action whose answer it
-- lost gets the first answer again instead of 409. Written in the action's own transaction.
CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,   -- <API key name>:<Idempotency-Key>
    request_hash TEXT NOT NULL,      -- the action, the order reference and the body
    order_id     BIGINT NOT NULL,
    outbox_ids   TEXT NOT NULL,      -- the notifications it queued, as a JSON array
    created_at   BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
