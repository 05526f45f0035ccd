#!/usr/bin/env bash
# The PostgreSQL claim query (crates/storage/src/postgres.rs, HEAD_DUE) on a scratch outbox of
# N pending notifications (4-5 per order, one due head per order), before and after ANALYZE.
# Creates and drops its own database kb_soak_plan_<pid>. Needs psql and a server on 127.0.0.1
# (user postgres). Usage: claim_plan_pg.sh N... (RELIABILITY.md, finding 2).
set -euo pipefail
PG="psql -h 127.0.0.1 -U postgres -X -q"
db="kb_soak_plan_$$"
$PG -c "CREATE DATABASE $db"
trap '$PG -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
for n in "$@"; do
  now=$(date +%s%3N)
  $PG -d "$db" <<SQL
DROP TABLE IF EXISTS outbox;
CREATE TABLE outbox (id BIGSERIAL PRIMARY KEY, order_id BIGINT NOT NULL, status TEXT NOT NULL,
  next_attempt_at BIGINT NOT NULL, lease_until BIGINT, created_at BIGINT NOT NULL);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_order ON outbox (order_id, id);
CREATE INDEX outbox_status_id ON outbox (status, id);
INSERT INTO outbox (order_id, status, next_attempt_at, created_at)
  SELECT i / 4.5, 'pending', $now - 600000 + i, $now - 600000 + i FROM generate_series(1, $n) i;
UPDATE outbox SET next_attempt_at = $now - 1000 WHERE id IN (SELECT MIN(id) FROM outbox GROUP BY order_id);
SQL
  q="SELECT o.id FROM outbox o WHERE o.status = 'pending' AND o.next_attempt_at <= $now AND (o.lease_until IS NULL OR o.lease_until <= $now)
     AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = o.order_id AND p.id < o.id AND p.status IN ('pending', 'dead'))
     ORDER BY o.next_attempt_at, o.id LIMIT 32"
  before=$($PG -d "$db" -At -c "SET statement_timeout = '120s'" -c "EXPLAIN (ANALYZE, FORMAT JSON) $q" | python3 -c 'import json,sys; p=json.load(sys.stdin)[0]; print("%.1f ms" % p["Execution Time"])' || echo "> 120 s (statement timeout)")
  $PG -d "$db" -c "ANALYZE outbox"
  after=$($PG -d "$db" -At -c "EXPLAIN (ANALYZE, FORMAT JSON) $q" | python3 -c 'import json,sys; p=json.load(sys.stdin)[0]; print("%.1f ms" % p["Execution Time"])')
  echo "pending $n: claim select without statistics $before; after ANALYZE $after"
done
