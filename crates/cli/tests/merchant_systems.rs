//! Fitting into the merchant's systems (issue #7): events forwarded to a real HTTP subscriber
//! with Standard Webhooks signatures, checked here by an independent implementation of the
//! specification; a subscriber that is down for a while; and the acceptance hook's answers,
//! failures and fallbacks. The simulator plays Kuper throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use kuper_bridge::config::{AcceptanceHookConfig, SubscriberConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// 32 random bytes, in the `whsec_` form Standard Webhooks libraries generate.
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const OLD_SECRET: &str = "an-older-plain-secret-being-rotated-out";

#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A merchant system: records what it receives, answers with a status the test can flip, or
/// (as an acceptance hook) with a scripted body after a scripted delay.
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    answer: Arc<Mutex<String>>,
    delay_ms: Arc<AtomicU64>,
    url: String,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> impl IntoResponse {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    r.got.lock().unwrap().push(Received {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body,
    });
    let delay = r.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = StatusCode::from_u16(r.status.load(Ordering::SeqCst)).unwrap();
    (status, [("content-type", "application/json")], r.answer.lock().unwrap().clone())
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let r = Receiver {
            got: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            answer: Arc::new(Mutex::new("{}".into())),
            delay_ms: Arc::default(),
            url,
        };
        let app = axum::Router::new().route("/events", axum::routing::post(receive)).with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn answer_with(&self, status: u16, body: Value, delay_ms: u64) {
        self.status.store(status, Ordering::SeqCst);
        *self.answer.lock().unwrap() = body.to_string();
        self.delay_ms.store(delay_ms, Ordering::SeqCst);
    }

    /// Waits for the events of one order (by originalOrderId) until `done` says enough, as a
    /// subscriber that deduplicates on `webhook-id` sees them: under load a slow answer is
    /// retried (at least once), and a retry must neither end a wait early nor fail a check.
    async fn wait_for(&self, order: &str, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<Received> {
        self.wait_for_attempts(order, what, true, done).await
    }

    /// Every delivery attempt, retries included (`dedupe = false`), or the first of each id.
    async fn wait_for_attempts(
        &self,
        order: &str,
        what: &str,
        dedupe: bool,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = if dedupe { first_of_each_webhook_id(self.received()) } else { self.received() };
            let mine: Vec<Received> =
                all.into_iter().filter(|r| r.json()["data"]["originalOrderId"] == order).collect();
            let types: Vec<String> = mine.iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
            if done(&types) {
                return mine;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; got {types:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// What a subscriber that deduplicates on `webhook-id` (as the README tells it to) processes:
/// the first delivery of each id, in arrival order.
fn first_of_each_webhook_id(got: Vec<Received>) -> Vec<Received> {
    let mut seen = std::collections::HashSet::new();
    got.into_iter().filter(|r| seen.insert(r.id.clone())).collect()
}

/// The Standard Webhooks check, written from the specification (not the gateway's code):
/// base64 key after `whsec_` (else the secret's bytes), HMAC-SHA256 over `id.timestamp.body`,
/// any `v1,` signature of the space-separated list may match.
fn verifies(secret: &str, r: &Received) -> bool {
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).unwrap(),
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    r.signature.split(' ').any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

fn subscriber(url: &str) -> SubscriberConfig {
    SubscriberConfig {
        name: Some("wms".into()),
        url: url.into(),
        secret: vec![SECRET.into(), OLD_SECRET.into()],
        secret_file: None,
        events: vec!["*".into()],
        stores: vec![],
    }
}

const SCHEME_A: [&str; 8] = [
    "order.created",
    "order.in_work",
    "order.assembled",
    "order.ready_for_delivery",
    "order.paid",
    "order.received",
    "order.delivering",
    "order.delivered",
];

async fn run_scheme_a(env: &Env, id: &str) {
    for action in ["start-assembly", "assembled", "ready"] {
        assert_eq!(env.act(id, action, json!({})).await.0, 202, "{action}");
    }
    env.wait_accepted(id, &["order.in_work", "order.assembled", "order.ready_for_delivery"]).await;
    for event in ["order.paid", "order.received", "order.delivering", "order.delivered"] {
        assert_eq!(env.kuper_sends(id, event).await, 200, "{event}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_gets_every_event_of_an_order_in_order_and_signed() {
    let wms = Receiver::start().await;
    let url = wms.url.clone();
    let env = Env::with(|c| c.subscribers = vec![subscriber(&url)]).await;
    let id = id_of(&env.create_order(json!({"store": "1184", "shipmentMethod": "by_courier"})).await);
    run_scheme_a(&env, &id).await;
    // Wait for what the assertion needs, the last event, not for a count: under load a slow
    // answer may be retried (at least once), and a retry must not end the wait early.
    let got = wms.wait_for(&id, "the whole order", |t| t.iter().any(|x| x == "order.delivered")).await;
    let attempts = wms.received();
    for r in &attempts {
        let first = attempts.iter().find(|x| x.id == r.id).unwrap();
        assert_eq!(first.body, r.body, "a retry repeats its event's webhook-id and body");
    }
    let types: Vec<String> = got.iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, SCHEME_A, "every event, once per webhook-id, in order");
    for r in &got {
        assert!(verifies(SECRET, r), "signature of {}", r.body);
        assert!(verifies(OLD_SECRET, r), "every active key signs (rotation)");
        let mut tampered = r.clone();
        tampered.body = r.body.replacen("\"data\"", "\"data\" ", 1);
        assert!(!verifies(SECRET, &tampered), "a tampered body must not verify");
        let mut replayed = r.clone();
        replayed.timestamp = (r.timestamp.parse::<i64>().unwrap() + 1).to_string();
        assert!(!verifies(SECRET, &replayed), "the timestamp is signed");
        let age = chrono::Utc::now().timestamp() - r.timestamp.parse::<i64>().unwrap();
        assert!((0..60).contains(&age), "webhook-timestamp is the send time");
    }
    let created = got[0].json();
    assert_eq!(created["data"]["event"]["source"], "kuper");
    assert_eq!(created["data"]["event"]["payload"]["originalOrderId"], id.as_str());
    assert!(created["data"]["number"].as_str().unwrap().starts_with("KB-"));
    let in_work = got[1].json();
    assert_eq!(in_work["data"]["event"]["source"]["kind"], "merchant");
    assert_eq!(in_work["data"]["event"]["source"]["action"], "start-assembly");
    assert_eq!(in_work["data"]["event"]["from"], "created");
    assert_eq!(in_work["data"]["event"]["to"], "in_work");
    assert_eq!(got.last().unwrap().json()["data"]["state"], "delivered");
    // The forwarded records sit in the outbox beside Kuper's, under their own destination.
    let records = env
        .wait_outbox("forwards sent", |r| {
            r.iter().filter(|x| x["destination"] == "subscriber:wms").all(|x| x["status"] == "sent")
        })
        .await;
    assert_eq!(records.iter().filter(|x| x["kind"] == "forward").count(), SCHEME_A.len());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_down_for_a_while_gets_everything_later_in_order_and_kuper_is_not_held_up() {
    let wms = Receiver::start().await;
    wms.answer_with(503, json!({}), 0);
    let url = wms.url.clone();
    let env = Env::with(|c| c.subscribers = vec![subscriber(&url)]).await;
    let id = id_of(&env.create_order(json!({"store": "1184", "shipmentMethod": "by_courier"})).await);
    // Kuper's notifications flow while the subscriber refuses everything.
    run_scheme_a(&env, &id).await;
    assert_eq!(env.order(&id).await["state"], "delivered");
    wms.wait_for_attempts(&id, "retries of the first event", false, |t| t.len() >= 3).await;
    let refused = wms.received().len();
    assert!(wms.received().iter().all(|r| r.json()["type"] == "order.created"), "only the head is tried");
    wms.answer_with(200, json!({}), 0);
    assert!(refused >= 3);
    // The last event is what the assertion needs: a count would be reached early by a retry of
    // the first event that was already in flight when the subscriber came back.
    let got = wms.wait_for(&id, "everything after the outage", |t| t.iter().any(|x| x == "order.delivered")).await;
    let delivered: Vec<String> = got.iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(delivered, SCHEME_A, "in order, nothing lost (retries of one event share its webhook-id)");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_by_event_and_store_and_dead_letters_are_forwarded() {
    let wms = Receiver::start().await;
    let ops = Receiver::start().await;
    let (wms_url, ops_url) = (wms.url.clone(), ops.url.clone());
    let env = Env::with_sim(kuper_bridge_sim::SimConfig::default(), |c| {
        let mut only_cancels = subscriber(&wms_url);
        only_cancels.events = vec!["order.canceled".into()];
        only_cancels.stores = vec!["1184".into()];
        let mut alarms = subscriber(&ops_url);
        alarms.name = Some("ops".into());
        alarms.events = vec!["notification.*".into()];
        c.subscribers = vec![only_cancels, alarms];
    })
    .await;
    let here = id_of(&env.create_order(json!({"store": "1184"})).await);
    let elsewhere = id_of(&env.create_order(json!({"store": "27"})).await);
    for id in [&here, &elsewhere] {
        assert_eq!(env.kuper_sends(id, "order.canceled").await, 200);
    }
    wms.wait_for(&here, "the cancel", |t| t.iter().any(|x| x == "order.canceled")).await;
    // A notification Kuper refuses becomes a dead letter, and the ops system hears of it.
    let third = id_of(&env.create_order(json!({"store": "27"})).await);
    env.sim_post("/sim/v1/faults", json!({"status": 422, "times": 1})).await;
    assert_eq!(env.act(&third, "start-assembly", json!({})).await.0, 202);
    let alarm = ops.wait_for(&third, "notification.dead", |t| t.iter().any(|x| x == "notification.dead")).await;
    assert_eq!(alarm.len(), 1, "one alarm");
    assert_eq!(alarm[0].json()["data"]["event"]["notification"], "order.in_work");
    assert!(verifies(SECRET, &alarm[0]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(wms.received().iter().all(|r| r.json()["data"]["originalOrderId"] == here.as_str()), "store filter");
    assert_eq!(first_of_each_webhook_id(wms.received()).len(), 1, "event filter");
    assert!(ops.received().iter().all(|r| r.json()["type"] == "notification.dead"));
    env.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The acceptance hook

fn hook(url: &str, timeout_ms: u64, on_error: &str) -> AcceptanceHookConfig {
    AcceptanceHookConfig {
        url: url.into(),
        secret: vec![SECRET.into()],
        secret_file: None,
        timeout_ms,
        on_error: on_error.parse().expect("accept or cancel"),
        cancel_reason: "technical_issues".into(),
    }
}

async fn hook_entries(env: &Env, id: &str) -> Vec<Value> {
    let (status, v) = env.call("GET", &format!("/api/v1/orders/{id}/events"), None, READ_KEY).await;
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "acceptance_hook").cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_hook_accepts_with_the_merchants_number_and_assembly_time() {
    let erp = Receiver::start().await;
    erp.answer_with(
        200,
        json!({"accept": true, "number": "ERP-77001", "expectedAssemblyTime": "2030-01-01T12:00:00+03:00"}),
        0,
    );
    let url = erp.url.clone();
    let env = Env::with(|c| c.acceptance_hook = Some(hook(&url, 2000, "accept"))).await;
    let created = env.create_order(json!({"store": "1184"})).await;
    let id = id_of(&created);
    assert_eq!(created["merchantAnswer"]["body"]["number"], "ERP-77001", "{created}");
    assert_eq!(created["merchantAnswer"]["body"]["expectedAssemblyTime"], "2030-01-01T12:00:00+03:00");
    let asked = erp.received();
    assert_eq!(asked.len(), 1);
    assert!(verifies(SECRET, &asked[0]), "the question is signed like forwarded events");
    assert_eq!(asked[0].json()["type"], "order.created");
    assert_eq!(asked[0].json()["data"]["event"]["payload"]["originalOrderId"], id.as_str());
    assert_eq!(env.order(&id).await["number"], "ERP-77001");
    let entries = hook_entries(&env, &id).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["outcome"], "accepted");
    // A redelivered order.created is answered the same, without asking again.
    let again = env.kuper_sends(&id, "order.created").await;
    assert_eq!(again, 200);
    assert_eq!(erp.received().len(), 1, "asked once per order");
    // The merchant's number is a reference like ours.
    assert_eq!(env.act("ERP-77001", "start-assembly", json!({})).await.0, 202);
    env.wait_accepted(&id, &["order.in_work"]).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_hook_decline_answers_created_then_cancels_with_the_reason() {
    let erp = Receiver::start().await;
    erp.answer_with(200, json!({"accept": false, "reason": "out_of_stock", "description": "нет в наличии"}), 0);
    let url = erp.url.clone();
    let env = Env::with(|c| c.acceptance_hook = Some(hook(&url, 2000, "accept"))).await;
    let created = env.create_order(json!({"store": "1184"})).await;
    let id = id_of(&created);
    assert_eq!(created["merchantAnswer"]["body"]["status"], "created", "Kuper is answered created: {created}");
    let sim = env.wait_accepted(&id, &["order.canceled"]).await;
    let cancel =
        sim["notifications"].as_array().unwrap().iter().find(|n| n["event"] == "order.canceled").unwrap().clone();
    assert!(cancel.to_string().contains("out_of_stock"), "the hook's reason slug reaches Kuper: {cancel}");
    assert_eq!(env.order(&id).await["state"], "canceled");
    let entries = hook_entries(&env, &id).await;
    assert_eq!(entries[0]["outcome"], "declined");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_hook_timeout_falls_back_per_policy() {
    for (on_error, expect_canceled) in [("accept", false), ("cancel", true)] {
        let erp = Receiver::start().await;
        erp.answer_with(200, json!({"accept": false, "reason": "out_of_stock"}), 3_000);
        let url = erp.url.clone();
        let env = Env::with(|c| c.acceptance_hook = Some(hook(&url, 300, on_error))).await;
        let started = Instant::now();
        let created = env.create_order(json!({"store": "1184"})).await;
        assert!(started.elapsed() < Duration::from_millis(2_500), "Kuper is answered within the hook's deadline");
        let id = id_of(&created);
        assert_eq!(created["merchantAnswer"]["body"]["status"], "created");
        let entries = hook_entries(&env, &id).await;
        assert_eq!(entries[0]["outcome"], format!("timeout_{on_error}"), "{entries:#?}");
        if expect_canceled {
            let sim = env.wait_accepted(&id, &["order.canceled"]).await;
            assert!(sim.to_string().contains("technical_issues"), "the configured cancel_reason");
        } else {
            assert_eq!(env.order(&id).await["state"], "created");
            assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
            env.wait_accepted(&id, &["order.in_work"]).await;
        }
        env.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_hook_malformed_or_failing_answers_fall_back() {
    let cases = [
        (200, json!({"accept": "yes"}), "malformed_cancel"),
        (200, json!({"accept": false, "reason": "not-a-slug!"}), "malformed_cancel"),
        (200, json!({"accept": false, "reason": "no_such_reason_configured"}), "malformed_cancel"),
        (500, json!({"accept": true}), "error_cancel"),
    ];
    let erp = Receiver::start().await;
    let url = erp.url.clone();
    let env = Env::with(|c| c.acceptance_hook = Some(hook(&url, 2000, "cancel"))).await;
    for (status, body, outcome) in cases {
        erp.answer_with(status, body.clone(), 0);
        let id = id_of(&env.create_order(json!({"store": "1184"})).await);
        let entries = hook_entries(&env, &id).await;
        assert_eq!(entries[0]["outcome"], outcome, "{body}: {entries:#?}");
        env.wait_accepted(&id, &["order.canceled"]).await;
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_warnings_and_misses_are_forwarded() {
    let ops = Receiver::start().await;
    let url = ops.url.clone();
    let env = Env::with(|c| {
        let mut alarms = subscriber(&url);
        alarms.events = vec!["order.deadline_*".into()];
        c.subscribers = vec![alarms];
        c.deadlines.sweep_interval_ms = 100;
        c.deadlines.restaurant_accept_secs = 2;
        c.deadlines.restaurant_accept_warn_before_secs = Some(1);
    })
    .await;
    let id = id_of(&env.create_order(json!({"store": RESTAURANT_STORE, "restaurant": true})).await);
    let got = ops.wait_for(&id, "warning then miss", |t| t.iter().any(|x| x == "order.deadline_missed")).await;
    let types: Vec<String> = got.iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["order.deadline_warning", "order.deadline_missed"]);
    let missed = got[1].json();
    assert_eq!(missed["data"]["event"]["kind"], "restaurant_accept");
    assert!(missed["data"]["event"]["dueAt"].as_i64().is_some());
    assert!(got.iter().all(|r| verifies(SECRET, r)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(first_of_each_webhook_id(ops.received()).len(), 2, "each once");
    env.shutdown().await;
}
