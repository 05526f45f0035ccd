//! The one place where errors become HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kuper_bridge_domain::DomainError;
use kuper_bridge_storage::StoreError;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: Value::Null }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong credentials")
    }
    pub fn forbidden(scope: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", format!("this API key lacks the {scope:?} scope"))
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("body larger than {limit} bytes"))
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message, "details": self.details}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"kuper-bridge\""),
            );
        }
        resp
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match &e {
            DomainError::InvalidTransition { state, allowed, action, reason } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_transition", e.to_string()).with_details(json!({
                    "action": action.as_str(),
                    "state": state.as_str(),
                    "allowed": allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                    "reason": reason,
                }))
            }
            DomainError::Invalid { field, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", e.to_string())
                    .with_details(json!({"field": field, "message": message}))
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::OrderNotFound(r) => {
                ApiError::new(StatusCode::NOT_FOUND, "order_not_found", format!("order {r} not found"))
            }
            StoreError::OutboxNotFound(id) => ApiError::not_found(format!("outbox record {id} not found")),
            StoreError::IdempotencyKeyReused => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_key_reused", e.to_string())
            }
            StoreError::NoFreePickupCode => {
                ApiError::new(StatusCode::CONFLICT, "pickup_codes_exhausted", e.to_string())
            }
            StoreError::PickupCodeInUse => ApiError::new(StatusCode::CONFLICT, "pickup_code_in_use", e.to_string()),
            StoreError::NoPickupCode => ApiError::new(StatusCode::CONFLICT, "no_pickup_code", e.to_string()),
            StoreError::OrderClosed(_) => ApiError::new(StatusCode::CONFLICT, "order_closed", e.to_string()),
            StoreError::NotDeadLetter { .. } => ApiError::new(StatusCode::CONFLICT, "not_dead_letter", e.to_string()),
            StoreError::Domain(d) => d.into(),
            StoreError::PickupLocked { until } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "pickup_code_locked",
                "too many wrong pickup codes for this order; try later",
            )
            // Unix milliseconds, like every time of the API (storage keeps seconds).
            .with_details(json!({"lockedUntil": until.saturating_mul(1000)})),
            StoreError::Database(_) | StoreError::Sqlite(_) | StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "storage unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "storage is unavailable; retry later",
                )
            }
            StoreError::Document(_) | StoreError::DocumentDamaged(_) => {
                tracing::error!(error = %e, "a stored document does not read back, or one could not be written");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "stored_document_unreadable",
                    "a stored document could not be read or written; see the gateway's log",
                )
            }
            StoreError::Config(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "configuration", m),
            StoreError::OperatorNotFound(name) => ApiError::not_found(format!("operator {name} not found")),
            StoreError::OperatorExists(name) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", format!("operator {name} already exists"))
            }
        }
    }
}
