//! Deadlines as timers, end to end (issue #7 item 5): the real gateway with a short restaurant
//! acceptance deadline and a fast sweep. The order that is not accepted gets a warning and
//! then a miss in its timeline, exactly once each (also after a restart); the order that is
//! accepted in time gets neither. Runs on SQLite, and on PostgreSQL with
//! `KUPER_BRIDGE_TEST_BACKEND=postgres`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn deadline_entries(env: &Env, id: &str) -> Vec<(String, String)> {
    let (status, v) = env.call("GET", &format!("/api/v1/orders/{id}/events"), None, READ_KEY).await;
    assert_eq!(status, 200, "{v}");
    v["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["kind"] == "deadline")
                .map(|e| {
                    assert_eq!(e["direction"], "internal", "{e}");
                    (e["event"].as_str().unwrap_or("").to_string(), e["outcome"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pending_kinds(order: &Value) -> Vec<(String, String)> {
    order["deadlines"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| (x["kind"].as_str().unwrap_or("").to_string(), x["stage"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn pair(kind: &str, stage: &str) -> (String, String) {
    (kind.to_string(), stage.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restaurant_order_not_accepted_in_time_is_warned_then_missed_once() {
    let mut env = Env::with(|c| {
        c.deadlines.sweep_interval_ms = 100;
        c.deadlines.restaurant_accept_secs = 3;
        c.deadlines.restaurant_accept_warn_before_secs = Some(2);
    })
    .await;
    let late = id_of(&env.create_order(json!({"store": RESTAURANT_STORE, "restaurant": true})).await);
    let kept = id_of(&env.create_order(json!({"store": RESTAURANT_STORE, "restaurant": true})).await);
    let (status, v) = env.act(&kept, "accept", json!({})).await;
    assert_eq!(status, 202, "{v}");

    // The API shows the pending deadline; the accepted order has none of this kind.
    let order = env.order(&late).await;
    let kinds = pending_kinds(&order);
    assert_eq!(kinds.first().map(|k| k.0.as_str()), Some("restaurant_accept"), "{order:#}");
    assert!(pending_kinds(&env.order(&kept).await).iter().all(|k| k.0 != "restaurant_accept"));

    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let entries = deadline_entries(&env, &late).await;
        if entries.contains(&pair("restaurant_accept", "missed")) {
            break;
        }
        assert!(Instant::now() < until, "no miss recorded; timeline deadlines: {entries:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several more sweeps pass over both orders.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let expected = vec![pair("restaurant_accept", "warning"), pair("restaurant_accept", "missed")];
    assert_eq!(deadline_entries(&env, &late).await, expected, "warning then miss, once each");
    assert!(deadline_entries(&env, &kept).await.is_empty(), "the accepted order met its deadline");
    assert!(pending_kinds(&env.order(&late).await).contains(&pair("restaurant_accept", "missed")));

    let (status, metrics) = env.call("GET", "/metrics", None, READ_KEY).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains(r#"kuper_bridge_deadlines_total{kind="restaurant_accept",stage="missed"} 1"#), "{text}");
    assert!(text.contains(r#"kuper_bridge_orders_past_deadline{kind="restaurant_accept"} 1"#), "{text}");

    // A restarted gateway sweeps the same database and records nothing again.
    env.restart_app().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(deadline_entries(&env, &late).await, expected, "still once each after a restart");

    // Accepting late ends the timer: no longer pending, nothing more recorded.
    assert_eq!(env.act(&late, "accept", json!({})).await.0, 202);
    assert!(pending_kinds(&env.order(&late).await).iter().all(|k| k.0 != "restaurant_accept"));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_deadlines_record_nothing() {
    let env = Env::with(|c| {
        c.deadlines.enabled = false;
        c.deadlines.sweep_interval_ms = 100;
        c.deadlines.restaurant_accept_secs = 1;
        c.deadlines.warn_before_secs = 0;
    })
    .await;
    let id = id_of(&env.create_order(json!({"store": RESTAURANT_STORE, "restaurant": true})).await);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(deadline_entries(&env, &id).await.is_empty());
    // The order still shows the computed deadline.
    assert!(pending_kinds(&env.order(&id).await).contains(&pair("restaurant_accept", "missed")));
    env.shutdown().await;
}
