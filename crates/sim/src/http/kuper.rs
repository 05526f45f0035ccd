//! Kuper's own endpoints: tokens, notifications, the pull API (one shipment, its state, the list).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine;
use serde_json::{json, Value};

use super::{kuper_error, rejection_response, status_code, Api, App};
use crate::driver::body_value;
use crate::faults::{FaultPath, FaultSpec, Outage};
use crate::net::ConnHandle;
use crate::tokens::TokenCheck;
use crate::validate::{parse_notification, peek, validate, Composition, Outcome, Rejection, Rule};
use crate::world::{now_utc, NotificationRecord, Verdict};

/// What a request ends in: an answer, or a connection closed without one.
enum Reply {
    Respond(Response),
    Drop,
}

fn finish(conn: &ConnHandle, reply: Reply) -> Response {
    match reply {
        Reply::Respond(response) => response,
        Reply::Drop => {
            conn.abort();
            // Never reaches the client: writing it fails on the aborted connection.
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Applies the delay of a fault and says whether the fault answers in place of the endpoint.
async fn injected(api: Api, fault: &FaultSpec) -> Option<Reply> {
    if let Some(delay) = fault.delay() {
        tokio::time::sleep(delay).await;
    }
    if fault.drop {
        return Some(Reply::Drop);
    }
    let status = fault.status?;
    let kind = if status == 401 { "unauthorized" } else { "injected_fault" };
    let message = format!("{kind}: injected fault, HTTP {status}");
    Some(Reply::Respond(kuper_error(api, status, kind, "Injected fault", None, &message, fault.retry_after)))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(detail: &str) -> Rejection {
    Rejection::new(Rule::Unauthorized, Some("Authorization"), detail)
}

impl App {
    /// OAuth bearer tokens everywhere; on `/v3` and `/v1` also a static `Client-Token`, which
    /// Kuper's v3 API expects together with `Api-Version: 3.0`.
    fn authenticate(&self, api: Api, headers: &HeaderMap) -> Result<(), Rejection> {
        if let Some(token) = bearer(headers) {
            return match self.tokens().check(token, Instant::now()) {
                TokenCheck::Valid => Ok(()),
                TokenCheck::Expired => Err(unauthorized("the access token has expired")),
                TokenCheck::Unknown => Err(unauthorized("the access token is not valid (unknown or revoked)")),
            };
        }
        if api == Api::V3 {
            if let Some(value) = headers.get("client-token") {
                let known = value.to_str().is_ok_and(|t| self.config.client_tokens.iter().any(|c| c == t.trim()));
                if !known {
                    return Err(Rejection::new(
                        Rule::Unauthorized,
                        Some("Client-Token"),
                        "the Client-Token is not valid",
                    ));
                }
                let version = headers.get("api-version").and_then(|v| v.to_str().ok());
                if version.map(str::trim) != Some("3.0") {
                    return Err(Rejection::new(
                        Rule::ApiVersion,
                        Some("Api-Version"),
                        "Client-Token requires the header Api-Version: 3.0",
                    ));
                }
                return Ok(());
            }
            return Err(unauthorized("send Authorization: Bearer <token> or Client-Token with Api-Version: 3.0"));
        }
        Err(unauthorized("send Authorization: Bearer <token>"))
    }
}

pub(super) async fn token(
    State(app): State<Arc<App>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let fault = app.faults().take(FaultPath::Token);
    if let Some(fault) = fault {
        if let Some(reply) = injected(Api::Ofm, &fault).await {
            return finish(&conn, reply);
        }
    }
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        (status, Json(json!({"error": error, "error_description": description}))).into_response()
    };
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
        );
    };
    // Clients may also authenticate with HTTP Basic (client_secret_basic).
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(i, s)| (i.to_owned(), s.to_owned())));
    let client_id = form.get("client_id").cloned().or_else(|| basic.as_ref().map(|b| b.0.clone()));
    let client_secret = form.get("client_secret").cloned().or_else(|| basic.as_ref().map(|b| b.1.clone()));
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(StatusCode::UNAUTHORIZED, "unauthorized_client", "grant_type must be client_credentials");
    }
    let valid = client_id.as_deref() == Some(app.config.client_id.as_str())
        && client_secret.as_deref() == Some(app.config.client_secret.as_str());
    if !valid {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "invalid client credentials");
    }
    let ttl = app.config.token_ttl;
    let after_seq = app.last_seq();
    let access_token = app.tokens().issue(ttl, Instant::now(), after_seq);
    Json(json!({
        "access_token": access_token,
        // Whole seconds, rounded down, so a client never trusts a token longer than it lives.
        "expires_in": ttl.as_secs(),
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scopes": "",
    }))
    .into_response()
}

pub(super) async fn notify_ofm(
    State(app): State<Arc<App>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    notify(app, conn, Api::Ofm, "/ofm/api/v1/notifications", headers, body).await
}

pub(super) async fn notify_v3(
    State(app): State<Arc<App>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    notify(app, conn, Api::V3, "/v3/notifications", headers, body).await
}

pub(super) async fn notify_v1(
    State(app): State<Arc<App>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    notify(app, conn, Api::V3, "/v1/notifications", headers, body).await
}

/// The request is judged in its own task: a client that gives up (times out) must not cancel
/// a notification half-way, so whatever Kuper decided is decided and logged either way, as a
/// real server would.
async fn notify(
    app: Arc<App>,
    conn: ConnHandle,
    api: Api,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let task = tokio::spawn(process(app, api, path, headers, body));
    match task.await {
        Ok(reply) => finish(&conn, reply),
        Err(error) => {
            kuper_error(api, 500, "internal", "Internal Server Error", None, &format!("internal: {error}"), None)
        }
    }
}

/// What is known of a request before it is judged, for its log entry.
struct Arrival {
    seq: u64,
    at: String,
    path: &'static str,
    body: Bytes,
}

impl Arrival {
    fn record(
        &self,
        event: Option<String>,
        status: u16,
        verdict: Verdict,
        rejection: Option<&Rejection>,
    ) -> NotificationRecord {
        NotificationRecord {
            seq: self.seq,
            event,
            at: self.at.clone(),
            path: self.path.to_owned(),
            status,
            verdict,
            rule: rejection.map(|r| r.rule.slug().to_owned()),
            message: rejection.map(|r| r.message.clone()),
            body: body_value(&self.body),
            original_order_id: None,
        }
    }
}

impl App {
    /// Logs a request refused before its order was resolved, under that order if the body
    /// names one.
    fn log_early(
        &self,
        arrival: &Arrival,
        status: u16,
        verdict: Verdict,
        rejection: Option<&Rejection>,
        note: Option<&str>,
    ) {
        let (event, ids) = peek(&arrival.body);
        let mut record = arrival.record(event, status, verdict, rejection);
        if let Some(note) = note {
            record.rule = Some(note.to_owned());
            record.message = Some(format!("{note}: {}", describe_fault(status)));
        }
        let mut world = self.world();
        let order = world.resolve_quietly(&ids);
        world.record(order, record);
    }
}

fn describe_fault(status: u16) -> String {
    if status == 0 {
        "connection closed without an answer".to_owned()
    } else {
        format!("answered HTTP {status} without applying the notification")
    }
}

async fn process(app: Arc<App>, api: Api, path: &'static str, headers: HeaderMap, body: Bytes) -> Reply {
    let arrival = Arrival { seq: app.next_seq(), at: now_utc(), path, body };

    let fault = app.faults().take(FaultPath::Notifications);
    if let Some(fault) = fault {
        if let Some(reply) = injected(api, &fault).await {
            let status = match (&reply, fault.status) {
                (Reply::Drop, _) | (_, None) => 0,
                (Reply::Respond(_), Some(status)) => status,
            };
            let note = if fault.drop { "injected_drop" } else { "injected_fault" };
            app.log_early(&arrival, status, Verdict::Fault, None, Some(note));
            return reply;
        }
    } else {
        let outage = app.faults().outage(Instant::now());
        match outage {
            Some(Outage::Status { status, retry_after, .. }) => {
                app.log_early(&arrival, status, Verdict::Fault, None, Some("outage"));
                let message = format!("outage: Kuper is unavailable (HTTP {status})");
                return Reply::Respond(kuper_error(
                    api,
                    status,
                    "outage",
                    "Service Unavailable",
                    None,
                    &message,
                    retry_after,
                ));
            }
            Some(Outage::Hang { until }) => {
                // Registered before the check, so an outage ended in between still wakes us.
                let released = app.release.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if !app.shutting_down.load(Ordering::SeqCst) {
                    tokio::select! {
                        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(until)) => {}
                        _ = released => {}
                    }
                }
                app.log_early(&arrival, 0, Verdict::Fault, None, Some("outage_hang"));
                return Reply::Drop;
            }
            None => {}
        }
    }

    if let Err(rejection) = app.authenticate(api, &headers) {
        app.log_early(&arrival, rejection.status, Verdict::Rejected, Some(&rejection), None);
        return Reply::Respond(rejection_response(api, &rejection));
    }
    let notification = match parse_notification(&arrival.body) {
        Ok(notification) => notification,
        Err(rejection) => {
            app.log_early(&arrival, rejection.status, Verdict::Rejected, Some(&rejection), None);
            return Reply::Respond(rejection_response(api, &rejection));
        }
    };
    let event = Some(notification.kind.wire().to_owned());

    let mut world = app.world();
    let index = match world.resolve(&notification.ids) {
        Ok(index) => index,
        Err(rejection) => {
            let order = world.resolve_quietly(&notification.ids);
            let record = arrival.record(event, rejection.status, Verdict::Rejected, Some(&rejection));
            world.record(order, record);
            return Reply::Respond(rejection_response(api, &rejection));
        }
    };
    let outcome = match world.order(index) {
        Some(order) => validate(app.config.profile, app.config.repeat, &order.facts(), &notification),
        None => Err(Rejection::new(Rule::UnknownOrder, None, "the order disappeared")),
    };
    match outcome {
        Ok(Outcome::Apply { state, totals }) => {
            if let Some(order) = world.order_mut(index) {
                order.done.push(notification.kind);
                order.state = state;
                if let Some(code) = &notification.pickup_code {
                    order.pickup_code = Some(code.clone());
                }
                match &notification.composition {
                    Composition::Brief { .. } => {
                        order.collected = Some(json!({
                            "positions": notification.payload.get("positions").cloned().unwrap_or(Value::Null),
                            "total": notification.payload.get("total").cloned().unwrap_or(Value::Null),
                        }));
                        order.collected_totals = totals;
                    }
                    Composition::Event { .. } => {
                        order.collected = notification.payload.get("order").cloned();
                    }
                    Composition::Absent => {}
                }
                order.touch();
            }
            world.record(Some(index), arrival.record(event, 200, Verdict::Accepted, None));
            Reply::Respond((StatusCode::OK, Json(json!({}))).into_response())
        }
        Ok(Outcome::Repeat) => {
            world.record(Some(index), arrival.record(event, 202, Verdict::RepeatAccepted, None));
            Reply::Respond(
                (
                    StatusCode::ACCEPTED,
                    Json(json!({"message": format!("{} was already processed", notification.kind.wire())})),
                )
                    .into_response(),
            )
        }
        Err(rejection) => {
            let record = arrival.record(event, rejection.status, Verdict::Rejected, Some(&rejection));
            world.record(Some(index), record);
            Reply::Respond(rejection_response(api, &rejection))
        }
    }
}

async fn shipment_reply(app: Arc<App>, conn: ConnHandle, id: String, headers: HeaderMap, state_only: bool) -> Response {
    let fault = app.faults().take(FaultPath::Shipments);
    if let Some(fault) = fault {
        if let Some(reply) = injected(Api::Ofm, &fault).await {
            return finish(&conn, reply);
        }
    }
    // The pull API takes either of Kuper's credentials, like the notification paths.
    if let Err(rejection) = app.authenticate(Api::V3, &headers) {
        return rejection_response(Api::Ofm, &rejection);
    }
    let world = app.world();
    let Some(order) = world.find(&id).and_then(|i| world.order(i)) else {
        let rejection = Rejection::new(Rule::UnknownOrder, Some("id"), format!("no shipment {id:?}"));
        return rejection_response(Api::Ofm, &rejection);
    };
    let body = if state_only { json!({"state": order.state, "paymentState": order.payment}) } else { order.shipment() };
    (status_code(200), Json(body)).into_response()
}

pub(super) async fn shipment(
    State(app): State<Arc<App>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    shipment_reply(app, conn, id, headers, false).await
}

pub(super) async fn shipment_state(
    State(app): State<Arc<App>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    shipment_reply(app, conn, id, headers, true).await
}

/// Largest `page_size` of the shipment list.
const MAX_PAGE_SIZE: usize = 200;
const DEFAULT_PAGE_SIZE: usize = 50;

/// Where a page of the shipment list ends: the last (updatedAt ms, order index) it held.
/// Opaque to clients (base64url), so its form may change.
fn encode_page_token(updated_ms: i64, index: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1.{updated_ms}.{index}"))
}

fn decode_page_token(token: &str) -> Option<(i64, usize)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.strip_prefix("v1.")?.splitn(2, '.');
    let updated = parts.next()?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    Some((updated, index))
}

/// The list's filters, read from the query string.
struct ListQuery {
    stores: Vec<String>,
    updated_since: Option<i64>,
    created_since: Option<i64>,
    page_size: usize,
    after: Option<(i64, usize)>,
}

fn schema_error(field: &str, message: String) -> Rejection {
    Rejection::new(Rule::Schema, Some(field), message)
}

fn parse_list_query(pairs: &[(String, String)]) -> Result<ListQuery, Rejection> {
    let time = |field: &str, value: &str| {
        chrono::DateTime::parse_from_rfc3339(value.trim())
            .map(|t| t.timestamp_millis())
            .map_err(|e| schema_error(field, format!("{field}: {value:?} is not an RFC 3339 time ({e})")))
    };
    let mut query = ListQuery {
        stores: Vec::new(),
        updated_since: None,
        created_since: None,
        page_size: DEFAULT_PAGE_SIZE,
        after: None,
    };
    for (key, value) in pairs {
        match key.as_str() {
            // Repeated (`store_id=1&store_id=2`) or comma-separated.
            "store_id" => {
                query.stores.extend(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned))
            }
            "updated_since" => query.updated_since = Some(time(key, value)?),
            "created_since" => query.created_since = Some(time(key, value)?),
            "page_size" => {
                query.page_size =
                    value.trim().parse().ok().filter(|n| (1..=MAX_PAGE_SIZE).contains(n)).ok_or_else(|| {
                        schema_error("page_size", format!("page_size: {value:?} — expected 1 to {MAX_PAGE_SIZE}"))
                    })?
            }
            "page_token" if value.trim().is_empty() => {}
            "page_token" => {
                query.after = Some(
                    decode_page_token(value)
                        .ok_or_else(|| schema_error("page_token", "page_token: not a token this API issued".into()))?,
                )
            }
            other => return Err(schema_error(other, format!("{other}: unknown query parameter"))),
        }
    }
    Ok(query)
}

/// `GET /ofm/api/v1/shipments`: Kuper's orders, oldest change first, in pages.
///
/// Kuper's real list format is not public; this is the contract kuper-bridge assumes
/// (docs/protocol.md §11). Sorted by (updatedAt, placement) so that the page token is a
/// position in that order: an order that changes while a client pages moves behind the
/// cursor and is listed again, never skipped.
pub(super) async fn shipments(
    State(app): State<Arc<App>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let fault = app.faults().take(FaultPath::Shipments);
    if let Some(fault) = fault {
        if let Some(reply) = injected(Api::Ofm, &fault).await {
            return finish(&conn, reply);
        }
    }
    if let Err(rejection) = app.authenticate(Api::V3, &headers) {
        return rejection_response(Api::Ofm, &rejection);
    }
    let pairs = match query {
        Ok(axum::extract::Query(pairs)) => pairs,
        Err(e) => return rejection_response(Api::Ofm, &schema_error("query", format!("query: {e}"))),
    };
    let query = match parse_list_query(&pairs) {
        Ok(query) => query,
        Err(rejection) => return rejection_response(Api::Ofm, &rejection),
    };
    let world = app.world();
    let mut matching: Vec<(i64, usize)> = world
        .orders()
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            query.stores.is_empty() || o.payload.get("storeID").is_some_and(|s| store_matches(s, &query.stores))
        })
        .filter(|(_, o)| query.updated_since.is_none_or(|t| o.updated_ms >= t))
        .filter(|(_, o)| query.created_since.is_none_or(|t| o.created_ms >= t))
        .map(|(i, o)| (o.updated_ms, i))
        .filter(|key| query.after.is_none_or(|after| *key > after))
        .collect();
    matching.sort_unstable();
    let more = matching.len() > query.page_size;
    matching.truncate(query.page_size);
    let next = match matching.last() {
        Some((updated, index)) if more => Value::String(encode_page_token(*updated, *index)),
        _ => Value::Null,
    };
    let shipments: Vec<Value> = matching.iter().filter_map(|(_, i)| world.order(*i)).map(|o| o.shipment()).collect();
    (status_code(200), Json(json!({"shipments": shipments, "next_page_token": next}))).into_response()
}

fn store_matches(store: &Value, wanted: &[String]) -> bool {
    let id = match store {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    wanted.contains(&id)
}
