//! The outbox protocol on both backends — a real SQLite file, and a fresh PostgreSQL database
//! per test: head-of-queue claims (per-order FIFO), leases and their takeover, dead letters
//! that hold only their order, the dispatcher's next wake-up, replay and skip. Then what only
//! PostgreSQL has: several replicas on one database (concurrent claims, concurrent duplicate
//! `order.created`, wake-ups across processes).
//!
//! The PostgreSQL server comes from `KUPER_BRIDGE_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); its tests fail, not skip, when it is down.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

use kuper_bridge_domain::deadlines::{DeadlineKind, DeadlineStage};
use kuper_bridge_domain::{Action, CancelDescription, CancelReason, Policy};
use kuper_bridge_storage::{
    ActionRequest, AttemptOutcome, AttemptReport, DeadlineCheck, DeadlineCursor, Exchange, IngestResult, OrderFilter,
    OutboxRecord, OutboxStatus, Store, StoreOptions,
};
use kuper_bridge_wire::WebhookEnvelope;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CREATED: &str = include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json");

fn respond(_: &IngestResult) -> (u16, String) {
    (200, String::new())
}

fn created_envelope(n: u32) -> (String, WebhookEnvelope) {
    let id = format!("H7{n:010}");
    let mut body: Value = serde_json::from_str(CREATED).unwrap();
    body["payload"]["originalOrderId"] = Value::String(id.clone());
    body["payload"]["orderUUID"] = Value::String(format!("t:{n}"));
    (id, WebhookEnvelope::parse(body.to_string().as_bytes()).unwrap())
}

/// A new order in `new` (nothing queued yet); returns its Kuper id.
async fn created(s: &dyn Store, n: u32) -> String {
    let (id, env) = created_envelope(n);
    s.ingest_webhook(&env, Exchange::default(), &Policy::default(), respond).await.unwrap();
    id
}

/// A new order in `in_work` with its `order.in_work` notification queued; returns its Kuper id.
async fn order(s: &dyn Store, n: u32) -> String {
    let id = created(s, n).await;
    act(s, &id, Action::StartAssembly).await;
    id
}

async fn act(s: &dyn Store, id: &str, action: Action) -> Vec<OutboxRecord> {
    s.apply_action(id, ActionRequest::Action(action), &Policy::default(), Exchange::default())
        .await
        .unwrap()
        .notifications
}

async fn complete(s: &dyn Store, r: &OutboxRecord, outcome: AttemptOutcome) {
    let report = AttemptReport { outcome, status: Some(200), error: None, exchange: Exchange::default() };
    s.complete_attempt(r.id, r.lease.as_deref().unwrap(), report).await.unwrap();
}

fn now() -> i64 {
    kuper_bridge_storage::now_ms()
}

#[macro_use]
mod common;
use common::db;
use common::db::Open;

on_both_backends!(
    only_the_head_of_each_queue_is_claimed,
    next_wake_up_ignores_records_waiting_behind_their_head,
    a_dead_letter_holds_only_its_order,
    skip_lets_the_next_notification_go,
    an_expired_lease_is_taken_over_and_the_late_result_ignored,
    kupers_cancel_drops_what_is_queued,
    every_notification_has_its_own_idempotency_key,
    a_duplicate_order_created_gets_the_same_number,
    stats_count_pending_and_dead,
    filters_select_what_they_name,
    the_audit_log_is_purged_past_its_retention,
    waiting_records_are_flagged_and_promoted_one_at_a_time,
    a_deadline_stage_is_recorded_once_with_its_timeline_entry,
    the_deadline_sweep_sees_open_orders_only_with_what_is_recorded,
);

async fn only_the_head_of_each_queue_is_claimed(s: &dyn Store) {
    let a = order(s, 1).await;
    act(s, &a, Action::Ready { positions: None }).await; // queues assembled + ready_for_delivery
    let b = order(s, 2).await;
    let claimed = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    let events: Vec<&str> = claimed.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(events, ["order.in_work", "order.in_work"], "one head per order, oldest first");
    assert_ne!(claimed[0].order_id, claimed[1].order_id);
    // While the heads are leased nothing else of those orders is claimable.
    assert!(s.claim_due("w", now(), 60_000, 10).await.unwrap().is_empty());
    let first_a = claimed.iter().find(|r| r.order_id == claimed[0].order_id).unwrap();
    complete(s, first_a, AttemptOutcome::Delivered).await;
    let next = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event, "order.assembled", "the next of order {a} became the head");
    let _ = b;
}

async fn next_wake_up_ignores_records_waiting_behind_their_head(s: &dyn Store) {
    let a = order(s, 1).await;
    act(s, &a, Action::Ready { positions: None }).await;
    let t = now();
    let head = s.claim_due("w", t, 60_000, 10).await.unwrap().remove(0);
    // In flight: the next wake-up is the lease's end, not "now" for the records behind it.
    let due = s.next_due_at(t).await.unwrap().unwrap();
    assert!(due >= t + 59_000, "due {due} vs now {t}");
    // Retry in 10 s: the wake-up moves there, not to the (already due) records behind it.
    complete(s, &head, AttemptOutcome::Retry { next_attempt_at: t + 10_000, in_doubt: false }).await;
    assert_eq!(s.next_due_at(t).await.unwrap(), Some(t + 10_000));
    assert!(s.claim_due("w", t, 60_000, 10).await.unwrap().is_empty());
}

async fn a_dead_letter_holds_only_its_order(s: &dyn Store) {
    let a = order(s, 1).await;
    let b = order(s, 2).await;
    let heads = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    let (dead, other) = (&heads[0], &heads[1]);
    complete(s, dead, AttemptOutcome::Dead).await;
    complete(s, other, AttemptOutcome::Delivered).await;
    act(s, &a, Action::Assembled).await;
    act(s, &b, Action::Assembled).await;
    let claimed = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "only the order without a dead letter flows");
    assert_eq!(claimed[0].order_id, other.order_id);
    complete(s, &claimed[0], AttemptOutcome::Delivered).await;
    assert_eq!(s.next_due_at(now()).await.unwrap(), None, "a blocked order never wakes the dispatcher");
    // Replay: the dead letter is pending again, with a fresh schedule and give-up clock.
    let replayed = s.replay(dead.id, Exchange::default()).await.unwrap();
    assert_eq!(replayed.status, OutboxStatus::Pending);
    assert_eq!(replayed.attempts, 0);
    assert!(replayed.retry_since >= dead.created_at);
    let claimed = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    assert_eq!(claimed[0].id, dead.id);
}

async fn skip_lets_the_next_notification_go(s: &dyn Store) {
    let a = order(s, 1).await;
    let head = s.claim_due("w", now(), 60_000, 10).await.unwrap().remove(0);
    complete(s, &head, AttemptOutcome::Dead).await;
    act(s, &a, Action::Assembled).await;
    assert!(s.replay(head.id + 1, Exchange::default()).await.is_err(), "only dead letters");
    s.skip(head.id, Exchange::default()).await.unwrap();
    let claimed = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    assert_eq!(claimed[0].event, "order.assembled");
}

async fn an_expired_lease_is_taken_over_and_the_late_result_ignored(s: &dyn Store) {
    order(s, 1).await;
    let t = now();
    let first = s.claim_due("w", t, 100, 10).await.unwrap().remove(0);
    assert!(!first.in_doubt);
    // The same worker claims again after the lease ran out: a new lease token, in doubt.
    let second = s.claim_due("w", t + 200, 60_000, 10).await.unwrap().remove(0);
    assert_eq!(second.id, first.id);
    assert_ne!(second.lease, first.lease);
    assert_eq!(second.record.lease.as_deref(), Some(second.lease.as_str()), "the record shows its claim's lease");
    assert_eq!(
        second.lease,
        format!("w/{}/{}", first.id, t + 200),
        "owner/id/claim time (never reused, even after a replay)"
    );
    assert!(second.in_doubt, "the first attempt may have reached Kuper");
    complete(s, &first, AttemptOutcome::Delivered).await; // late: ignored
    let record = s.get_outbox(first.id).await.unwrap().unwrap();
    assert_eq!(record.status, OutboxStatus::Pending, "the late result did not override the live claim");
    complete(s, &second, AttemptOutcome::Delivered).await;
    assert_eq!(s.get_outbox(first.id).await.unwrap().unwrap().status, OutboxStatus::Sent);
    let history = s.outbox_attempts(first.id).await.unwrap();
    assert!(history.iter().any(|e| e.exchange.detail.as_deref().unwrap_or("").contains("late result")));
}

async fn kupers_cancel_drops_what_is_queued(s: &dyn Store) {
    let a = order(s, 1).await;
    act(s, &a, Action::Ready { positions: None }).await;
    let body = format!(r#"{{"event_type":"order.canceled","payload":{{"originalOrderId":"{a}"}}}}"#);
    let env = WebhookEnvelope::parse(body.as_bytes()).unwrap();
    s.ingest_webhook(&env, Exchange::default(), &Policy::default(), respond).await.unwrap();
    let records = s.list_outbox(None, 100).await.unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.status == OutboxStatus::Skipped), "{records:?}");
    assert!(s.claim_due("w", now(), 60_000, 10).await.unwrap().is_empty());
}

async fn every_notification_has_its_own_idempotency_key(s: &dyn Store) {
    let a = order(s, 1).await;
    act(s, &a, Action::Ready { positions: None }).await;
    let records = s.list_outbox(None, 100).await.unwrap();
    let mut keys: Vec<&str> = records.iter().map(|r| r.idempotency_key.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.starts_with("kb-") && k.len() > 30));
}

async fn a_duplicate_order_created_gets_the_same_number(s: &dyn Store) {
    let (_, env) = created_envelope(5);
    let policy = Policy::default();
    let first = s.ingest_webhook(&env, Exchange::default(), &policy, respond).await.unwrap();
    let again = s.ingest_webhook(&env, Exchange::default(), &policy, respond).await.unwrap();
    let (
        IngestResult::Created { order_id: id1, answer: a1, duplicate: false },
        IngestResult::Created { order_id: id2, answer: a2, duplicate: true },
    ) = (&first, &again)
    else {
        panic!("{first:?} / {again:?}");
    };
    assert_eq!(id1, id2);
    assert_eq!(a1.number, a2.number);
    assert_eq!(a1.number, format!("KB-{id1}"), "the number is the prefix and the row id");
    let stored = s.find_order(&a1.number).await.unwrap().unwrap();
    assert_eq!(stored.id, *id1);
    assert_eq!(s.order_events(*id1).await.unwrap().len(), 2, "both deliveries are in the timeline");
}

async fn stats_count_pending_and_dead(s: &dyn Store) {
    assert_eq!(s.outbox_stats().await.unwrap().pending, 0);
    let a = order(s, 1).await;
    order(s, 2).await;
    act(s, &a, Action::Assembled).await;
    let stats = s.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (3, 0));
    assert!(stats.oldest_pending_at.is_some());
    let head = s.claim_due("w", now(), 60_000, 1).await.unwrap().remove(0);
    complete(s, &head, AttemptOutcome::Dead).await;
    let stats = s.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (2, 1));
    assert_eq!(s.list_outbox(Some(OutboxStatus::Dead), 10).await.unwrap().len(), 1);
}

/// SQLite serves one process per file, so leases it does not own at start are a dead
/// predecessor's.
#[tokio::test]
async fn sqlite_releases_leases_of_a_dead_process_at_start() {
    let (s, _d) = db::sqlite().await;
    order(&*s, 1).await;
    let claimed = s.claim_due("old-process", now(), 600_000, 10).await.unwrap().remove(0);
    assert_eq!(s.release_stale_leases("new-process").await.unwrap(), 1);
    let again = s.claim_due("new-process", now(), 60_000, 10).await.unwrap().remove(0);
    assert_eq!(again.id, claimed.id);
    assert!(again.in_doubt);
    assert_eq!(s.release_stale_leases("new-process").await.unwrap(), 0, "our own leases stay");
}

/// PostgreSQL serves several replicas: a lease we do not own may be a live replica's, so it is
/// left to expire.
#[tokio::test]
async fn postgres_never_releases_another_replicas_lease() {
    let Some(db) = db::postgres().await else { return };
    let s = db.store().await;
    order(&*s, 1).await;
    let claimed = s.claim_due("other-replica", now(), 600_000, 10).await.unwrap().remove(0);
    assert_eq!(s.release_stale_leases("this-replica").await.unwrap(), 0);
    assert!(s.claim_due("this-replica", now(), 60_000, 10).await.unwrap().is_empty());
    let expired = s.claim_due("this-replica", now() + 600_001, 60_000, 10).await.unwrap().remove(0);
    assert_eq!(expired.id, claimed.id, "taken over once the lease ran out");
    assert!(expired.in_doubt);
    drop(s);
    db.drop_database().await.expect("drop the test database");
}

/// What one claimant saw: every claim is checked against all the others.
#[derive(Default)]
struct Claims {
    /// order id → the record of it being sent now.
    in_flight: HashMap<i64, i64>,
    claimed: HashSet<i64>,
    /// order id → the last record of it claimed.
    last: HashMap<i64, i64>,
}

/// Claims and delivers until `expected` records have been claimed (by anyone).
async fn claimant(s: Arc<dyn Store>, owner: String, seen: Arc<Mutex<Claims>>, expected: usize) {
    loop {
        if seen.lock().unwrap().claimed.len() >= expected {
            return;
        }
        let batch = s.claim_due(&owner, now(), 60_000, 4).await.unwrap();
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        {
            let mut c = seen.lock().unwrap();
            for r in &batch {
                assert!(c.claimed.insert(r.id), "record {} claimed twice", r.id);
                if let Some(other) = c.in_flight.insert(r.order_id, r.id) {
                    panic!("order {}: records {other} and {} in flight at once", r.order_id, r.id);
                }
                if let Some(previous) = c.last.insert(r.order_id, r.id) {
                    assert!(previous < r.id, "order {}: {} claimed after {previous}", r.order_id, r.id);
                }
            }
        }
        // Its predecessors' deliveries committed before a record became claimable.
        let all = s.list_outbox(None, 10_000).await.unwrap();
        for r in &batch {
            for p in all.iter().filter(|p| p.order_id == r.order_id && p.id < r.id) {
                assert_eq!(p.status, OutboxStatus::Sent, "{} handed out before {} of its order was sent", r.id, p.id);
            }
        }
        tokio::time::sleep(Duration::from_millis((batch[0].id % 3) as u64)).await;
        for r in &batch {
            // Out of the in-flight map before the commit that lets the next record go.
            seen.lock().unwrap().in_flight.remove(&r.order_id);
            complete(&*s, r, AttemptOutcome::Delivered).await;
        }
    }
}

/// Two replicas (two pools), two dispatch loops each, over many orders with several
/// notifications each, queued partly while the claims run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_claim_each_record_once_and_each_order_in_order() {
    const ORDERS: u32 = 24;
    let Some(db) = db::postgres().await else { return };
    let replicas = [db.store().await, db.store().await];
    let mut ids = Vec::new();
    for n in 0..ORDERS {
        ids.push(order(&*replicas[n as usize % 2], n).await);
    }
    let expected = ORDERS as usize * 3;
    let seen = Arc::new(Mutex::new(Claims::default()));
    let mut claimants = tokio::task::JoinSet::new();
    for i in 0..4 {
        claimants.spawn(claimant(
            replicas[i % 2].clone(),
            format!("replica-{}/loop-{i}", i % 2),
            seen.clone(),
            expected,
        ));
    }
    // Meanwhile the stores finish assembly: two more notifications per order.
    for (n, id) in ids.iter().enumerate() {
        act(&*replicas[n % 2], id, Action::Ready { positions: None }).await;
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = claimants.join_next().await {
            done.unwrap();
        }
    })
    .await
    .expect("every record claimed within 60 s");
    let records = replicas[0].list_outbox(None, 10_000).await.unwrap();
    assert_eq!(records.len(), expected);
    for r in &records {
        assert_eq!(r.status, OutboxStatus::Sent, "{r:?}");
        assert_eq!(r.attempts, 1, "record {} claimed exactly once", r.id);
    }
    assert_eq!(seen.lock().unwrap().claimed.len(), expected);
    drop(replicas);
    db.drop_database().await.expect("drop the test database");
}

/// Kuper's `order.created` and its retry reaching two replicas at once: one order, one number.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_duplicate_order_created_makes_one_order() {
    const DELIVERIES: usize = 20;
    let Some(db) = db::postgres().await else { return };
    let replicas = [db.store().await, db.store().await];
    let (_, env) = created_envelope(9);
    let start = Arc::new(tokio::sync::Barrier::new(DELIVERIES));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..DELIVERIES {
        let (s, env, start) = (replicas[i % 2].clone(), env.clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            s.ingest_webhook(&env, Exchange::default(), &Policy::default(), respond).await.unwrap()
        });
    }
    let mut answers = Vec::new();
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            IngestResult::Created { order_id, answer, duplicate } => answers.push((order_id, answer.number, duplicate)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(answers.len(), DELIVERIES);
    assert_eq!(answers.iter().filter(|a| !a.2).count(), 1, "exactly one delivery created the order: {answers:?}");
    let (order_id, number, _) = answers[0].clone();
    assert!(answers.iter().all(|a| a.0 == order_id && a.1 == number), "{answers:?}");
    let orders = replicas[1].list_orders(&OrderFilter { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].order.number, number);
    assert_eq!(replicas[0].order_events(order_id).await.unwrap().len(), DELIVERIES, "every delivery audited");
    drop(replicas);
    db.drop_database().await.expect("drop the test database");
}

/// Order ids come from the sequence a block at a time per process: two replicas creating
/// orders at once never share an id or a number, and each number is the prefix and its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_creating_orders_at_once_never_share_a_number() {
    const ORDERS: u32 = 60;
    let Some(db) = db::postgres().await else { return };
    let replicas = [db.store().await, db.store().await];
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..ORDERS {
        let s = replicas[n as usize % 2].clone();
        tasks.spawn(async move {
            let (_, env) = created_envelope(1000 + n);
            s.ingest_webhook(&env, Exchange::default(), &Policy::default(), respond).await.unwrap()
        });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            IngestResult::Created { order_id, answer, duplicate: false } => {
                assert_eq!(answer.number, format!("{}{order_id}", Policy::default().number_prefix));
                assert!(ids.insert(order_id), "id {order_id} handed out twice");
            }
            other => panic!("{other:?}"),
        }
    }
    let orders = replicas[0].list_orders(&OrderFilter { limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(orders.len(), ORDERS as usize);
    assert!(orders.iter().all(|o| ids.contains(&o.id) && o.order.number.ends_with(&o.id.to_string())));
    drop(replicas);
    db.drop_database().await.expect("drop the test database");
}

/// Waits (briefly) for a wake-up left over from setting up, so the next one is fresh.
async fn drain(signal: &tokio::sync::Notify) {
    let _ = tokio::time::timeout(Duration::from_millis(300), signal.notified()).await;
}

/// A commit on one replica wakes the dispatcher of another, also after the listening
/// connection was lost and re-established.
#[tokio::test]
async fn postgres_a_commit_on_one_replica_wakes_the_others() {
    let Some(db) = db::postgres().await else { return };
    let (one, two) = (db.store().await, db.store().await);
    let signal = two.outbox_signal();
    let a = created(&*one, 1).await;
    drain(&signal).await;
    act(&*one, &a, Action::StartAssembly).await;
    tokio::time::timeout(Duration::from_secs(1), signal.notified())
        .await
        .expect("replica two woken within a second by replica one's commit");

    // Cut both listeners' connections, as a database restart or a network fault would.
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let listeners = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'";
    let before: Vec<i32> = sqlx::query_scalar(listeners).fetch_all(&mut conn).await.unwrap();
    assert_eq!(before.len(), 2, "one listening connection per store");
    for pid in &before {
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut conn).await.unwrap();
    }
    let mut reconnected = false;
    for _ in 0..100 {
        let now: Vec<i32> = sqlx::query_scalar(listeners).fetch_all(&mut conn).await.unwrap();
        if now.len() == 2 && now.iter().all(|pid| !before.contains(pid)) {
            reconnected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reconnected, "the listeners reconnected within 10 s");
    drain(&signal).await;
    act(&*one, &a, Action::Assembled).await;
    tokio::time::timeout(Duration::from_secs(1), signal.notified())
        .await
        .expect("woken after the listener reconnected");
    // A dropped store stops its listener: nothing is left holding the database.
    drop((one, two));
    let mut released = false;
    for _ in 0..50 {
        if sqlx::query_scalar::<_, i32>(listeners).fetch_all(&mut conn).await.unwrap().is_empty() {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(released, "the listeners of dropped stores closed their connections");
    let _ = conn.close().await;
    db.drop_database().await.expect("drop the test database");
}

/// A bad URL is a configuration error, an unreachable server an outage (503), never a panic.
#[tokio::test]
async fn postgres_open_reports_bad_urls_and_unreachable_servers() {
    let bad = kuper_bridge_storage::open("postgres://[", &StoreOptions::default()).await;
    assert!(matches!(bad, Err(kuper_bridge_storage::StoreError::Config(_))), "{:?}", bad.err());
    // Port 1 on loopback: nothing listens there. Refused at once, not after the pool's timeout.
    let started = std::time::Instant::now();
    let down = kuper_bridge_storage::open("postgres://postgres@127.0.0.1:1/postgres", &StoreOptions::default()).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(down.as_ref().is_err_and(|e| e.is_unavailable()), "{:?}", down.err());
}

async fn filters_select_what_they_name(s: &dyn Store) {
    let a = order(s, 1).await;
    created(s, 2).await;
    let all = s.list_orders(&kuper_bridge_storage::OrderFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 2);
    let f =
        |state: &str| kuper_bridge_storage::OrderFilter { state: Some(state.into()), limit: 10, ..Default::default() };
    let in_work = s.list_orders(&f("in_work")).await.unwrap();
    assert_eq!(in_work.len(), 1);
    assert_eq!(in_work[0].order.original_order_id.as_deref(), Some(a.as_str()));
    assert!(s.list_orders(&f("delivered")).await.unwrap().is_empty());
    let page = s
        .list_orders(&kuper_bridge_storage::OrderFilter { limit: 1, before_id: Some(all[0].id), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, all[1].id, "the cursor pages to older orders");
    assert_eq!(s.list_outbox(Some(OutboxStatus::Pending), 10).await.unwrap().len(), 1);
    assert!(s.list_outbox(Some(OutboxStatus::Sent), 10).await.unwrap().is_empty());
}

async fn the_audit_log_is_purged_past_its_retention(s: &dyn Store) {
    let a = order(s, 1).await;
    let id = s.find_order(&a).await.unwrap().unwrap().id;
    let before = s.order_events(id).await.unwrap().len();
    assert!(before >= 2);
    assert_eq!(s.purge_events(0).await.unwrap(), 0, "nothing is older than the epoch");
    assert_eq!(s.purge_events(now() + 1).await.unwrap(), 0, "an open order keeps its history");
    assert_eq!(s.order_events(id).await.unwrap().len(), before);
    // Kuper cancels: the order is final and its queued notification skipped.
    let body = format!(r#"{{"event_type":"order.canceled","payload":{{"originalOrderId":"{a}"}}}}"#);
    let env = WebhookEnvelope::parse(body.as_bytes()).unwrap();
    s.ingest_webhook(&env, Exchange::default(), &Policy::default(), respond).await.unwrap();
    assert!(s.purge_events(now() + 1).await.unwrap() > before as u64);
    assert!(s.order_events(id).await.unwrap().is_empty());
    assert!(s.find_order(&a).await.unwrap().is_some(), "orders stay; only their history goes");
}

async fn waiting_records_are_flagged_and_promoted_one_at_a_time(s: &dyn Store) {
    let a = order(s, 1).await;
    act(s, &a, Action::Ready { positions: None }).await; // in_work, assembled, ready_for_delivery
    let waiting = |records: Vec<OutboxRecord>| {
        let mut r: Vec<(String, bool)> = records.into_iter().map(|r| (r.event, r.waiting)).collect();
        r.reverse(); // listed newest first
        r
    };
    let listed = waiting(s.list_outbox(None, 10).await.unwrap());
    assert_eq!(
        listed,
        [("order.in_work".into(), false), ("order.assembled".into(), true), ("order.ready_for_delivery".into(), true)]
    );
    let head = s.claim_due("w", now(), 60_000, 10).await.unwrap().remove(0);
    complete(s, &head, AttemptOutcome::Delivered).await;
    let listed = waiting(s.list_outbox(Some(OutboxStatus::Pending), 10).await.unwrap());
    assert_eq!(listed, [("order.assembled".into(), false), ("order.ready_for_delivery".into(), true)]);
    // A dead letter keeps the records behind it waiting; skipping it promotes the next.
    let head = s.claim_due("w", now(), 60_000, 10).await.unwrap().remove(0);
    complete(s, &head, AttemptOutcome::Dead).await;
    assert!(s.get_outbox(head.id + 1).await.unwrap().unwrap().waiting);
    s.skip(head.id, Exchange::default()).await.unwrap();
    let next = s.get_outbox(head.id + 1).await.unwrap().unwrap();
    assert!(!next.waiting);
    assert_eq!(s.claim_due("w", now(), 60_000, 10).await.unwrap()[0].id, next.id);
    // Nothing stranded: the repair pass finds nothing to do.
    assert_eq!(s.repair_queue_heads(now()).await.unwrap(), 0);
}

/// A record written by an older version (no queue-head promotion) behind a record that is
/// now final: the dispatcher's repair pass makes it due, and never one behind an open record.
mod stranded {
    use super::*;
    use sqlx::Connection;

    const WAITING: i64 = 253_402_300_799_999;

    async fn strand_all_pending(url: &str) {
        let sql = "UPDATE outbox SET next_attempt_at = 253402300799999 WHERE status = 'pending'";
        if url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        } else {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }

    async fn scenario(s: &dyn Store, url: &str) {
        let a = order(s, 1).await;
        act(s, &a, Action::Assembled).await;
        strand_all_pending(url).await;
        assert!(s.claim_due("w", now(), 60_000, 10).await.unwrap().is_empty(), "stranded: nothing due");
        assert_eq!(s.repair_queue_heads(now()).await.unwrap(), 1, "only the first of the order");
        let head = s.claim_due("w", now(), 60_000, 10).await.unwrap();
        assert_eq!(head.len(), 1);
        assert_eq!(head[0].event, "order.in_work");
        assert!(s.get_outbox(head[0].id + 1).await.unwrap().unwrap().next_attempt_at < WAITING);
        assert!(s.get_outbox(head[0].id + 1).await.unwrap().unwrap().waiting);
        assert_eq!(s.repair_queue_heads(now()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn sqlite_repair_makes_the_stranded_head_due() {
        let (s, dir) = crate::db::sqlite().await;
        scenario(&*s, dir.url()).await;
    }

    #[tokio::test]
    async fn postgres_repair_makes_the_stranded_head_due() {
        let Some(db) = crate::db::postgres().await else { return };
        let s = db.store().await;
        scenario(&*s, db.url()).await;
        drop(s);
        db.drop_database().await.expect("drop the test database");
    }
}

/// The claim reads due heads through the partial indexes, whatever the statistics say (a
/// fresh database has none): the plan that once scanned the whole backlog per candidate
/// (RELIABILITY.md, findings 1 and 2) cannot come back unnoticed.
mod claim_plan {
    use super::*;
    use sqlx::Connection;

    async fn fill(s: &dyn Store) {
        for n in 0..50 {
            let id = order(s, n).await;
            act(s, &id, Action::Ready { positions: None }).await;
        }
    }

    #[tokio::test]
    async fn sqlite_claim_uses_the_due_and_open_indexes() {
        let (s, dir) = crate::db::sqlite().await;
        fill(&*s).await;
        let mut c = sqlx::SqliteConnection::connect(dir.url()).await.unwrap();
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN QUERY PLAN {}", kuper_bridge_storage::claim_candidates_sql(false)))
                .bind(now())
                .fetch_all(&mut c)
                .await
                .unwrap_or_else(|_| Vec::new());
        let plan = if plan.is_empty() {
            // EXPLAIN QUERY PLAN rows are (id, parent, notused, detail).
            sqlx::query_as::<_, (i64, i64, i64, String)>(&format!(
                "EXPLAIN QUERY PLAN {}",
                kuper_bridge_storage::claim_candidates_sql(false)
            ))
            .bind(now())
            .fetch_all(&mut c)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.3)
            .collect()
        } else {
            plan
        };
        let text = plan.join("\n");
        assert!(text.contains("outbox_pending_due"), "{text}");
        assert!(text.contains("outbox_open_by_order"), "{text}");
    }

    #[tokio::test]
    async fn postgres_claim_uses_the_due_and_open_indexes_without_statistics() {
        let Some(db) = crate::db::postgres().await else { return };
        let s = db.store().await;
        fill(&*s).await;
        let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN {}", kuper_bridge_storage::claim_candidates_sql(true)))
                .bind(now())
                .fetch_all(&mut c)
                .await
                .unwrap();
        let text = plan.join("\n");
        assert!(text.contains("outbox_pending_due"), "{text}");
        assert!(text.contains("outbox_open_by_order"), "{text}");
        assert!(!text.contains("BitmapAnd"), "{text}");
        drop(c);
        drop(s);
        db.drop_database().await.expect("drop the test database");
    }
}

/// The timeline entry the deadline sweep writes.
fn deadline_exchange(kind: &str, stage: &str) -> Exchange {
    Exchange {
        kind: "deadline".into(),
        direction: "internal".into(),
        event: Some(kind.into()),
        outcome: Some(stage.into()),
        detail: Some(format!("{kind} {stage}")),
        ..Default::default()
    }
}

async fn order_id_of(s: &dyn Store, reference: &str) -> i64 {
    s.find_order(reference).await.unwrap().unwrap().id
}

fn deadline_entries(events: &[kuper_bridge_storage::EventRecord]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.exchange.kind == "deadline")
        .map(|e| (e.exchange.event.clone().unwrap_or_default(), e.exchange.outcome.clone().unwrap_or_default()))
        .collect()
}

async fn a_deadline_stage_is_recorded_once_with_its_timeline_entry(s: &dyn Store) {
    let id = order_id_of(s, &created(s, 1).await).await;
    let due = now();
    assert!(s
        .record_deadline(
            id,
            DeadlineKind::Assembly,
            DeadlineStage::Warning,
            due,
            deadline_exchange("assembly", "warning")
        )
        .await
        .unwrap());
    assert!(!s
        .record_deadline(
            id,
            DeadlineKind::Assembly,
            DeadlineStage::Warning,
            due,
            deadline_exchange("assembly", "warning")
        )
        .await
        .unwrap());
    assert!(s
        .record_deadline(
            id,
            DeadlineKind::Assembly,
            DeadlineStage::Missed,
            due,
            deadline_exchange("assembly", "missed")
        )
        .await
        .unwrap());
    // Another kind of the same order is its own timer.
    assert!(s
        .record_deadline(
            id,
            DeadlineKind::RestaurantAccept,
            DeadlineStage::Missed,
            due,
            deadline_exchange("restaurant_accept", "missed")
        )
        .await
        .unwrap());
    assert!(!s
        .record_deadline(
            id,
            DeadlineKind::Assembly,
            DeadlineStage::Missed,
            due,
            deadline_exchange("assembly", "missed")
        )
        .await
        .unwrap());
    let events = s.order_events(id).await.unwrap();
    assert_eq!(
        deadline_entries(&events),
        [("assembly", "warning"), ("assembly", "missed"), ("restaurant_accept", "missed")]
            .map(|(k, st)| (k.to_string(), st.to_string())),
        "one timeline entry per new stage, none for repeats"
    );
    let e = events.iter().find(|e| e.exchange.kind == "deadline").unwrap();
    assert_eq!(e.exchange.direction, "internal");
    assert_eq!(e.order_id, Some(id));
}

async fn the_deadline_sweep_sees_open_orders_only_with_what_is_recorded(s: &dyn Store) {
    let a = created(s, 1).await;
    let b = created(s, 2).await;
    let c = created(s, 3).await;
    let (ida, idb, idc) = (order_id_of(s, &a).await, order_id_of(s, &b).await, order_id_of(s, &c).await);
    act(
        s,
        &b,
        Action::Cancel {
            reason: CancelReason::parse("out_of_stock", &Policy::default().cancel_reasons),
            description: Ok(CancelDescription::default()),
        },
    )
    .await;
    s.record_deadline(ida, DeadlineKind::Assembly, DeadlineStage::Warning, 1, deadline_exchange("assembly", "warning"))
        .await
        .unwrap();
    s.record_deadline(idb, DeadlineKind::Assembly, DeadlineStage::Warning, 1, deadline_exchange("assembly", "warning"))
        .await
        .unwrap();
    let now = kuper_bridge_storage::now_ms();
    let due = |limit| s.orders_due_for_deadlines(now, DeadlineCursor::START, limit);
    let page = due(100).await.unwrap();
    assert_eq!(page.iter().map(|c| c.order.id).collect::<Vec<_>>(), vec![ida, idc], "canceled order skipped");
    assert!(page[0].has_recorded(DeadlineKind::Assembly, DeadlineStage::Warning));
    assert!(!page[0].has_recorded(DeadlineKind::Assembly, DeadlineStage::Missed));
    assert!(page[1].recorded.is_empty());
    // Cursor paging in (check time, id) order.
    let first = due(1).await.unwrap();
    assert_eq!(first.len(), 1);
    let after = DeadlineCursor { check_at: first[0].check_at, order_id: first[0].order.id };
    let rest = s.orders_due_for_deadlines(now, after, 1).await.unwrap();
    assert_eq!(rest.iter().map(|c| c.order.id).collect::<Vec<_>>(), vec![idc]);

    // A check set for later takes the order out of the due set until then…
    let check = |c: &kuper_bridge_storage::DeadlineCandidate, next_at| DeadlineCheck {
        order_id: c.order.id,
        read_updated_at: c.order.updated_at,
        next_at,
    };
    s.set_deadline_checks(&[check(&page[0], Some(now + 60_000)), check(&page[1], None)]).await.unwrap();
    assert!(due(100).await.unwrap().is_empty());
    let later = s.orders_due_for_deadlines(now + 60_000, DeadlineCursor::START, 100).await.unwrap();
    assert_eq!(later.iter().map(|c| c.order.id).collect::<Vec<_>>(), vec![ida]);
    assert_eq!(later[0].check_at, now + 60_000);
    // …and any write of the order makes it due again, however the sweep decided.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await; // a later `updated_at`
    act(s, &c, Action::StartAssembly).await;
    assert_eq!(due(100).await.unwrap().iter().map(|c| c.order.id).collect::<Vec<_>>(), vec![idc]);
    // A check decided from an older read leaves a newer write's "due" alone.
    s.set_deadline_checks(&[check(&page[1], None)]).await.unwrap();
    assert_eq!(due(100).await.unwrap().iter().map(|c| c.order.id).collect::<Vec<_>>(), vec![idc]);

    // A new process reads every open order once, whenever its check falls (its settings may
    // differ from the process that stored them).
    let every = s.orders_due_for_deadlines(i64::MAX, DeadlineCursor::START, 100).await.unwrap();
    assert_eq!(every.iter().map(|c| c.order.id).collect::<Vec<_>>(), vec![idc, ida], "by check time, then id");
    // A check stored again unchanged leaves the row alone; a changed one is stored.
    let fresh_a = &every[1];
    s.set_deadline_checks(&[check(fresh_a, Some(now + 60_000))]).await.unwrap();
    s.set_deadline_checks(&[check(fresh_a, Some(now + 1))]).await.unwrap();
    let moved = s.orders_due_for_deadlines(now + 1, DeadlineCursor::START, 100).await.unwrap();
    assert_eq!(moved.iter().map(|c| (c.order.id, c.check_at)).collect::<Vec<_>>(), vec![(idc, 0), (ida, now + 1)]);

    // Past due: a miss on record for an order still short of the promise.
    s.record_deadline(ida, DeadlineKind::Assembly, DeadlineStage::Missed, 1, deadline_exchange("assembly", "missed"))
        .await
        .unwrap();
    s.record_deadline(
        idc,
        DeadlineKind::RestaurantAccept,
        DeadlineStage::Missed,
        1,
        deadline_exchange("restaurant_accept", "missed"),
    )
    .await
    .unwrap();
    let past = s.past_due_counts().await.unwrap();
    assert_eq!(past, vec![(kuper_bridge_domain::deadlines::DeadlineKind::Assembly, 1)], "in_work met the acceptance");
}

/// Many sweeps (tasks; on PostgreSQL two replicas) recording the same stage at once: one row,
/// one timeline entry, one `true`.
async fn concurrent_records_make_one(stores: &[Arc<dyn Store>]) {
    const CALLS: usize = 16;
    let id = order_id_of(&*stores[0], &created(&*stores[0], 7).await).await;
    let start = Arc::new(tokio::sync::Barrier::new(CALLS));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let (s, start) = (stores[i % stores.len()].clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            s.record_deadline(
                id,
                DeadlineKind::RestaurantAccept,
                DeadlineStage::Missed,
                1,
                deadline_exchange("restaurant_accept", "missed"),
            )
            .await
            .unwrap()
        });
    }
    let mut new = 0;
    while let Some(r) = tasks.join_next().await {
        new += usize::from(r.unwrap());
    }
    assert_eq!(new, 1, "exactly one call recorded the miss");
    let events = stores[0].order_events(id).await.unwrap();
    assert_eq!(deadline_entries(&events).len(), 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_deadline_records_make_one() {
    let (s, _dir) = db::sqlite().await;
    concurrent_records_make_one(&[s]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_record_a_deadline_once() {
    let Some(db) = db::postgres().await else { return };
    let replicas = [db.store().await, db.store().await];
    concurrent_records_make_one(&replicas).await;
    drop(replicas);
    db.drop_database().await.expect("drop the test database");
}
