//! `POST /kuper-webhook` (protocol.md §2–4).

use crate::auth::redact_headers;
use crate::error::ApiError;
use crate::{request_id, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kuper_bridge_storage::{Exchange, IngestResult};
use kuper_bridge_wire::{WebhookEnvelope, WebhookEvent};
use serde_json::json;
use std::time::Instant;
use tracing::{info, warn};

/// Body kept in the audit entry of a refused request (unauthenticated bodies are not trusted
/// with disk space).
const REFUSED_BODY_KEEP: usize = 2048;
/// Headers kept in an audit entry; a client can send many kilobytes of them.
const MAX_AUDIT_HEADERS: usize = 4096;

fn cap(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let rid = request_id(&headers);
    let path = state.webhook_path.clone();
    let base = Exchange {
        kind: "webhook".into(),
        direction: "in".into(),
        method: Some("POST".into()),
        path: Some(path),
        headers: Some(cap(redact_headers(&headers), MAX_AUDIT_HEADERS)),
        request_id: Some(rid.clone()),
        ..Default::default()
    };

    if !state.webhook_auth.check(&headers) {
        state.metrics.webhook("unknown", "unauthorized");
        warn!(request_id = %rid, "webhook refused: wrong or missing credentials");
        let err = ApiError::unauthorized();
        // Anyone can send these: the audit log takes a bounded number per minute (the rest
        // are counted and logged), so a flood cannot fill the disk or starve Kuper's writes.
        if state.unauthenticated_audit.admit() {
            record_refusal(&state, base, None, &err, started).await;
        }
        let mut resp = err.into_response();
        if !state.webhook_auth.basic.is_empty() {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"kuper-bridge\""),
            );
        }
        return resp;
    }

    let bytes = match axum::body::to_bytes(body, state.body_limit).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            let err = if too_large {
                state.metrics.webhook("unknown", "too_large");
                ApiError::payload_too_large(state.body_limit)
            } else {
                state.metrics.webhook("unknown", "bad_request");
                ApiError::bad_request(format!("the body could not be read: {e}"))
            };
            record_refusal(&state, base, None, &err, started).await;
            return err.into_response();
        }
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();

    let env = match WebhookEnvelope::parse(&bytes).and_then(|mut env| {
        // order.created must carry a usable order: refuse it here with the JSON path.
        if env.event == Some(WebhookEvent::OrderCreated) {
            env.cache_order()?;
        }
        Ok(env)
    }) {
        Ok(env) => env,
        Err(e) => {
            state.metrics.webhook("unknown", "bad_request");
            warn!(request_id = %rid, error = %e, "webhook refused: bad body");
            let err = ApiError::bad_request(e.to_string()).with_details(json!({"path": e.path}));
            record_refusal(&state, base, Some(text), &err, started).await;
            return err.into_response();
        }
    };

    let event_label = env.event.map(|e| e.as_str()).unwrap_or("unknown").to_string();
    let mut exchange = base;
    exchange.event = Some(env.event_type.clone());
    exchange.body = Some(text);
    exchange.latency_ms = Some(started.elapsed().as_millis() as i64);
    // The acceptance hook is asked about orders we do not have yet; a redelivered
    // order.created is answered as the first one was, without asking again.
    let acceptance = match (&state.acceptance, env.event) {
        (Some(hook), Some(WebhookEvent::OrderCreated)) => {
            let known = match env.identity.original_order_id.as_deref().or(env.identity.order_uuid.as_deref()) {
                Some(reference) => state.store.find_order(reference).await.ok().flatten().is_some(),
                None => false,
            };
            if known {
                None
            } else {
                Some(hook.ask(&env, &state.policy).await)
            }
        }
        _ => None,
    };
    match state.store.ingest_webhook_with(&env, exchange, &state.policy, answer, acceptance).await {
        Ok(result) => {
            let (status, body) = answer(&result);
            let outcome = result.outcome();
            state.metrics.webhook(&event_label, outcome);
            let order_id = match &result {
                IngestResult::Created { order_id, .. } | IngestResult::Applied { order_id, .. } => Some(*order_id),
                _ => None,
            };
            info!(request_id = %rid, order_id, kuper_order = env.identity.original_order_id.as_deref(), event = %env.event_type, outcome, status, "webhook stored");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => {
            state.metrics.webhook(&event_label, "error");
            // Never 200 for something not stored: Kuper retries a 503.
            ApiError::from(e).into_response()
        }
    }
}

/// The HTTP answer for a stored webhook; also written into its audit entry.
pub fn answer(result: &IngestResult) -> (u16, String) {
    match result {
        IngestResult::Created { answer, .. } => (200, serde_json::to_string(answer).unwrap_or_default()),
        IngestResult::Applied { .. } | IngestResult::UnknownEvent => (200, r#"{"status":"ok"}"#.to_string()),
        IngestResult::UnknownOrder => (
            404,
            json!({"error": {"code": "order_not_found", "message": "no such order; send order.created first", "details": null}}).to_string(),
        ),
    }
}

async fn record_refusal(
    state: &AppState,
    mut exchange: Exchange,
    body: Option<String>,
    err: &ApiError,
    started: Instant,
) {
    exchange.status = Some(i64::from(err.status.as_u16()));
    exchange.outcome = Some(err.code.to_string());
    exchange.detail = Some(err.message.clone());
    exchange.response = Some(err.body().to_string());
    exchange.body = body.map(|b| b.chars().take(REFUSED_BODY_KEEP).collect());
    exchange.latency_ms = Some(started.elapsed().as_millis() as i64);
    if let Err(e) = state.store.record_exchange(None, exchange).await {
        warn!(error = %e, "could not record a refused webhook in the audit log");
    }
}

pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}
