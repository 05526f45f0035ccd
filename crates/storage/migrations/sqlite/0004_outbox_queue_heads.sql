-- Only the head of an order's queue carries a real next_attempt_at. A record queued behind an
-- earlier pending or dead record of its order waits with a far-future sentinel
-- (9999-12-31T23:59:59.999Z) until its predecessor becomes final, so a claim's range scan over
-- due records never walks past the waiting ones (the quadratic drain in RELIABILITY.md).
UPDATE outbox SET next_attempt_at = 253402300799999
 WHERE status = 'pending'
   AND EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = outbox.order_id AND p.id < outbox.id AND p.status IN ('pending', 'dead'));
-- Due heads, in claim order; waiting records sit at the far end.
CREATE INDEX outbox_pending_due ON outbox (next_attempt_at, id) WHERE status = 'pending';
-- "Is there an earlier open record of this order?": a lookup in the open records only, so the
-- answer costs the same with 10 or 10 million sent records.
CREATE INDEX outbox_open_by_order ON outbox (order_id, id) WHERE status IN ('pending', 'dead');
DROP INDEX outbox_due;
