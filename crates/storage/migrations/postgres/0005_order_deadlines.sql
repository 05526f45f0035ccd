-- Deadline timers (issue #7 item 5): each warning and each miss of an order's deadline is
-- recorded once. The key makes a repeated sweep, a restart or a concurrent sweep a no-op, and
-- the timeline entry is written in the same transaction as the row (never one without the other).
CREATE TABLE order_deadlines (
    order_id BIGINT NOT NULL REFERENCES orders (id),
    -- restaurant_accept | assembly | delivery_window
    kind     TEXT NOT NULL,
    -- warning | missed
    stage    TEXT NOT NULL,
    -- The due time the stage was judged against (unix ms), as evidence: the delivery window
    -- may move later with order.updated.
    due_at   BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (order_id, kind, stage)
);

-- The sweep pages through open orders only; finished ones pile up and must cost nothing.
CREATE INDEX orders_open_for_deadlines ON orders (id) WHERE state NOT IN ('delivered', 'canceled');
