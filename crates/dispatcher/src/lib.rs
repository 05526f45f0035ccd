//! The notification dispatcher: drains the transactional outbox to Kuper.
//!
//! Guarantees (protocol.md §9): at-least-once delivery, strict per-order FIFO (storage only
//! hands out the head of each order's queue), exponential backoff with jitter on transient
//! failures, one immediate retry after a token refresh on 401/403, dead letters on answers
//! that a retry cannot fix. It wakes on commit through the store's signal; a slow poll is
//! only a safety net.

mod deadlines;
mod metrics;
pub mod reconcile;
mod retry;
mod token;

pub use deadlines::{DeadlineMetrics, DeadlineSweepConfig, DeadlineSweeper, SweepReport};
pub use metrics::{DispatchMetrics, ReconcileMetrics};
pub use reconcile::{ReconcileConfig, Reconciler};
pub use retry::{classify, Failure, RetryPolicy, Verdict};
pub use token::{KuperAuth, TokenCache, TokenError};

use kuper_bridge_storage::{
    now_ms, AttemptOutcome, AttemptReport, Claimed, Destination, Exchange, OutboxRecord, Store, StoreError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Kuper's base URL, e.g. `https://merchant-api.sbermarket.ru`.
    pub base_url: String,
    pub notifications_path: String,
    pub token_path: String,
    pub auth: KuperAuth,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Records sent at once (different orders).
    pub concurrency: usize,
    /// Safety-net poll when no commit signal arrives.
    pub poll_interval: Duration,
    /// The most one attempt may take (token wait and fetch, send, refresh, resend).
    pub attempt_budget: Duration,
    /// Longer than the attempt budget plus a margin, so a live sender never loses its lease.
    pub lease: Duration,
    /// SQLite runs one process per database: leases left by a killed process can be dropped
    /// at start instead of waiting for them to expire.
    pub release_stale_leases_on_start: bool,
    /// Merchant systems receiving forwarded events, by outbox destination.
    pub subscribers: Vec<SubscriberTarget>,
}

/// Where and how the records of one `subscriber:<name>` destination are sent.
#[derive(Debug, Clone)]
pub struct SubscriberTarget {
    pub destination: Destination,
    pub url: String,
    pub keys: Vec<kuper_bridge_wire::forward::SigningKey>,
}

impl DispatcherConfig {
    pub fn notifications_url(&self) -> String {
        join_url(&self.base_url, &self.notifications_path)
    }
}

/// How often the dispatcher looks for records left waiting behind final ones (only an older
/// version writing during a rolling upgrade leaves them).
const REPAIR_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest sleep of the dispatcher loop.
const MIN_SLEEP_MS: i64 = 5;
/// Kuper's answer is kept as evidence up to this size.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The HTTP client for Kuper's API (notifications, tokens, the pull API): bounded, no
/// redirects (a redirect means a wrong base URL, and would carry our credentials elsewhere).
pub(crate) fn kuper_client(request_timeout: Duration, connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("kuper-bridge/", env!("CARGO_PKG_VERSION")))
        .build()
}

pub fn join_url(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    config: DispatcherConfig,
    client: reqwest::Client,
    tokens: TokenCache,
    metrics: DispatchMetrics,
    owner: String,
}

/// One record a dispatch step claimed, and how its attempt ended.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub outbox_id: i64,
    pub order_id: i64,
    pub destination: Destination,
    pub event: String,
    /// What the attempt decided (and the dispatcher asked storage to record).
    pub outcome: AttemptOutcome,
    /// Storage recorded the outcome. When it did not, the lease stays until it expires and
    /// the record is tried again (at-least-once): the outcome is not what the database holds.
    pub recorded: bool,
}

/// What [`Dispatcher::dispatch_once`] did: every record it claimed, by outbox id.
#[derive(Debug, Clone, Default)]
pub struct DispatchStep {
    pub attempted: Vec<Attempted>,
}

impl DispatchStep {
    /// Nothing was due.
    pub fn is_empty(&self) -> bool {
        self.attempted.is_empty()
    }

    /// How many attempts ended delivered, and were recorded so.
    pub fn delivered(&self) -> usize {
        self.attempted.iter().filter(|a| a.recorded && matches!(a.outcome, AttemptOutcome::Delivered)).count()
    }
}

/// What one HTTP try produced, before classification.
struct Try {
    status: Option<u16>,
    body: String,
    retry_after: Option<Duration>,
    failure: Option<Failure>,
    latency: Duration,
    request_headers: String,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        config: DispatcherConfig,
        metrics: DispatchMetrics,
        owner: String,
    ) -> Result<Self, reqwest::Error> {
        let client = kuper_client(config.request_timeout, config.connect_timeout)?;
        let tokens =
            TokenCache::new(client.clone(), join_url(&config.base_url, &config.token_path), config.auth.clone())
                .counting(metrics.token_requests.clone());
        Ok(Self { store, config, client, tokens, metrics, owner })
    }

    /// Runs until `shutdown`; in-flight sends are finished (bounded by the request timeout).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if self.config.release_stale_leases_on_start {
            match self.store.release_stale_leases(&self.owner).await {
                Ok(0) => {}
                Ok(n) => info!(released = n, "released outbox leases of a previous process"),
                Err(e) => warn!(error = %e, "could not release stale leases"),
            }
        }
        let signal = self.store.outbox_signal();
        let mut inflight: JoinSet<Attempted> = JoinSet::new();
        let mut last_repair: Option<std::time::Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if last_repair.is_none_or(|at| at.elapsed() >= REPAIR_INTERVAL) {
                last_repair = Some(std::time::Instant::now());
                match self.store.repair_queue_heads(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => warn!(repaired = n, "outbox records were waiting behind final ones; made due"),
                    Err(e) => warn!(error = %e, "could not check the outbox queue heads"),
                }
            }
            // Sends that finished since the last turn still count in `len()` until joined: reap
            // them all, so one claim refills every free slot instead of one slot per turn
            // (each claim is a commit; one record per commit capped dispatch at ~450/s).
            while inflight.try_join_next().is_some() {}
            let capacity = self.config.concurrency.saturating_sub(inflight.len());
            if capacity == 0 {
                // Every slot is busy: only a finished send can make room.
                tokio::select! {
                    _ = inflight.join_next() => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let claimed = match self.claim_into(&mut inflight, now_ms(), capacity).await {
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, "outbox claim failed; retrying shortly");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            if claimed == capacity {
                continue;
            }
            let wait = self.time_to_next_due().await;
            tokio::select! {
                _ = signal.notified() => {}
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        while inflight.join_next().await.is_some() {}
    }

    /// One step of the loop, driven by the caller: claims what is due at `now` (unix ms, up to
    /// `concurrency` records, the head of each order's queue), attempts them all at once and
    /// waits until every attempt is recorded. The loop ([`Self::run`]) claims and sends through
    /// the same code; only the waiting between steps is the caller's. `now` decides what is
    /// due (a test can pass a later time to skip a backoff); the attempt itself (the next try's
    /// time, the give-up clock) reads the wall clock as in the loop.
    pub async fn dispatch_once(self: &Arc<Self>, now: i64) -> Result<DispatchStep, StoreError> {
        let mut inflight = JoinSet::new();
        self.claim_into(&mut inflight, now, self.config.concurrency).await?;
        let mut attempted = Vec::new();
        while let Some(joined) = inflight.join_next().await {
            match joined {
                Ok(a) => attempted.push(a),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        attempted.sort_by_key(|a| a.outbox_id);
        Ok(DispatchStep { attempted })
    }

    /// Claims up to `limit` records due at `now` and starts their attempts in `inflight`;
    /// returns how many were claimed.
    async fn claim_into(
        self: &Arc<Self>,
        inflight: &mut JoinSet<Attempted>,
        now: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        let claimed = self.store.claim_due(&self.owner, now, lease_ms, limit as i64).await?;
        let n = claimed.len();
        for one in claimed {
            let me = self.clone();
            inflight.spawn(async move { me.process(one).await });
        }
        Ok(n)
    }

    async fn time_to_next_due(&self) -> Duration {
        let poll = self.config.poll_interval;
        let now = now_ms();
        match self.store.next_due_at(now).await {
            Ok(Some(at)) => {
                // The floor keeps a clock edge (due "now" but not yet claimable) from spinning.
                let ms = (at - now).clamp(MIN_SLEEP_MS, i64::try_from(poll.as_millis()).unwrap_or(i64::MAX));
                Duration::from_millis(ms as u64)
            }
            _ => poll,
        }
    }

    /// One delivery attempt of a claimed record, then its completion.
    async fn process(&self, claimed: Claimed) -> Attempted {
        let Claimed { record, lease } = claimed;
        let report = self.attempt_bounded(&record).await;
        let outcome = report.outcome.clone();
        let recorded = self.complete(&record, &lease, report).await;
        Attempted {
            outbox_id: record.id,
            order_id: record.order_id,
            destination: record.destination,
            event: record.event,
            outcome,
            recorded,
        }
    }

    /// An attempt never outlives its lease: past the budget it is abandoned (and recorded as
    /// a timeout in doubt), so no second claim can run beside it. Only the sending is bounded:
    /// the completion that records it (and may hand over the next record) is never cut off
    /// halfway, which would leave a record handed over and unsent until its lease expired.
    async fn attempt_bounded(&self, record: &OutboxRecord) -> AttemptReport {
        if let Ok(report) = tokio::time::timeout(self.config.attempt_budget, self.attempt(record)).await {
            return report;
        }
        warn!(outbox_id = record.id, "attempt exceeded its budget; abandoned");
        // The schedule and the give-up clock apply as to any timeout.
        let verdict = classify(None, Some(Failure::Timeout), "", false, record, None, &self.config.retry, now_ms());
        let outcome = match verdict {
            Verdict::Retry { at, in_doubt } => AttemptOutcome::Retry { next_attempt_at: at, in_doubt },
            Verdict::Dead { .. } => AttemptOutcome::Dead,
            Verdict::Delivered { .. } => AttemptOutcome::Retry { next_attempt_at: now_ms() + 1000, in_doubt: true },
        };
        AttemptReport {
            outcome,
            status: None,
            error: Some("attempt exceeded its time budget".into()),
            exchange: Exchange {
                kind: "notification".into(),
                direction: "out".into(),
                event: Some(record.event.clone()),
                outcome: Some("retry".into()),
                detail: Some("attempt exceeded its time budget (token endpoint or Kuper too slow)".into()),
                ..Default::default()
            },
        }
    }

    /// Records an attempt.
    /// Records an attempt; false when storage could not.
    async fn complete(&self, record: &OutboxRecord, lease: &str, report: AttemptReport) -> bool {
        match self.store.complete_attempt(record.id, lease, report).await {
            Ok(()) => true,
            Err(e) => {
                // The lease will expire and the record will be tried again: at-least-once.
                warn!(outbox_id = record.id, destination = %record.destination, error = %e, "could not record the attempt");
                false
            }
        }
    }

    /// One delivery attempt of one record, and its report (recorded by the caller whatever
    /// happens).
    async fn attempt(&self, record: &OutboxRecord) -> AttemptReport {
        if !record.destination.is_kuper() {
            return self.forward(record).await;
        }
        let started = Instant::now();
        let (mut first, used) = self.send(record, None).await;
        let mut detail = Vec::new();
        if matches!(first.status, Some(401 | 403)) && self.tokens.is_oauth() {
            // The token expired or was revoked early: refresh (once for all senders that saw
            // the same token refused) and retry once at once.
            detail.push(format!("{} with the cached token; refreshed and retried", first.status.unwrap_or_default()));
            self.metrics.token_refreshes.inc();
            first = self.send(record, used).await.0;
        }
        let t = first;
        let message = kuper_bridge_wire::kuper_error::error_message(&t.body);
        let repeat = kuper_bridge_wire::kuper_error::is_repeat(&t.body, &record.event);
        let verdict = classify(
            t.status,
            t.failure.clone(),
            &message,
            repeat,
            record,
            t.retry_after,
            &self.config.retry,
            now_ms(),
        );
        let event = record.event.clone();
        let (outcome, report_outcome, label) = match verdict {
            Verdict::Delivered { repeat } => {
                if repeat {
                    detail.push("422 treated as a repeat of an earlier attempt that Kuper had applied".into());
                }
                ("delivered", AttemptOutcome::Delivered, if repeat { "repeat" } else { "delivered" })
            }
            Verdict::Retry { at, in_doubt } => {
                ("retry", AttemptOutcome::Retry { next_attempt_at: at, in_doubt }, "retry")
            }
            Verdict::Dead { reason } => {
                detail.push(reason);
                ("dead", AttemptOutcome::Dead, "dead")
            }
        };
        self.metrics.record(&event, label, started.elapsed());
        let error = match (&t.failure, t.status) {
            (Some(f), _) => Some(f.to_string()),
            (None, Some(s)) if !(200..300).contains(&s) => Some(format!("HTTP {s}: {message}")),
            _ => None,
        };
        if outcome == "dead" {
            warn!(outbox_id = record.id, order_id = record.order_id, event = %event, status = t.status, error = error.as_deref(), "notification dead-lettered");
        } else {
            info!(outbox_id = record.id, order_id = record.order_id, event = %event, status = t.status, outcome, latency_ms = t.latency.as_millis() as u64, "notification attempt");
        }
        let exchange = Exchange {
            kind: "notification".into(),
            direction: "out".into(),
            event: Some(event),
            outcome: Some(label.into()),
            method: Some("POST".into()),
            path: Some(self.config.notifications_url()),
            status: t.status.map(i64::from),
            latency_ms: Some(i64::try_from(t.latency.as_millis()).unwrap_or(i64::MAX)),
            headers: Some(t.request_headers),
            body: Some(record.body.clone()),
            response: Some(truncate(&t.body, 4096)),
            detail: if detail.is_empty() { error.clone() } else { Some(detail.join("; ")) },
            request_id: Some(format!("kb-outbox-{}", record.id)),
            actor: None,
        };
        AttemptReport { outcome: report_outcome, status: t.status.map(i64::from), error, exchange }
    }

    /// One HTTP try. `refused` is the token generation Kuper just refused (refresh it first).
    /// Returns the try and the token generation used.
    async fn send(&self, record: &OutboxRecord, refused: Option<u64>) -> (Try, Option<u64>) {
        let started = Instant::now();
        let key = if record.idempotency_key.is_empty() {
            format!("kb-outbox-{}", record.id)
        } else {
            record.idempotency_key.clone()
        };
        let mut request = self
            .client
            .post(self.config.notifications_url())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key)
            .body(record.body.clone());
        let shown_headers;
        let mut generation = None;
        match &self.config.auth {
            KuperAuth::OAuth { .. } => {
                let token = match refused {
                    Some(g) => self.tokens.refresh_after(g).await,
                    None => self.tokens.get().await,
                };
                match token {
                    Ok((token, g)) => {
                        generation = Some(g);
                        request = request.bearer_auth(token);
                        shown_headers = r#"{"content-type":"application/json","authorization":"Bearer [redacted]"}"#;
                    }
                    Err(e) => {
                        let t = Try {
                            status: None,
                            body: String::new(),
                            retry_after: None,
                            failure: Some(Failure::Token(e.to_string())),
                            latency: started.elapsed(),
                            request_headers: String::new(),
                        };
                        return (t, None);
                    }
                }
            }
            KuperAuth::ClientToken { token } => {
                request = request.header("Client-Token", token).header("Api-Version", "3.0");
                shown_headers =
                    r#"{"content-type":"application/json","client-token":"[redacted]","api-version":"3.0"}"#;
            }
        }
        let t = match request.send().await {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                // The status arrived even if the body does not: the status alone decides.
                // The body is only evidence, so it is read up to a bound.
                let mut body = Vec::new();
                while let Ok(Some(chunk)) = resp.chunk().await {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_ANSWER_BYTES {
                        break;
                    }
                }
                let body = String::from_utf8_lossy(&body).into_owned();
                Try {
                    status: Some(status),
                    body,
                    retry_after,
                    failure: None,
                    latency: started.elapsed(),
                    request_headers: shown_headers.into(),
                }
            }
            Err(e) => Try {
                status: None,
                body: String::new(),
                retry_after: None,
                failure: Some(Failure::from_reqwest(&e)),
                latency: started.elapsed(),
                request_headers: shown_headers.into(),
            },
        };
        (t, generation)
    }
}

impl Dispatcher {
    /// One attempt to deliver a forwarded event to a subscriber (Standard Webhooks). 2xx is
    /// delivered; 410 Gone means "stop sending" (dead letter); anything else is retried on the
    /// schedule until the give-up window, like notifications to Kuper.
    async fn forward(&self, record: &OutboxRecord) -> AttemptReport {
        let started = Instant::now();
        let target = self.config.subscribers.iter().find(|s| s.destination == record.destination);
        let webhook_id = if record.idempotency_key.is_empty() {
            format!("kb-outbox-{}", record.id)
        } else {
            record.idempotency_key.clone()
        };
        let (status, body, failure, path) = match target {
            None => (
                None,
                String::new(),
                Some(format!("{} is no longer configured (renamed or removed subscriber)", record.destination)),
                None,
            ),
            Some(target) => {
                let timestamp = chrono::Utc::now().timestamp();
                let signature = kuper_bridge_wire::forward::sign(&target.keys, &webhook_id, timestamp, &record.body);
                let sent = self
                    .client
                    .post(&target.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(kuper_bridge_wire::forward::HEADER_ID, &webhook_id)
                    .header(kuper_bridge_wire::forward::HEADER_TIMESTAMP, timestamp.to_string())
                    .header(kuper_bridge_wire::forward::HEADER_SIGNATURE, signature)
                    .body(record.body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(mut resp) => {
                        let status = resp.status().as_u16();
                        // Only evidence: read up to a bound.
                        let mut bytes = Vec::new();
                        while let Ok(Some(chunk)) = resp.chunk().await {
                            bytes.extend_from_slice(&chunk);
                            if bytes.len() > MAX_ANSWER_BYTES {
                                break;
                            }
                        }
                        (
                            Some(status),
                            String::from_utf8_lossy(&bytes).into_owned(),
                            None,
                            Some(kuper_bridge_wire::forward::url_for_audit(&target.url)),
                        )
                    }
                    Err(e) => (
                        None,
                        String::new(),
                        Some(Failure::from_reqwest(&e).to_string()),
                        Some(kuper_bridge_wire::forward::url_for_audit(&target.url)),
                    ),
                }
            }
        };
        let now = now_ms();
        let give_up_ms = i64::try_from(self.config.retry.give_up_after.as_millis()).unwrap_or(i64::MAX);
        let (outcome, label) = if matches!(status, Some(200..=299)) {
            (AttemptOutcome::Delivered, "delivered")
        } else if target.is_none() || status == Some(410) || now.saturating_sub(record.retry_since) >= give_up_ms {
            (AttemptOutcome::Dead, "dead")
        } else {
            let floor = matches!(status, Some(429)).then_some(self.config.retry.throttle_floor);
            let delay = self.config.retry.delay(record.attempts, floor, None, &mut rand::rng());
            let at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
            (AttemptOutcome::Retry { next_attempt_at: at, in_doubt: status.is_none() }, "retry")
        };
        self.metrics.record(&format!("forward:{}", record.event), label, started.elapsed());
        let error = match (&failure, status) {
            (Some(f), _) => Some(f.clone()),
            (None, Some(s)) if !(200..300).contains(&s) => Some(format!("HTTP {s}: {}", truncate(&body, 300))),
            _ => None,
        };
        if label == "dead" {
            warn!(outbox_id = record.id, destination = %record.destination, event = %record.event, status, error = error.as_deref(), "forwarded event dead-lettered");
        } else {
            info!(outbox_id = record.id, destination = %record.destination, event = %record.event, status, outcome = label, "forward attempt");
        }
        let exchange = Exchange {
            kind: "forward".into(),
            direction: "out".into(),
            event: Some(record.event.clone()),
            outcome: Some(label.into()),
            method: Some("POST".into()),
            path,
            status: status.map(i64::from),
            latency_ms: Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)),
            headers: Some(format!(r#"{{"webhook-id":"{webhook_id}","webhook-signature":"[redacted]"}}"#)),
            body: Some(record.body.clone()),
            response: Some(truncate(&body, 4096)),
            detail: Some(format!("to {}", record.destination)),
            request_id: Some(format!("kb-outbox-{}", record.id)),
            actor: None,
        };
        AttemptReport { outcome, status: status.map(i64::from), error, exchange }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
