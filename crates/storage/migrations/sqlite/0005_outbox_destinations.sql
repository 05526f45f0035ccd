-- One outbox, several destinations: 'kuper' (notifications) and 'subscriber:<name>' (events
-- forwarded to the merchant's systems). Each (order, destination) is its own FIFO queue, so a
-- subscriber that is down never holds up Kuper's notifications, nor Kuper a subscriber.
ALTER TABLE outbox ADD COLUMN destination TEXT NOT NULL DEFAULT 'kuper';
DROP INDEX outbox_open_by_order;
CREATE INDEX outbox_open_by_order ON outbox (order_id, destination, id) WHERE status IN ('pending', 'dead');
