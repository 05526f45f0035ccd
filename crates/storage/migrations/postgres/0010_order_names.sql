-- Name search from a narrow table (issue #11). The GIN index of 0009 over the orders
-- themselves found a surname's ids in about 3 ms, but each hit then cost a read of its fat
-- order row (the id is not in a GIN index), twice per board request: p99 86 ms at 100,000
-- orders. Here each hit reads a row of a few dozen bytes. SQLite's FTS5 table works the
-- same way (sqlite 0010).
CREATE TABLE order_names (
    order_id BIGINT PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
    words tsvector NOT NULL
);

-- Kept by the database itself, in the transaction that writes the order, so no write path
-- can forget it. A name not yet derived (an upgrade from before 0008) has no row.
CREATE FUNCTION order_names_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.customer_name IS NULL THEN
        DELETE FROM order_names WHERE order_id = NEW.id;
    ELSE
        INSERT INTO order_names (order_id, words) VALUES (NEW.id, to_tsvector('simple', NEW.customer_name))
            ON CONFLICT (order_id) DO UPDATE SET words = EXCLUDED.words;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER order_names_insert AFTER INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION order_names_keep();
CREATE TRIGGER order_names_update AFTER UPDATE OF customer_name ON orders
    FOR EACH ROW WHEN (OLD.customer_name IS DISTINCT FROM NEW.customer_name) EXECUTE FUNCTION order_names_keep();

INSERT INTO order_names (order_id, words)
    SELECT id, to_tsvector('simple', customer_name) FROM orders WHERE customer_name IS NOT NULL;
CREATE INDEX order_names_words ON order_names USING gin (words);
DROP INDEX orders_name_words;
