//! What both backends share: row mapping (through [`Columns`], so one mapper serves sqlx's
//! SQLite and PostgreSQL rows and the SQLite writer's rusqlite rows) and the parts of each operation that decide without touching the database,
//! so the two backends cannot drift apart in behaviour.

use crate::{
    AttemptReport, EventRecord, Exchange, IngestResult, OutboxRecord, OutboxStatus, PickupVerification, Respond,
    Result, StoreError, StoredOrder,
};
use kuper_bridge_domain::engine;
use kuper_bridge_domain::{Order, OrderState, Policy};
use kuper_bridge_wire::notification::NotificationData;
use kuper_bridge_wire::{NotificationEvent, WebhookEnvelope};
use rand::Rng;
use sqlx::{ColumnIndex, Decode, Row, Type};

/// The columns [`outbox_from_row`] reads, in both backends' queries (a macro, for `concat!`).
macro_rules! outbox_columns {
    () => {
        "id, order_id, kind, destination, event, body, status, attempts, next_attempt_at, in_doubt, last_status, last_error, created_at, sent_at, lease_owner, retry_since, idempotency_key"
    };
}
pub(crate) const OUTBOX_COLUMNS: &str = outbox_columns!();

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

/// Reading a row's columns by name, whoever fetched it.
pub(crate) trait Columns {
    fn int(&self, column: &str) -> Result<i64>;
    fn int_opt(&self, column: &str) -> Result<Option<i64>>;
    fn text(&self, column: &str) -> Result<String>;
    fn text_opt(&self, column: &str) -> Result<Option<String>>;
    /// SQLite keeps 0/1 in an INTEGER, PostgreSQL a BOOLEAN; both read as bool.
    fn flag(&self, column: &str) -> Result<bool>;
    /// A document column: TEXT, or on SQLite a BLOB compressed by [`crate::packed`].
    fn doc_opt(&self, column: &str) -> Result<Option<String>>;
    fn doc(&self, column: &str) -> Result<String> {
        self.doc_opt(column)?.ok_or_else(|| StoreError::DocumentDamaged(format!("{column} is NULL")))
    }
}

impl<R> Columns for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    bool: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    Vec<u8>: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.try_get(column)?)
    }
    fn int_opt(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }
    fn text_opt(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }
    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.try_get(column)?)
    }
    fn doc_opt(&self, column: &str) -> Result<Option<String>> {
        use sqlx::{TypeInfo, ValueRef};
        let raw = self.try_get_raw(column)?;
        // SQLite reports each value's own storage class: a BLOB here is a packed document.
        let packed = !raw.is_null() && raw.type_info().name() == "BLOB";
        if packed {
            let bytes: Vec<u8> = self.try_get(column)?;
            return crate::packed::unpack(&bytes).map(Some);
        }
        Ok(self.try_get(column)?)
    }
}

/// A row of the SQLite writer's connection.
pub(crate) struct Lite<'a, 'r>(pub &'a rusqlite::Row<'r>);

impl Columns for Lite<'_, '_> {
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.0.get(column)?)
    }
    fn int_opt(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.0.get(column)?)
    }
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.0.get(column)?)
    }
    fn text_opt(&self, column: &str) -> Result<Option<String>> {
        Ok(self.0.get(column)?)
    }
    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.0.get(column)?)
    }
    fn doc_opt(&self, column: &str) -> Result<Option<String>> {
        match self.0.get_ref(column)? {
            rusqlite::types::ValueRef::Blob(packed) => crate::packed::unpack(packed).map(Some),
            _ => Ok(self.0.get(column)?),
        }
    }
}

/// The columns [`operator_from_row`] reads, in both backends' queries.
pub(crate) const OPERATOR_COLUMNS: &str = "id, name, role, password_hash, disabled, created_at, updated_at";

pub(crate) fn operator_from_row<R: Columns>(row: &R) -> Result<crate::Operator> {
    let role = row.text("role")?;
    Ok(crate::Operator {
        id: row.int("id")?,
        name: row.text("name")?,
        // The table's CHECK admits only the four slugs; anything else is a damaged database.
        role: crate::OperatorRole::parse(&role)
            .ok_or_else(|| StoreError::Unavailable(format!("operator row with unknown role {role:?}")))?,
        password_hash: row.text("password_hash")?,
        disabled: row.flag("disabled")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

pub(crate) fn order_from_row<R: Columns>(row: &R) -> Result<StoredOrder> {
    Ok(StoredOrder {
        id: row.int("id")?,
        order: serde_json::from_str(&row.doc("data")?)?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

/// `next_attempt_at` of a record queued behind an earlier open record of its order
/// (9999-12-31T23:59:59.999Z): outside every claim's range until its predecessor is final and
/// the record is promoted to the head of the queue (migration 0004 on SQLite, 0003 on PostgreSQL).
pub(crate) const WAITING: i64 = 253_402_300_799_999;

/// A destination read back from the database; anything unparsable is a damaged row.
pub(crate) fn stored_destination(stored: &str) -> Result<crate::Destination> {
    crate::Destination::parse(stored)
        .ok_or_else(|| StoreError::Unavailable(format!("outbox row with unknown destination {stored:?}")))
}

pub(crate) fn outbox_from_row<R: Columns>(row: &R) -> Result<OutboxRecord> {
    let status = row.text("status")?;
    let next_attempt_at = row.int("next_attempt_at")?;
    let created_at = row.int("created_at")?;
    Ok(OutboxRecord {
        id: row.int("id")?,
        order_id: row.int("order_id")?,
        kind: {
            let kind = row.text("kind")?;
            crate::OutboxKind::parse(&kind)
                .ok_or_else(|| StoreError::Unavailable(format!("outbox row with unknown kind {kind:?}")))?
        },
        destination: stored_destination(&row.text("destination")?)?,
        event: row.text("event")?,
        body: row.doc("body")?,
        status: OutboxStatus::parse(&status)
            .ok_or_else(|| StoreError::Unavailable(format!("outbox row with unknown status {status:?}")))?,
        attempts: row.int("attempts")?,
        next_attempt_at: if next_attempt_at >= WAITING { created_at } else { next_attempt_at },
        waiting: next_attempt_at >= WAITING,
        in_doubt: row.flag("in_doubt")?,
        lease: row.text_opt("lease_owner")?,
        retry_since: row.int_opt("retry_since")?.unwrap_or(created_at),
        idempotency_key: row.text_opt("idempotency_key")?.unwrap_or_default(),
        last_status: row.int_opt("last_status")?,
        last_error: row.text_opt("last_error")?,
        created_at,
        sent_at: row.int_opt("sent_at")?,
    })
}

pub(crate) fn event_from_row<R: Columns>(row: &R) -> Result<EventRecord> {
    Ok(EventRecord {
        id: row.int("id")?,
        order_id: row.int_opt("order_id")?,
        outbox_id: row.int_opt("outbox_id")?,
        at: row.int("at")?,
        exchange: Exchange {
            kind: row.text("kind")?,
            direction: row.text("direction")?,
            event: row.text_opt("event")?,
            outcome: row.text_opt("outcome")?,
            method: row.text_opt("method")?,
            path: row.text_opt("path")?,
            status: row.int_opt("status")?,
            latency_ms: row.int_opt("latency_ms")?,
            headers: row.doc_opt("headers")?,
            body: row.doc_opt("body")?,
            response: row.doc_opt("response")?,
            detail: row.text_opt("detail")?,
            request_id: row.text_opt("request_id")?,
            actor: row.text_opt("actor")?.as_deref().and_then(crate::Actor::parse),
        },
    })
}

/// What the board searches an order by, kept in columns of their own so that each is an
/// index lookup (or, for names, a scan of one narrow index) instead of a read of every
/// order's document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchKeys {
    pub phone_key: Option<String>,
    /// Lower-cased; empty when the order has no name (NULL means "not filled in yet").
    pub customer_name: String,
    pub pickup_code: Option<String>,
    pub anomalies: i64,
}

/// The last 10 digits of a phone number, whatever its format: `+7 (916) 123-45-67`,
/// `8 916 123 45 67` and `9161234567` are one number (a Russian number is 10 digits after the
/// country code `+7` or the trunk prefix `8`). Fewer than 5 digits is no phone number.
pub fn phone_key(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    match digits.len() {
        0..=4 => None,
        n if n > 10 => Some(digits[n - 10..].to_string()),
        _ => Some(digits),
    }
}

pub(crate) fn search_keys(order: &Order) -> SearchKeys {
    let customer = order.ordered.customer.as_ref();
    let text = |name: &str| customer.and_then(|c| c.get(name)).and_then(serde_json::Value::as_str);
    SearchKeys {
        phone_key: text("phone").and_then(phone_key),
        customer_name: text("name").map(fold_name).unwrap_or_default(),
        pickup_code: order.pickup.as_ref().map(|p| p.code.clone()),
        anomalies: i64::try_from(order.anomalies.len()).unwrap_or(i64::MAX),
    }
}

/// A customer's name as stored and as searched: lower-cased in Rust (SQLite's `lower()` knows
/// only ASCII) and with `ё` read as `е`, which Russian spelling allows and cashiers type both ways.
pub(crate) fn fold_name(name: &str) -> String {
    name.trim().to_lowercase().replace('ё', "е")
}

/// At most this many words of a search are matched against names; more is no name.
const MAX_NAME_WORDS: usize = 6;

/// The board's search text, taken apart once: the exact text (ids, number, code), the phone
/// key if it reads as a phone, and the words to find at the start of a name's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchTerms {
    pub exact: String,
    pub phone: Option<String>,
    /// Folded words of letters only; `None` when the text has a digit (phones, Kuper ids,
    /// `orderUUID`s, our numbers and pickup codes all have one, and a name has none), so that
    /// looking up an id never also searches every name.
    pub name_words: Option<Vec<String>>,
}

pub(crate) fn search_terms(search: &str) -> Option<SearchTerms> {
    let exact = search.trim();
    if exact.is_empty() {
        return None;
    }
    // Only something that looks like a phone number is matched as one: an order number with
    // five digits in it must not also find every customer whose phone ends in them.
    let looks_like_phone = exact.chars().all(|c| c.is_ascii_digit() || " +()-".contains(c));
    let words: Vec<String> =
        fold_name(exact).split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect();
    let is_name = !exact.chars().any(|c| c.is_ascii_digit()) && !words.is_empty() && words.len() <= MAX_NAME_WORDS;
    Some(SearchTerms {
        exact: exact.to_string(),
        phone: if looks_like_phone { phone_key(exact) } else { None },
        name_words: is_name.then_some(words),
    })
}

/// How a backend finds names by the start of their words, from a narrow table kept by
/// triggers, `order_names`: SQLite's FTS5 table, PostgreSQL's `tsvector` column
/// (`to_tsvector('simple', customer_name)`) under a GIN index. Both split a name at anything
/// that is not a letter or digit, as `search_terms` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameIndex {
    Fts5,
    TsVector,
}

impl NameIndex {
    /// The ids of orders with a name word starting with each of `words` (all of them).
    fn subquery(self) -> &'static str {
        match self {
            NameIndex::Fts5 => " UNION SELECT rowid FROM order_names WHERE order_names MATCH ",
            NameIndex::TsVector => " UNION SELECT order_id FROM order_names WHERE words @@ to_tsquery('simple', ",
        }
    }

    fn close(self) -> &'static str {
        match self {
            NameIndex::Fts5 => "",
            NameIndex::TsVector => ")",
        }
    }

    /// The query text. The words hold letters and digits only, so no operator of either
    /// query language can be smuggled in.
    pub(crate) fn query(self, words: &[String]) -> String {
        match self {
            NameIndex::Fts5 => words.iter().map(|w| format!("\"{w}\"*")).collect::<Vec<_>>().join(" "),
            NameIndex::TsVector => words.iter().map(|w| format!("{w}:*")).collect::<Vec<_>>().join(" & "),
        }
    }
}

/// The attention flags of a set of orders from the rows that raise them.
pub(crate) fn attention_map(
    rows: Vec<(i64, crate::Attention)>,
) -> std::collections::HashMap<i64, Vec<crate::Attention>> {
    let mut out: std::collections::HashMap<i64, Vec<crate::Attention>> = std::collections::HashMap::new();
    for (id, a) in rows {
        let flags = out.entry(id).or_default();
        if !flags.contains(&a) {
            flags.push(a);
        }
    }
    for flags in out.values_mut() {
        flags.sort();
    }
    out
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
    orders: Vec<(StoredOrder, i64)>,
    recorded: Vec<(i64, String, String)>,
) -> Vec<crate::DeadlineCandidate> {
    let mut by_order: std::collections::HashMap<
        i64,
        Vec<(kuper_bridge_domain::deadlines::DeadlineKind, kuper_bridge_domain::deadlines::DeadlineStage)>,
    > = std::collections::HashMap::new();
    for (order_id, kind, stage) in recorded {
        // A kind or stage this version does not know (a newer one wrote it) is not ours to judge.
        if let (Some(kind), Some(stage)) = (
            kuper_bridge_domain::deadlines::DeadlineKind::parse(&kind),
            kuper_bridge_domain::deadlines::DeadlineStage::parse(&stage),
        ) {
            by_order.entry(order_id).or_default().push((kind, stage));
        }
    }
    orders
        .into_iter()
        .map(|(order, check_at)| {
            let recorded = by_order.remove(&order.id).unwrap_or_default();
            crate::DeadlineCandidate { order, check_at, recorded }
        })
        .collect()
}

/// The deadline stages recorded for these orders: rows of (order id, kind, stage).
pub(crate) fn push_recorded_deadlines<'a, DB>(q: &mut sqlx::QueryBuilder<'a, DB>, ids: &[i64])
where
    DB: sqlx::Database,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push("SELECT order_id, kind, stage FROM order_deadlines WHERE order_id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    q.push(")");
}

/// Open orders past a deadline they have not met, per kind. Which states meet which promise
/// is the domain's rule; it arrives here as lists of states.
pub(crate) fn push_past_due_counts<'a, DB>(q: &mut sqlx::QueryBuilder<'a, DB>)
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    use kuper_bridge_domain::deadlines::{unmet_states, DeadlineKind};
    q.push("SELECT d.kind, COUNT(*) AS n FROM order_deadlines d JOIN orders o ON o.id = d.order_id WHERE d.stage = 'missed' AND (1 = 0");
    for kind in DeadlineKind::ALL {
        q.push(" OR (d.kind = ").push_bind(kind.as_str().to_string()).push(" AND o.state IN (");
        let mut states = q.separated(", ");
        states.push("''"); // never empty
        for state in unmet_states(kind) {
            states.push_bind(state.as_str().to_string());
        }
        q.push("))");
    }
    q.push(") GROUP BY d.kind");
}

/// Completes a webhook's audit entry with the answer given.
pub(crate) fn finish_ingest_exchange(exchange: &mut Exchange, result: &IngestResult, respond: Respond) {
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
    let mut detail = format!(
        "{} → {}; queued {}",
        before.state(),
        after.state(),
        queued.iter().map(|n| n.event.as_str()).collect::<Vec<_>>().join(", ")
    );
    // The operator's written reason is the only record of why the bag left without the code.
    if let (None, Some(reason)) = (&before.handover_override, &after.handover_override) {
        detail.push_str("; hand-over without a verified code: ");
        detail.push_str(reason);
    }
    detail
}

pub(crate) fn generate_code(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len.clamp(kuper_bridge_domain::CustomerCode::MIN_LEN, kuper_bridge_domain::CustomerCode::MAX_LEN))
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
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
        return Err(StoreError::NoPickupCode);
    };
    if found.state().is_final() {
        return Err(StoreError::OrderClosed(found.state()));
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
    order.state().is_final() && order.ended_by_kuper()
}

pub(crate) fn moot_reason(report: &AttemptReport) -> String {
    format!("moot, Kuper ended the order: {}", report.error.clone().unwrap_or_default())
}

pub(crate) fn give_up(record: &OutboxRecord, order: &Order, report: &AttemptReport) -> (OutboxStatus, String) {
    // Our own cancel refused because Kuper already has the order final.
    let cancel_already_final = record.event == NotificationEvent::Canceled.as_str()
        && order.state() == OrderState::Canceled
        && report.status == Some(422);
    let moot = order.state().is_final() && (order.ended_by_kuper() || cancel_already_final);
    if moot {
        (OutboxStatus::Skipped, moot_reason(report))
    } else {
        (OutboxStatus::Dead, report.error.clone().unwrap_or_default())
    }
}

/// Only dead letters can be replayed or skipped.
pub(crate) fn require_dead(record: &OutboxRecord) -> Result<()> {
    if record.status != OutboxStatus::Dead {
        return Err(StoreError::NotDeadLetter { id: record.id, status: record.status });
    }
    Ok(())
}

/// Completes an operator's replay/skip audit entry.
/// The caller's `detail` is the operator's written reason, kept after the decision.
pub(crate) fn operator_exchange(exchange: &mut Exchange, record: &OutboxRecord, to: &str, note: &str) {
    exchange.outcome = Some(to.into());
    exchange.event = Some(record.event.clone());
    let reason = exchange.detail.take().filter(|r| !r.trim().is_empty());
    exchange.detail = Some(format!(
        "{note}: {} (last error: {}){}",
        record.event,
        record.last_error.clone().unwrap_or_default(),
        reason.map(|r| format!("; reason: {r}")).unwrap_or_default()
    ));
}

/// Constant-time comparison: a wrong code takes as long as a right one.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    // Comparing digests keeps even the length of the secret out of the timing.
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// One outbox row to write: a notification to Kuper or an event for a subscriber.
#[derive(Debug)]
pub(crate) struct OutboxRow {
    pub destination: crate::Destination,
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
        "state": order.state(),
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
        .map(|d| OutboxRow { destination: d.clone(), event: event_type.to_string(), body: body.clone() })
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
            destination: crate::Destination::kuper(),
            event: n.event.as_str().to_string(),
            body: serde_json::to_string(&n.render(policy.notification_format))?,
        });
    }
    for n in queued {
        let event = || {
            serde_json::json!({
                "source": cause,
                "from": before.state(),
                "to": after.state(),
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
            let cancel = kuper_bridge_domain::Action::Cancel {
                reason: Ok(reason.clone()),
                description: Ok(description.clone()),
            };
            match engine::apply_action(order, cancel, policy) {
                Ok(d) => {
                    let cause = serde_json::json!({ "kind": "acceptance_hook", "reason": reason.as_str() });
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
    kind: kuper_bridge_domain::deadlines::DeadlineKind,
    stage: kuper_bridge_domain::deadlines::DeadlineStage,
    due_at: i64,
    now: i64,
) -> Result<Vec<OutboxRow>> {
    let event =
        serde_json::json!({ "source": "gateway", "kind": kind.as_str(), "stage": stage.as_str(), "dueAt": due_at });
    forwards(forwarding, order, &format!("order.deadline_{}", stage.as_str()), || event, now)
}

/// Orders that need attention: a dead letter (until an operator resolves it), and for open
/// orders only, a deadline warned or missed, an anomaly, a reconciliation finding. Each part
/// is a small set behind its own index (migrations `*_console.sql`).
pub(crate) const ATTENTION_IDS_SQL: &str = "SELECT order_id FROM outbox WHERE status = 'dead'
    UNION SELECT o.id FROM orders o WHERE o.anomalies > 0 AND o.state NOT IN ('delivered', 'canceled')
    UNION SELECT d.order_id FROM order_deadlines d JOIN orders o ON o.id = d.order_id WHERE o.state NOT IN ('delivered', 'canceled')
    UNION SELECT e.order_id FROM events e JOIN orders o ON o.id = e.order_id WHERE e.kind = 'reconciliation' AND o.state NOT IN ('delivered', 'canceled')";

/// The board's conditions, the same SQL on both backends except for the name index (the
/// builder numbers the placeholders). `with_state_and_cursor` is false for the per-state counts.
pub(crate) fn push_order_filter<'a, DB>(
    q: &mut sqlx::QueryBuilder<'a, DB>,
    f: &crate::OrderFilter,
    with_state_and_cursor: bool,
    names: NameIndex,
) where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push(" WHERE 1 = 1");
    if with_state_and_cursor {
        if let Some(state) = &f.state {
            q.push(" AND state = ").push_bind(state.clone());
        }
        if let Some(before) = f.before_id {
            q.push(" AND id < ").push_bind(before);
        }
    }
    if let Some(scheme) = &f.scheme {
        q.push(" AND scheme = ").push_bind(scheme.clone());
    }
    if let Some(store) = &f.store {
        q.push(" AND store_id = ").push_bind(store.clone());
    }
    if let Some(terms) = f.search.as_deref().and_then(search_terms) {
        // A union of index lookups.
        q.push(" AND id IN (SELECT id FROM orders WHERE original_order_id = ").push_bind(terms.exact.clone());
        q.push(" UNION SELECT id FROM orders WHERE order_uuid = ").push_bind(terms.exact.clone());
        q.push(" UNION SELECT id FROM orders WHERE number = ").push_bind(terms.exact.clone());
        q.push(" UNION SELECT id FROM orders WHERE pickup_code = ").push_bind(terms.exact);
        if let Some(phone) = terms.phone {
            q.push(" UNION SELECT id FROM orders WHERE phone_key = ").push_bind(phone);
        }
        if let Some(words) = terms.name_words {
            q.push(names.subquery()).push_bind(names.query(&words)).push(names.close());
        }
        q.push(")");
    }
    if f.attention {
        q.push(" AND id IN (").push(ATTENTION_IDS_SQL).push(")");
    }
}

/// A page of the board: its ids first, from the narrow indexes, and then only those rows.
/// Asked for the rows directly, PostgreSQL walks the primary key backwards reading every order
/// until enough pass the filter (for "needs attention", whose orders are the old ones, nearly
/// all of them); SQLite reads fat rows the same way.
pub(crate) fn push_order_page<'a, DB>(
    q: &mut sqlx::QueryBuilder<'a, DB>,
    columns: &str,
    f: &crate::OrderFilter,
    names: NameIndex,
) where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push(format!("SELECT {columns} FROM orders WHERE id IN (SELECT id FROM orders"));
    push_order_filter(q, f, true, names);
    q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit.clamp(1, 10_000));
    q.push(") ORDER BY id DESC");
}

/// The attention flags of these orders: rows of (order id, flag), flag one of `dead`,
/// `anomaly`, `warning`, `missed`, `reconciliation`.
pub(crate) fn push_attention_of<'a, DB>(q: &mut sqlx::QueryBuilder<'a, DB>, ids: &[i64])
where
    DB: sqlx::Database,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let list = |q: &mut sqlx::QueryBuilder<'a, DB>| {
        let mut s = q.separated(", ");
        for id in ids {
            s.push_bind(*id);
        }
    };
    q.push("SELECT order_id, 'dead' AS flag FROM outbox WHERE status = 'dead' AND order_id IN (");
    list(q);
    q.push(") UNION SELECT id, 'anomaly' FROM orders WHERE anomalies > 0 AND state NOT IN ('delivered', 'canceled') AND id IN (");
    list(q);
    q.push(") UNION SELECT d.order_id, d.stage FROM order_deadlines d JOIN orders o ON o.id = d.order_id WHERE o.state NOT IN ('delivered', 'canceled') AND d.order_id IN (");
    list(q);
    q.push(") UNION SELECT e.order_id, 'reconciliation' FROM events e JOIN orders o ON o.id = e.order_id WHERE e.kind = 'reconciliation' AND o.state NOT IN ('delivered', 'canceled') AND e.order_id IN (");
    list(q);
    q.push(")");
}

pub(crate) fn attention_flag(flag: &str) -> Option<crate::Attention> {
    match flag {
        "dead" => Some(crate::Attention::DeadLetter),
        "anomaly" => Some(crate::Attention::Anomaly),
        "warning" => Some(crate::Attention::DeadlineWarning),
        "missed" => Some(crate::Attention::DeadlineMissed),
        "reconciliation" => Some(crate::Attention::Reconciliation),
        _ => None,
    }
}

/// The outbox page's conditions (same SQL on both backends).
pub(crate) fn push_outbox_filter<'a, DB>(q: &mut sqlx::QueryBuilder<'a, DB>, f: &crate::OutboxFilter)
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push(" WHERE 1 = 1");
    if let Some(status) = f.status {
        q.push(" AND status = ").push_bind(status.as_str().to_string());
    }
    if let Some(destination) = &f.destination {
        q.push(" AND destination = ").push_bind(destination.as_str().to_string());
    }
    if let Some(before) = f.before_id {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit.clamp(1, 10_000));
}

/// Every destination an operator may pick: Kuper, each configured subscriber, and any other
/// with open work (a subscriber removed from the configuration while records waited).
pub(crate) fn destinations(
    forwarding: &crate::Forwarding,
    open: Vec<crate::DestinationStats>,
) -> Vec<crate::DestinationStats> {
    let mut out = open;
    let configured = std::iter::once(crate::Destination::kuper())
        .chain(forwarding.subscribers.iter().map(|s| s.destination.clone()));
    for destination in configured {
        if !out.iter().any(|d| d.destination == destination) {
            out.push(crate::DestinationStats { destination, pending: 0, dead: 0, oldest_pending_at: None });
        }
    }
    out.sort_by(|a, b| a.destination.display_order().cmp(&b.destination.display_order()));
    out
}

pub(crate) fn destination_from_row<R: Columns>(row: &R) -> Result<crate::DestinationStats> {
    Ok(crate::DestinationStats {
        destination: stored_destination(&row.text("destination")?)?,
        pending: row.int("pending")?,
        dead: row.int("dead")?,
        oldest_pending_at: row.int_opt("oldest")?,
    })
}

/// Per-destination queue depth (same SQL on both backends).
pub(crate) const DESTINATIONS_SQL: &str = "SELECT destination,
        COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending,
        COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) AS dead,
        MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest
    FROM outbox WHERE status IN ('pending', 'dead') GROUP BY destination ORDER BY destination";

/// Webhooks refused before they touched an order (the rest of the WHERE after `order_id IS NULL`).
pub(crate) const REFUSED_WEBHOOK_SQL: &str = "kind = 'webhook' AND status >= 400";
/// The columns of `order_from_row`, as a macro too for `concat!` in constant queries.
macro_rules! order_columns {
    () => {
        "id, data, created_at, updated_at"
    };
}
pub(crate) const ORDER_COLUMNS: &str = order_columns!();

/// The columns of `event_from_row`.
pub(crate) const EVENT_COLUMNS: &str = "id, order_id, outbox_id, at, kind, direction, event, outcome, method, path, status, latency_ms, headers, body, response, detail, request_id, actor";

pub(crate) const LAST_KUPER_SUCCESS_SQL: &str =
    "SELECT sent_at FROM outbox WHERE status = 'sent' AND destination = 'kuper' ORDER BY id DESC LIMIT 1";
/// The predicate of the partial index `events_kuper_failures`, so the newest is one probe.
pub(crate) const LAST_KUPER_ERROR_WHERE: &str =
    "kind = 'notification' AND outcome IN ('retry', 'dead') ORDER BY id DESC LIMIT 1";
/// One placeholder, `$1` (SQLite numbers `$1` as its first parameter too).
pub(crate) const WEBHOOK_ERRORS_SINCE_SQL: &str =
    "SELECT COUNT(*) FROM events WHERE at >= $1 AND kind = 'webhook' AND status >= 400";

/// A session with its operator; continue with `WHERE s.token_hash = …`.
pub(crate) const SESSION_SELECT: &str =
    "SELECT o.id, o.name, o.role, o.password_hash, o.disabled, o.created_at, o.updated_at,
        s.created_at AS session_created_at, s.last_seen_at
    FROM sessions s JOIN operators o ON o.id = s.operator_id";

pub(crate) fn session_from_row<R: Columns>(row: &R) -> Result<crate::SessionRecord> {
    Ok(crate::SessionRecord {
        operator: operator_from_row(row)?,
        created_at: row.int("session_created_at")?,
        last_seen_at: row.int("last_seen_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_taken_apart_once() {
        let words = |w: &[&str]| Some(w.iter().map(|w| w.to_string()).collect::<Vec<_>>());
        type Case<'a> = (&'a str, Option<&'a str>, Option<Vec<String>>);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // text,                   phone key,         name words
            ("Соколова",               None,              words(&["соколова"])),
            ("  Мария  СОКОЛОВА ",     None,              words(&["мария", "соколова"])),
            ("Алёна",                  None,              words(&["алена"])),
            ("Римская-Корсакова",      None,              words(&["римская", "корсакова"])),
            ("8 (916) 123-45-67",      Some("9161234567"), None),
            ("H99123456789",           None,              None),   // a Kuper id: no name search
            ("KB-000123",              None,              None),   // our number
            ("a1 b",                   None,              None),
            ("%_\\",                   None,              None),   // no word at all
            ("a b c d e f g",          None,              None),   // more words than a name has
        ];
        for (text, phone, name) in cases {
            let terms = search_terms(text).unwrap();
            assert_eq!(terms.exact, text.trim(), "{text:?}");
            assert_eq!(terms.phone.as_deref(), *phone, "{text:?}");
            assert_eq!(&terms.name_words, name, "{text:?}");
        }
        assert_eq!(search_terms(" \t"), None);
    }

    #[test]
    fn name_queries_hold_words_and_the_prefix_sign_only() {
        let words = vec!["мария".to_string(), "сок".to_string()];
        assert_eq!(NameIndex::Fts5.query(&words), "\"мария\"* \"сок\"*");
        assert_eq!(NameIndex::TsVector.query(&words), "мария:* & сок:*");
    }
}
