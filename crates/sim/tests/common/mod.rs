//! Shared helpers: a simulator on loopback, a tiny merchant, and request builders.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use kuper_bridge_sim::{SimConfig, SimHandle};
use serde_json::{json, Value};

/// A webhook the merchant received: its `Authorization`/`Client-Token` and body.
#[derive(Clone, Debug)]
pub struct Received {
    pub authorization: Option<String>,
    pub client_token: Option<String>,
    pub body: Value,
}

#[derive(Clone, Default)]
struct MerchantState {
    received: Arc<Mutex<Vec<Received>>>,
    created: Arc<Mutex<u32>>,
}

pub struct Merchant {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Merchant {
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

async fn webhook(State(state): State<MerchantState>, headers: HeaderMap, body: String) -> Json<Value> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let is_created = value["event_type"] == "order.created";
    if let Ok(mut received) = state.received.lock() {
        received.push(Received {
            authorization: header("authorization"),
            client_token: header("client-token"),
            body: value,
        });
    }
    if is_created {
        let n = state
            .created
            .lock()
            .map(|mut n| {
                *n += 1;
                *n
            })
            .unwrap_or(0);
        Json(json!({
            "status": "created",
            "number": format!("M-{n}"),
            "expectedAssemblyTime": "2026-03-14T10:32:11+03:00"
        }))
    } else {
        Json(json!({"status": "ok"}))
    }
}

/// A merchant that answers `order.created` as the protocol wants and records every webhook.
pub async fn merchant() -> Merchant {
    let state = MerchantState::default();
    let received = state.received.clone();
    let app = Router::new().route("/kuper-webhook", post(webhook)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind merchant");
    let addr = listener.local_addr().expect("merchant addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Merchant { url: format!("http://{addr}/kuper-webhook"), received }
}

pub struct Sim {
    pub handle: SimHandle,
    pub base: String,
    pub http: reqwest::Client,
}

pub const OFM: &str = "/ofm/api/v1/notifications";
pub const V3: &str = "/v3/notifications";

impl Sim {
    pub async fn start(config: SimConfig) -> Sim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
        let handle = kuper_bridge_sim::start(listener, config).await.expect("start sim");
        let base = handle.base_url();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        Sim { handle, base, http }
    }

    pub async fn default() -> Sim {
        Sim::start(SimConfig::default()).await
    }

    pub async fn token(&self) -> String {
        let response = self
            .http
            .post(format!("{}/auth/token", self.base))
            .form(&[("client_id", "sim-client"), ("client_secret", "sim-secret"), ("grant_type", "client_credentials")])
            .send()
            .await
            .expect("token request");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("token json");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response =
            self.http.post(format!("{}{path}", self.base)).json(&body).send().await.expect("control request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.expect("control request");
        response.json().await.expect("control json")
    }

    /// Creates an order through the control API; `extra` is merged into the request.
    pub async fn create_order(&self, merchant: &Merchant, extra: Value) -> Value {
        let mut request = json!({"target": merchant.url, "auth": {"basic": "kuper:secret"}});
        if let (Some(map), Value::Object(extra)) = (request.as_object_mut(), extra) {
            map.extend(extra);
        }
        let (status, body) = self.post("/sim/v1/orders", request).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["check"]["ok"], true, "{body}");
        body
    }

    pub async fn order(&self, id: &str) -> Value {
        self.get(&format!("/sim/v1/orders/{id}")).await
    }

    /// Sends a notification with a bearer token.
    pub async fn notify(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("notification request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A `brief` notification about `created` (the control API's answer), with extra payload.
pub fn brief(event: &str, created: &Value, extra: Value) -> Value {
    let mut payload = json!({
        "orderUUID": created["orderUUID"],
        "number": created["number"],
    });
    if let (Some(map), Value::Object(extra)) = (payload.as_object_mut(), extra) {
        map.extend(extra);
    }
    json!({"event_type": event, "payload": payload})
}

/// The composition "everything as ordered", with the order's own line totals.
pub fn as_ordered(view: &Value) -> Value {
    let order = &view["order"];
    let positions: Vec<Value> = order["positions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            json!({
                "id": p["id"],
                "quantity": p["quantity"],
                "price": p["price"],
                "discountPrice": p["discountPrice"],
                "totalPrice": p["totalDiscountPrice"],
                "weight": p["weight"],
            })
        })
        .collect();
    json!({"positions": positions, "total": order["total"]})
}

/// The rule named by an error body in either format.
pub fn rule(body: &Value) -> String {
    body["errors"][0]["type"].as_str().or_else(|| body["error"]["type"].as_str()).unwrap_or("").to_owned()
}

pub fn message(body: &Value) -> String {
    body["errors"][0]["message"].as_str().or_else(|| body["error"]["detail"].as_str()).unwrap_or("").to_owned()
}

/// Asserts the status and that both the error type and the message name the rule.
#[track_caller]
pub fn assert_rejected(answer: &(u16, Value), status: u16, expected_rule: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(rule(&answer.1), expected_rule, "{}", answer.1);
    assert!(message(&answer.1).contains(expected_rule), "{}", answer.1);
}

#[track_caller]
pub fn assert_ok(answer: &(u16, Value)) {
    assert_eq!(answer.0, 200, "{}", answer.1);
}
