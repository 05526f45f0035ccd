//! The outbox protocol on a real SQLite file: head-of-queue claims (per-order FIFO), leases
//! and their takeover, dead letters that hold only their order, the dispatcher's next wake-up,
//! replay and skip.

use kuper_bridge_domain::{Action, Policy};
use kuper_bridge_storage::{
    ActionRequest, AttemptOutcome, AttemptReport, Exchange, IngestResult, OutboxRecord, OutboxStatus, SqliteStore,
    Store, StoreOptions,
};
use kuper_bridge_wire::WebhookEnvelope;
use serde_json::Value;

const CREATED: &str = include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json");

async fn store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let s = SqliteStore::open(&url, &StoreOptions::default()).await.unwrap();
    s.migrate().await.unwrap();
    (s, dir)
}

fn respond(_: &IngestResult) -> (u16, String) {
    (200, String::new())
}

/// A new order in `in_work` with its `order.in_work` notification queued; returns its Kuper id.
async fn order(s: &SqliteStore, n: u32) -> String {
    let id = format!("H7{n:010}");
    let mut body: Value = serde_json::from_str(CREATED).unwrap();
    body["payload"]["originalOrderId"] = Value::String(id.clone());
    body["payload"]["orderUUID"] = Value::String(format!("t:{n}"));
    let env = WebhookEnvelope::parse(body.to_string().as_bytes()).unwrap();
    s.ingest_webhook(&env, Exchange::default(), &Policy::default(), &respond).await.unwrap();
    act(s, &id, Action::StartAssembly).await;
    id
}

async fn act(s: &SqliteStore, id: &str, action: Action) -> Vec<OutboxRecord> {
    s.apply_action(id, ActionRequest::Action(action), &Policy::default(), Exchange::default())
        .await
        .unwrap()
        .notifications
}

async fn complete(s: &SqliteStore, r: &OutboxRecord, outcome: AttemptOutcome) {
    let report = AttemptReport { outcome, status: Some(200), error: None, exchange: Exchange::default() };
    s.complete_attempt(r.id, r.lease.as_deref().unwrap(), report).await.unwrap();
}

fn now() -> i64 {
    kuper_bridge_storage::now_ms()
}

#[tokio::test]
async fn only_the_head_of_each_queue_is_claimed() {
    let (s, _d) = store().await;
    let a = order(&s, 1).await;
    act(&s, &a, Action::Ready { positions: None }).await; // queues assembled + ready_for_delivery
    let b = order(&s, 2).await;
    let claimed = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    let events: Vec<&str> = claimed.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(events, ["order.in_work", "order.in_work"], "one head per order, oldest first");
    assert_ne!(claimed[0].order_id, claimed[1].order_id);
    // While the heads are leased nothing else of those orders is claimable.
    assert!(s.claim_due("w", now(), 60_000, 10).await.unwrap().is_empty());
    let first_a = claimed.iter().find(|r| r.order_id == claimed[0].order_id).unwrap();
    complete(&s, first_a, AttemptOutcome::Delivered).await;
    let next = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event, "order.assembled", "the next of order {a} became the head");
    let _ = b;
}

#[tokio::test]
async fn next_wake_up_ignores_records_waiting_behind_their_head() {
    let (s, _d) = store().await;
    let a = order(&s, 1).await;
    act(&s, &a, Action::Ready { positions: None }).await;
    let t = now();
    let head = s.claim_due("w", t, 60_000, 10).await.unwrap().remove(0);
    // In flight: the next wake-up is the lease's end, not "now" for the records behind it.
    let due = s.next_due_at(t).await.unwrap().unwrap();
    assert!(due >= t + 59_000, "due {due} vs now {t}");
    // Retry in 10 s: the wake-up moves there, not to the (already due) records behind it.
    complete(&s, &head, AttemptOutcome::Retry { next_attempt_at: t + 10_000, in_doubt: false }).await;
    assert_eq!(s.next_due_at(t).await.unwrap(), Some(t + 10_000));
    assert!(s.claim_due("w", t, 60_000, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dead_letter_holds_only_its_order() {
    let (s, _d) = store().await;
    let a = order(&s, 1).await;
    let b = order(&s, 2).await;
    let heads = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    let (dead, other) = (&heads[0], &heads[1]);
    complete(&s, dead, AttemptOutcome::Dead).await;
    complete(&s, other, AttemptOutcome::Delivered).await;
    act(&s, &a, Action::Assembled).await;
    act(&s, &b, Action::Assembled).await;
    let claimed = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "only the order without a dead letter flows");
    assert_eq!(claimed[0].order_id, other.order_id);
    complete(&s, &claimed[0], AttemptOutcome::Delivered).await;
    assert_eq!(s.next_due_at(now()).await.unwrap(), None, "a blocked order never wakes the dispatcher");
    // Replay: the dead letter is pending again, with a fresh schedule and give-up clock.
    let replayed = s.replay(dead.id, Exchange::default()).await.unwrap();
    assert_eq!(replayed.status, OutboxStatus::Pending);
    assert_eq!(replayed.attempts, 0);
    assert!(replayed.retry_since >= dead.created_at);
    let claimed = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    assert_eq!(claimed[0].id, dead.id);
}

#[tokio::test]
async fn skip_lets_the_next_notification_go() {
    let (s, _d) = store().await;
    let a = order(&s, 1).await;
    let head = s.claim_due("w", now(), 60_000, 10).await.unwrap().remove(0);
    complete(&s, &head, AttemptOutcome::Dead).await;
    act(&s, &a, Action::Assembled).await;
    assert!(s.replay(head.id + 1, Exchange::default()).await.is_err(), "only dead letters");
    s.skip(head.id, Exchange::default()).await.unwrap();
    let claimed = s.claim_due("w", now(), 60_000, 10).await.unwrap();
    assert_eq!(claimed[0].event, "order.assembled");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_late_result_ignored() {
    let (s, _d) = store().await;
    order(&s, 1).await;
    let t = now();
    let first = s.claim_due("w", t, 100, 10).await.unwrap().remove(0);
    assert!(!first.in_doubt);
    // The same worker claims again after the lease ran out: a new lease token, in doubt.
    let second = s.claim_due("w", t + 200, 60_000, 10).await.unwrap().remove(0);
    assert_eq!(second.id, first.id);
    assert_ne!(second.lease, first.lease);
    assert!(second.in_doubt, "the first attempt may have reached Kuper");
    complete(&s, &first, AttemptOutcome::Delivered).await; // late: ignored
    let record = s.get_outbox(first.id).await.unwrap().unwrap();
    assert_eq!(record.status, OutboxStatus::Pending, "the late result did not override the live claim");
    complete(&s, &second, AttemptOutcome::Delivered).await;
    assert_eq!(s.get_outbox(first.id).await.unwrap().unwrap().status, OutboxStatus::Sent);
    let history = s.outbox_attempts(first.id).await.unwrap();
    assert!(history.iter().any(|e| e.exchange.detail.as_deref().unwrap_or("").contains("late result")));
}

#[tokio::test]
async fn leases_of_a_dead_process_are_released_at_start() {
    let (s, _d) = store().await;
    order(&s, 1).await;
    let claimed = s.claim_due("old-process", now(), 600_000, 10).await.unwrap().remove(0);
    assert_eq!(s.release_stale_leases("new-process").await.unwrap(), 1);
    let again = s.claim_due("new-process", now(), 60_000, 10).await.unwrap().remove(0);
    assert_eq!(again.id, claimed.id);
    assert!(again.in_doubt);
    assert_eq!(s.release_stale_leases("new-process").await.unwrap(), 0, "our own leases stay");
}

#[tokio::test]
async fn kupers_cancel_drops_what_is_queued() {
    let (s, _d) = store().await;
    let a = order(&s, 1).await;
    act(&s, &a, Action::Ready { positions: None }).await;
    let body = format!(r#"{{"event_type":"order.canceled","payload":{{"originalOrderId":"{a}"}}}}"#);
    let env = WebhookEnvelope::parse(body.as_bytes()).unwrap();
    s.ingest_webhook(&env, Exchange::default(), &Policy::default(), &respond).await.unwrap();
    let records = s.list_outbox(None, 100).await.unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.status == OutboxStatus::Skipped), "{records:?}");
    assert!(s.claim_due("w", now(), 60_000, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn every_notification_has_its_own_idempotency_key() {
    let (s, _d) = store().await;
    let a = order(&s, 1).await;
    act(&s, &a, Action::Ready { positions: None }).await;
    let records = s.list_outbox(None, 100).await.unwrap();
    let mut keys: Vec<&str> = records.iter().map(|r| r.idempotency_key.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.starts_with("kb-") && k.len() > 30));
}
