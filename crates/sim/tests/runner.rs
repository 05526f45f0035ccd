//! The conformance runner against tiny merchant doubles: a broken one must fail with the
//! rule it breaks, a well-behaved one must pass, and two runs with one seed must match.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use kuper_bridge_sim::runner::{run, NotificationFormatChoice, Report, RunOptions, StoreIds};
use kuper_bridge_sim::SimConfig;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flaw {
    None,
    /// Answers `order.created` with `{"status":"ok"}`.
    CreatedOk,
    /// Sends `order.assembled` twice.
    AssembledTwice,
    /// Names orders by identifiers Kuper never gave.
    Stranger,
    /// Hands a pickup order over without checking the customer's code.
    NoCodeCheck,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    A,
    B,
    C,
}

struct DoubleOrder {
    id: String,
    uuid: String,
    number: String,
    payload: Value,
    scheme: Scheme,
    /// Canceled or delivered: every action is refused.
    ended: bool,
    /// Kuper's courier has the order (scheme A): the store can no longer cancel.
    received: bool,
    /// The customer's pickup code was checked (scheme B): only then is the bag handed over.
    verified: bool,
}

#[derive(Clone)]
struct Double {
    flaw: Flaw,
    format: NotificationFormatChoice,
    orders: Arc<Mutex<HashMap<String, DoubleOrder>>>,
    outbox: mpsc::UnboundedSender<Value>,
}

/// A merchant with the flaw asked for: a webhook endpoint, and a REST API like kuper-bridge's
/// whose actions queue notifications for a single sender that keeps them in order, refreshes
/// its token on 401 and retries while Kuper is down.
async fn double(flaw: Flaw, format: NotificationFormatChoice, sim_url: String) -> String {
    let (outbox, queue) = mpsc::unbounded_channel();
    tokio::spawn(sender(sim_url, queue));
    let state = Double { flaw, format, orders: Arc::default(), outbox };
    let app = Router::new()
        .route("/kuper-webhook", post(webhook))
        .route("/api/v1/orders/{reference}/{action}", post(action))
        .route("/api/v1/orders/{reference}/pickup-code/verify", post(verify))
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind double");
    let addr = listener.local_addr().expect("double addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn sender(sim_url: String, mut queue: mpsc::UnboundedReceiver<Value>) {
    let http = reqwest::Client::new();
    let mut token: Option<String> = None;
    while let Some(body) = queue.recv().await {
        for _ in 0..400 {
            if token.is_none() {
                let form = [
                    ("client_id", "sim-client"),
                    ("client_secret", "sim-secret"),
                    ("grant_type", "client_credentials"),
                ];
                let answer = http.post(format!("{sim_url}/auth/token")).form(&form).send().await;
                if let Ok(answer) = answer {
                    let value: Value = answer.json().await.unwrap_or(Value::Null);
                    token = value["access_token"].as_str().map(str::to_owned);
                }
            }
            let request = http
                .post(format!("{sim_url}/ofm/api/v1/notifications"))
                .bearer_auth(token.clone().unwrap_or_default())
                .json(&body);
            match request.send().await.map(|r| r.status().as_u16()) {
                Ok(200..=299) => break,
                Ok(401) => token = None,
                Ok(status) if status < 500 => break,
                // Slower than the runner looks (every 20 ms), so that it ends an outage after the
                // first failed attempt every time and the transcript does not depend on timing.
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

async fn webhook(State(double): State<Double>, Json(body): Json<Value>) -> Json<Value> {
    let payload = &body["payload"];
    let id = payload["originalOrderId"].as_str().unwrap_or_default().to_owned();
    let mut orders = double.orders.lock().expect("orders");
    match body["event_type"].as_str().unwrap_or_default() {
        "order.created" => {
            if double.flaw == Flaw::CreatedOk {
                return Json(json!({"status": "ok"}));
            }
            let next = orders.len() + 1;
            let scheme = match (payload["shipmentMethod"].as_str(), payload["storeID"].as_str()) {
                (Some("pickup"), _) => Scheme::B,
                (_, Some(kuper_bridge_sim::runner::SANDBOX_MERCHANT_STORE)) => Scheme::C,
                _ => Scheme::A,
            };
            let order = orders.entry(id.clone()).or_insert_with(|| DoubleOrder {
                id: id.clone(),
                uuid: payload["orderUUID"].as_str().unwrap_or_default().to_owned(),
                number: format!("M-{next}"),
                payload: payload.clone(),
                scheme,
                ended: false,
                received: false,
                verified: false,
            });
            Json(
                json!({"status": "created", "number": order.number, "expectedAssemblyTime": "2026-03-14T10:32:11+03:00"}),
            )
        }
        event => {
            if let Some(order) = orders.get_mut(&id) {
                match event {
                    "order.canceled" | "order.delivered" => order.ended = true,
                    "order.received" => order.received = true,
                    _ => {}
                }
            }
            Json(json!({"status": "ok"}))
        }
    }
}

/// The composition as ordered, in the double's format.
fn as_ordered(order: &DoubleOrder, format: NotificationFormatChoice) -> Value {
    let lines = order.payload["positions"].as_array().cloned().unwrap_or_default();
    match format {
        NotificationFormatChoice::Brief => json!({
            "positions": lines.iter().map(|p| json!({
                "id": p["id"], "quantity": p["quantity"], "price": p["price"], "discountPrice": p["discountPrice"],
                "totalPrice": p["totalDiscountPrice"], "weight": p["weight"],
            })).collect::<Vec<_>>(),
            "total": order.payload["total"],
        }),
        NotificationFormatChoice::Event => json!({"order": {
            "originalOrderId": order.id,
            "changed": false,
            "positions": lines.iter().map(|p| json!({"id": p["id"], "quantity": p["quantity"], "weight": p["weight"]})).collect::<Vec<_>>(),
        }}),
    }
}

async fn action(
    State(double): State<Double>,
    Path((reference, action)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> impl IntoResponse {
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let event_format = double.format == NotificationFormatChoice::Event;
    let mut orders = double.orders.lock().expect("orders");
    let Some(order) = orders.get_mut(&reference) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "order_not_found"}})));
    };
    let merchant_only =
        matches!(action.as_str(), "delivering" | "delivered" | "estimated-delivery-time" | "pickup-code");
    let refused = order.ended
        || (order.scheme == Scheme::A && merchant_only)
        || (action == "cancel" && order.received)
        || (order.scheme == Scheme::B && action == "delivered" && !order.verified && double.flaw != Flaw::NoCodeCheck);
    if refused {
        return (StatusCode::CONFLICT, Json(json!({"error": {"code": "invalid_transition"}})));
    }
    let (event, extra) = match action.as_str() {
        "accept" => {
            let key = if event_format { "estimated_assembly_at" } else { "expectedAssemblyTime" };
            ("order.accepted", json!({key: body["expectedAssemblyTime"]}))
        }
        "start-assembly" => ("order.in_work", json!({})),
        "assembled" => ("order.assembled", json!({})),
        "ready" => ("order.ready_for_delivery", as_ordered(order, double.format)),
        "pickup-code" => {
            ("order.pickup_code_created", json!({if event_format { "code" } else { "pickupCode" }: "123456"}))
        }
        "estimated-delivery-time" => {
            let key = if event_format { "estimated_delivery_at" } else { "estimatedDeliveryTime" };
            ("order.estimated_delivery_time", json!({key: body["at"]}))
        }
        "delivering" => ("order.delivering", json!({})),
        "delivered" => ("order.delivered", as_ordered(order, double.format)),
        "cancel" => ("order.canceled", json!({"cancellation": {"slug": body["reason"], "description": "нет"}})),
        _ => return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "not_found"}}))),
    };
    if matches!(action.as_str(), "cancel" | "delivered") {
        order.ended = true;
    }
    let mut payload = json!({"orderUUID": order.uuid, "number": order.number});
    if double.flaw == Flaw::Stranger {
        payload = json!({"orderUUID": "sim:00000000-0000-4000-8000-000000000000", "number": "X-1"});
    }
    if event_format {
        payload["order_id"] = json!(order.id);
    }
    if let (Some(map), Value::Object(extra)) = (payload.as_object_mut(), extra) {
        map.extend(extra);
    }
    let notification = if event_format {
        json!({"event": {"type": event, "payload": payload}})
    } else {
        json!({"event_type": event, "payload": payload})
    };
    let times = if double.flaw == Flaw::AssembledTwice && action == "assembled" { 2 } else { 1 };
    for _ in 0..times {
        let _ = double.outbox.send(notification.clone());
    }
    let mut reply = json!({"notification": {"event": event}});
    if action == "pickup-code" {
        reply["pickupCode"] = json!("123456");
    }
    (StatusCode::ACCEPTED, Json(reply))
}

/// The code the double hands out is the only valid one.
async fn verify(
    State(double): State<Double>,
    Path(reference): Path<String>,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    let mut orders = double.orders.lock().expect("orders");
    let Some(order) = orders.get_mut(&reference) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "order_not_found"}})));
    };
    let valid = body["code"] == "123456";
    order.verified |= valid;
    (StatusCode::OK, Json(json!({"valid": valid, "attemptsLeft": 5, "lockedUntil": null})))
}

struct Setup {
    flaw: Flaw,
    sends: NotificationFormatChoice,
    driven: bool,
    scenarios: Vec<&'static str>,
    tune: fn(&mut RunOptions),
}

impl Setup {
    fn new(flaw: Flaw, scenarios: &[&'static str]) -> Self {
        Setup {
            flaw,
            sends: NotificationFormatChoice::Brief,
            driven: true,
            scenarios: scenarios.to_vec(),
            tune: |_| {},
        }
    }

    async fn run(&self, seed: u64) -> Report {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind runner");
        let sim_url = format!("http://{}", listener.local_addr().expect("runner addr"));
        let merchant = double(self.flaw, self.sends, sim_url).await;
        let mut options = RunOptions::new(format!("{merchant}/kuper-webhook"));
        if self.driven {
            options.merchant_api = Some(merchant.clone());
            options.api_key = Some("test-key".into());
        }
        options.scenarios = self.scenarios.iter().map(|s| s.to_string()).collect();
        options.seed = seed;
        options.deadline = Duration::from_secs(3);
        options.quiet = Duration::from_millis(200);
        options.stores = StoreIds::default();
        (self.tune)(&mut options);
        assert_eq!(options.check(), Ok(()));
        let mut events = Vec::new();
        let report = run(listener, SimConfig::default(), options, &mut |e| events.push(e.line())).await;
        assert_eq!(events.len(), 2 * report.results.len(), "{events:#?}");
        report
    }
}

fn failures(report: &Report) -> Vec<String> {
    report.results.iter().flat_map(|r| r.failures.iter().map(move |f| format!("{}: {f}", r.name))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_answer_to_order_created_names_created_answer() {
    let report = Setup::new(Flaw::CreatedOk, &["a-happy-path"]).run(1).await;
    assert!(!report.passed());
    let result = &report.results[0];
    assert_eq!(result.rules(), ["created_answer"], "{:#?}", result.failures);
    assert!(result.failures[0].contains("status is \"ok\", expected \"created\""), "{:#?}", result.failures);
    assert!(report.table().contains("FAIL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assembled_twice_names_repeat() {
    let report = Setup::new(Flaw::AssembledTwice, &["a-happy-path"]).run(1).await;
    assert!(!report.passed());
    let result = &report.results[0];
    assert!(result.rules().contains(&"repeat"), "{:#?}", result.failures);
    assert!(result.failures.iter().any(|f| f.starts_with("repeat: order.assembled was already accepted")));
    // The flow itself went on: the rest of the path was accepted.
    assert!(result.exchange.iter().any(|l| l.what == "order.ready_for_delivery" && l.ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_about_an_unknown_order_are_reported() {
    let mut setup = Setup::new(Flaw::Stranger, &["a-happy-path"]);
    setup.tune = |o| o.deadline = Duration::from_millis(500);
    let report = setup.run(1).await;
    let rules = report.results[0].rules();
    assert_eq!(rules, ["unknown_order", "missing_notification"], "{:#?}", report.results[0].failures);
    assert!(report.results[0].exchange.iter().any(|l| l.answer.as_deref() == Some("404 unknown_order")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_body_format_is_named() {
    let mut setup = Setup::new(Flaw::None, &["a-happy-path"]);
    setup.tune = |o| o.format = NotificationFormatChoice::Event;
    let report = setup.run(1).await;
    assert_eq!(report.results[0].rules(), ["notification_format"], "{:#?}", report.results[0].failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_without_the_code_names_invalid_transition() {
    let report = Setup::new(Flaw::NoCodeCheck, &["b-happy-path"]).run(1).await;
    let result = &report.results[0];
    assert_eq!(result.rules().first(), Some(&"invalid_transition"), "{:#?}", result.failures);
    assert!(result.failures[0].contains("before the customer's pickup code was verified"), "{:#?}", result.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_foreign_merchant_misses_its_notification() {
    let mut setup = Setup::new(Flaw::None, &["b-happy-path"]);
    setup.driven = false;
    setup.tune = |o| o.deadline = Duration::from_millis(300);
    let report = setup.run(1).await;
    let result = &report.results[0];
    assert_eq!(result.rules(), ["missing_notification"], "{:#?}", result.failures);
    assert!(result.failures[0].contains("order.in_work did not reach Kuper within 0.3 s"), "{:#?}", result.failures);
}

const WELL_BEHAVED: &[&str] = &[
    "a-happy-path",
    "b-happy-path",
    "c-happy-path",
    "cancel-by-merchant",
    "cancel-by-kuper",
    "restaurant",
    "duplicate-webhooks",
    "reordered-courier-events",
    "kuper-outage-mid-order",
    "token-expiry",
    "cancel-at-every-stage-*",
];

/// Times and Kuper ids are what the seed does not fix in a generated order: ids are new every
/// run, so a second run against the same merchant never repeats an order.
fn without_times_and_ids(mut order: Value) -> Value {
    for key in ["delivery", "completeBefore", "originalOrderId", "orderUUID"] {
        if let Some(map) = order.as_object_mut() {
            map.remove(key);
        }
    }
    order
}

fn order_ids(report: &Report) -> Vec<String> {
    let orders = report.results.iter().flat_map(|r| r.orders.iter());
    orders.map(|o| o["originalOrderId"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Per scenario: its name, its orders without times and ids, and its exchange with each order
/// id replaced by the order's place in the scenario.
fn transcript(report: &Report) -> Vec<(String, Vec<Value>, Vec<String>)> {
    report
        .results
        .iter()
        .map(|r| {
            let ids: Vec<&str> = r.orders.iter().map(|o| o["originalOrderId"].as_str().unwrap_or("?")).collect();
            let lines = r.exchange.iter().map(|l| {
                let mut line = format!("{:?}>{:?} {} => {:?}", l.from, l.to, l.what, l.answer);
                for (place, id) in ids.iter().enumerate() {
                    line = line.replace(id, &format!("<order {place}>"));
                }
                line
            });
            (r.name.clone(), r.orders.iter().cloned().map(without_times_and_ids).collect(), lines.collect())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_behaved_merchant_passes_the_same_way_twice() {
    let setup = Setup::new(Flaw::None, WELL_BEHAVED);
    let first = setup.run(7).await;
    assert!(first.passed(), "{}\n{:#?}", first.table(), failures(&first));
    assert_eq!(first.results.len(), 13);
    let second = setup.run(7).await;
    assert!(second.passed(), "{}\n{:#?}", second.table(), failures(&second));
    for (a, b) in transcript(&first).iter().zip(transcript(&second).iter()) {
        assert_eq!(a.1, b.1, "{}: the same seed generates the same orders", a.0);
        let differ = a.2.iter().zip(b.2.iter()).position(|(x, y)| x != y);
        assert!(
            differ.is_none() && a.2.len() == b.2.len(),
            "{}: transcripts differ at line {differ:?}:\n{:#?}\n{:#?}",
            a.0,
            a.2,
            b.2
        );
    }
    let (first_ids, second_ids) = (order_ids(&first), order_ids(&second));
    assert!(!first_ids.is_empty());
    assert!(
        first_ids.iter().all(|id| !second_ids.contains(id)),
        "a second run never repeats an order id, even with the same seed: {first_ids:?} {second_ids:?}"
    );
    let other = setup.run(8).await;
    assert_ne!(transcript(&first)[0].1, transcript(&other)[0].1, "another seed, other orders");

    let outage = first.results.iter().find(|r| r.name == "kuper-outage-mid-order").expect("outage ran");
    assert!(outage.exchange.iter().any(|l| l.answer.as_deref() == Some("503 outage")), "{:#?}", outage.exchange);
    // Pickup: the early hand-over is refused, the code Kuper holds is verified, then delivered.
    let pickup = first.results.iter().find(|r| r.name == "b-happy-path").expect("b-happy-path ran");
    let posts: Vec<(&str, Option<&str>)> = pickup
        .exchange
        .iter()
        .filter(|l| l.what.ends_with("/delivered") || l.what.ends_with("/pickup-code/verify"))
        .map(|l| (l.what.rsplit('/').next().unwrap_or_default(), l.answer.as_deref()))
        .collect();
    assert_eq!(
        posts,
        [("delivered", Some("409 invalid_transition")), ("verify", Some("200")), ("delivered", Some("202"))],
        "{:#?}",
        pickup.exchange
    );
    let token = first.results.iter().find(|r| r.name == "token-expiry").expect("token-expiry ran");
    assert!(token.exchange.iter().any(|l| l.answer.as_deref() == Some("401 unauthorized")));
    assert!(token.exchange.iter().any(|l| l.what == "POST /auth/token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_format_passes_too() {
    let mut setup = Setup::new(Flaw::None, &["a-happy-path", "b-happy-path", "restaurant", "c-happy-path"]);
    setup.sends = NotificationFormatChoice::Event;
    setup.tune = |o| o.format = NotificationFormatChoice::Event;
    let report = setup.run(3).await;
    assert!(report.passed(), "{}\n{:#?}", report.table(), failures(&report));
}

/// Enough of XML to check that the output is well-formed: balanced tags, quoted
/// attributes, no raw `<` or `&` in text.
fn check_xml(text: &str) -> Result<usize, String> {
    let body = text.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n").ok_or("no XML declaration")?;
    let mut stack: Vec<String> = Vec::new();
    let mut rest = body;
    let mut elements = 0;
    while let Some(open) = rest.find('<') {
        check_text(&rest[..open])?;
        let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
        let tag = &rest[open + 1..close];
        if let Some(name) = tag.strip_prefix('/') {
            if stack.pop().as_deref() != Some(name) {
                return Err(format!("</{name}> closes nothing"));
            }
        } else {
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, attributes) = tag.split_once(' ').unwrap_or((tag, ""));
            check_attributes(attributes)?;
            elements += 1;
            if !self_closing {
                stack.push(name.to_owned());
            }
        }
        rest = &rest[close + 1..];
    }
    check_text(rest)?;
    if stack.is_empty() {
        Ok(elements)
    } else {
        Err(format!("unclosed {stack:?}"))
    }
}

fn check_text(text: &str) -> Result<(), String> {
    if text.chars().any(|c| (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(format!("control character in {text:?}"));
    }
    for (at, _) in text.match_indices('&') {
        let entity = &text[at..];
        if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| entity.starts_with(e)) {
            return Err(format!("bare & in {text:?}"));
        }
    }
    Ok(())
}

fn check_attributes(mut text: &str) -> Result<(), String> {
    loop {
        text = text.trim_start();
        if text.is_empty() {
            return Ok(());
        }
        let (name, after) = text.split_once("=\"").ok_or(format!("bad attribute in {text:?}"))?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("bad attribute name {name:?}"));
        }
        let end = after.find('"').ok_or("unterminated attribute")?;
        if after[..end].contains('<') {
            return Err("< in an attribute".into());
        }
        check_text(&after[..end])?;
        text = &after[end + 1..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junit_is_well_formed_and_diagrams_are_mermaid() {
    let mut setup = Setup::new(Flaw::AssembledTwice, &["a-happy-path", "cancel-by-merchant", "nonexistent"]);
    setup.tune = |o| o.scenarios.retain(|s| s != "nonexistent");
    let mut report = setup.run(2).await;
    // An unknown name is a failing result of its own.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut options = RunOptions::new("http://127.0.0.1:9/kuper-webhook");
    options.scenarios = vec!["nonexistent".into()];
    let unknown = run(listener, SimConfig::default(), options, &mut |_| {}).await;
    assert_eq!(unknown.results[0].rules(), ["unknown_scenario"]);
    report.results.extend(unknown.results);

    let junit = report.junit();
    assert!(check_xml(&junit).is_ok(), "{:?}\n{junit}", check_xml(&junit));
    assert_eq!(junit.matches("<testcase ").count(), report.results.len());
    assert_eq!(junit.matches("<failure message=\"").count(), report.failed());
    assert!(junit.contains("<failure message=\"repeat: order.assembled was already accepted"), "{junit}");
    assert!(junit.contains("type=\"unknown_scenario\""));
    for result in &report.results {
        let diagram = report.mermaid(&result.name).expect("a diagram per scenario");
        assert!(diagram.starts_with("sequenceDiagram\n"), "{diagram}");
    }
    let diagram = report.mermaid("a-happy-path").unwrap_or_default();
    assert!(diagram.contains("K->>M: order.created H"), "{diagram}");
    assert!(diagram.contains("S->>M: POST /api/v1/orders/H"), "{diagram}");
    assert!(diagram.contains("K--xM: 422 repeat"), "{diagram}");
    let dir = std::env::temp_dir().join(format!("kuper-runner-diagrams-{}", std::process::id()));
    let written = report.write_diagrams(&dir).expect("write diagrams");
    assert_eq!(written.len(), report.results.len());
    assert!(written.iter().all(|p| p.extension().is_some_and(|e| e == "mmd") && p.exists()));
    let _ = std::fs::remove_dir_all(&dir);
}
