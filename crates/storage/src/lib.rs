//! Durable storage for kuper-bridge: orders, the timeline/audit log and the transactional
//! outbox. Backends implement [`Store`]; every operation that changes an order writes the
//! order, its outbox rows and its timeline entries in one transaction.

pub mod backup;
#[macro_use]
mod common;
pub mod packed;
mod postgres;
mod reads;
mod sqlite;
mod sqlite_writer;
mod statements;
mod units;

pub use common::forward_data;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use kuper_bridge_domain::{Action, DomainError, Order, Policy, WebhookOutcome};
use kuper_bridge_wire::{CreatedAnswer, WebhookEnvelope};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("order {0} not found")]
    OrderNotFound(String),
    #[error("outbox record {0} not found")]
    OutboxNotFound(i64),
    /// The same Idempotency-Key with another request (or another order).
    #[error("this Idempotency-Key was used for another request; use a new key for a new request")]
    IdempotencyKeyReused,
    #[error("no free pickup code found; the store has too many active codes for pickup.code_length")]
    NoFreePickupCode,
    #[error("this pickup code is in use by another active order of the store")]
    PickupCodeInUse,
    #[error("no pickup code was issued for this order")]
    NoPickupCode,
    /// A code typed at the desk for an order that is already delivered or canceled.
    #[error("the order is {0}")]
    OrderClosed(kuper_bridge_domain::OrderState),
    /// Only dead letters can be replayed or skipped.
    #[error("outbox record {id} is {}; only dead letters can be replayed or skipped", status.as_str())]
    NotDeadLetter { id: i64, status: OutboxStatus },
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("pickup code verification locked until {until}")]
    PickupLocked { until: i64 },
    /// The database is unreachable, locked, full or broken: callers answer 503 (see
    /// [`StoreError::is_unavailable`]).
    #[error("storage unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("storage unavailable: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored document that does not read back (a damaged database or a bug), or one that
    /// cannot be written: no retry fixes it, so it is not answered "retry later".
    #[error("stored document unreadable: {0}")]
    Document(#[from] serde_json::Error),
    /// A compressed document (SQLite, [`packed`]) that does not decompress.
    #[error("stored document unreadable: {0}")]
    DocumentDamaged(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("operator {0} not found")]
    OperatorNotFound(String),
    /// Operator names are unique: a second account of the same name is refused, not merged.
    #[error("operator {0} already exists")]
    OperatorExists(String),
}

impl StoreError {
    /// The database failed or could not be reached: a retry later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Database(_) | StoreError::Sqlite(_) | StoreError::Unavailable(_))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Unavailable(format!("migration failed: {e}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Turns a stored webhook's result into the HTTP answer written into its audit entry. A plain
/// function: the unit of work that calls it may run on another thread (the SQLite writer).
pub type Respond = fn(&IngestResult) -> (u16, String);

/// An order as stored.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredOrder {
    pub id: i64,
    #[serde(flatten)]
    pub order: Order,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One HTTP exchange (or internal decision) for the timeline and audit log. Headers must
/// already be redacted by the caller.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exchange {
    pub kind: String,
    /// `in` (Kuper → us), `out` (us → Kuper), `api` (store systems → us), `internal`.
    pub direction: String,
    pub event: Option<String>,
    pub outcome: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<i64>,
    pub latency_ms: Option<i64>,
    pub headers: Option<String>,
    pub body: Option<String>,
    pub response: Option<String>,
    pub detail: Option<String>,
    pub request_id: Option<String>,
    /// Who made the change, for changes a person or a store system asked for (issue #11):
    /// the timeline names them, never only `Bearer [redacted]`.
    pub actor: Option<Actor>,
}

/// Who made a change: a person in the console, a store system by its API key, or someone
/// at the command line of the server. Stored as `operator:NAME`, `api-key:NAME` or `cli`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    Operator(String),
    ApiKey(String),
    Cli,
}

impl Actor {
    /// The stored form, which the timeline and the REST API show.
    pub fn label(&self) -> String {
        match self {
            Self::Operator(name) => format!("operator:{name}"),
            Self::ApiKey(name) => format!("api-key:{name}"),
            Self::Cli => "cli".to_string(),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.split_once(':') {
            Some(("operator", name)) if !name.is_empty() => Some(Self::Operator(name.to_string())),
            Some(("api-key", name)) if !name.is_empty() => Some(Self::ApiKey(name.to_string())),
            None if s == "cli" => Some(Self::Cli),
            _ => None,
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.label())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub id: i64,
    pub order_id: Option<i64>,
    pub outbox_id: Option<i64>,
    /// Unix milliseconds.
    pub at: i64,
    #[serde(flatten)]
    pub exchange: Exchange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    Pending,
    Sent,
    Dead,
    Skipped,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Dead => "dead",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Sent, Self::Dead, Self::Skipped].into_iter().find(|x| x.as_str() == s)
    }
}

/// Where an outbox record goes: Kuper, or one configured subscriber. Each (order, destination)
/// is one FIFO queue. Stored, shown and filtered as `kuper` or `subscriber:<name>`; built only
/// through [`Destination::kuper`], [`Destination::subscriber`] and [`Destination::parse`], so no
/// misspelt queue can be created.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Destination(String);

impl Destination {
    const KUPER: &'static str = "kuper";
    const SUBSCRIBER: &'static str = "subscriber:";

    pub fn kuper() -> Self {
        Destination(Self::KUPER.into())
    }

    /// A subscriber's queue, by the name it has in the configuration (which `config check`
    /// requires printable, unique and not empty).
    pub fn subscriber(name: &str) -> Self {
        debug_assert!(!name.is_empty() && !name.contains('\0'), "a subscriber name {name:?}");
        Destination(format!("{}{name}", Self::SUBSCRIBER))
    }

    /// `kuper` or `subscriber:<name>` (a name is required; no NUL, which PostgreSQL's TEXT
    /// cannot hold); anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let valid = s == Self::KUPER
            || s.strip_prefix(Self::SUBSCRIBER).is_some_and(|name| !name.is_empty() && !name.contains('\0'));
        valid.then(|| Destination(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_kuper(&self) -> bool {
        self.0 == Self::KUPER
    }

    /// The subscriber's name, for a subscriber's queue.
    pub fn subscriber_name(&self) -> Option<&str> {
        self.0.strip_prefix(Self::SUBSCRIBER)
    }

    /// What a record of this queue is: notifications go to Kuper, forwards to subscribers.
    pub fn kind(&self) -> OutboxKind {
        if self.is_kuper() {
            OutboxKind::Notification
        } else {
            OutboxKind::Forward
        }
    }

    /// Kuper's queue first, then the subscribers' by name: how every list shows them.
    pub fn display_order(&self) -> (bool, &str) {
        (!self.is_kuper(), self.as_str())
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an outbox record carries: a status notification for Kuper, or a webhook forwarded to a
/// subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    Notification,
    Forward,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Notification => "notification",
            OutboxKind::Forward => "forward",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [OutboxKind::Notification, OutboxKind::Forward].into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxRecord {
    pub id: i64,
    pub order_id: i64,
    pub kind: OutboxKind,
    pub destination: Destination,
    pub event: String,
    pub body: String,
    pub status: OutboxStatus,
    pub attempts: i64,
    /// When it may next be sent. For a record waiting behind an earlier one of its order
    /// (`waiting`), its creation time: it goes out once the earlier one is final.
    pub next_attempt_at: i64,
    /// Queued behind an earlier pending or dead notification of the same order.
    pub waiting: bool,
    /// An earlier attempt may have reached Kuper without us learning the answer.
    pub in_doubt: bool,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    /// The lease token of the current claim (`owner/id/attempt`), if any.
    pub lease: Option<String>,
    /// The give-up clock starts here: creation, or the operator's last replay.
    pub retry_since: i64,
    /// Sent as `Idempotency-Key`; unique per notification ever.
    pub idempotency_key: String,
}

/// A record the dispatcher claimed: always with the lease token its completion must present
/// (`owner/id/attempt`). Reads as the record it wraps.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub record: OutboxRecord,
    pub lease: String,
}

impl Claimed {
    /// A record as the claim returned it; one without a lease means the claim did not take it
    /// (a damaged row or a bug), which is refused rather than sent without a way to complete it.
    pub(crate) fn from_claim(record: OutboxRecord) -> Result<Claimed> {
        match record.lease.clone() {
            Some(lease) => Ok(Claimed { record, lease }),
            None => Err(StoreError::Unavailable(format!("outbox record {} claimed without a lease", record.id))),
        }
    }
}

impl std::ops::Deref for Claimed {
    type Target = OutboxRecord;
    fn deref(&self) -> &OutboxRecord {
        &self.record
    }
}

/// Where forwarded events go: one route per configured subscriber.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    pub subscribers: Vec<SubscriberRoute>,
}

#[derive(Debug, Clone)]
pub struct SubscriberRoute {
    /// Stable across restarts: records wait under it.
    pub destination: Destination,
    /// Event types taken (`*`, `order.*`, exact names).
    pub events: Vec<String>,
    /// Store ids taken; empty = all.
    pub stores: Vec<String>,
}

impl Forwarding {
    /// The destinations that take `event_type` for an order of `store_id`.
    pub fn destinations<'a>(
        &'a self,
        event_type: &'a str,
        store_id: &'a str,
    ) -> impl Iterator<Item = &'a Destination> + 'a {
        self.subscribers
            .iter()
            .filter(move |s| {
                kuper_bridge_wire::forward::filter_matches(&s.events, event_type)
                    && (s.stores.is_empty() || s.stores.iter().any(|x| x == store_id))
            })
            .map(|s| &s.destination)
    }
}

/// The merchant's acceptance hook's verdict on a new order (decided before the webhook is
/// stored, applied in the same transaction as the order).
#[derive(Debug, Clone)]
pub struct AcceptanceDecision {
    pub verdict: AcceptanceVerdict,
    /// The hook call as it goes into the order's timeline.
    pub exchange: Exchange,
}

#[derive(Debug, Clone)]
pub enum AcceptanceVerdict {
    /// Take the order, with the merchant's number and assembly time where it gave them.
    Accept { number: Option<String>, expected_assembly_time: Option<String> },
    /// Answer Kuper `created`, then cancel with this reason.
    Decline { reason: kuper_bridge_domain::CancelReason, description: kuper_bridge_domain::CancelDescription },
}

/// What the webhook receiver learned from storing a webhook.
#[derive(Debug, Clone)]
pub enum IngestResult {
    /// `order.created`: the answer to give (the same on every retry).
    Created {
        order_id: i64,
        answer: CreatedAnswer,
        duplicate: bool,
    },
    Applied {
        order_id: i64,
        outcome: WebhookOutcome,
        note: String,
    },
    /// A known event for an order we do not have (Kuper retries after `order.created`).
    UnknownOrder,
    /// Forward compatibility: stored and counted.
    UnknownEvent,
}

impl IngestResult {
    /// The order the webhook created or changed, if any.
    pub fn order_id(&self) -> Option<i64> {
        match self {
            IngestResult::Created { order_id, .. } | IngestResult::Applied { order_id, .. } => Some(*order_id),
            IngestResult::UnknownOrder | IngestResult::UnknownEvent => None,
        }
    }

    /// The outcome label for the audit log and the metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            IngestResult::Created { duplicate: true, .. } => "duplicate",
            IngestResult::Created { .. } => "created",
            IngestResult::Applied { outcome, .. } => outcome.as_str(),
            IngestResult::UnknownOrder => "unknown_order",
            IngestResult::UnknownEvent => "unknown_event",
        }
    }
}

/// What a merchant action committed.
#[derive(Debug, Clone)]
pub struct ActionResult {
    pub order: StoredOrder,
    pub notifications: Vec<OutboxRecord>,
    /// An earlier request with the same `Idempotency-Key` did this; nothing new was done.
    pub replayed: bool,
}

/// A merchant's `Idempotency-Key` for one action, scoped to its API key.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// `<API key name>:<header value>`.
    pub key: String,
    /// Hash of the action, the order reference and the body: the same key with another
    /// request is refused.
    pub request_hash: String,
}

/// How long an `Idempotency-Key` is remembered (purged with the audit log, hourly).
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PickupVerification {
    pub valid: bool,
    pub attempts_left: u32,
    pub locked_until: Option<i64>,
}

/// Outcome of one delivery attempt, decided by the dispatcher.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    /// 2xx (or a 422 that is a repeat of something Kuper already has).
    Delivered,
    /// Try again at `next_attempt_at` (unix ms).
    Retry { next_attempt_at: i64, in_doubt: bool },
    /// Stop; an operator must replay or skip. Blocks later notifications of the order.
    Dead,
}

#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub outcome: AttemptOutcome,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub exchange: Exchange,
}

#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub state: Option<String>,
    pub scheme: Option<String>,
    pub store: Option<String>,
    pub limit: i64,
    /// Orders with an id below this (cursor paging, newest first).
    pub before_id: Option<i64>,
    /// Free text: the exact Kuper id, orderUUID, our number or pickup code, a phone number
    /// in any format (matched on its last 10 digits), or part of the customer's name.
    pub search: Option<String>,
    /// Only orders that need attention ([`Attention`]).
    pub attention: bool,
}

/// Why an order needs a person's attention (the console's board flags and filters these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attention {
    /// A notification or forwarded event gave up and waits for an operator.
    DeadLetter,
    /// A deadline of an open order is close.
    DeadlineWarning,
    /// A deadline of an open order has passed.
    DeadlineMissed,
    /// Kuper sent a webhook the order's scheme did not expect.
    Anomaly,
    /// Reconciliation found Kuper and us disagreeing about the order.
    Reconciliation,
}

/// The outbox as an operator filters it (newest first).
#[derive(Debug, Clone, Default)]
pub struct OutboxFilter {
    pub status: Option<OutboxStatus>,
    pub destination: Option<Destination>,
    pub limit: i64,
    pub before_id: Option<i64>,
}

/// One destination's queue (Kuper or a subscriber).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStats {
    pub destination: Destination,
    pub pending: i64,
    pub dead: i64,
    /// Unix ms of the oldest pending record.
    pub oldest_pending_at: Option<i64>,
}

/// What the console's health page shows, read in one place.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSnapshot {
    /// Unix ms of the last notification Kuper accepted.
    pub last_kuper_success_at: Option<i64>,
    /// The last failed exchange with Kuper (a notification attempt that was not accepted).
    pub last_kuper_error: Option<EventRecord>,
    /// Webhooks answered with an error in the last 15 minutes.
    pub webhook_errors_15min: i64,
    pub orders_needing_attention: i64,
    pub last_reconciliation: Option<EventRecord>,
    pub destinations: Vec<DestinationStats>,
}

/// A console session, found by the SHA-256 of its cookie token (the token itself is never
/// stored: a copy of the database opens no session).
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub operator: Operator,
    /// Unix milliseconds.
    pub created_at: i64,
    pub last_seen_at: i64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStats {
    pub pending: i64,
    pub dead: i64,
    /// Unix ms of the oldest pending record.
    pub oldest_pending_at: Option<i64>,
}

/// What an operator account may do in the console (issue #11). Ordered by reach: each role
/// can do what the one before it can, and more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorRole {
    /// Reads orders, the outbox and health; changes nothing.
    Viewer,
    /// The pickup desk: verifies a customer's code and hands the order over.
    Desk,
    /// Every order action.
    Operator,
    /// Dead letters and operator accounts too.
    Admin,
}

impl OperatorRole {
    pub const ALL: [OperatorRole; 4] = [Self::Viewer, Self::Desk, Self::Operator, Self::Admin];

    /// The slug stored in the database and accepted on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Desk => "desk",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for OperatorRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // pad, not write_str: column widths (`{:<9}`) apply.
        f.pad(self.as_str())
    }
}

/// An operator account as stored. The password hash is never serialized nor printed by
/// `Debug`: a list or a log line must not hand out material for an offline guessing attack.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operator {
    pub id: i64,
    pub name: String,
    pub role: OperatorRole,
    /// An argon2id PHC string (`$argon2id$v=19$…`), made and checked outside storage.
    #[serde(skip)]
    pub password_hash: String,
    pub disabled: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("password_hash", &"[redacted]")
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// A new operator account: the name, the role and the password's hash (storage never sees
/// the password itself).
#[derive(Clone)]
pub struct NewOperator {
    pub name: String,
    pub role: OperatorRole,
    pub password_hash: String,
}

/// The storage boundary, implemented by [`SqliteStore`] and [`PgStore`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;
    /// Database reachable and migrations applied.
    async fn ready(&self) -> Result<()>;
    /// Signalled after every commit that adds due outbox work (on PostgreSQL also when another
    /// replica commits such work).
    fn outbox_signal(&self) -> Arc<Notify>;

    /// Stores a webhook and its effects, plus its audit entry, in one transaction.
    /// `respond` turns the result into the HTTP answer recorded in the audit entry.
    async fn ingest_webhook(
        &self,
        env: &WebhookEnvelope,
        exchange: Exchange,
        policy: &Policy,
        respond: Respond,
    ) -> Result<IngestResult> {
        self.ingest_webhook_with(env, exchange, policy, respond, None).await
    }

    /// [`Store::ingest_webhook`] with the acceptance hook's verdict for a new order (ignored
    /// for anything but a first `order.created`).
    async fn ingest_webhook_with(
        &self,
        env: &WebhookEnvelope,
        exchange: Exchange,
        policy: &Policy,
        respond: Respond,
        acceptance: Option<AcceptanceDecision>,
    ) -> Result<IngestResult>;

    /// Records an exchange not tied to an order change (refused webhooks, for instance).
    async fn record_exchange(&self, order_id: Option<i64>, exchange: Exchange) -> Result<()>;

    async fn apply_action(
        &self,
        reference: &str,
        action: ActionRequest,
        policy: &Policy,
        exchange: Exchange,
    ) -> Result<ActionResult> {
        self.apply_action_keyed(reference, action, policy, exchange, None).await
    }

    /// [`Store::apply_action`] under an `Idempotency-Key`: a repeat of a committed request
    /// returns its result (`replayed`) and changes nothing; the same key with another request
    /// is a conflict.
    async fn apply_action_keyed(
        &self,
        reference: &str,
        action: ActionRequest,
        policy: &Policy,
        exchange: Exchange,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<ActionResult>;
    async fn verify_pickup_code(
        &self,
        reference: &str,
        code: &str,
        policy: &Policy,
        exchange: Exchange,
    ) -> Result<PickupVerification>;

    async fn find_order(&self, reference: &str) -> Result<Option<StoredOrder>>;
    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<StoredOrder>>;
    async fn order_events(&self, order_id: i64) -> Result<Vec<EventRecord>>;

    /// Leases up to `limit` due outbox records, each the head of its order's queue.
    async fn claim_due(&self, owner: &str, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<Claimed>>;
    /// Records an attempt and its outcome; `lease` (the record's lease token from the claim)
    /// must still be current, otherwise the result is only kept as evidence.
    async fn complete_attempt(&self, id: i64, lease: &str, report: AttemptReport) -> Result<()>;
    /// When the next head of a queue becomes claimable (for the dispatcher's sleep).
    async fn next_due_at(&self, now_ms: i64) -> Result<Option<i64>>;
    /// Drops leases left by a process that is gone (single-process backends only; PostgreSQL
    /// serves several replicas and never releases a lease early: expiry handles dead ones).
    async fn release_stale_leases(&self, owner: &str) -> Result<u64>;
    /// Makes due any waiting record whose predecessors are all final but which was not
    /// promoted (a record written by an older version during a rolling upgrade). Cheap when
    /// there is nothing to do; the dispatcher runs it at start and once a minute.
    async fn repair_queue_heads(&self, now_ms: i64) -> Result<u64>;

    async fn list_outbox(&self, status: Option<OutboxStatus>, limit: i64) -> Result<Vec<OutboxRecord>>;
    async fn get_outbox(&self, outbox_id: i64) -> Result<Option<OutboxRecord>>;
    async fn outbox_attempts(&self, outbox_id: i64) -> Result<Vec<EventRecord>>;
    async fn replay(&self, outbox_id: i64, exchange: Exchange) -> Result<OutboxRecord>;
    async fn skip(&self, outbox_id: i64, exchange: Exchange) -> Result<OutboxRecord>;
    async fn outbox_stats(&self) -> Result<OutboxStats>;
    /// Deletes timeline/audit entries older than `before_ms`, in small batches so that
    /// webhooks are never held up behind one long delete. Returns how many went.
    async fn purge_events(&self, before_ms: i64) -> Result<u64>;

    /// Deadline sweep: up to `limit` open (not final) orders whose deadline check is due at
    /// `now` (written since the sweep last looked, or a warning or miss has come), after
    /// `after` in (check time, id) order, each with the deadline stages already recorded for
    /// it (so the sweep writes only what is new). Read from an index: an idle sweep reads
    /// nothing, however many orders are open.
    async fn orders_due_for_deadlines(
        &self,
        now: i64,
        after: DeadlineCursor,
        limit: i64,
    ) -> Result<Vec<DeadlineCandidate>>;
    /// When the sweep must look at each order next ([`DeadlineCheck`]). An order written
    /// since the sweep read it keeps its check due (every write of an order makes it due);
    /// a check that is already stored is not written again.
    async fn set_deadline_checks(&self, checks: &[DeadlineCheck]) -> Result<()>;
    /// Open orders past a deadline they have not met, per kind: a miss recorded, and the order
    /// still in a state short of the promise ([`kuper_bridge_domain::deadlines::unmet_states`]).
    async fn past_due_counts(&self) -> Result<Vec<(kuper_bridge_domain::deadlines::DeadlineKind, i64)>>;
    /// Records that the order's `kind` deadline reached `stage` (`warning` or `missed`) and
    /// its timeline entry, in one transaction, at most once per order/kind/stage (across
    /// restarts and replicas). Returns whether this call recorded it.
    async fn record_deadline(
        &self,
        order_id: i64,
        kind: kuper_bridge_domain::deadlines::DeadlineKind,
        stage: kuper_bridge_domain::deadlines::DeadlineStage,
        due_at: i64,
        exchange: Exchange,
    ) -> Result<bool>;

    // Operator accounts: storage primitives only. Password hashing, name rules and who may
    // change what are decided by the callers (crates/app `operators`, the CLI).

    /// Adds an account, enabled. [`StoreError::OperatorExists`] when the name is taken.
    async fn create_operator(&self, new: &NewOperator) -> Result<Operator>;
    /// The account of exactly this name (names are case-sensitive).
    async fn find_operator(&self, name: &str) -> Result<Option<Operator>>;
    /// Every account, by name.
    async fn list_operators(&self) -> Result<Vec<Operator>>;
    /// Disables or re-enables an account. [`StoreError::OperatorNotFound`] when there is none.
    async fn set_operator_disabled(&self, name: &str, disabled: bool) -> Result<Operator>;
    /// Replaces an account's password hash. [`StoreError::OperatorNotFound`] when there is none.
    /// Disabling an account or changing its password ends its sessions.
    async fn set_operator_password_hash(&self, name: &str, password_hash: &str) -> Result<Operator>;

    // The console (issue #11).

    /// Orders per state for the board's counts: honours `scheme`, `store`, `search` and
    /// `attention`; ignores `state`, `limit` and `before_id`.
    async fn count_orders_by_state(&self, filter: &OrderFilter) -> Result<Vec<(String, i64)>>;
    /// Why each of these orders needs attention (orders that need none are absent).
    async fn attention_of(&self, order_ids: &[i64]) -> Result<std::collections::HashMap<i64, Vec<Attention>>>;
    async fn list_outbox_by(&self, filter: &OutboxFilter) -> Result<Vec<OutboxRecord>>;
    /// Every destination with open work or history, with its queue's depth.
    async fn outbox_destinations(&self) -> Result<Vec<DestinationStats>>;
    /// Webhooks refused before they touched an order (credentials, body), newest first.
    async fn refused_webhooks(&self, limit: i64) -> Result<Vec<EventRecord>>;
    async fn health_snapshot(&self, now_ms: i64) -> Result<HealthSnapshot>;
    async fn create_session(&self, token_hash: &str, operator_id: i64, now_ms: i64) -> Result<()>;
    /// The session with its operator as stored now (the caller checks `disabled` and expiry).
    async fn find_session(&self, token_hash: &str) -> Result<Option<SessionRecord>>;
    async fn touch_session(&self, token_hash: &str, now_ms: i64) -> Result<()>;
    async fn delete_session(&self, token_hash: &str) -> Result<()>;
    /// Deletes sessions created before `created_before_ms` or idle since before `seen_before_ms`.
    async fn purge_sessions(&self, created_before_ms: i64, seen_before_ms: i64) -> Result<u64>;
}

/// When the deadline sweep looks at an order next, decided from the order as it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineCheck {
    pub order_id: i64,
    /// The order's `updated_at` when the sweep read it: a later write wins.
    pub read_updated_at: i64,
    /// Unix ms; `None`: nothing left to record for it (until the order is written again).
    pub next_at: Option<i64>,
}

/// Where a deadline sweep's pass has got to: orders come in (check time, id) order, the
/// order of the index that finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineCursor {
    pub check_at: i64,
    pub order_id: i64,
}

impl DeadlineCursor {
    pub const START: Self = Self { check_at: i64::MIN, order_id: i64::MIN };
}

/// An open order as the deadline sweep sees it.
#[derive(Debug, Clone)]
pub struct DeadlineCandidate {
    pub order: StoredOrder,
    /// When this check was due (`orders.deadline_check_at`; 0 after a write of the order).
    pub check_at: i64,
    /// (kind, stage) pairs already recorded.
    pub recorded: Vec<(kuper_bridge_domain::deadlines::DeadlineKind, kuper_bridge_domain::deadlines::DeadlineStage)>,
}

impl DeadlineCandidate {
    pub fn has_recorded(
        &self,
        kind: kuper_bridge_domain::deadlines::DeadlineKind,
        stage: kuper_bridge_domain::deadlines::DeadlineStage,
    ) -> bool {
        self.recorded.contains(&(kind, stage))
    }
}

/// A merchant action as the API received it: the pickup code may still be missing.
#[derive(Debug, Clone)]
pub enum ActionRequest {
    Action(Action),
    /// `POST …/pickup-code` without a code: storage generates a unique one.
    GeneratePickupCode,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Who receives forwarded events (written to the outbox with the change that causes them).
    pub forwarding: Forwarding,
    /// How long a write waits for another process's write lock before failing (then the
    /// webhook is answered 503 and Kuper retries). On PostgreSQL this is `lock_timeout`: how
    /// long a write waits for another replica's lock on the same order.
    pub busy_timeout: std::time::Duration,
    /// SQLite: the largest the database may grow (writes then fail as on a full disk).
    pub sqlite_max_size_bytes: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            forwarding: Forwarding::default(),
            busy_timeout: std::time::Duration::from_secs(5),
            sqlite_max_size_bytes: None,
        }
    }
}

/// Opens the store named by a `database.url`.
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, options).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PgStore::open(url, options).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported database.url scheme in {:?}; expected sqlite://PATH or postgres://USER@HOST/DB",
            redact_url(url)
        )))
    }
}

/// Hides a password in a database URL before it reaches a log or an error.
pub fn redact_url(url: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (url, None),
    };
    let main = match (main.find("://"), main.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &main[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}://{}:***{}", &main[..s], &creds[..c], &main[at..]),
                None => main.to_string(),
            }
        }
        _ => main.to_string(),
    };
    match query {
        None => main,
        Some(q) => {
            // sqlx also takes the password (or a password file) as a query parameter.
            let q: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _))
                        if matches!(k.to_ascii_lowercase().as_str(), "password" | "passfile" | "sslpassword") =>
                    {
                        format!("{k}=***")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            format!("{main}?{}", q.join("&"))
        }
    }
}

/// The file a `sqlite:` URL opens, as sqlx reads it (percent-decoding, `sqlite:///abs`).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr;
    if url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    let text = path.to_string_lossy();
    if text.is_empty() || text.contains(":memory:") {
        return None;
    }
    Some(path.to_path_buf())
}

/// The claim's candidate query as each backend runs it (`$1`/`?1` = now), for the tests that
/// check its plan stays an index range over due heads whatever the table statistics say.
#[doc(hidden)]
pub fn claim_candidates_sql(postgres: bool) -> String {
    let (from, head_due) =
        if postgres { (postgres::CLAIM_FROM, postgres::HEAD_DUE) } else { (sqlite::CLAIM_FROM, sqlite::HEAD_DUE) };
    format!("SELECT o.id FROM {from} WHERE {head_due} ORDER BY o.next_attempt_at, o.id LIMIT 32")
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_they_are() {
        assert_eq!(redact_url("postgres://u:hunter2@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact_url("postgres://u@h/db?password=hunter2&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
        assert_eq!(redact_url("sqlite://kuper-bridge.db"), "sqlite://kuper-bridge.db");
        assert!(!redact_url("postgres://u:p%40ss@h/db?PassFile=/x").contains("p%40ss"));
    }

    #[test]
    fn sqlite_file_is_what_sqlx_opens() {
        assert_eq!(sqlite_file("sqlite://./x.db?mode=rwc").unwrap(), std::path::PathBuf::from("./x.db"));
        assert_eq!(sqlite_file("sqlite:///tmp/my%20db.db").unwrap(), std::path::PathBuf::from("/tmp/my db.db"));
        assert!(sqlite_file("sqlite::memory:").is_none());
    }
}
