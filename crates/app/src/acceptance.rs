//! The acceptance hook: before a new order is answered, ask the merchant's system whether it
//! can take it (stock, store hours, expiry dates). The question is the forwarded
//! `order.created` event, signed like every forwarded event; the answer is
//! `{"accept":true,"number"?,"expectedAssemblyTime"?}` or `{"accept":false,"reason","description"?}`.
//!
//! Kuper waits for our answer to `order.created`, so the hook has a hard deadline
//! (`acceptance_hook.timeout_ms`); when it is missed, fails or answers nonsense, the
//! configured fallback decides. Either way Kuper is answered `created` at once, and a decline
//! becomes an `order.canceled` notification after it.

use kuper_bridge_domain::{CancelDescription, CancelReason, Policy};
use kuper_bridge_storage::{AcceptanceDecision, AcceptanceVerdict, Exchange};
use kuper_bridge_wire::forward::{self, AcceptanceAnswer, SigningKey};
use kuper_bridge_wire::WebhookEnvelope;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Answers longer than this are not read further (only kept as evidence).
const MAX_ANSWER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct AcceptanceHook {
    pub url: String,
    pub keys: Vec<SigningKey>,
    pub timeout: Duration,
    /// Cancel (rather than accept) when the hook cannot give a usable answer in time.
    pub cancel_on_error: bool,
    pub cancel_reason: CancelReason,
}

pub struct AcceptanceClient {
    hook: AcceptanceHook,
    client: reqwest::Client,
}

impl AcceptanceClient {
    pub fn new(hook: AcceptanceHook) -> Self {
        // Building a client fails only when the TLS backend cannot initialise; the default
        // client is the same minus the redirect rule, and a redirect is then refused below.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kuper-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { hook, client }
    }

    /// Asks about a new order; always returns a decision (the fallback when the hook fails).
    pub async fn ask(&self, env: &WebhookEnvelope, policy: &Policy) -> AcceptanceDecision {
        let started = Instant::now();
        let now = chrono::Utc::now();
        let data = match kuper_bridge_domain::engine::create_order(
            env,
            policy,
            String::new(),
            now.with_timezone(&policy.offset),
        ) {
            Ok(order) => kuper_bridge_storage::forward_data(
                &order,
                serde_json::json!({ "source": "kuper", "payload": env.payload }),
            ),
            // The receiver has already refused unusable orders; this is only a safety net.
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        let timestamp = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = forward::envelope("order.created", &timestamp, data).to_string();
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let signature = forward::sign(&self.hook.keys, &id, now.timestamp(), &body);
        let request = self
            .client
            .post(&self.hook.url)
            .timeout(self.hook.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(forward::HEADER_ID, &id)
            .header(forward::HEADER_TIMESTAMP, now.timestamp().to_string())
            .header(forward::HEADER_SIGNATURE, signature)
            .body(body.clone());
        let mut exchange = Exchange {
            kind: "acceptance_hook".into(),
            direction: "out".into(),
            event: Some("order.created".into()),
            method: Some("POST".into()),
            path: Some(forward::url_for_audit(&self.hook.url)),
            headers: Some(format!(r#"{{"{}":"{id}","webhook-signature":"[redacted]"}}"#, forward::HEADER_ID)),
            body: Some(body),
            ..Default::default()
        };
        // The whole exchange, body included, stays inside the deadline.
        let outcome = tokio::time::timeout(self.hook.timeout, async {
            let resp = request.send().await.map_err(|e| {
                if e.is_timeout() {
                    ("timeout", format!("no answer within {} ms", self.hook.timeout.as_millis()))
                } else {
                    // Without the URL: it may carry a token.
                    ("error", format!("request failed: {}", e.without_url()))
                }
            })?;
            let status = resp.status().as_u16();
            let mut resp = resp;
            let mut bytes = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_ANSWER_BYTES {
                    break;
                }
            }
            Ok::<_, (&'static str, String)>((status, bytes))
        })
        .await
        .unwrap_or_else(|_| Err(("timeout", format!("no answer within {} ms", self.hook.timeout.as_millis()))));
        exchange.latency_ms = Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
        let failure = match outcome {
            Ok((status, bytes)) => {
                exchange.status = Some(i64::from(status));
                exchange.response = Some(String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned());
                if !(200..300).contains(&status) {
                    ("error", format!("answered HTTP {status}"))
                } else {
                    match forward::parse_acceptance_answer(&bytes) {
                        Ok(AcceptanceAnswer::Accept { number, expected_assembly_time }) => {
                            exchange.outcome = Some("accepted".into());
                            exchange.detail = Some(format!(
                                "acceptance hook accepted{}{}",
                                number.as_deref().map(|n| format!("; number {n}")).unwrap_or_default(),
                                expected_assembly_time
                                    .as_deref()
                                    .map(|t| format!("; expectedAssemblyTime {t}"))
                                    .unwrap_or_default()
                            ));
                            info!(
                                kuper_order = env.identity.original_order_id.as_deref(),
                                "acceptance hook accepted the order"
                            );
                            return AcceptanceDecision {
                                verdict: AcceptanceVerdict::Accept { number, expected_assembly_time },
                                exchange,
                            };
                        }
                        Ok(AcceptanceAnswer::Decline { reason, description }) => {
                            let reason = CancelReason::parse(&reason, &policy.cancel_reasons);
                            let description = CancelDescription::parse(description.as_deref().unwrap_or_default());
                            match reason.and_then(|r| Ok((r, description?))) {
                                Ok((reason, description)) => {
                                    exchange.outcome = Some("declined".into());
                                    exchange.detail = Some(format!("acceptance hook declined: {reason}"));
                                    info!(kuper_order = env.identity.original_order_id.as_deref(), reason = %reason, "acceptance hook declined the order");
                                    return AcceptanceDecision {
                                        verdict: AcceptanceVerdict::Decline { reason, description },
                                        exchange,
                                    };
                                }
                                Err(e) => ("malformed", e.to_string()),
                            }
                        }
                        Err(e) => ("malformed", e),
                    }
                }
            }
            Err(failure) => failure,
        };
        let (kind, why) = failure;
        let fallback = if self.hook.cancel_on_error { "cancel" } else { "accept" };
        warn!(kuper_order = env.identity.original_order_id.as_deref(), outcome = kind, error = %why, fallback, "acceptance hook gave no usable answer; fallback applied");
        exchange.outcome = Some(format!("{kind}_{fallback}"));
        exchange.detail = Some(format!("acceptance hook {kind}: {why}; on_error = {fallback}"));
        let verdict = if self.hook.cancel_on_error {
            AcceptanceVerdict::Decline {
                reason: self.hook.cancel_reason.clone(),
                description: CancelDescription::parse(&format!("acceptance hook {kind}")).unwrap_or_default(),
            }
        } else {
            AcceptanceVerdict::Accept { number: None, expected_assembly_time: None }
        };
        AcceptanceDecision { verdict, exchange }
    }
}
