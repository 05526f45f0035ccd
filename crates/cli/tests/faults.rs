//! Faults between the gateway and Kuper: outages, timeouts, token expiry, refusals, and the
//! gateway process killed with SIGKILL mid-stream. The simulator is the judge throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use kuper_bridge_dispatcher::Attempted;
use kuper_bridge_storage::AttemptOutcome;
use serde_json::{json, Value};
use std::time::Duration;

const A_FLOW: [&str; 3] = ["order.in_work", "order.assembled", "order.ready_for_delivery"];

async fn run_a_flow(env: &Env, id: &str) {
    for action in ["start-assembly", "assembled", "ready"] {
        let (status, v) = env.act(id, action, json!({})).await;
        assert_eq!(status, 202, "{action}: {v}");
    }
}

fn attempts_of(records: &[Value], order_number: &str) -> i64 {
    records
        .iter()
        .filter(|r| r["body"]["payload"]["number"] == order_number)
        .map(|r| r["attempts"].as_i64().unwrap_or(0))
        .sum()
}

/// Retries and FIFO, the dispatcher driven step by step ([`Env::dispatcher`]): no waiting for
/// a loop, and no waiting out the backoff either (each step takes what is due within a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kuper_500s_for_a_while_then_everything_arrives_in_order() {
    let env = Env::with(no_dispatcher).await;
    let dispatcher = env.dispatcher();
    let first = env.create_order(json!({"store": "1184"})).await;
    let second = env.create_order(json!({"store": "1184"})).await;
    env.sim_post("/sim/v1/faults", json!({"times": 5, "status": 500})).await;
    run_a_flow(&env, &id_of(&first)).await;
    run_a_flow(&env, &id_of(&second)).await;
    let attempted = dispatch_until_idle(&dispatcher, 60_000).await;
    for created in [&first, &second] {
        let id = id_of(created);
        delivery::OrderDelivery::of_sim_order(&A_FLOW, &env.sim_order(&id).await, None).assert_delivered(&id);
        // Storage hands out only the head of an order's queue: its attempts follow the flow.
        let order_id = env.order(&id).await["id"].as_i64().expect("the order's id");
        let mut events: Vec<&str> =
            attempted.iter().filter(|a| a.order_id == order_id).map(|a| a.event.as_str()).collect();
        events.dedup();
        assert_eq!(events, A_FLOW, "{id}: attempted head first: {attempted:#?}");
    }
    assert_eq!(attempted.len(), 6 + 5, "every notification once, and each 500 retried: {attempted:#?}");
    let (_, v) = env.call("GET", "/api/v1/outbox?limit=1000", None, READ_KEY).await;
    let records = v["records"].as_array().cloned().unwrap_or_default();
    assert!(records.iter().all(|x| x["status"] == "sent"), "{records:#?}");
    let number = first["merchantAnswer"]["body"]["number"].as_str().unwrap();
    let number2 = second["merchantAnswer"]["body"]["number"].as_str().unwrap();
    assert_eq!(
        attempts_of(&records, number) + attempts_of(&records, number2),
        6 + 5,
        "the 500s were retried: {records:#?}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kuper_hangs_then_recovers_nothing_lost() {
    let env = Env::new().await;
    let created = env.create_order(json!({"store": "1184"})).await;
    let id = id_of(&created);
    // Longer than the gateway's request timeout (800 ms in tests): every attempt times out.
    env.sim_post("/sim/v1/outage", json!({"hang_ms": 2500})).await;
    run_a_flow(&env, &id).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(super_accepted(&env, &id).await.is_empty(), "nothing can arrive during the outage");
    env.wait_accepted(&id, &A_FLOW).await;
    let (_, events) = env.call("GET", &format!("/api/v1/orders/{id}/events"), None, READ_KEY).await;
    let timeouts = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"].as_str().unwrap_or("").contains("timeout"))
        .count();
    assert!(timeouts >= 1, "the timeouts are in the timeline: {events:#}");
    env.shutdown().await;
}

async fn super_accepted(env: &Env, id: &str) -> Vec<String> {
    accepted_events(&env.sim_order(id).await)
}

/// The dispatcher driven step by step: the refusal, the refresh and the retry happen within
/// one step at the same `now` (so no backoff), and are recorded when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_refreshed_and_the_notification_retried_at_once() {
    let env = Env::with(no_dispatcher).await;
    let dispatcher = env.dispatcher();
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
    assert_eq!(dispatch_until_idle(&dispatcher, 0).await.len(), 1);
    env.sim_post("/sim/v1/tokens/revoke", json!({})).await;
    assert_eq!(env.act(&id, "assembled", json!({})).await.0, 202);
    let step = dispatcher.dispatch_once(kuper_bridge_storage::now_ms()).await.expect("dispatch step");
    assert_eq!((step.attempted.len(), step.delivered()), (1, 1), "refreshed and retried at once: {step:#?}");
    // The first try is refused with the revoked token (counted below), the retry accepted.
    let sim = env.sim_order(&id).await;
    let expected = ["order.in_work", "order.assembled"];
    delivery::OrderDelivery::of_sim_order(&expected, &sim, Some("unauthorized")).assert_delivered(&id);
    let (_, events) = env.call("GET", &format!("/api/v1/orders/{id}/events"), None, READ_KEY).await;
    let refreshed =
        events["events"].as_array().unwrap().iter().any(|e| e["detail"].as_str().unwrap_or("").contains("refreshed"));
    assert!(refreshed, "the refresh is recorded: {events:#}");
    let unauthorized = sim["notifications"].as_array().unwrap().iter().filter(|n| n["status"] == 401).count();
    assert_eq!(unauthorized, 1, "exactly one 401 before the refresh: {sim:#}");
    env.shutdown().await;
}

/// FIFO behind a dead letter, the dispatcher driven step by step: what a step attempts is
/// known when it returns, so "nothing overtook" needs no waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_dead_letters_and_holds_only_that_order_until_replay_or_skip() {
    let env = Env::with(no_dispatcher).await;
    let dispatcher = env.dispatcher();
    let held = env.create_order(json!({"store": "1184"})).await;
    let other = env.create_order(json!({"store": "1184"})).await;
    let held_id = id_of(&held);
    env.sim_post("/sim/v1/faults", json!({"times": 1, "status": 422})).await;
    assert_eq!(env.act(&held_id, "start-assembly", json!({})).await.0, 202);
    let step = dispatch_until_idle(&dispatcher, 60_000).await;
    assert!(matches!(step[..], [Attempted { outcome: AttemptOutcome::Dead, .. }]), "{step:#?}");
    let records = env.wait_outbox("a dead letter", |r| r.iter().any(|x| x["status"] == "dead")).await;
    let dead = records.iter().find(|x| x["status"] == "dead").unwrap().clone();
    assert!(dead["lastError"].as_str().unwrap_or("").contains("422"), "Kuper's answer is kept: {dead:#}");

    // Later notifications of the same order wait behind the dead letter...
    assert_eq!(env.act(&held_id, "assembled", json!({})).await.0, 202);
    // ...while other orders flow.
    run_a_flow(&env, &id_of(&other)).await;
    let flowed = dispatch_until_idle(&dispatcher, 60_000).await;
    let held_order = env.order(&held_id).await["id"].as_i64().expect("the order's id");
    assert!(flowed.iter().all(|a| a.order_id != held_order), "the held order waits: {flowed:#?}");
    env.wait_accepted(&id_of(&other), &A_FLOW).await;
    assert!(super_accepted(&env, &held_id).await.is_empty(), "nothing of the held order overtook its dead letter");

    // Reading needs read, deciding needs admin.
    let dead_id = dead["id"].as_i64().unwrap();
    let why = || Some(json!({"reason": "Kuper fixed the store's catalogue"}));
    let (status, _) = env.call("POST", &format!("/api/v1/outbox/{dead_id}/replay"), why(), READ_KEY).await;
    assert_eq!(status, 403);
    // The reason is required, and kept in the timeline with the key that decided.
    let (status, v) = env.call("POST", &format!("/api/v1/outbox/{dead_id}/replay"), None, ADMIN_KEY).await;
    assert_eq!((status, v["error"]["details"]["field"].as_str()), (400, Some("reason")), "{v}");
    let (status, v) = env.call("POST", &format!("/api/v1/outbox/{dead_id}/replay"), why(), ADMIN_KEY).await;
    assert_eq!(status, 202, "{v}");
    let (_, history) = env.call("GET", &format!("/api/v1/outbox/{dead_id}"), None, READ_KEY).await;
    let decision = history["history"].as_array().unwrap().iter().find(|e| e["kind"] == "operator").cloned();
    let decision = decision.unwrap_or_else(|| panic!("the decision is in the history: {history:#}"));
    assert!(decision["detail"].as_str().unwrap().ends_with("reason: Kuper fixed the store's catalogue"), "{decision}");
    assert!(decision["actor"].as_str().unwrap().starts_with("api-key:"), "{decision}");
    assert_eq!(dispatch_until_idle(&dispatcher, 60_000).await.len(), 2, "the replayed letter, then the one behind it");
    env.wait_accepted(&held_id, &["order.in_work", "order.assembled"]).await;
    let (status, _) = env.call("POST", &format!("/api/v1/outbox/{dead_id}/replay"), why(), ADMIN_KEY).await;
    assert_eq!(status, 409, "only dead letters can be replayed");

    // Skip: a dead letter given up lets the next notification of its order go.
    let third = id_of(&env.create_order(json!({"store": "1184"})).await);
    env.sim_post("/sim/v1/faults", json!({"times": 1, "status": 400})).await;
    assert_eq!(env.act(&third, "start-assembly", json!({})).await.0, 202);
    dispatch_until_idle(&dispatcher, 60_000).await;
    let records =
        env.wait_outbox("a second dead letter", |r| r.iter().filter(|x| x["status"] == "dead").count() == 1).await;
    let dead = records.iter().find(|x| x["status"] == "dead").unwrap()["id"].as_i64().unwrap();
    assert_eq!(env.act(&third, "cancel", json!({"reason": "store_closed"})).await.0, 202);
    let (status, _) = env.call("POST", &format!("/api/v1/outbox/{dead}/skip"), why(), ADMIN_KEY).await;
    assert_eq!(status, 202);
    assert_eq!(dispatch_until_idle(&dispatcher, 60_000).await.len(), 1, "the notification behind the skipped one");
    env.wait_accepted(&third, &["order.canceled"]).await;
    let (_, history) = env.call("GET", &format!("/api/v1/outbox/{dead}"), None, READ_KEY).await;
    assert_eq!(history["status"], "skipped");
    assert!(history["history"].as_array().unwrap().len() >= 2, "attempts and the operator's decision: {history:#}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kuper_cancel_drops_queued_notifications() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    env.sim_post("/sim/v1/outage", json!({"status": 503, "for_ms": 60000})).await;
    run_a_flow(&env, &id).await;
    assert_eq!(env.kuper_sends(&id, "order.canceled").await, 200);
    env.sim_delete("/sim/v1/outage").await;
    let records =
        env.wait_outbox("queue settled", |r| r.iter().all(|x| x["status"] == "skipped" || x["status"] == "sent")).await;
    assert!(records.iter().any(|x| x["status"] == "skipped"), "{records:#?}");
    let sim = env.sim_order(&id).await;
    assert!(sim["notifications"].as_array().unwrap().iter().all(|n| n["verdict"] != "rejected"), "{sim:#}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_the_queue() {
    let mut env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    env.sim_post("/sim/v1/outage", json!({"status": 503, "for_ms": 60000})).await;
    run_a_flow(&env, &id).await;
    env.restart_app().await;
    env.sim_delete("/sim/v1/outage").await;
    env.wait_accepted(&id, &A_FLOW).await;
    env.shutdown().await;
}

/// The gateway binary, killed with SIGKILL while notifications are queued and in flight,
/// then started again on the same database: Kuper ends up with every notification, in order,
/// and each applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    let sim = start_sim(kuper_bridge_sim::SimConfig::default()).await;
    let sim_url = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (mut config, _db) = test_config(dir.path(), &sim_url).await;
    config.server.listen = format!("127.0.0.1:{port}");
    let config_path = dir.path().join("kuper-bridge.toml");
    std::fs::write(&config_path, toml_of(&config)).unwrap();
    let http = reqwest::Client::new();
    let app_url = format!("http://127.0.0.1:{port}");
    let kuper = SimKuper::new(&sim_url, &app_url);

    let mut child = spawn_gateway(&config_path, dir.path()).await;
    wait_healthy(&http, &app_url).await;

    let ids = kuper.create_orders(6, "1184").await;
    // Kuper answers slowly, so the kill finds notifications both queued and in flight.
    http.post(format!("{sim_url}/sim/v1/faults")).json(&json!({"times": 40, "delay_ms": 150})).send().await.unwrap();
    for id in &ids {
        kuper.act(id, &["start-assembly", "assembled", "ready"]).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().await.unwrap(); // SIGKILL
    let _ = child.wait().await;

    let mut child = spawn_gateway(&config_path, dir.path()).await;
    wait_healthy(&http, &app_url).await;
    // A repeat after the kill is answered 422 "repeat" by Kuper; anything else is a bug.
    for id in &ids {
        kuper.wait_delivered(id, &A_FLOW, Duration::from_secs(30)).await;
    }
    child.kill().await.unwrap();
    let _ = child.wait().await;
    sim.shutdown().await;
}
