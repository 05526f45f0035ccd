//! Reconciliation through Kuper's pull API (issue #7 item 4): a safety net for webhooks that
//! never arrived.
//!
//! Every pass lists the shipments Kuper changed since the previous pass (minus an overlap, for
//! clock skew and for changes committed while we paged) and compares each with our copy:
//!
//! - unknown to us: its `order.created` was lost. The order is imported through the normal
//!   webhook path (`Store::ingest_webhook` with an `order.created` envelope built from the
//!   shipment), so it is numbered, validated and stored exactly as if the webhook had come;
//!   `ingest_webhook` is idempotent, so a webhook arriving at the same moment, another replica's
//!   pass or the next pass cannot create it twice.
//! - Kuper says `canceled`, ours is not final: its `order.canceled` was lost. A synthesized
//!   `order.canceled` goes the same way, so the domain rules, the outbox (pending notifications
//!   superseded) and the timeline apply as for the real webhook.
//! - any other disagreement: recorded in the order's timeline for an operator, once.
//!
//! Every entry this module writes has kind `reconciliation` and direction `internal`: that is
//! the flag an operator filters on. The decision itself is [`decide`], a plain function.

use crate::token::{KuperAuth, TokenCache};
use crate::{join_url, ReconcileMetrics};
use kuper_bridge_domain::{KuperState, OrderState, PaymentState, Policy};
use kuper_bridge_storage::{now_ms, Exchange, IngestResult, Store, StoredOrder};
use kuper_bridge_wire::{WebhookEnvelope, WebhookEvent};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A page larger than this is refused (200 shipments of a big restaurant order stay far below).
const MAX_PAGE_BYTES: usize = 32 * 1024 * 1024;
/// A server that never stops handing out tokens must not hold a pass for ever.
const MAX_PAGES_PER_PASS: u32 = 10_000;
/// Disagreements already written to a timeline are remembered up to this many, then forgotten
/// all at once (at worst a disagreement is noted a second time).
const MAX_REMEMBERED_NOTES: usize = 10_000;
/// Fields the pull API adds to the order `order.created` carried; an imported order's
/// envelope is the shipment without them.
const LIST_ONLY_FIELDS: [&str; 8] =
    ["number", "state", "paymentState", "createdAt", "updatedAt", "collected", "pickupCode", "cancellation"];

#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    pub base_url: String,
    /// The list endpoint, `/ofm/api/v1/shipments`.
    pub list_path: String,
    pub token_path: String,
    pub auth: KuperAuth,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Between the end of one pass and the start of the next.
    pub interval: Duration,
    /// How far back the first pass after start looks.
    pub lookback: Duration,
    /// Each pass asks for changes since the previous pass's start minus this.
    pub overlap: Duration,
    pub page_size: u32,
    /// Sent as `store_id` filters; empty = every shipment the credentials see.
    pub store_ids: Vec<String>,
}

impl ReconcileConfig {
    pub fn list_url(&self) -> String {
        join_url(&self.base_url, &self.list_path)
    }
}

/// Our side of one order, as far as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ours {
    pub state: OrderState,
    /// Our copy of Kuper's view: what Kuper acknowledged or told us.
    pub kuper_state: KuperState,
    pub payment: PaymentState,
}

impl Ours {
    pub fn of(order: &StoredOrder) -> Self {
        Self { state: order.order.state(), kuper_state: order.order.kuper_state, payment: order.order.payment_state }
    }
}

/// Kuper's side of one order, as the pull API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theirs<'a> {
    pub state: &'a str,
    pub payment: Option<&'a str>,
}

/// What to do about one shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    InSync,
    /// We never had it: import it as if `order.created` had arrived.
    Import,
    /// Kuper canceled it and we did not hear: apply `order.canceled`.
    ApplyCancel,
    /// Record this disagreement in the order's timeline; change nothing.
    Disagree(String),
    /// Leave it alone (and say why in the log).
    Skip(String),
}

/// The reconciliation rule for one shipment, given our order (`None`: we do not have it).
///
/// Kuper's state is compared with our copy of Kuper's view (`kuper_state`), not with our own
/// state: our state runs ahead of Kuper's while notifications wait in the outbox, which is no
/// disagreement.
pub fn decide(ours: Option<Ours>, theirs: Theirs<'_>) -> Decision {
    let kuper = KuperState::parse(theirs.state);
    let Some(ours) = ours else {
        return match kuper {
            // Nothing is left for the store to do, and importing it would show it as new work.
            Some(KuperState::Shipped) => Decision::Skip("Kuper completed it before we ever heard of it".into()),
            // Imported even when canceled: the next decision applies the cancellation, so the
            // store sees the lost order and knows not to assemble it.
            Some(_) => Decision::Import,
            None => Decision::Skip(format!("unknown Kuper state {:?}", theirs.state)),
        };
    };
    let Some(kuper) = kuper else {
        return Decision::Disagree(format!(
            "Kuper reports state {:?}, which kuper-bridge does not know; ours is {}",
            theirs.state, ours.state
        ));
    };
    if kuper == KuperState::Canceled {
        return match ours.state {
            OrderState::Canceled => Decision::InSync,
            OrderState::Delivered => Decision::Disagree(format!(
                "Kuper says canceled, but the order was delivered here (state {})",
                ours.state
            )),
            _ => Decision::ApplyCancel,
        };
    }
    if ours.state == OrderState::Canceled && ours.kuper_state == KuperState::Canceled {
        return Decision::Disagree(format!(
            "Kuper says {}, but the order is canceled here and Kuper had acknowledged it",
            kuper.as_str()
        ));
    }
    if kuper != ours.kuper_state && ours.state != OrderState::Canceled {
        return Decision::Disagree(format!(
            "Kuper says {}, our copy of Kuper's view says {} (our state {}); a notification in flight explains this only for a moment",
            kuper.as_str(),
            ours.kuper_state.as_str(),
            ours.state
        ));
    }
    if theirs.payment == Some("paid") && ours.payment == PaymentState::NotPaid {
        return Decision::Disagree("Kuper says paid; order.paid never arrived here".into());
    }
    Decision::InSync
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub pages: u32,
    pub shipments: u32,
    /// Orders created from the pull API.
    pub imported: u32,
    /// Kuper's cancellations applied.
    pub canceled: u32,
    /// Disagreements newly written to a timeline.
    pub disagreements: u32,
    /// Imports found the order already there (its webhook won the race).
    pub already_present: u32,
    pub skipped: u32,
    /// Shipments that could not be read or imported (logged; not retried).
    pub invalid: u32,
    /// Shipments whose storage failed (retried: the window does not move on).
    pub failed: u32,
}

impl PassReport {
    pub fn changed_anything(&self) -> bool {
        self.imported + self.canceled + self.disagreements + self.invalid + self.failed > 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("pull API: {0}")]
    PullApi(String),
}

/// State kept between passes (in memory: a restart starts again from the lookback, and
/// importing is idempotent, so nothing needs to be durable).
#[derive(Default)]
struct Cursor {
    /// Unix ms the next pass asks from; `None` before the first successful pass.
    since: Option<i64>,
    /// (order id, disagreement) already written to the timeline.
    noted: HashSet<(i64, String)>,
    passes: u64,
}

struct Page {
    shipments: Vec<Value>,
    next: Option<String>,
}

pub struct Reconciler {
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    config: ReconcileConfig,
    client: reqwest::Client,
    tokens: TokenCache,
    metrics: ReconcileMetrics,
    /// Held for a whole pass: passes of one process never overlap (the periodic task and a
    /// pass started by hand).
    cursor: Mutex<Cursor>,
}

impl Reconciler {
    pub fn new(
        store: Arc<dyn Store>,
        policy: Arc<Policy>,
        config: ReconcileConfig,
        metrics: ReconcileMetrics,
    ) -> Result<Self, reqwest::Error> {
        let client = crate::kuper_client(config.request_timeout, config.connect_timeout)?;
        let tokens =
            TokenCache::new(client.clone(), join_url(&config.base_url, &config.token_path), config.auth.clone());
        Ok(Self { store, policy, config, client, tokens, metrics, cursor: Mutex::new(Cursor::default()) })
    }

    pub fn config(&self) -> &ReconcileConfig {
        &self.config
    }

    /// Runs a pass every `interval` until `shutdown`. Failures are logged and retried at the
    /// next interval; nothing here can stop the worker.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        info!(interval_secs = self.config.interval.as_secs(), url = %self.config.list_url(), "reconciliation enabled");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = shutdown.cancelled() => return,
            }
            // Dropping a pass mid-way is safe: each change is its own transaction.
            let result = tokio::select! {
                r = self.run_once() => r,
                _ = shutdown.cancelled() => return,
            };
            match result {
                Ok(report) if report.changed_anything() => info!(
                    pages = report.pages,
                    shipments = report.shipments,
                    imported = report.imported,
                    canceled = report.canceled,
                    disagreements = report.disagreements,
                    already_present = report.already_present,
                    skipped = report.skipped,
                    invalid = report.invalid,
                    failed = report.failed,
                    "reconciliation pass changed or flagged orders"
                ),
                Ok(report) => {
                    tracing::debug!(pages = report.pages, shipments = report.shipments, "reconciliation pass: in sync")
                }
                Err(e) => warn!(error = %e, "reconciliation pass failed; retrying at the next interval"),
            }
        }
    }

    /// One pass over every shipment changed since the previous successful pass.
    pub async fn run_once(&self) -> Result<PassReport, ReconcileError> {
        let mut cursor = self.cursor.lock().await;
        cursor.passes += 1;
        let pass = cursor.passes;
        let started = now_ms();
        let lookback = i64::try_from(self.config.lookback.as_millis()).unwrap_or(i64::MAX);
        let since = cursor.since.unwrap_or_else(|| started.saturating_sub(lookback));
        let mut report = PassReport::default();
        let mut token: Option<String> = None;
        let mut tokens_seen = HashSet::new();
        loop {
            let page = match self.fetch_page(since, token.as_deref()).await {
                Ok(page) => page,
                Err(e) => {
                    self.metrics.pass("failed");
                    return Err(ReconcileError::PullApi(e));
                }
            };
            report.pages += 1;
            for shipment in &page.shipments {
                report.shipments += 1;
                self.reconcile_one(shipment, pass, &mut cursor, &mut report).await;
            }
            match page.next {
                Some(next) if !next.is_empty() => {
                    if !tokens_seen.insert(next.clone()) || report.pages >= MAX_PAGES_PER_PASS {
                        self.metrics.pass("failed");
                        return Err(ReconcileError::PullApi(
                            "the page tokens repeat or never end; the pass was stopped".into(),
                        ));
                    }
                    token = Some(next);
                }
                _ => break,
            }
        }
        if report.failed == 0 {
            // The next pass starts where this one started, less the overlap: a change Kuper
            // committed while we paged is seen next time.
            let overlap = i64::try_from(self.config.overlap.as_millis()).unwrap_or(i64::MAX);
            cursor.since = Some(started.saturating_sub(overlap));
            self.metrics.pass("ok");
        } else {
            self.metrics.pass("partial");
        }
        Ok(report)
    }

    async fn reconcile_one(&self, shipment: &Value, pass: u64, cursor: &mut Cursor, report: &mut PassReport) {
        let Some(item) = shipment.as_object() else {
            self.count(report, "invalid");
            warn!("pull API: a shipment that is not an object; skipped");
            return;
        };
        let ids: Vec<String> = ["originalOrderId", "orderUUID"]
            .iter()
            .filter_map(|k| id_field(item, k))
            .filter(|s| !s.is_empty())
            .collect();
        let (Some(reference), Some(state)) = (ids.first().cloned(), item.get("state").and_then(Value::as_str)) else {
            self.count(report, "invalid");
            warn!("pull API: a shipment without originalOrderId/orderUUID or state; skipped");
            return;
        };
        let theirs = Theirs { state, payment: item.get("paymentState").and_then(Value::as_str) };
        let (mut imported, mut canceled) = (false, false);
        // A change can lead to another (a lost order that Kuper also canceled: import, then
        // cancel); each action at most once per shipment, so a rule can never loop.
        for _ in 0..3 {
            let ours = match self.find(&ids).await {
                Ok(found) => found,
                Err(e) => {
                    self.count(report, "failed");
                    warn!(kuper_order = %reference, error = %e, "reconciliation: could not read the order; retried next pass");
                    return;
                }
            };
            let decision = decide(ours.as_ref().map(Ours::of), theirs);
            match decision {
                Decision::InSync => {
                    if !(imported || canceled) {
                        self.metrics.shipment("in_sync");
                    }
                    return;
                }
                Decision::Skip(why) => {
                    self.count(report, "skipped");
                    tracing::debug!(kuper_order = %reference, why, "reconciliation: shipment skipped");
                    return;
                }
                Decision::Disagree(text) => {
                    let Some(order) = ours else { return };
                    self.note(order.id, &reference, text, item, pass, cursor, report).await;
                    return;
                }
                Decision::Import if !imported => {
                    imported = true;
                    if !self.import(item, &reference, state, pass, report).await {
                        return;
                    }
                }
                Decision::ApplyCancel if !canceled => {
                    canceled = true;
                    if !self.cancel(item, &reference, pass, report).await {
                        return;
                    }
                }
                Decision::Import | Decision::ApplyCancel => {
                    let decision = if decision == Decision::Import { "import" } else { "apply_cancel" };
                    warn!(kuper_order = %reference, decision, "reconciliation: the same change was decided twice; left for an operator");
                    return;
                }
            }
        }
    }

    async fn find(&self, ids: &[String]) -> Result<Option<StoredOrder>, kuper_bridge_storage::StoreError> {
        for id in ids {
            if let Some(order) = self.store.find_order(id).await? {
                return Ok(Some(order));
            }
        }
        Ok(None)
    }

    fn count(&self, report: &mut PassReport, outcome: &str) {
        match outcome {
            "imported" => report.imported += 1,
            "canceled" => report.canceled += 1,
            "disagreement" => report.disagreements += 1,
            "already_present" => report.already_present += 1,
            "skipped" => report.skipped += 1,
            "invalid" => report.invalid += 1,
            _ => report.failed += 1,
        }
        self.metrics.shipment(outcome);
    }

    fn exchange(&self, event: &str, body: String, detail: String, pass: u64) -> Exchange {
        Exchange {
            kind: "reconciliation".into(),
            direction: "internal".into(),
            event: Some(event.into()),
            method: Some("GET".into()),
            path: Some(self.config.list_url()),
            body: Some(body),
            detail: Some(detail),
            request_id: Some(format!("kb-reconcile-{pass}")),
            ..Default::default()
        }
    }

    /// Imports a lost order. Returns whether to look at the shipment again.
    async fn import(
        &self,
        item: &Map<String, Value>,
        reference: &str,
        state: &str,
        pass: u64,
        report: &mut PassReport,
    ) -> bool {
        let (env, body) = match created_envelope(item) {
            Ok(x) => x,
            Err(e) => {
                self.count(report, "invalid");
                warn!(kuper_order = %reference, error = %e, "reconciliation: the shipment is not an importable order; skipped");
                return false;
            }
        };
        let detail =
            format!("order.created never arrived by webhook; imported from Kuper's pull API (Kuper state {state})");
        let exchange = self.exchange("order.created", body, detail, pass);
        match self.store.ingest_webhook(&env, exchange, &self.policy, respond).await {
            Ok(IngestResult::Created { duplicate: false, order_id, answer }) => {
                self.count(report, "imported");
                warn!(kuper_order = %reference, order_id, number = %answer.number, "reconciliation: imported an order whose order.created never arrived");
                true
            }
            Ok(IngestResult::Created { duplicate: true, .. }) => {
                self.count(report, "already_present");
                true
            }
            Ok(other) => {
                self.count(report, "invalid");
                warn!(kuper_order = %reference, outcome = other.outcome(), "reconciliation: import not applied");
                false
            }
            Err(kuper_bridge_storage::StoreError::Domain(e)) => {
                self.count(report, "invalid");
                warn!(kuper_order = %reference, error = %e, "reconciliation: the order could not be imported");
                false
            }
            Err(e) => {
                self.count(report, "failed");
                warn!(kuper_order = %reference, error = %e, "reconciliation: import failed; retried next pass");
                false
            }
        }
    }

    /// Applies Kuper's cancellation. Returns whether to look at the shipment again.
    async fn cancel(&self, item: &Map<String, Value>, reference: &str, pass: u64, report: &mut PassReport) -> bool {
        let (env, body) = match canceled_envelope(item) {
            Ok(x) => x,
            Err(e) => {
                self.count(report, "invalid");
                warn!(kuper_order = %reference, error = %e, "reconciliation: could not build order.canceled; skipped");
                return false;
            }
        };
        let detail = "Kuper canceled the order and order.canceled never arrived; applied from Kuper's pull API".into();
        let exchange = self.exchange("order.canceled", body, detail, pass);
        match self.store.ingest_webhook(&env, exchange, &self.policy, respond).await {
            Ok(IngestResult::Applied { order_id, outcome, .. }) => {
                self.count(report, "canceled");
                warn!(kuper_order = %reference, order_id, outcome = outcome.as_str(), "reconciliation: applied a cancellation that never arrived by webhook");
                true
            }
            Ok(other) => {
                self.count(report, "invalid");
                warn!(kuper_order = %reference, outcome = other.outcome(), "reconciliation: cancellation not applied");
                false
            }
            Err(e) => {
                self.count(report, "failed");
                warn!(kuper_order = %reference, error = %e, "reconciliation: cancellation failed; retried next pass");
                false
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn note(
        &self,
        order_id: i64,
        reference: &str,
        text: String,
        item: &Map<String, Value>,
        pass: u64,
        cursor: &mut Cursor,
        report: &mut PassReport,
    ) {
        // The overlap lists a shipment again; one timeline entry per disagreement is enough.
        if cursor.noted.contains(&(order_id, text.clone())) {
            return;
        }
        let seen = json!({
            "state": item.get("state"),
            "paymentState": item.get("paymentState"),
            "updatedAt": item.get("updatedAt"),
        });
        let mut exchange = self.exchange("disagreement", seen.to_string(), text.clone(), pass);
        exchange.outcome = Some("disagreement".into());
        match self.store.record_exchange(Some(order_id), exchange).await {
            Ok(()) => {
                if cursor.noted.len() >= MAX_REMEMBERED_NOTES {
                    cursor.noted.clear();
                }
                cursor.noted.insert((order_id, text.clone()));
                self.count(report, "disagreement");
                info!(kuper_order = %reference, order_id, disagreement = %text, "reconciliation: disagreement recorded");
            }
            Err(e) => {
                self.count(report, "failed");
                warn!(kuper_order = %reference, error = %e, "reconciliation: could not record a disagreement");
            }
        }
    }

    async fn fetch_page(&self, since_ms: i64, page_token: Option<&str>) -> Result<Page, String> {
        let since = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(since_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut query: Vec<(&str, String)> =
            vec![("updated_since", since), ("page_size", self.config.page_size.to_string())];
        for store in &self.config.store_ids {
            query.push(("store_id", store.clone()));
        }
        if let Some(t) = page_token {
            query.push(("page_token", t.to_string()));
        }
        let (mut status, mut body, generation) = self.get(&query, None).await?;
        if matches!(status, 401 | 403) && self.tokens.is_oauth() {
            // Revoked or expired early: one fresh token, one more try (as the dispatcher does).
            (status, body, _) = self.get(&query, generation).await?;
        }
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body);
            return Err(format!("HTTP {status}: {}", kuper_bridge_wire::kuper_error::error_message(&text)));
        }
        let value: Value = serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))?;
        let shipments = match value.get("shipments") {
            Some(Value::Array(items)) => items.clone(),
            _ => return Err("answer has no \"shipments\" array".into()),
        };
        let next = match value.get("next_page_token") {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) => None,
            Some(_) => return Err("next_page_token is neither a string nor null".into()),
        };
        Ok(Page { shipments, next })
    }

    /// One GET of the list. Returns the status, the body and the token generation used.
    async fn get(&self, query: &[(&str, String)], refused: Option<u64>) -> Result<(u16, Vec<u8>, Option<u64>), String> {
        let mut request = self.client.get(self.config.list_url()).query(query);
        let mut generation = None;
        match &self.config.auth {
            KuperAuth::OAuth { .. } => {
                let token = match refused {
                    Some(g) => self.tokens.refresh_after(g).await,
                    None => self.tokens.get().await,
                };
                let (token, g) = token.map_err(|e| e.to_string())?;
                generation = Some(g);
                request = request.bearer_auth(token);
            }
            KuperAuth::ClientToken { token } => {
                request = request.header("Client-Token", token).header("Api-Version", "3.0");
            }
        }
        // reqwest's error names the URL (filters only, no credential), never the headers.
        let mut resp = request.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_PAGE_BYTES {
                return Err(format!("a page larger than {MAX_PAGE_BYTES} bytes; lower reconciliation.page_size"));
            }
        }
        Ok((status, body, generation))
    }
}

/// The answer recorded in an imported order's timeline entry: what Kuper would have got.
fn respond(result: &IngestResult) -> (u16, String) {
    match result {
        IngestResult::Created { answer, .. } => (200, serde_json::to_string(answer).unwrap_or_default()),
        other => (200, json!({"outcome": other.outcome()}).to_string()),
    }
}

fn id_field(item: &Map<String, Value>, key: &str) -> Option<String> {
    match item.get(key)? {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `order.created` Kuper would have sent: the shipment without the list's own fields.
/// Returns the envelope (order parsed) and its text for the timeline.
pub fn created_envelope(item: &Map<String, Value>) -> Result<(WebhookEnvelope, String), kuper_bridge_wire::ParseError> {
    let mut payload = item.clone();
    for field in LIST_ONLY_FIELDS {
        payload.remove(field);
    }
    let mut body = Map::new();
    body.insert("event_type".into(), json!(WebhookEvent::OrderCreated.as_str()));
    if let Some(created) = item.get("createdAt").filter(|v| v.is_string()) {
        body.insert("timestamp".into(), created.clone());
    }
    body.insert("payload".into(), Value::Object(payload));
    let text = Value::Object(body).to_string();
    let mut env = WebhookEnvelope::parse(text.as_bytes())?;
    env.cache_order()?;
    Ok((env, text))
}

/// The `order.canceled` Kuper would have sent, with its cancellation reason when the shipment
/// carries one.
pub fn canceled_envelope(
    item: &Map<String, Value>,
) -> Result<(WebhookEnvelope, String), kuper_bridge_wire::ParseError> {
    let mut payload = Map::new();
    for key in ["originalOrderId", "orderUUID"] {
        if let Some(v) = item.get(key) {
            payload.insert(key.into(), v.clone());
        }
    }
    let cancellation = match item.get("cancellation") {
        Some(c @ Value::Object(_)) => c.clone(),
        // Kuper's reason is unknown: say where the cancellation came from instead.
        _ => json!({"slug": "unknown", "description": "canceled in Kuper; seen through the pull API"}),
    };
    payload.insert("cancellation".into(), cancellation);
    let text = json!({"event_type": WebhookEvent::OrderCanceled.as_str(), "payload": payload}).to_string();
    let env = WebhookEnvelope::parse(text.as_bytes())?;
    Ok((env, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(state: OrderState, kuper_state: KuperState, payment: PaymentState) -> Option<Ours> {
        Some(Ours { state, kuper_state, payment })
    }

    #[test]
    fn decisions() {
        use KuperState as K;
        use OrderState as O;
        use PaymentState::{NotPaid, Paid};
        let theirs = |state| Theirs { state, payment: Some("not_paid") };
        let cases: Vec<(Option<Ours>, Theirs<'_>, &str)> = vec![
            // Unknown to us.
            (None, theirs("ready"), "import"),
            (None, theirs("collecting"), "import"),
            (None, theirs("canceled"), "import"),
            (None, theirs("shipped"), "skip"),
            (None, theirs("teleported"), "skip"),
            // Kuper canceled.
            (ours(O::Created, K::Ready, NotPaid), theirs("canceled"), "cancel"),
            (ours(O::InWork, K::Collecting, NotPaid), theirs("canceled"), "cancel"),
            (ours(O::Ready, K::ReadyToShip, Paid), theirs("canceled"), "cancel"),
            (ours(O::Shipping, K::Shipping, Paid), theirs("canceled"), "cancel"),
            (ours(O::Canceled, K::Canceled, NotPaid), theirs("canceled"), "in_sync"),
            // Our cancel not yet acknowledged: Kuper learns it from the outbox.
            (ours(O::Canceled, K::Collecting, NotPaid), theirs("canceled"), "in_sync"),
            (ours(O::Delivered, K::Shipped, Paid), theirs("canceled"), "disagree"),
            // Same view.
            (ours(O::Created, K::Ready, NotPaid), theirs("ready"), "in_sync"),
            (ours(O::Assembled, K::Assembled, NotPaid), theirs("assembled"), "in_sync"),
            // Ours ahead while the notification waits in the outbox: not a disagreement.
            (ours(O::InWork, K::Ready, NotPaid), theirs("ready"), "in_sync"),
            (ours(O::Canceled, K::Ready, NotPaid), theirs("ready"), "in_sync"),
            // Kuper elsewhere than what it acknowledged or told us.
            (ours(O::Ready, K::ReadyToShip, NotPaid), theirs("shipped"), "disagree"),
            (ours(O::InWork, K::Collecting, NotPaid), theirs("ready"), "disagree"),
            (ours(O::Canceled, K::Canceled, NotPaid), theirs("collecting"), "disagree"),
            (ours(O::Created, K::Ready, NotPaid), theirs("teleported"), "disagree"),
            (
                ours(O::Ready, K::ReadyToShip, NotPaid),
                Theirs { state: "ready_to_ship", payment: Some("paid") },
                "disagree",
            ),
            (ours(O::Ready, K::ReadyToShip, Paid), Theirs { state: "ready_to_ship", payment: Some("paid") }, "in_sync"),
            (ours(O::Ready, K::ReadyToShip, NotPaid), Theirs { state: "ready_to_ship", payment: None }, "in_sync"),
        ];
        for (ours, theirs, expected) in cases {
            let got = match decide(ours, theirs) {
                Decision::InSync => "in_sync",
                Decision::Import => "import",
                Decision::ApplyCancel => "cancel",
                Decision::Disagree(_) => "disagree",
                Decision::Skip(_) => "skip",
            };
            assert_eq!(got, expected, "ours {ours:?}, theirs {theirs:?}");
        }
    }

    fn shipment() -> Map<String, Value> {
        let created: Value =
            serde_json::from_str(include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json")).unwrap();
        let mut item = created["payload"].as_object().unwrap().clone();
        item.insert("number".into(), json!("M-1"));
        item.insert("state".into(), json!("canceled"));
        item.insert("paymentState".into(), json!("not_paid"));
        item.insert("createdAt".into(), json!("2026-03-14T10:00:00.000Z"));
        item.insert("updatedAt".into(), json!("2026-03-14T10:05:00.000Z"));
        item.insert("cancellation".into(), json!({"slug": "customer_request", "description": "Передумал"}));
        item
    }

    #[test]
    fn the_created_envelope_is_the_order_without_the_lists_fields() {
        let (env, text) = created_envelope(&shipment()).unwrap();
        assert_eq!(env.event, Some(WebhookEvent::OrderCreated));
        assert_eq!(env.identity.original_order_id.as_deref(), Some("H48210377615"));
        assert_eq!(env.timestamp.as_deref(), Some("2026-03-14T10:00:00.000Z"));
        let order = env.order().unwrap();
        assert_eq!(order.store_id.as_deref(), Some("1184"));
        assert_eq!(order.positions.len(), 3);
        assert_eq!(order.positions[0].discount_price.to_string(), "89.99", "money stays decimal");
        for field in LIST_ONLY_FIELDS {
            assert!(!env.payload.contains_key(field), "{field} left in {text}");
        }
    }

    #[test]
    fn a_shipment_without_positions_is_refused_with_its_path() {
        let mut item = shipment();
        item.remove("positions");
        assert_eq!(created_envelope(&item).unwrap_err().path, "$.payload.positions");
    }

    #[test]
    fn the_canceled_envelope_carries_kupers_reason_or_says_where_it_came_from() {
        let (env, _) = canceled_envelope(&shipment()).unwrap();
        assert_eq!(env.event, Some(WebhookEvent::OrderCanceled));
        assert_eq!(env.cancellation(), Some(("customer_request".into(), "Передумал".into())));
        let mut item = shipment();
        item.remove("cancellation");
        let (env, _) = canceled_envelope(&item).unwrap();
        assert_eq!(env.cancellation().map(|c| c.0), Some("unknown".into()));
    }
}
