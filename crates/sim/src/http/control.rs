//! The control API (`/sim/v1/…`) tests use to script Kuper.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{control_error, App};
use crate::driver::TargetAuth;
use crate::faults::{FaultSpec, OutageSpec};
use crate::generate::{generate, OrderParams};
use crate::model::Integration;
use crate::ops::{Delivery, WebhookRequest};
use crate::world::{now_moscow, OrderRecord};

/// Upper bound of `repeat`, so that a typo cannot keep the simulator busy for minutes.
const MAX_REPEAT: u32 = 100;

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(text).map_err(|e| format!("invalid body: {e}"))
}

fn bad_request(message: impl Into<String>) -> Response {
    control_error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn order_not_found(id: &str) -> Response {
    control_error(
        StatusCode::NOT_FOUND,
        "order_not_found",
        format!("no order {id:?} (originalOrderId, orderUUID or a unique number)"),
    )
}

pub(super) async fn health() -> Json<Value> {
    Json(json!({"ok": true}))
}

pub(super) async fn not_found() -> Response {
    control_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateOrder {
    target: String,
    #[serde(default)]
    auth: Option<TargetAuth>,
    #[serde(default)]
    store: Option<Value>,
    #[serde(default)]
    shipment_method: Option<String>,
    #[serde(default)]
    restaurant: Option<bool>,
    #[serde(default)]
    integration: Option<String>,
    #[serde(default)]
    positions: Option<Vec<Value>>,
    /// `false`: Kuper places the order but its `order.created` never reaches the merchant.
    #[serde(default)]
    deliver: Option<bool>,
}

fn target_ok(target: &str) -> bool {
    reqwest::Url::parse(target).is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
}

pub(super) async fn create_order(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let request: CreateOrder = match parse_body(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    if !target_ok(&request.target) {
        return control_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("target {:?} is not an http(s) URL", request.target),
        );
    }
    let integration = match request.integration.as_deref() {
        None => Integration::DeliveryByKuper,
        Some(text) => match Integration::parse(text) {
            Some(integration) => integration,
            None => {
                return control_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("integration {text:?}: expected delivery_by_kuper or delivery_by_merchant"),
                )
            }
        },
    };
    let store = match request.store {
        None | Some(Value::Null) => "1184".to_owned(),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return control_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("store must be a string or a number, got {other}"),
            )
        }
    };
    let params = OrderParams {
        store,
        shipment_method: request.shipment_method.unwrap_or_else(|| "by_courier".to_owned()),
        restaurant: request.restaurant.unwrap_or(false),
        integration,
        positions: request.positions,
    };
    let now = now_moscow();
    let generated = {
        let mut world = app.world();
        loop {
            match generate(&mut world.rng, &params, now) {
                Ok(order) if world.contains_id(&order.original_order_id) => continue,
                Ok(order) => break order,
                Err(error) => return control_error(StatusCode::BAD_REQUEST, "bad_request", error.to_string()),
            }
        }
    };
    let delivery =
        Delivery { integration, restaurant: params.restaurant, target: request.target.clone(), auth: request.auth };
    if request.deliver == Some(false) {
        let (original_order_id, order_uuid) = app.place_order_undelivered(generated, delivery);
        return (
            StatusCode::CREATED,
            Json(json!({
                "originalOrderId": original_order_id,
                "orderUUID": order_uuid,
                "number": null,
                "delivered": false,
                "merchantAnswer": null,
                "check": null,
            })),
        )
            .into_response();
    }
    let placed = app.place_order(generated, delivery, now).await;
    let mut merchant_answer = json!({"status": placed.answer.status, "body": placed.answer.body});
    if let (Some(error), Some(map)) = (&placed.answer.error, merchant_answer.as_object_mut()) {
        map.insert("error".into(), json!(error));
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "originalOrderId": placed.original_order_id,
            "orderUUID": placed.order_uuid,
            "number": placed.check.number,
            "merchantAnswer": merchant_answer,
            "check": {"ok": placed.check.ok, "problems": placed.check.problems},
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendWebhook {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
    #[serde(default)]
    raw: Option<Value>,
    #[serde(default)]
    repeat: Option<u32>,
    /// `false`: Kuper's view changes but the webhook is never sent (a lost webhook).
    #[serde(default)]
    deliver: Option<bool>,
}

pub(super) async fn send_webhook(State(app): State<Arc<App>>, Path(id): Path<String>, body: Bytes) -> Response {
    let request: SendWebhook = match parse_body(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    let repeat = request.repeat.unwrap_or(1);
    if repeat == 0 || repeat > MAX_REPEAT {
        return control_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("repeat must be between 1 and {MAX_REPEAT}"),
        );
    }
    let Some(index) = app.world().find(&id) else {
        return order_not_found(&id);
    };
    let suppress = request.deliver == Some(false);
    if suppress && request.raw.is_some() {
        return bad_request("deliver: false needs an event (a raw body changes nothing to withhold)");
    }
    let webhook = WebhookRequest { event: request.event, payload: request.payload, raw: request.raw, repeat, suppress };
    let attempts = match app.send_webhook(index, &webhook).await {
        Ok(attempts) => attempts,
        Err(message) => return control_error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    let last = attempts.last().cloned();
    let mut reply = json!({
        "delivered": !suppress,
        "status": last.as_ref().and_then(|a| a.status),
        "body": last.as_ref().map(|a| a.body.clone()).unwrap_or(Value::Null),
        "attempts": attempts,
    });
    if let (Some(error), Some(map)) = (last.and_then(|a| a.error), reply.as_object_mut()) {
        map.insert("error".into(), json!(error));
    }
    Json(reply).into_response()
}

pub(super) async fn get_order(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let world = app.world();
    match world.find(&id).and_then(|i| world.order(i)) {
        Some(order) => Json(order.view()).into_response(),
        None => order_not_found(&id),
    }
}

pub(super) async fn list_orders(State(app): State<Arc<App>>) -> Json<Value> {
    let world = app.world();
    Json(Value::Array(world.orders().iter().map(OrderRecord::summary).collect()))
}

pub(super) async fn notifications(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!(app.world().log()))
}

pub(super) async fn add_fault(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let spec: FaultSpec = match parse_body(&body) {
        Ok(spec) => spec,
        Err(message) => return bad_request(message),
    };
    let mut faults = app.faults();
    match faults.push(spec) {
        Ok(id) => {
            (StatusCode::CREATED, Json(json!({"id": id, "queue": faults.snapshot(Instant::now())}))).into_response()
        }
        Err(message) => control_error(StatusCode::BAD_REQUEST, "bad_request", message),
    }
}

pub(super) async fn clear_faults(State(app): State<Arc<App>>) -> Json<Value> {
    let cleared = app.faults().clear();
    Json(json!({"cleared": cleared}))
}

pub(super) async fn list_faults(State(app): State<Arc<App>>) -> Json<Value> {
    Json(app.faults().snapshot(Instant::now()))
}

pub(super) async fn start_outage(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let spec: OutageSpec = match parse_body(&body) {
        Ok(spec) => spec,
        Err(message) => return bad_request(message),
    };
    match spec.into_outage(Instant::now()) {
        Ok(outage) => {
            app.faults().set_outage(outage);
            (StatusCode::CREATED, Json(app.faults().snapshot(Instant::now()))).into_response()
        }
        Err(message) => control_error(StatusCode::BAD_REQUEST, "bad_request", message),
    }
}

pub(super) async fn end_outage(State(app): State<Arc<App>>) -> Json<Value> {
    let ended = app.faults().end_outage();
    app.release.notify_waiters();
    Json(json!({"ended": ended}))
}

pub(super) async fn revoke_tokens(State(app): State<Arc<App>>) -> Json<Value> {
    let revoked = app.tokens().revoke_all();
    Json(json!({"revoked": revoked}))
}
