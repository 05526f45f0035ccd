-- retry_since: the give-up clock starts here (reset when an operator replays a dead letter).
-- idempotency_key: unique per notification ever, even across a database restore.
ALTER TABLE outbox ADD COLUMN retry_since INTEGER;
ALTER TABLE outbox ADD COLUMN idempotency_key TEXT;
UPDATE outbox SET retry_since = created_at, idempotency_key = 'kb-legacy-' || id;
