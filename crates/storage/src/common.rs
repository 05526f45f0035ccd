//! What both backends share: row mapping (through `sqlx::Row`, so one mapper serves SQLite and
//! PostgreSQL rows) and the parts of each operation that decide without touching the database,
//! so the two backends cannot drift apart in behaviour.

use crate::{
    AttemptReport, EventRecord, Exchange, IngestResult, OutboxRecord, OutboxStatus, PickupVerification, Result,
    StoreError, StoredOrder,
};
use kuper_bridge_domain::engine;
use kuper_bridge_domain::{Order, OrderState, Policy};
use kuper_bridge_wire::notification::NotificationData;
use kuper_bridge_wire::{NotificationEvent, WebhookEnvelope};
use rand::Rng;
use sqlx::{ColumnIndex, Decode, Row, Type};

/// One field of an operator account that can change after it is created; both backends write
/// it with the same UPDATE, `?2`/`$2` bound to the value.
pub(crate) enum OperatorChange<'a> {
    Disabled(bool),
    PasswordHash(&'a str),
}

impl OperatorChange<'_> {
    pub(crate) fn column(&self) -> &'static str {
        match self {
            OperatorChange::Disabled(_) => "disabled",
            OperatorChange::PasswordHash(_) => "password_hash",
        }
    }
}

/// The columns [`operator_from_row`] reads, in both backends' queries.
pub(crate) const OPERATOR_COLUMNS: &str = "id, name, role, password_hash, disabled, created_at, updated_at";

pub(crate) fn operator_from_row<R>(row: &R) -> Result<crate::Operator>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    bool: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    let role: String = row.try_get("role")?;
    Ok(crate::Operator {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        // The table's CHECK admits only the four slugs; anything else is a damaged database.
        role: crate::OperatorRole::parse(&role)
            .ok_or_else(|| StoreError::Unavailable(format!("operator row with unknown role {role:?}")))?,
        password_hash: row.try_get("password_hash")?,
        // SQLite keeps 0/1 in an INTEGER, PostgreSQL a BOOLEAN; sqlx reads both as bool.
        disabled: row.try_get("disabled")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) fn order_from_row<R>(row: &R) -> Result<StoredOrder>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    let data: String = row.try_get("data")?;
    Ok(StoredOrder {
        id: row.try_get("id")?,
        order: serde_json::from_str(&data)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// `next_attempt_at` of a record queued behind an earlier open record of its order
/// (9999-12-31T23:59:59.999Z): outside every claim's range until its predecessor is final and
/// the record is promoted to the head of the queue (migration 0004 on SQLite, 0003 on PostgreSQL).
pub(crate) const WAITING: i64 = 253_402_300_799_999;

pub(crate) fn outbox_from_row<R>(row: &R) -> Result<OutboxRecord>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    bool: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    let status: String = row.try_get("status")?;
    let next_attempt_at: i64 = row.try_get("next_attempt_at")?;
    Ok(OutboxRecord {
        id: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        kind: row.try_get("kind")?,
        destination: row.try_get("destination")?,
        event: row.try_get("event")?,
        body: row.try_get("body")?,
        status: OutboxStatus::parse(&status)
            .ok_or_else(|| StoreError::Unavailable(format!("outbox row with unknown status {status:?}")))?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: if next_attempt_at >= WAITING { row.try_get("created_at")? } else { next_attempt_at },
        waiting: next_attempt_at >= WAITING,
        // SQLite keeps 0/1 in an INTEGER, PostgreSQL a BOOLEAN; sqlx reads both as bool.
        in_doubt: row.try_get("in_doubt")?,
        lease: row.try_get("lease_owner")?,
        retry_since: row.try_get::<Option<i64>, _>("retry_since")?.unwrap_or(row.try_get("created_at")?),
        idempotency_key: row.try_get::<Option<String>, _>("idempotency_key")?.unwrap_or_default(),
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
    })
}

pub(crate) fn event_from_row<R>(row: &R) -> Result<EventRecord>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    Ok(EventRecord {
        id: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        outbox_id: row.try_get("outbox_id")?,
        at: row.try_get("at")?,
        exchange: Exchange {
            kind: row.try_get("kind")?,
            direction: row.try_get("direction")?,
            event: row.try_get("event")?,
            outcome: row.try_get("outcome")?,
            method: row.try_get("method")?,
            path: row.try_get("path")?,
            status: row.try_get("status")?,
            latency_ms: row.try_get("latency_ms")?,
            headers: row.try_get("headers")?,
            body: row.try_get("body")?,
            response: row.try_get("response")?,
            detail: row.try_get("detail")?,
            request_id: row.try_get("request_id")?,
        },
    })
}

/// A new order from `order.created`, numbered `number`; an unusable order is a 400 with its
/// JSON path.
pub(crate) fn new_order(env: &WebhookEnvelope, policy: &Policy, number: String) -> Result<Order> {
    let at = chrono::Utc::now().with_timezone(&policy.offset);
    engine::create_order(env, policy, number, at)
        .map_err(|e| StoreError::Domain(kuper_bridge_domain::DomainError::invalid(e.path, e.message)))
}

/// The timeline note for notifications dropped because Kuper ended the order.
pub(crate) fn superseded_note(skipped: u64, reason: &str) -> Exchange {
    Exchange {
        kind: "outbox".into(),
        direction: "internal".into(),
        outcome: Some("skipped".into()),
        detail: Some(format!("{skipped} queued notification(s) dropped: {reason}")),
        ..Default::default()
    }
}

/// Joins a page of open orders with the deadline rows recorded for them (any order; rows of
/// orders outside the page are ignored).
pub(crate) fn deadline_candidates(
    orders: Vec<StoredOrder>,
    recorded: Vec<(i64, String, String)>,
) -> Vec<crate::DeadlineCandidate> {
    let mut by_order: std::collections::HashMap<i64, Vec<(String, String)>> = std::collections::HashMap::new();
    for (order_id, kind, stage) in recorded {
        by_order.entry(order_id).or_default().push((kind, stage));
    }
    orders
        .into_iter()
        .map(|order| {
            let recorded = by_order.remove(&order.id).unwrap_or_default();
            crate::DeadlineCandidate { order, recorded }
        })
        .collect()
}

/// Completes a webhook's audit entry with the answer given.
pub(crate) fn finish_ingest_exchange(
    exchange: &mut Exchange,
    result: &IngestResult,
    respond: &(dyn for<'r> Fn(&'r IngestResult) -> (u16, String) + Send + Sync),
) {
    let (status, response) = respond(result);
    exchange.status = Some(i64::from(status));
    exchange.response = Some(response);
    exchange.outcome = Some(result.outcome().to_string());
    if let IngestResult::Applied { note, .. } = result {
        exchange.detail = Some(note.clone());
    }
}

/// The timeline line of an accepted merchant action.
pub(crate) fn action_detail(before: &Order, after: &Order, queued: &[NotificationData]) -> String {
    format!(
        "{} → {}; queued {}",
        before.state,
        after.state,
        queued.iter().map(|n| n.event.as_str()).collect::<Vec<_>>().join(", ")
    )
}

pub(crate) fn generate_code(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len.clamp(4, 12)).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect()
}

pub(crate) enum PickupCheck {
    /// Too many wrong codes: refused without looking at this one.
    Locked { until: i64 },
    /// The order with its attempt counters updated, to be saved.
    Checked { order: Box<Order>, result: PickupVerification },
}

/// Checks a pickup code against the order (locking out after too many wrong codes) and fills
/// in the audit entry; the caller writes both.
pub(crate) fn check_pickup_code(
    found: &Order,
    code: &str,
    policy: &Policy,
    now_s: i64,
    exchange: &mut Exchange,
) -> Result<PickupCheck> {
    let mut order = found.clone();
    let Some(pickup) = order.pickup.as_mut() else {
        return Err(StoreError::Conflict("no pickup code was issued for this order".into()));
    };
    if order.state.is_final() {
        return Err(StoreError::Conflict(format!("the order is {}", order.state)));
    }
    if let Some(until) = pickup.locked_until {
        if until > now_s {
            exchange.outcome = Some("locked".into());
            exchange.detail = Some("verification refused: too many wrong codes".into());
            return Ok(PickupCheck::Locked { until });
        }
        pickup.locked_until = None;
        pickup.failed_attempts = 0;
    }
    let valid = constant_time_eq(pickup.code.as_bytes(), code.trim().as_bytes());
    if valid {
        pickup.verified = true;
        pickup.failed_attempts = 0;
    } else {
        pickup.failed_attempts += 1;
        if pickup.failed_attempts >= policy.pickup_max_attempts {
            pickup.locked_until = Some(now_s + policy.pickup_lockout_secs);
        }
    }
    let result = PickupVerification {
        valid,
        attempts_left: policy.pickup_max_attempts.saturating_sub(pickup.failed_attempts),
        locked_until: pickup.locked_until,
    };
    exchange.outcome = Some(if valid { "valid" } else { "invalid" }.into());
    exchange.detail = Some(format!(
        "pickup code verification: {} (attempts left {})",
        if valid { "valid" } else { "wrong code" },
        result.attempts_left
    ));
    Ok(PickupCheck::Checked { order: Box::new(order), result })
}

/// The evidence of a result that came back under a lease that is no longer current.
pub(crate) fn late_result(report: AttemptReport) -> Exchange {
    let mut e = report.exchange;
    e.detail = Some(format!("late result ignored: {}", e.detail.unwrap_or_default()));
    e
}

/// The status and error of a record the dispatcher gave up on: `skipped` when Kuper ended the
/// order while it was in flight (its refusal is moot, and a dead letter would only hold up
/// nothing and alarm an operator), `dead` otherwise.
/// Kuper itself ended the order: whatever is still queued or in flight for it is moot.
pub(crate) fn moot(order: &Order) -> bool {
    order.state.is_final() && order.ended_by_kuper()
}

pub(crate) fn moot_reason(report: &AttemptReport) -> String {
    format!("moot, Kuper ended the order: {}", report.error.clone().unwrap_or_default())
}

pub(crate) fn give_up(record: &OutboxRecord, order: &Order, report: &AttemptReport) -> (&'static str, String) {
    // Our own cancel refused because Kuper already has the order final.
    let cancel_already_final = record.event == NotificationEvent::Canceled.as_str()
        && order.state == OrderState::Canceled
        && report.status == Some(422);
    let moot = order.state.is_final() && (order.ended_by_kuper() || cancel_already_final);
    if moot {
        ("skipped", format!("moot, Kuper ended the order: {}", report.error.clone().unwrap_or_default()))
    } else {
        ("dead", report.error.clone().unwrap_or_default())
    }
}

/// Only dead letters can be replayed or skipped.
pub(crate) fn require_dead(record: &OutboxRecord) -> Result<()> {
    if record.status != OutboxStatus::Dead {
        return Err(StoreError::Conflict(format!(
            "outbox record {} is {}; only dead letters can be replayed or skipped",
            record.id,
            record.status.as_str()
        )));
    }
    Ok(())
}

/// Completes an operator's replay/skip audit entry.
pub(crate) fn operator_exchange(exchange: &mut Exchange, record: &OutboxRecord, to: &str, note: &str) {
    exchange.outcome = Some(to.into());
    exchange.event = Some(record.event.clone());
    exchange.detail =
        Some(format!("{note}: {} (last error: {})", record.event, record.last_error.clone().unwrap_or_default()));
}

/// Constant-time comparison: a wrong code takes as long as a right one.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    // Comparing digests keeps even the length of the secret out of the timing.
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// One outbox row to write: a notification to Kuper or an event for a subscriber.
pub(crate) struct OutboxRow {
    pub kind: &'static str,
    pub destination: String,
    pub event: String,
    pub body: String,
}

/// What forwarded events say about the order, whatever the event (docs/forwarded-events.md).
pub fn forward_data(order: &Order, event: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "originalOrderId": order.original_order_id,
        "orderUUID": order.order_uuid,
        "number": order.number,
        "storeId": order.store_id,
        "scheme": order.scheme,
        "restaurant": order.restaurant,
        "state": order.state,
        "kuperState": order.kuper_state,
        "paymentState": order.payment_state,
        "event": event,
    })
}

/// The rows forwarding `event_type` to every subscriber that takes it. `event` is built only
/// when someone takes it: without subscribers, ingest and actions pay nothing for forwarding.
pub(crate) fn forwards(
    forwarding: &crate::Forwarding,
    order: &Order,
    event_type: &str,
    event: impl FnOnce() -> serde_json::Value,
    now: i64,
) -> Result<Vec<OutboxRow>> {
    let mut destinations = forwarding.destinations(event_type, &order.store_id).peekable();
    if destinations.peek().is_none() {
        return Ok(Vec::new());
    }
    let timestamp = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = serde_json::to_string(&kuper_bridge_wire::forward::envelope(
        event_type,
        &timestamp,
        forward_data(order, event()),
    ))?;
    Ok(destinations
        .map(|d| OutboxRow {
            kind: "forward",
            destination: d.to_string(),
            event: event_type.to_string(),
            body: body.clone(),
        })
        .collect())
}

/// A Kuper webhook as forwarded: its payload, as received.
pub(crate) fn kuper_event(env: &WebhookEnvelope) -> serde_json::Value {
    serde_json::json!({ "source": "kuper", "payload": env.payload })
}

/// Notifications a change queued for Kuper, then the same events for the subscribers (each
/// with what caused it: a merchant action, the acceptance hook, …).
pub(crate) fn change_rows(
    forwarding: &crate::Forwarding,
    before: &Order,
    after: &Order,
    queued: &[NotificationData],
    cause: serde_json::Value,
    policy: &Policy,
    now: i64,
) -> Result<Vec<OutboxRow>> {
    let mut rows = Vec::with_capacity(queued.len() * (1 + forwarding.subscribers.len()));
    for n in queued {
        rows.push(OutboxRow {
            kind: "notification",
            destination: "kuper".into(),
            event: n.event.as_str().to_string(),
            body: serde_json::to_string(&n.render(policy.notification_format))?,
        });
    }
    for n in queued {
        let event = || {
            serde_json::json!({
                "source": cause,
                "from": before.state,
                "to": after.state,
                "notification": n.render(policy.notification_format),
            })
        };
        rows.extend(forwards(forwarding, after, n.event.as_str(), event, now)?);
    }
    Ok(rows)
}

/// The event forwarded when a notification to Kuper is dead-lettered.
pub(crate) fn dead_letter_event(record: &OutboxRecord, report: &AttemptReport) -> serde_json::Value {
    serde_json::json!({
        "source": "gateway",
        "notification": record.event,
        "outboxId": record.id,
        "attempts": record.attempts,
        "lastStatus": report.status,
        "lastError": report.error,
    })
}

/// The number the acceptance hook asked for, if it accepted with one.
pub(crate) fn wanted_number(decision: &crate::AcceptanceDecision) -> Option<&str> {
    match &decision.verdict {
        crate::AcceptanceVerdict::Accept { number: Some(n), .. } => Some(n.as_str()),
        _ => None,
    }
}

/// Uses the merchant's own number unless another order has it (numbers are unique: Kuper and
/// the API find orders by them); then ours stays and the timeline says why.
pub(crate) fn take_number(order: &mut Order, wanted: &str, taken: bool, prefix: &str, notes: &mut Vec<String>) {
    // `{prefix}{digits}` is the shape of the numbers we give: one of them would collide with
    // an order created later (and on SQLite with every later one: the row id is reused).
    let ours = wanted.strip_prefix(prefix).is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if taken || ours {
        let why = if ours { "has the shape of the gateway's own numbers" } else { "is used by another order" };
        notes.push(format!("acceptance hook number {wanted:?} {why}; kept {}", order.number));
    } else {
        order.number = wanted.to_string();
    }
}

/// Applies the acceptance hook's verdict to a new order: its assembly time, or a cancellation
/// with the hook's reason (queued for Kuper after the `created` answer). Returns the order and
/// the outbox rows the decline adds.
pub(crate) fn apply_acceptance(
    order: &Order,
    decision: &crate::AcceptanceDecision,
    forwarding: &crate::Forwarding,
    policy: &Policy,
    now: i64,
    notes: &mut Vec<String>,
) -> Result<(Order, Vec<OutboxRow>)> {
    match &decision.verdict {
        crate::AcceptanceVerdict::Accept { expected_assembly_time, .. } => {
            let mut order = order.clone();
            if let Some(t) = expected_assembly_time {
                order.expected_assembly_time = t.clone();
            }
            Ok((order, Vec::new()))
        }
        crate::AcceptanceVerdict::Decline { reason, description } => {
            let cancel =
                kuper_bridge_domain::Action::Cancel { reason: reason.clone(), description: description.clone() };
            match engine::apply_action(order, cancel, policy) {
                Ok(d) => {
                    let cause = serde_json::json!({ "kind": "acceptance_hook", "reason": reason });
                    let rows = change_rows(forwarding, order, &d.order, &d.notifications, cause, policy, now)?;
                    Ok((d.order, rows))
                }
                Err(e) => {
                    // The rules table refuses a cancel here (a scheme that cannot be canceled
                    // at creation): the order stays, and an operator sees why.
                    notes.push(format!("acceptance hook declined ({reason}) but the cancel was refused: {e}"));
                    Ok((order.clone(), Vec::new()))
                }
            }
        }
    }
}

/// `order.deadline_warning` / `order.deadline_missed` for the subscribers that take them.
pub(crate) fn deadline_forwards(
    forwarding: &crate::Forwarding,
    order: &Order,
    kind: &str,
    stage: &str,
    due_at: i64,
    now: i64,
) -> Result<Vec<OutboxRow>> {
    let event = serde_json::json!({ "source": "gateway", "kind": kind, "stage": stage, "dueAt": due_at });
    forwards(forwarding, order, &format!("order.deadline_{stage}"), || event, now)
}
