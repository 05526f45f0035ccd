//! The deadline sweep against a real SQLite store, with the clock passed in: warning then
//! miss, each once, across sweeps and a restarted sweeper; an order that meets its deadline
//! gets neither; a deadline found already past gets the miss alone. (Both backends' "once"
//! guarantee is tested in the storage crate; end to end in the cli crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

use kuper_bridge_dispatcher::{DeadlineMetrics, DeadlineSweepConfig, DeadlineSweeper};
use kuper_bridge_domain::{
    Action, CancelDescription, CancelReason, DeadlineKind, DeadlineSettings, Delivery, Policy, StoreProfile,
};
use kuper_bridge_storage::{ActionRequest, Exchange, IngestResult, Store, StoreOptions};
use kuper_bridge_wire::WebhookEnvelope;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const CREATED: &str = include_str!("../../../fixtures/webhooks/order.created.restaurant.json");

fn respond(_: &IngestResult) -> (u16, String) {
    (200, String::new())
}

fn policy() -> Policy {
    Policy { default_store: StoreProfile { delivery: Delivery::Kuper, restaurant: true }, ..Policy::default() }
}

const SETTINGS: DeadlineSettings = DeadlineSettings {
    restaurant_accept_ms: 60_000,
    restaurant_accept_warn_ms: 20_000,
    assembly_warn_ms: 0,
    delivery_window_warn_ms: 0,
};

async fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let s = kuper_bridge_storage::open(&url, &StoreOptions::default()).await.unwrap();
    s.migrate().await.unwrap();
    (s, dir)
}

/// A new restaurant order; returns (reference, id, created_at).
async fn restaurant_order(s: &dyn Store, n: u32) -> (String, i64, i64) {
    let reference = format!("R{n:08}");
    let mut body: Value = serde_json::from_str(CREATED).unwrap();
    body["payload"]["originalOrderId"] = Value::String(reference.clone());
    body["payload"]["orderUUID"] = Value::String(format!("r:{n}"));
    let env = WebhookEnvelope::parse(body.to_string().as_bytes()).unwrap();
    s.ingest_webhook(&env, Exchange::default(), &policy(), respond).await.unwrap();
    let o = s.find_order(&reference).await.unwrap().unwrap();
    (reference, o.id, o.created_at)
}

fn sweeper(s: &Arc<dyn Store>, metrics: DeadlineMetrics) -> DeadlineSweeper {
    let config = DeadlineSweepConfig { settings: SETTINGS, offset: policy().offset, interval: Duration::from_secs(5) };
    DeadlineSweeper::new(s.clone(), config, metrics)
}

async fn deadline_entries(s: &dyn Store, id: i64) -> Vec<(String, String)> {
    s.order_events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.exchange.kind == "deadline")
        .map(|e| (e.exchange.event.unwrap_or_default(), e.exchange.outcome.unwrap_or_default()))
        .collect()
}

fn pair(kind: &str, stage: &str) -> (String, String) {
    (kind.to_string(), stage.to_string())
}

#[tokio::test]
async fn warning_then_miss_once_each_and_none_for_an_accepted_order() {
    let (s, _dir) = store().await;
    let (_, late, t0) = restaurant_order(&*s, 1).await;
    let (accepted_ref, accepted, _) = restaurant_order(&*s, 2).await;
    let metrics = DeadlineMetrics::default();
    let sweep = sweeper(&s, metrics.clone());

    let r = sweep.sweep_once(t0 + 10_000).await.unwrap();
    assert_eq!((r.orders, r.warnings, r.misses), (2, 0, 0));
    s.apply_action(
        &accepted_ref,
        ActionRequest::Action(Action::Accept { expected_assembly_time: None }),
        &policy(),
        Exchange::default(),
    )
    .await
    .unwrap();

    let r = sweep.sweep_once(t0 + 45_000).await.unwrap();
    assert_eq!((r.warnings, r.misses), (1, 0), "only the unaccepted order is warned about");
    assert_eq!(sweep.sweep_once(t0 + 46_000).await.unwrap().warnings, 0, "a warning fires once");

    let r = sweep.sweep_once(t0 + 61_000).await.unwrap();
    assert_eq!((r.warnings, r.misses), (0, 1));
    assert_eq!(r.past_due.get(&DeadlineKind::RestaurantAccept), Some(&1));
    let r = sweep.sweep_once(t0 + 70_000).await.unwrap();
    assert_eq!((r.warnings, r.misses), (0, 0), "a miss fires once");
    assert_eq!(r.past_due.get(&DeadlineKind::RestaurantAccept), Some(&1), "still past due");

    // A restarted process (a new sweeper) looks at every open order once and records
    // nothing again.
    let r = sweeper(&s, DeadlineMetrics::default()).sweep_every_open_order(t0 + 80_000).await.unwrap();
    assert_eq!((r.orders, r.warnings, r.misses), (2, 0, 0));

    assert_eq!(
        deadline_entries(&*s, late).await,
        vec![pair("restaurant_accept", "warning"), pair("restaurant_accept", "missed")]
    );
    assert!(deadline_entries(&*s, accepted).await.is_empty());

    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains(r#"kuper_bridge_deadlines_total{kind="restaurant_accept",stage="missed"} 1"#), "{text}");
    assert!(text.contains(r#"kuper_bridge_deadlines_total{kind="restaurant_accept",stage="warning"} 1"#), "{text}");
    assert!(text.contains(r#"kuper_bridge_orders_past_deadline{kind="restaurant_accept"} 1"#), "{text}");
}

#[tokio::test]
async fn a_deadline_found_already_past_records_the_miss_alone() {
    let (s, _dir) = store().await;
    let (_, id, t0) = restaurant_order(&*s, 3).await;
    let r = sweeper(&s, DeadlineMetrics::default()).sweep_once(t0 + 120_000).await.unwrap();
    assert_eq!((r.warnings, r.misses), (0, 1));
    assert_eq!(deadline_entries(&*s, id).await, vec![pair("restaurant_accept", "missed")]);
}

#[tokio::test]
async fn a_canceled_order_is_not_swept() {
    let (s, _dir) = store().await;
    let (reference, id, t0) = restaurant_order(&*s, 4).await;
    s.apply_action(
        &reference,
        ActionRequest::Action(Action::Cancel {
            reason: CancelReason::parse("out_of_stock", &policy().cancel_reasons),
            description: Ok(CancelDescription::default()),
        }),
        &policy(),
        Exchange::default(),
    )
    .await
    .unwrap();
    let r = sweeper(&s, DeadlineMetrics::default()).sweep_once(t0 + 10 * 3_600_000).await.unwrap();
    assert_eq!(r.orders, 0);
    assert!(deadline_entries(&*s, id).await.is_empty());
}
