//! The HTTP surface: Kuper's endpoints and the control API.

mod control;
mod kuper;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::config::SimConfig;
use crate::driver::Driver;
use crate::faults::Faults;
use crate::tokens::Tokens;
use crate::validate::Rejection;
use crate::world::World;

/// Everything one simulator instance shares between requests.
pub(crate) struct App {
    pub config: SimConfig,
    world: Mutex<World>,
    tokens: Mutex<Tokens>,
    faults: Mutex<Faults>,
    pub driver: Driver,
    seq: AtomicU64,
    /// Wakes requests held by a hang outage (outage ended, or shutting down).
    pub release: Notify,
    pub shutting_down: AtomicBool,
}

/// A poisoned lock only means another request panicked mid-update; the simulator's data is
/// still the best record there is, so keep serving it.
fn relock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl App {
    pub fn new(config: SimConfig) -> std::io::Result<Arc<Self>> {
        let driver = Driver::new().map_err(std::io::Error::other)?;
        Ok(Arc::new(Self {
            world: Mutex::new(World::new(config.seed)),
            tokens: Mutex::new(Tokens::default()),
            faults: Mutex::new(Faults::default()),
            driver,
            seq: AtomicU64::new(0),
            release: Notify::new(),
            shutting_down: AtomicBool::new(false),
            config,
        }))
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        relock(&self.world)
    }

    pub fn tokens(&self) -> MutexGuard<'_, Tokens> {
        relock(&self.tokens)
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        relock(&self.faults)
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The sequence number of the last notification that arrived.
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.release.notify_waiters();
    }
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/auth/token", post(kuper::token))
        .route("/ofm/api/v1/notifications", post(kuper::notify_ofm))
        .route("/v3/notifications", post(kuper::notify_v3))
        .route("/v1/notifications", post(kuper::notify_v1))
        .route("/ofm/api/v1/shipments", get(kuper::shipments))
        .route("/ofm/api/v1/shipments/{id}", get(kuper::shipment))
        .route("/ofm/api/v1/shipments/{id}/state", get(kuper::shipment_state))
        .route("/sim/v1/health", get(control::health))
        .route("/sim/v1/orders", post(control::create_order).get(control::list_orders))
        .route("/sim/v1/orders/{id}", get(control::get_order))
        .route("/sim/v1/orders/{id}/webhooks", post(control::send_webhook))
        .route("/sim/v1/notifications", get(control::notifications))
        .route("/sim/v1/faults", post(control::add_fault).delete(control::clear_faults).get(control::list_faults))
        .route("/sim/v1/outage", post(control::start_outage).delete(control::end_outage))
        .route("/sim/v1/tokens/revoke", post(control::revoke_tokens))
        .fallback(control::not_found)
        .with_state(app)
}

/// Which family of Kuper endpoints answers, and so which error body it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// `/ofm/api/v1/…`: OAuth only; problem-details-like errors.
    Ofm,
    /// `/v3/…` and `/v1/…`: OAuth or `Client-Token`; `{"errors":[…],"code":…}`.
    V3,
}

pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) fn kuper_error(
    api: Api,
    status: u16,
    kind: &str,
    title: &str,
    field: Option<&str>,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    let body = match api {
        Api::V3 => json!({
            "errors": [{"type": kind, "field": field, "message": message}],
            "code": status,
        }),
        Api::Ofm => {
            let params: Vec<Value> = field.map(|f| json!({"name": f, "reason": message})).into_iter().collect();
            json!({"error": {
                "type": kind,
                "title": title,
                "status": status,
                "detail": message,
                "invalid_params": params,
            }})
        }
    };
    let mut response = (status_code(status), Json(body)).into_response();
    if let Some(seconds) = retry_after {
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert("retry-after", value);
        }
    }
    response
}

pub(crate) fn rejection_response(api: Api, rejection: &Rejection) -> Response {
    kuper_error(
        api,
        rejection.status,
        rejection.rule.slug(),
        rejection.rule.title(),
        rejection.field.as_deref(),
        &rejection.message,
        None,
    )
}

/// Control API errors: `{"error":{"code","message"}}`.
pub(crate) fn control_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}
