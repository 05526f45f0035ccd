-- The board at 100,000 orders (issue #11; measured in BENCHMARKS.md), and the deadline sweep.

-- Counts per state under a store or scheme filter, from the index alone: without `state` in
-- it, every order of the store was read (52 ms for 20,000 orders).
CREATE INDEX orders_store_state ON orders (store_id, state);
CREATE INDEX orders_scheme_state ON orders (scheme, state);

-- Names are found by the start of their words from a full-text index, not by scanning every
-- name with LIKE '%…%'. `ё` is stored as `е` (the application folds searches the same way).
UPDATE orders SET customer_name = replace(customer_name, 'ё', 'е')
    WHERE customer_name <> replace(customer_name, 'ё', 'е');
CREATE VIRTUAL TABLE order_names USING fts5(
    customer_name, content = 'orders', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 0'
);
-- Kept by the database itself, in the transaction that writes the order.
CREATE TRIGGER order_names_insert AFTER INSERT ON orders BEGIN
    INSERT INTO order_names (rowid, customer_name) VALUES (new.id, new.customer_name);
END;
CREATE TRIGGER order_names_update AFTER UPDATE OF customer_name ON orders
    WHEN old.customer_name IS NOT new.customer_name BEGIN
    INSERT INTO order_names (order_names, rowid, customer_name) VALUES ('delete', old.id, old.customer_name);
    INSERT INTO order_names (rowid, customer_name) VALUES (new.id, new.customer_name);
END;
CREATE TRIGGER order_names_delete AFTER DELETE ON orders BEGIN
    INSERT INTO order_names (order_names, rowid, customer_name) VALUES ('delete', old.id, old.customer_name);
END;
INSERT INTO order_names (order_names) VALUES ('rebuild');

-- The name index above replaces this one; orders still to be given their search columns (an
-- upgrade from before 0009) are found by this small one.
DROP INDEX orders_customer_name;
CREATE INDEX orders_unsearchable ON orders (id) WHERE customer_name IS NULL;

-- The deadline sweep reads only the orders whose next check has come, not every open order
-- every interval (issue #12, item 5: idle CPU grew with the open orders and its bursts were
-- the board's slowest answers). Every write of an order sets it to 0, "look at me"; the sweep
-- then sets the time of the next warning or miss still to record (or never, i64::MAX).
-- Existing orders start at 0: the first sweep after the upgrade looks at each once.
ALTER TABLE orders ADD COLUMN deadline_check_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX orders_deadline_check ON orders (deadline_check_at, id) WHERE state NOT IN ('delivered', 'canceled');
