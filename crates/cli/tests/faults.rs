//! Faults between the gateway and Kuper: outages, timeouts, token expiry, refusals, and the
//! gateway process killed with SIGKILL mid-stream. The simulator is the judge throughout.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kuper_500s_for_a_while_then_everything_arrives_in_order() {
    let env = Env::new().await;
    let first = env.create_order(json!({"store": "1184"})).await;
    let second = env.create_order(json!({"store": "1184"})).await;
    env.sim_post("/sim/v1/faults", json!({"times": 5, "status": 500})).await;
    run_a_flow(&env, &id_of(&first)).await;
    run_a_flow(&env, &id_of(&second)).await;
    env.wait_accepted(&id_of(&first), &A_FLOW).await;
    env.wait_accepted(&id_of(&second), &A_FLOW).await;
    let records = env.wait_outbox("all sent", |r| r.iter().all(|x| x["status"] == "sent")).await;
    let number = first["merchantAnswer"]["body"]["number"].as_str().unwrap();
    let number2 = second["merchantAnswer"]["body"]["number"].as_str().unwrap();
    assert!(
        attempts_of(&records, number) + attempts_of(&records, number2) >= 6 + 5,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_refreshed_and_the_notification_retried_at_once() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
    env.wait_accepted(&id, &["order.in_work"]).await;
    env.sim_post("/sim/v1/tokens/revoke", json!({})).await;
    let started = Instant::now();
    assert_eq!(env.act(&id, "assembled", json!({})).await.0, 202);
    // The first try is refused with the revoked token (counted below), the retry accepted.
    env.wait_accepted_past(&id, &["order.in_work", "order.assembled"], Some("unauthorized")).await;
    assert!(started.elapsed() < Duration::from_secs(5), "no backoff was needed after the refresh");
    // Kuper has the notification a moment before the gateway commits the attempt's record.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, events) = env.call("GET", &format!("/api/v1/orders/{id}/events"), None, READ_KEY).await;
        let refreshed = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or("").contains("refreshed"));
        if refreshed {
            break;
        }
        assert!(Instant::now() < deadline, "the refresh is recorded: {events:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let sim = env.sim_order(&id).await;
    let unauthorized = sim["notifications"].as_array().unwrap().iter().filter(|n| n["status"] == 401).count();
    assert_eq!(unauthorized, 1, "exactly one 401 before the refresh: {sim:#}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_dead_letters_and_holds_only_that_order_until_replay_or_skip() {
    let env = Env::new().await;
    let held = env.create_order(json!({"store": "1184"})).await;
    let other = env.create_order(json!({"store": "1184"})).await;
    let held_id = id_of(&held);
    env.sim_post("/sim/v1/faults", json!({"times": 1, "status": 422})).await;
    assert_eq!(env.act(&held_id, "start-assembly", json!({})).await.0, 202);
    let records = env.wait_outbox("a dead letter", |r| r.iter().any(|x| x["status"] == "dead")).await;
    let dead = records.iter().find(|x| x["status"] == "dead").unwrap().clone();
    assert!(dead["lastError"].as_str().unwrap_or("").contains("422"), "Kuper's answer is kept: {dead:#}");

    // Later notifications of the same order wait behind the dead letter...
    assert_eq!(env.act(&held_id, "assembled", json!({})).await.0, 202);
    // ...while other orders flow.
    run_a_flow(&env, &id_of(&other)).await;
    env.wait_accepted(&id_of(&other), &A_FLOW).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
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
    env.wait_accepted(&held_id, &["order.in_work", "order.assembled"]).await;
    let (status, _) = env.call("POST", &format!("/api/v1/outbox/{dead_id}/replay"), why(), ADMIN_KEY).await;
    assert_eq!(status, 409, "only dead letters can be replayed");

    // Skip: a dead letter given up lets the next notification of its order go.
    let third = id_of(&env.create_order(json!({"store": "1184"})).await);
    env.sim_post("/sim/v1/faults", json!({"times": 1, "status": 400})).await;
    assert_eq!(env.act(&third, "start-assembly", json!({})).await.0, 202);
    let records =
        env.wait_outbox("a second dead letter", |r| r.iter().filter(|x| x["status"] == "dead").count() == 1).await;
    let dead = records.iter().find(|x| x["status"] == "dead").unwrap()["id"].as_i64().unwrap();
    assert_eq!(env.act(&third, "cancel", json!({"reason": "store_closed"})).await.0, 202);
    let (status, _) = env.call("POST", &format!("/api/v1/outbox/{dead}/skip"), why(), ADMIN_KEY).await;
    assert_eq!(status, 202);
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
    let mut config = base_config(dir.path(), &sim_url).await;
    config.server.listen = format!("127.0.0.1:{port}");
    let config_path = dir.path().join("kuper-bridge.toml");
    std::fs::write(&config_path, toml_of(&config)).unwrap();
    let http = reqwest::Client::new();
    let app_url = format!("http://127.0.0.1:{port}");

    let mut child = spawn_gateway(&config_path, dir.path()).await;
    wait_healthy(&http, &app_url).await;

    let create = |store: &str| json!({"store": store, "target": format!("{app_url}/kuper-webhook"), "auth": {"basic": WEBHOOK_USER}});
    let mut ids = Vec::new();
    for _ in 0..6 {
        let v: Value = http
            .post(format!("{sim_url}/sim/v1/orders"))
            .json(&create("1184"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["merchantAnswer"]["status"], 200, "{v}");
        ids.push(v["originalOrderId"].as_str().unwrap().to_string());
    }
    // Kuper answers slowly, so the kill finds notifications both queued and in flight.
    http.post(format!("{sim_url}/sim/v1/faults")).json(&json!({"times": 40, "delay_ms": 150})).send().await.unwrap();
    for id in &ids {
        for action in ["start-assembly", "assembled", "ready"] {
            let r = http
                .post(format!("{app_url}/api/v1/orders/{id}/{action}"))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202, "{action} on {id}");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().await.unwrap(); // SIGKILL
    let _ = child.wait().await;

    let mut child = spawn_gateway(&config_path, dir.path()).await;
    wait_healthy(&http, &app_url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ids {
        loop {
            let v: Value =
                http.get(format!("{sim_url}/sim/v1/orders/{id}")).send().await.unwrap().json().await.unwrap();
            let accepted = accepted_events(&v);
            let rejected: Vec<&Value> =
                v["notifications"].as_array().unwrap().iter().filter(|n| n["verdict"] == "rejected").collect();
            // A repeat after the kill is answered 422 "repeat" by Kuper; anything else is a bug.
            assert!(rejected.iter().all(|n| n["rule"] == "repeat"), "{id}: {rejected:#?}");
            if accepted.len() >= 3 {
                assert_eq!(accepted, A_FLOW, "{id}: in order, once each");
                break;
            }
            assert!(Instant::now() < deadline, "{id} incomplete after restart: {v:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    child.kill().await.unwrap();
    let _ = child.wait().await;
    drop_test_database(&config.database.url).await;
    sim.shutdown().await;
}
