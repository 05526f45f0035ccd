//! The HTTP app: Kuper's webhook receiver, the merchant REST API, health and metrics.
//! Handlers parse, call storage (which calls the domain) and map errors once (`error.rs`).

pub mod acceptance;
pub mod api;
pub mod auth;
pub mod body;
pub mod error;
pub mod metrics;
pub mod operators;
pub mod server;
pub mod tls;
pub mod ui;
pub mod webhook;

pub use acceptance::{AcceptanceClient, AcceptanceHook};
pub use auth::{ApiKey, Scope, WebhookAuth};
pub use metrics::AppMetrics;
pub use server::{serve, ServeLimits};
pub use tls::{ServerCert, TlsFiles};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use kuper_bridge_domain::{ActionKind, Policy};
use kuper_bridge_storage::Store;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

pub const REQUEST_ID: &str = "x-request-id";

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub policy: Arc<Policy>,
    pub webhook_auth: Arc<WebhookAuth>,
    pub api_keys: Arc<Vec<ApiKey>>,
    pub webhook_path: String,
    pub body_limit: usize,
    pub metrics: AppMetrics,
    pub registry: Arc<Registry>,
    pub verify_limiter: Arc<VerifyLimiter>,
    pub unauthenticated_audit: Arc<AuditBudget>,
    /// Asked before a new order is accepted, when configured.
    pub acceptance: Option<Arc<AcceptanceClient>>,
    /// The operator console's settings and login throttling (issue #11).
    pub console: Arc<ui::Console>,
}

/// How many refused, unauthenticated requests per minute are written to the audit log.
pub struct AuditBudget {
    per_minute: u32,
    window: Mutex<(Instant, u32)>,
}

impl AuditBudget {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, window: Mutex::new((Instant::now(), 0)) }
    }

    pub fn admit(&self) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.0.elapsed() >= Duration::from_secs(60) {
            *w = (Instant::now(), 0);
        }
        w.1 += 1;
        w.1 <= self.per_minute
    }
}

pub fn request_id(headers: &HeaderMap) -> String {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// Wrong pickup codes per API key per minute: a store system that guesses is stopped here,
/// on top of the per-order lock-out in storage.
pub struct VerifyLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl VerifyLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, windows: Mutex::new(HashMap::new()) }
    }

    pub fn check(&self, client: &str) -> Result<(), ApiError> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((start, failures)) = windows.get(client) {
            if start.elapsed() < Duration::from_secs(60) && *failures >= self.per_minute {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many wrong pickup codes from this client; wait a minute",
                ));
            }
        }
        Ok(())
    }

    pub fn failed(&self, client: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let entry = windows.entry(client.to_string()).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Duration::from_secs(60) {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

fn action_route(kind: ActionKind) -> axum::routing::MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>, headers: HeaderMap, Path(reference): Path<String>, bytes: Bytes| async move {
            api::action(kind, state, headers, reference, bytes).await
        },
    )
}

/// Every route of the service. `/healthz` is the only one without credentials.
pub fn router(state: AppState) -> Router {
    let mut api = Router::new()
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/orders", get(api::list_orders))
        .route("/api/v1/orders/{ref}", get(api::get_order))
        .route("/api/v1/orders/{ref}/events", get(api::order_events))
        .route("/api/v1/orders/{ref}/pickup-code/verify", post(api::verify_pickup))
        .route("/api/v1/outbox", get(api::list_outbox))
        .route("/api/v1/outbox/{id}", get(api::get_outbox))
        .route(
            "/api/v1/outbox/{id}/replay",
            post(|State(s): State<AppState>, h: HeaderMap, Path(id): Path<i64>, b: Bytes| async move {
                api::operator(true, s, h, id, b).await
            }),
        )
        .route(
            "/api/v1/outbox/{id}/skip",
            post(|State(s): State<AppState>, h: HeaderMap, Path(id): Path<i64>, b: Bytes| async move {
                api::operator(false, s, h, id, b).await
            }),
        );
    for kind in ActionKind::ALL {
        api = api.route(&format!("/api/v1/orders/{{ref}}/{}", kind.as_str()), action_route(kind));
    }
    let request_id = HeaderName::from_static(REQUEST_ID);
    // The webhook reads its body itself, after checking credentials, to answer a JSON 413 and
    // audit it; every other route is bounded here.
    // server.body_limit is the one limit: axum's own default (2 MiB) would otherwise refuse
    // bodies a larger configured limit allows.
    let api = api.layer(RequestBodyLimitLayer::new(state.body_limit)).layer(axum::extract::DefaultBodyLimit::disable());
    Router::new()
        .route(&state.webhook_path, post(webhook::receive))
        .route("/healthz", get(webhook::health))
        .route("/readyz", get(api::ready))
        .route("/metrics", get(api::metrics))
        .merge(api)
        .merge(ui::router(state.clone()))
        .route("/", get(|| async { axum::response::Redirect::to("/ui/orders") }))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(30)))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// A worker-only process (`server.role = "worker"`): probes and metrics, no webhook, no API.
pub fn worker_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(webhook::health))
        .route("/readyz", get(api::ready))
        .route("/metrics", get(api::metrics))
        .fallback(|| async { ApiError::not_found("this process runs the dispatcher only (server.role = \"worker\")") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// Latency histogram per route and one grep-able log line per request.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Only standard methods become labels: anyone can invent a method per request.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m.to_string(),
        _ => "other".to_string(),
    };
    let route =
        request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let rid = request_id(request.headers());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let took = started.elapsed();
    state
        .metrics
        .http
        .get_or_create(&metrics::HttpLabels { method: method.clone(), route: route.clone(), status })
        .observe(took.as_secs_f64());
    tracing::info!(request_id = %rid, method, route, status, latency_ms = took.as_secs_f64() * 1000.0, "http request");
    response
}

/// Errors produced outside our handlers (body limit, path and query rejections, unknown
/// methods, timeouts) get the same JSON error body as ours.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // The console's pages answer errors in HTML (its own layer makes every /ui error a page).
    let is_html = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_json || is_html || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let code = match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        503 => "unavailable",
        _ => "error",
    };
    let message = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        m => m.to_string(),
    };
    let mut out = axum::response::IntoResponse::into_response(ApiError::new(status, code, message));
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
