//! Reconciliation through Kuper's pull API (issue #7 item 4), end to end: the simulator loses
//! webhooks on purpose (`"deliver": false`) and shows the truth through
//! `GET /ofm/api/v1/shipments`; the gateway's reconciliation job must recover it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use kuper_bridge_dispatcher::reconcile::PassReport;
use kuper_bridge_storage::OrderFilter;
use serde_json::{json, Value};

/// Kuper places an order whose `order.created` never reaches the gateway.
async fn lost_order(env: &Env, store: &str) -> String {
    let body = json!({
        "target": env.webhook_url(),
        "auth": {"basic": WEBHOOK_USER},
        "store": store,
        "deliver": false,
    });
    let created = env.sim_post("/sim/v1/orders", body).await;
    assert_eq!(created["delivered"], false, "{created}");
    id_of(&created)
}

/// Kuper changes its view of the order without telling the gateway.
async fn kuper_silently(env: &Env, id: &str, event: &str) {
    let answer =
        env.sim_post(&format!("/sim/v1/orders/{id}/webhooks"), json!({"event": event, "deliver": false})).await;
    assert_eq!(answer["delivered"], false, "{answer}");
}

async fn pass(env: &Env) -> PassReport {
    let running = env.app.as_ref().expect("gateway running");
    let job = running.reconciler.as_ref().expect("the worker has a reconciliation job");
    job.run_once().await.expect("reconciliation pass")
}

async fn gateway_status(env: &Env, id: &str) -> u16 {
    env.call("GET", &format!("/api/v1/orders/{id}"), None, READ_KEY).await.0
}

async fn reconciliation_entries(env: &Env, id: &str) -> Vec<Value> {
    let (status, v) = env.call("GET", &format!("/api/v1/orders/{id}/events"), None, READ_KEY).await;
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "reconciliation").cloned().collect()
}

async fn order_count(env: &Env) -> usize {
    let running = env.app.as_ref().expect("gateway running");
    running.store.list_orders(&OrderFilter { limit: 1000, ..Default::default() }).await.expect("list").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_arrived_is_recovered_from_the_pull_api() {
    let env = Env::new().await;
    let id = lost_order(&env, "1184").await;
    assert_eq!(gateway_status(&env, &id).await, 404, "the gateway never heard of it");

    let report = pass(&env).await;
    assert_eq!((report.imported, report.failed, report.invalid), (1, 0, 0), "{report:?}");
    let order = env.order(&id).await;
    assert_eq!(order["state"], "created");
    assert_eq!(order["scheme"], "kuper_delivery");
    assert!(order["number"].as_str().is_some_and(|n| n.starts_with("KB-")), "numbered as any order: {order}");
    // Flagged: the timeline says where the order came from.
    let flags = reconciliation_entries(&env, &id).await;
    assert_eq!(flags.len(), 1, "{flags:#?}");
    assert_eq!(flags[0]["direction"], "internal");
    assert_eq!(flags[0]["event"], "order.created");
    assert_eq!(flags[0]["outcome"], "created");
    assert!(flags[0]["detail"].as_str().unwrap().contains("never arrived"), "{flags:#?}");

    // From here it flows like any order: Kuper accepts the store's notifications.
    assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
    assert_eq!(env.act(&id, "assembled", json!({})).await.0, 202);
    assert_eq!(env.act(&id, "ready", json!({})).await.0, 202);
    env.wait_accepted(&id, &["order.in_work", "order.assembled", "order.ready_for_delivery"]).await;
    env.wait_order(&id, "Kuper's acknowledgement", |o| o["kuperState"] == "ready_to_ship").await;

    // Kuper's view and ours agree now: the next pass changes and flags nothing.
    let report = pass(&env).await;
    assert_eq!((report.imported, report.canceled, report.disagreements), (0, 0, 0), "{report:?}");
    assert_eq!(reconciliation_entries(&env, &id).await.len(), 1);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_seen_only_in_the_pull_api_is_applied() {
    // The periodic task this time, as in production (every second).
    let env = Env::with(|c| {
        c.reconciliation.enabled = true;
        c.reconciliation.interval_secs = 1;
    })
    .await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
    env.wait_accepted(&id, &["order.in_work"]).await;

    kuper_silently(&env, &id, "order.canceled").await;
    let order = env.wait_order(&id, "the cancellation from the pull API", |o| o["state"] == "canceled").await;
    assert_eq!(order["kuperState"], "canceled");
    assert_eq!(order["cancellation"]["by"], "kuper", "{order}");
    assert_eq!(order["cancellation"]["slug"], "customer_request", "Kuper's reason is kept: {order}");
    let flags = reconciliation_entries(&env, &id).await;
    assert_eq!(flags.len(), 1, "{flags:#?}");
    assert_eq!(flags[0]["event"], "order.canceled");
    assert_eq!(flags[0]["outcome"], "applied");
    // The domain rules apply as for the webhook: nothing more for this order.
    assert_eq!(env.act(&id, "assembled", json!({})).await.0, 409);

    // A lost order that Kuper also canceled: imported, then canceled, so the store sees it
    // and knows not to assemble it.
    let lost = lost_order(&env, "1184").await;
    kuper_silently(&env, &lost, "order.canceled").await;
    let order = wait_imported_and_canceled(&env, &lost).await;
    assert_eq!(order["state"], "canceled", "{order}");
    let events: Vec<String> = reconciliation_entries(&env, &lost)
        .await
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(events, ["order.created", "order.canceled"]);

    // Kuper heard nothing from us after in_work: its own cancel is not echoed back.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(accepted_events(&env.sim_order(&id).await), ["order.in_work"]);
    assert!(accepted_events(&env.sim_order(&lost).await).is_empty());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_imported_twice() {
    let env = Env::new().await;
    let delivered = id_of(&env.create_order(json!({"store": "1184"})).await);
    let lost = lost_order(&env, "27").await;

    let first = pass(&env).await;
    assert_eq!((first.imported, first.shipments), (1, 2), "{first:?}");
    for _ in 0..3 {
        let again = pass(&env).await;
        assert_eq!((again.imported, again.already_present, again.failed), (0, 0, 0), "{again:?}");
    }
    assert_eq!(order_count(&env).await, 2);
    assert!(reconciliation_entries(&env, &delivered).await.is_empty(), "an order that came by webhook is not flagged");

    // The lost webhook turns up after all (Kuper retried it): the same order, the same number.
    let number = env.order(&lost).await["number"].clone();
    let resp = env
        .http
        .post(format!("{}/sim/v1/orders/{lost}/webhooks", env.sim_url))
        .json(&json!({"event": "order.created"}))
        .send()
        .await
        .expect("sim webhook");
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"]["number"], number, "answered like a retry: {answer}");
    assert_eq!(order_count(&env).await, 2);

    // A webhook and two passes racing for the same lost order: still one order.
    let racing = lost_order(&env, "1184").await;
    let running = env.app.as_ref().unwrap();
    let job = running.reconciler.clone().unwrap();
    let job2 = job.clone();
    let (a, b, status) = tokio::join!(
        async move { job.run_once().await },
        async move { job2.run_once().await },
        env.kuper_sends(&racing, "order.created"),
    );
    assert_eq!(status, 200);
    let (a, b) = (a.expect("pass"), b.expect("pass"));
    assert!(a.imported + b.imported <= 1, "{a:?} {b:?}");
    assert_eq!(order_count(&env).await, 3);
    let flags = reconciliation_entries(&env, &racing).await;
    assert!(flags.iter().filter(|f| f["outcome"] == "created").count() <= 1, "{flags:#?}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_api_failures_break_nothing() {
    let env = Env::new().await;
    let lost = lost_order(&env, "1184").await;
    let running = env.app.as_ref().unwrap();
    let job = running.reconciler.clone().unwrap();

    for fault in [json!({"status": 503, "path": "shipments"}), json!({"drop": true, "path": "shipments"})] {
        env.sim_post("/sim/v1/faults", fault.clone()).await;
        let err = job.run_once().await.expect_err("the pull API failed");
        assert!(!err.to_string().contains("sim-secret"), "no secret in {err}");
    }
    // Answers that are not the list: refused, nothing imported.
    env.sim_post("/sim/v1/faults", json!({"status": 200, "path": "shipments"})).await;
    assert!(job.run_once().await.is_err());
    assert_eq!(gateway_status(&env, &lost).await, 404);

    // The rest of the gateway never noticed: an order flows as usual.
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
    env.wait_accepted(&id, &["order.in_work"]).await;

    // A refused token (401) is refreshed once and the page asked again.
    env.sim_post("/sim/v1/faults", json!({"status": 401, "path": "shipments"})).await;
    let report = job.run_once().await.expect("recovered after a token refresh");
    assert_eq!(report.imported, 1, "the failed passes did not move the window on: {report:?}");
    assert_eq!(env.order(&lost).await["state"], "created");

    // The passes are counted.
    let (status, metrics) = env.call("GET", "/metrics", None, READ_KEY).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default().to_string();
    assert!(text.contains(r#"kuper_bridge_reconciliation_passes_total{outcome="failed"} 3"#), "{text}");
    assert!(text.contains(r#"kuper_bridge_reconciliation_shipments_total{outcome="imported"} 1"#), "{text}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_api_is_read_with_a_client_token_too() {
    let env = Env::with(|c| {
        c.kuper.auth = "client-token".parse().expect("an auth name");
        c.kuper.client_token = "sim-client-token".into();
    })
    .await;
    let lost = lost_order(&env, "1184").await;
    assert_eq!(pass(&env).await.imported, 1);
    assert_eq!(env.act(&lost, "start-assembly", json!({})).await.0, 202);
    env.wait_accepted(&lost, &["order.in_work"]).await;
    env.shutdown().await;
}

/// Waits until the gateway has the order and has applied Kuper's cancellation to it.
async fn wait_imported_and_canceled(env: &Env, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if gateway_status(env, id).await == 200 {
            let order = env.order(id).await;
            if order["state"] == "canceled" {
                return order;
            }
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {id} to be imported and canceled");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
