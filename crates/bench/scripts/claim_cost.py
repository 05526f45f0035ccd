#!/usr/bin/env python3
"""Claim cost of the SQLite dispatcher against the size of its backlog (RELIABILITY.md, finding 1).

Usage: claim_cost.py SOAK_DB [N ...]

SOAK_DB is the kuper-bridge.db of a finished soak (`kuper-bridge-bench soak --keep` prints its
directory). It is never written: for each N a copy is made next to it, the last N outbox rows
are made pending again as a Kuper outage leaves them (the head of each order due now, the
records waiting behind it due since they were queued), and the gateway's own queries
(HEAD_DUE in crates/storage/src/sqlite.rs) are timed 20 times each. The copy is then deleted.
"""
import os
import shutil
import sqlite3
import sys
import time

HD = """o.status = 'pending' AND o.next_attempt_at <= :now AND (o.lease_until IS NULL OR o.lease_until <= :now)
    AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = o.order_id AND p.id < o.id AND p.status IN ('pending', 'dead'))"""
QUERIES = {
    "claim read (LIMIT 1)": f"SELECT o.id FROM outbox o WHERE {HD} LIMIT 1",
    "claim select (ORDER BY, LIMIT 32)": f"SELECT o.id FROM outbox o WHERE {HD} ORDER BY o.next_attempt_at, o.id LIMIT 32",
    "next_due_at": """SELECT MIN(CASE WHEN o.lease_until IS NOT NULL AND o.lease_until > :now THEN o.lease_until ELSE o.next_attempt_at END)
             FROM outbox o WHERE o.status = 'pending'
               AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_id = o.order_id AND p.id < o.id AND p.status IN ('pending', 'dead'))""",
}


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    src = sys.argv[1]
    sizes = [int(x) for x in sys.argv[2:]] or [1000, 5000, 10000, 20000, 40000]
    for n in sizes:
        dst = f"{src}.claim-cost-{n}"
        # A consistent copy even if the source has a WAL.
        with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as s, sqlite3.connect(dst) as d:
            s.backup(d)
        c = sqlite3.connect(dst)
        now = int(time.time() * 1000)
        c.execute(
            "UPDATE outbox SET status='pending', sent_at=NULL, lease_until=NULL, next_attempt_at=created_at "
            "WHERE id > (SELECT MAX(id) FROM outbox) - ?",
            (n,),
        )
        c.execute(
            "UPDATE outbox SET next_attempt_at = :now - 1000 WHERE status='pending' AND id IN "
            "(SELECT MIN(id) FROM outbox WHERE status='pending' GROUP BY order_id)",
            {"now": now},
        )
        c.commit()
        pending = c.execute("SELECT COUNT(*) FROM outbox WHERE status='pending'").fetchone()[0]
        heads = c.execute(f"SELECT COUNT(*) FROM outbox o WHERE {HD}", {"now": now}).fetchone()[0]
        out = [f"pending {pending:6d} (due heads {heads:5d})"]
        for name, q in QUERIES.items():
            c.execute(q, {"now": now}).fetchall()
            reps = 20
            t = time.perf_counter()
            for _ in range(reps):
                c.execute(q, {"now": now}).fetchall()
            out.append(f"{name} {1000 * (time.perf_counter() - t) / reps:7.2f} ms")
        print(" | ".join(out), flush=True)
        c.close()
        os.remove(dst)


if __name__ == "__main__":
    main()
