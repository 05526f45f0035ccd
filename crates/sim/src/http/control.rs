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
use crate::validate::check_created_answer;
use crate::world::{now_moscow, OrderRecord, WebhookRecord};

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

    let (index, original_order_id, order_uuid, created) = {
        let mut world = app.world();
        let generated = loop {
            match generate(&mut world.rng, &params, now) {
                Ok(order) if world.contains_id(&order.original_order_id) => continue,
                Ok(order) => break order,
                Err(error) => return control_error(StatusCode::BAD_REQUEST, "bad_request", error.to_string()),
            }
        };
        let created = json!({
            "event_type": "order.created",
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            "payload": generated.payload,
        });
        let record =
            OrderRecord::new(generated, integration, params.restaurant, request.target.clone(), request.auth.clone());
        let ids = (record.original_order_id.clone(), record.order_uuid.clone());
        // Known before the webhook goes out: a merchant may notify before it answers.
        let index = world.insert(record);
        (index, ids.0, ids.1, created)
    };

    let body = serde_json::to_vec(&created).unwrap_or_default();
    let answer = app.driver.send(&request.target, request.auth.as_ref(), body).await;
    let mut check = check_created_answer(answer.status, &answer.body);
    if let Some(error) = &answer.error {
        check.problems.push(error.clone());
        check.ok = false;
    }
    {
        let mut world = app.world();
        world.set_number(index, check.number.clone());
        if let Some(order) = world.order_mut(index) {
            order.webhooks.push(WebhookRecord::new("order.created", &answer));
            order.created_check = Some(check.clone());
        }
    }
    let mut merchant_answer = json!({"status": answer.status, "body": answer.body});
    if let (Some(error), Some(map)) = (&answer.error, merchant_answer.as_object_mut()) {
        map.insert("error".into(), json!(error));
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "originalOrderId": original_order_id,
            "orderUUID": order_uuid,
            "number": check.number,
            "merchantAnswer": merchant_answer,
            "check": {"ok": check.ok, "problems": check.problems},
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
    let (index, target, auth, event, bytes) = {
        let world = app.world();
        let Some(index) = world.find(&id) else {
            return order_not_found(&id);
        };
        let Some(order) = world.order(index) else {
            return order_not_found(&id);
        };
        let (event, bytes) = match (&request.raw, &request.event) {
            // A JSON string is sent as its text, so that tests can send malformed JSON.
            (Some(Value::String(text)), event) => (event.clone(), text.clone().into_bytes()),
            (Some(raw), event) => (event.clone(), serde_json::to_vec(raw).unwrap_or_default()),
            (None, Some(event)) => {
                let body = json!({
                    "event_type": event,
                    "timestamp": now_moscow().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                    "payload": order.webhook_payload(event, request.payload.as_ref()),
                });
                (Some(event.clone()), serde_json::to_vec(&body).unwrap_or_default())
            }
            (None, None) => return control_error(StatusCode::BAD_REQUEST, "bad_request", "give event (or raw)"),
        };
        (index, order.target.clone(), order.auth.clone(), event, bytes)
    };

    // Kuper changes its own view when it decides, whatever the merchant answers; a raw body is
    // a test of the merchant's input handling and changes nothing.
    if request.raw.is_none() {
        if let (Some(event), Some(order)) = (&event, app.world().order_mut(index)) {
            order.apply_webhook(event);
        }
    }

    let label = event.clone().unwrap_or_else(|| "raw".to_owned());
    let mut attempts = Vec::with_capacity(repeat as usize);
    for _ in 0..repeat {
        let answer = app.driver.send(&target, auth.as_ref(), bytes.clone()).await;
        if let Some(order) = app.world().order_mut(index) {
            order.webhooks.push(WebhookRecord::new(&label, &answer));
        }
        attempts.push(answer);
    }
    let last = attempts.last().cloned();
    let mut reply = json!({
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
