//! The merchant REST API (`/api/v1`, interfaces.md).

use crate::auth::{authenticate, redact_headers, Caller, Scope};
use crate::body::{self, field_error, Fields};
use crate::error::ApiError;
use crate::{request_id, AppState};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kuper_bridge_domain::deadlines::deadlines_at;
use kuper_bridge_domain::engine::allowed_actions;
use kuper_bridge_domain::{Action, ActionKind, CollectedLine, DomainError, Policy};
use kuper_bridge_domain::{CancelDescription, CancelReason, CustomerCode, OverrideReason, Parsed, PromisedTime};
use kuper_bridge_storage::{ActionRequest, Exchange, OrderFilter, OutboxRecord, OutboxStatus, Store, StoredOrder};
use kuper_bridge_wire::decimal::read_decimal;
use serde::Deserialize;
use serde_json::{json, Value};

pub const OPENAPI: &str = include_str!("../openapi.json");

fn caller(state: &AppState, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
    let c = authenticate(&state.api_keys, headers)?;
    c.require(scope)?;
    Ok(c)
}

pub async fn openapi(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(&state, &headers, Scope::Read)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response())
}

/// Storage keeps the pickup lock-out in unix seconds; the API shows every time in unix
/// milliseconds (decisions.md).
pub fn seconds_to_ms(seconds: Option<i64>) -> Option<i64> {
    seconds.map(|s| s.saturating_mul(1000))
}

/// The order as the API shows it. The pickup code itself is never shown here: it is the
/// customer's secret; only the action that created it returns it.
pub fn order_view(policy: &Policy, o: &StoredOrder) -> Value {
    let mut v = serde_json::to_value(&o.order).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        let pickup = o.order.pickup.as_ref().map(|p| {
            json!({"issued": true, "verified": p.verified, "failedAttempts": p.failed_attempts, "lockedUntil": seconds_to_ms(p.locked_until)})
        });
        obj.insert("pickupCode".into(), pickup.unwrap_or(json!({"issued": false})));
        obj.remove("pickup");
        obj.insert("id".into(), json!(o.id));
        obj.insert("createdAt".into(), json!(o.created_at));
        obj.insert("updatedAt".into(), json!(o.updated_at));
        obj.insert(
            "allowedActions".into(),
            json!(allowed_actions(&o.order, policy).iter().map(|a| a.as_str()).collect::<Vec<_>>()),
        );
        obj.insert("deadlines".into(), deadlines_view(policy, o));
    }
    v
}

/// The order's pending deadlines as of now (computed, like `allowedActions`); what was
/// recorded when they passed is in the timeline.
fn deadlines_view(policy: &Policy, o: &StoredOrder) -> Value {
    let now = kuper_bridge_storage::now_ms();
    json!(deadlines_at(&o.order, o.created_at, &policy.deadlines, now)
        .iter()
        .map(|(d, stage)| json!({"kind": d.kind, "dueAt": d.due_at, "warnAt": d.warn_at, "stage": stage.as_str()}))
        .collect::<Vec<_>>())
}

fn outbox_view(r: &OutboxRecord, who: &Caller) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        let mut body: Value = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body.clone()));
        hide_codes(&mut body, who);
        obj.insert("body".into(), body);
    }
    v
}

/// Pickup codes are the customer's secret: only `admin` callers see them in bodies kept for
/// audit (the notification to Kuper must carry the code, so the audit log has it).
fn hide_codes(v: &mut Value, who: &Caller) {
    if who.require(Scope::Admin).is_ok() {
        return;
    }
    redact_pickup_codes(v);
}

/// Replaces every pickup code in a JSON document (`pickupCode` anywhere, `code` outside error
/// objects) with `[hidden]`.
pub fn redact_pickup_codes(v: &mut Value) {
    match v {
        Value::Object(map) => {
            // `code` is the pickup code in the v3 body and in requests; in an error object
            // (which has a message) it is the error's code and stays.
            let is_error = map.contains_key("message");
            for (k, x) in map.iter_mut() {
                let secret = k == "pickupCode" || (k == "code" && !is_error);
                if secret && x.is_string() {
                    *x = Value::String("[hidden]".into());
                } else {
                    redact_pickup_codes(x);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_pickup_codes),
        _ => {}
    }
}

fn events_view(events: &[kuper_bridge_storage::EventRecord], who: &Caller) -> Value {
    let mut v = serde_json::to_value(events).unwrap_or(Value::Null);
    for e in v.as_array_mut().into_iter().flatten() {
        for key in ["body", "response"] {
            let Some(Ok(mut parsed)) = e.get(key).and_then(Value::as_str).map(serde_json::from_str::<Value>) else {
                continue;
            };
            let before = parsed.clone();
            hide_codes(&mut parsed, who);
            if parsed != before {
                e[key] = Value::String(parsed.to_string());
            }
        }
    }
    v
}

#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    scheme: Option<String>,
    store: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    /// The board's search (interfaces.md): Kuper id, orderUUID, number, pickup code, phone, name.
    q: Option<String>,
    /// `true`: only orders that need attention.
    attention: Option<bool>,
}

pub async fn list_orders(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers, Scope::Read)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let before_id = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => {
            Some(c.parse::<i64>().map_err(|_| ApiError::bad_request("cursor: not a cursor from a previous page"))?)
        }
        None => None,
    };
    if let Some(s) = &q.state {
        if kuper_bridge_domain::OrderState::parse(s).is_none() {
            return Err(ApiError::bad_request(format!("state: unknown state {s:?}")));
        }
    }
    let scheme = match &q.scheme {
        Some(s) => Some(
            kuper_bridge_domain::Scheme::parse(s)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "scheme: unknown scheme {s:?} (kuper_delivery, pickup, merchant_delivery)"
                    ))
                })?
                .as_str()
                .to_string(),
        ),
        None => None,
    };
    let filter = OrderFilter {
        state: q.state,
        scheme,
        store: q.store,
        limit,
        before_id,
        search: q.q.filter(|s| !s.trim().is_empty()),
        attention: q.attention.unwrap_or(false),
    };
    let orders = state.store.list_orders(&filter).await?;
    let next = if orders.len() as i64 == limit { orders.last().map(|o| o.id.to_string()) } else { None };
    Ok(Json(json!({
        "orders": orders.iter().map(|o| order_view(&state.policy, o)).collect::<Vec<_>>(),
        "nextCursor": next,
    })))
}

async fn load(state: &AppState, reference: &str) -> Result<StoredOrder, ApiError> {
    state
        .store
        .find_order(reference)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "order_not_found", format!("order {reference} not found")))
}

pub async fn get_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reference): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers, Scope::Read)?;
    let o = load(&state, &reference).await?;
    Ok(Json(order_view(&state.policy, &o)))
}

pub async fn order_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reference): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&state, &headers, Scope::Read)?;
    let o = load(&state, &reference).await?;
    let events = state.store.order_events(o.id).await?;
    Ok(Json(json!({"order": o.order.display_ref(), "events": events_view(&events, &who)})))
}

/// The fields each body may have (interfaces.md); anything else is a 400 naming the field.
const ACCEPT_FIELDS: &[&str] = &["expectedAssemblyTime"];
const COMPOSITION_FIELDS: &[&str] = &["positions"];
/// `overrideReason`: an operator hands a pickup order over without a verified code.
const DELIVERED_FIELDS: &[&str] = &["positions", "overrideReason"];
const LINE_FIELDS: &[&str] = &["id", "quantity", "weight", "replacedByID", "markingCodes", "price", "discountPrice"];
const CODE_FIELDS: &[&str] = &["code"];
const ETA_FIELDS: &[&str] = &["at"];
const CANCEL_FIELDS: &[&str] = &["reason", "description"];

/// How far in the past an `expectedAssemblyTime` or `at` may lie: the store system's clock
/// and ours disagree by a few seconds, and a request takes time to arrive.
pub const CLOCK_SKEW_TOLERANCE_MS: i64 = 60_000;

fn lines(body: Option<&Fields>) -> Result<Option<Vec<CollectedLine>>, ApiError> {
    let Some(positions) = body.map(|b| b.objects("positions", LINE_FIELDS)).transpose()?.flatten() else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(positions.len());
    for p in positions {
        let dec = |n: &str| read_decimal(&p.value(n)).map_err(|m| field_error(&p.name(n), m));
        let id = match p.value("id") {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Null => return Err(field_error(&p.name("id"), "required")),
            _ => return Err(field_error(&p.name("id"), "expected a string")),
        };
        out.push(CollectedLine {
            id,
            quantity: dec("quantity")?.ok_or_else(|| field_error(&p.name("quantity"), "required"))?,
            weight: dec("weight")?,
            replaced_by_id: p.string("replacedByID")?,
            marking_codes: p.strings("markingCodes")?,
            price: dec("price")?,
            discount_price: dec("discountPrice")?,
        });
    }
    Ok(Some(out))
}

/// A time the store promises (`expectedAssemblyTime`, `at`), parsed; one that has already
/// passed is refused here. A malformed one travels on to the engine, which reports it after
/// the state check (a step out of order is a 409 whatever its input).
fn promised_time(field: &str, text: &str, now_ms: i64) -> Result<Parsed<PromisedTime>, ApiError> {
    let parsed = PromisedTime::parse(field, text);
    if let Ok(t) = &parsed {
        let t = t.at();
        if t.timestamp_millis() < now_ms - CLOCK_SKEW_TOLERANCE_MS {
            let now = chrono::DateTime::from_timestamp_millis(now_ms)
                .map(|n| PromisedTime::from(n.with_timezone(t.offset())).to_string())
                .unwrap_or_default();
            return Err(DomainError::invalid(
                field,
                format!("{} is in the past (now {now}); send a later time", text.trim()),
            )
            .into());
        }
    }
    Ok(parsed)
}

/// Turns an action's body into the request storage applies. The same for the REST API and the
/// command line (`kuper-bridge orders act`): one place for what a body may hold.
pub fn build_action(
    kind: ActionKind,
    content_type: Option<&str>,
    bytes: &[u8],
    policy: &Policy,
    now_ms: i64,
) -> Result<ActionRequest, ApiError> {
    let fields = |allowed: &[&str]| body::read(content_type, bytes, allowed);
    let string = |b: &Option<Fields>, name: &str| b.as_ref().map(|b| b.string(name)).transpose().map(Option::flatten);
    let action = match kind {
        ActionKind::Accept => {
            let expected_assembly_time = string(&fields(ACCEPT_FIELDS)?, "expectedAssemblyTime")?
                .map(|t| promised_time("expectedAssemblyTime", &t, now_ms))
                .transpose()?;
            Action::Accept { expected_assembly_time }
        }
        ActionKind::StartAssembly => {
            fields(&[])?;
            Action::StartAssembly
        }
        ActionKind::Assembled => {
            fields(&[])?;
            Action::Assembled
        }
        ActionKind::Ready => Action::Ready { positions: lines(fields(COMPOSITION_FIELDS)?.as_ref())? },
        ActionKind::PickupCode => match string(&fields(CODE_FIELDS)?, "code")? {
            Some(code) => Action::PickupCode { code: CustomerCode::parse(&code) },
            None => return Ok(ActionRequest::GeneratePickupCode),
        },
        ActionKind::EstimatedDeliveryTime => {
            let at = string(&fields(ETA_FIELDS)?, "at")?
                .ok_or_else(|| field_error("at", "required (RFC 3339 with offset)"))?;
            Action::EstimatedDeliveryTime { at: promised_time("at", &at, now_ms)? }
        }
        ActionKind::Delivering => {
            fields(&[])?;
            Action::Delivering
        }
        ActionKind::Delivered => {
            let b = fields(DELIVERED_FIELDS)?;
            Action::Delivered {
                positions: lines(b.as_ref())?,
                handover_override: string(&b, "overrideReason")?.map(|r| OverrideReason::parse(&r)),
            }
        }
        ActionKind::Cancel => {
            let b = fields(CANCEL_FIELDS)?;
            Action::Cancel {
                reason: CancelReason::parse(
                    &string(&b, "reason")?.ok_or_else(|| field_error("reason", "required (a cancellation slug)"))?,
                    &policy.cancel_reasons,
                ),
                description: CancelDescription::parse(&string(&b, "description")?.unwrap_or_default()),
            }
        }
    };
    Ok(ActionRequest::Action(action))
}

/// An applied action: its answer body (what the REST API answers with 202) and whether it was
/// the replay of an earlier request with the same `Idempotency-Key`.
pub struct ActionAnswer {
    pub body: Value,
    pub replayed: bool,
    pub order_id: i64,
    pub state: kuper_bridge_domain::OrderState,
}

/// Applies a merchant action: reads the body, lets storage apply the domain's rules and queue
/// the notifications, and builds the answer. The REST API and the command line both call this,
/// so the rules, the body checks and the audit entry are the same whichever way an action comes.
#[allow(clippy::too_many_arguments)]
pub async fn apply_action(
    store: &dyn Store,
    policy: &Policy,
    reference: &str,
    kind: ActionKind,
    content_type: Option<&str>,
    bytes: &[u8],
    mut exchange: Exchange,
    idempotency: Option<kuper_bridge_storage::IdempotencyKey>,
) -> Result<ActionAnswer, ApiError> {
    let request = build_action(kind, content_type, bytes, policy, kuper_bridge_storage::now_ms())?;
    exchange.event = Some(kind.as_str().into());
    // A pickup code given by the store is kept on the order, not in the audit entry.
    exchange.body = Some(if kind == ActionKind::PickupCode {
        "[pickup code request]".into()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    });
    let result = store.apply_action_keyed(reference, request, policy, exchange, idempotency).await?;
    let summaries: Vec<Value> =
        result.notifications.iter().map(|n| json!({"id": n.id, "event": n.event, "status": n.status})).collect();
    let mut body = json!({
        "order": order_view(policy, &result.order),
        "notification": summaries.last().cloned().unwrap_or(Value::Null),
        "notifications": summaries,
    });
    if kind == ActionKind::PickupCode {
        if let Some(p) = &result.order.order.pickup {
            body["pickupCode"] = json!(p.code);
        }
    }
    Ok(ActionAnswer { body, replayed: result.replayed, order_id: result.order.id, state: result.order.order.state() })
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    // A header that is not even text is no JSON type either.
    headers.get(axum::http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("application/octet-stream"))
}

pub async fn action(
    kind: ActionKind,
    state: AppState,
    headers: HeaderMap,
    reference: String,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let who = caller(&state, &headers, Scope::Write)?;
    let exchange = Exchange {
        kind: "action".into(),
        direction: "api".into(),
        method: Some("POST".into()),
        path: Some(format!("/api/v1/orders/{reference}/{}", kind.as_str())),
        headers: Some(redact_headers(&headers)),
        request_id: Some(request_id(&headers)),
        actor: Some(kuper_bridge_storage::Actor::ApiKey(who.name.clone())),
        ..Default::default()
    };
    let idempotency = idempotency_key(&headers, &who.name, kind, &reference, &bytes)?;
    let answer = apply_action(
        state.store.as_ref(),
        &state.policy,
        &reference,
        kind,
        content_type(&headers),
        &bytes,
        exchange,
        idempotency,
    )
    .await?;
    tracing::info!(order_id = answer.order_id, action = kind.as_str(), caller = %who.name, state = %answer.state, "merchant action");
    let mut response = (StatusCode::ACCEPTED, Json(answer.body)).into_response();
    if answer.replayed {
        response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The `Idempotency-Key` header of an action, scoped to the caller's API key: a store system
/// that lost the answer to an action sends it again with the same key and gets the first
/// result instead of a 409.
fn idempotency_key(
    headers: &HeaderMap,
    caller: &str,
    kind: ActionKind,
    reference: &str,
    body: &Bytes,
) -> Result<Option<kuper_bridge_storage::IdempotencyKey>, ApiError> {
    use sha2::{Digest, Sha256};
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let value = value.to_str().unwrap_or_default().trim();
    if value.is_empty() || value.len() > 255 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request("Idempotency-Key: 1 to 255 visible ASCII characters".to_string()));
    }
    let mut hash = Sha256::new();
    hash.update(kind.as_str().as_bytes());
    hash.update(b"\n");
    hash.update(reference.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    let request_hash = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some(kuper_bridge_storage::IdempotencyKey { key: format!("{caller}:{value}"), request_hash }))
}

pub async fn verify_pickup(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&state, &headers, Scope::Write)?;
    let code = body::read(content_type(&headers), &bytes, CODE_FIELDS)?
        .map(|b| b.string("code"))
        .transpose()?
        .flatten()
        .ok_or_else(|| field_error("code", "required"))?;
    state.verify_limiter.check(&who.name)?;
    let exchange = Exchange {
        kind: "pickup_verification".into(),
        direction: "api".into(),
        method: Some("POST".into()),
        path: Some(format!("/api/v1/orders/{reference}/pickup-code/verify")),
        headers: Some(redact_headers(&headers)),
        // The code tried is not kept: the audit log must not become a list of codes.
        body: None,
        request_id: Some(request_id(&headers)),
        actor: Some(kuper_bridge_storage::Actor::ApiKey(who.name.clone())),
        ..Default::default()
    };
    let v = state.store.verify_pickup_code(&reference, &code, &state.policy, exchange).await?;
    if !v.valid {
        state.verify_limiter.failed(&who.name);
    }
    Ok(Json(json!({"valid": v.valid, "attemptsLeft": v.attempts_left, "lockedUntil": seconds_to_ms(v.locked_until)})))
}

#[derive(Deserialize)]
pub struct OutboxQuery {
    status: Option<String>,
    limit: Option<i64>,
}

pub async fn list_outbox(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<OutboxQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&state, &headers, Scope::Read)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(OutboxStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!("status: expected pending, dead, sent or skipped, got {s:?}"))
        })?),
    };
    let records = state.store.list_outbox(status, q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(json!({"records": records.iter().map(|r| outbox_view(r, &who)).collect::<Vec<_>>()})))
}

pub async fn get_outbox(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&state, &headers, Scope::Read)?;
    let record = state
        .store
        .get_outbox(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("outbox record {id} not found")))?;
    let attempts = state.store.outbox_attempts(id).await?;
    let mut v = outbox_view(&record, &who);
    v["history"] = events_view(&attempts, &who);
    Ok(Json(v))
}

/// The fields of a replay or skip: the operator's reason, required (it goes into the timeline).
const DECISION_FIELDS: &[&str] = &["reason"];

/// The longest reason an operator may write for a decision on a dead letter.
pub const MAX_DECISION_REASON_CHARS: usize = 1000;

/// An operator's written reason for a decision, trimmed: required, at most
/// [`MAX_DECISION_REASON_CHARS`]. The one rule for the REST API and the console.
pub fn checked_reason(reason: Option<&str>) -> Result<String, ApiError> {
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| field_error("reason", "required: say why (it is kept in the order's timeline)"))?;
    if reason.chars().count() > MAX_DECISION_REASON_CHARS {
        return Err(field_error("reason", format!("longer than {MAX_DECISION_REASON_CHARS} characters")));
    }
    Ok(reason.to_string())
}

/// The reason of a REST replay or skip, from its JSON body.
pub fn decision_reason(content_type: Option<&str>, bytes: &[u8]) -> Result<String, ApiError> {
    let reason = body::read(content_type, bytes, DECISION_FIELDS)?.map(|b| b.string("reason")).transpose()?.flatten();
    checked_reason(reason.as_deref())
}

pub async fn operator(
    replay: bool,
    state: AppState,
    headers: HeaderMap,
    id: i64,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let who = caller(&state, &headers, Scope::Admin)?;
    let reason = decision_reason(content_type(&headers), &bytes)?;
    let exchange = Exchange {
        kind: "operator".into(),
        direction: "api".into(),
        method: Some("POST".into()),
        path: Some(format!("/api/v1/outbox/{id}/{}", if replay { "replay" } else { "skip" })),
        headers: Some(redact_headers(&headers)),
        request_id: Some(request_id(&headers)),
        detail: Some(reason),
        actor: Some(kuper_bridge_storage::Actor::ApiKey(who.name.clone())),
        ..Default::default()
    };
    let record = if replay { state.store.replay(id, exchange).await? } else { state.store.skip(id, exchange).await? };
    tracing::info!(outbox_id = id, caller = %who.name, replay, "operator decision on a dead letter");
    Ok((StatusCode::ACCEPTED, Json(outbox_view(&record, &who))).into_response())
}

pub async fn ready(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers, Scope::Read)?;
    state.store.ready().await?;
    Ok(Json(json!({"status": "ready"})))
}

pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(&state, &headers, Scope::Read)?;
    // Outbox gauges are read from the database at scrape time, so they are right across
    // restarts and replicas.
    if let Ok(destinations) = state.store.outbox_destinations().await {
        state.metrics.set_outbox(&destinations, kuper_bridge_storage::now_ms());
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &state.registry)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "metrics encoding failed"))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
        .into_response())
}
