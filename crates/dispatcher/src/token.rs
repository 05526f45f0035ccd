//! OAuth2 client-credentials token for Kuper's merchant-api, cached and refreshed
//! single-flight: however many sends need a token at once, one request goes out.

use crate::metrics::OutcomeLabel;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a failed token fetch is remembered.
const FAILURE_MEMORY: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub enum KuperAuth {
    OAuth { client_id: String, client_secret: String },
    ClientToken { token: String },
}

impl std::fmt::Debug for KuperAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KuperAuth::OAuth { client_id, .. } => {
                write!(f, "OAuth {{ client_id: {client_id:?}, client_secret: [redacted] }}")
            }
            KuperAuth::ClientToken { .. } => f.write_str("ClientToken { token: [redacted] }"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    #[error("token endpoint answered {status}")]
    Refused { status: u16 },
    #[error("token answer unreadable: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct Cached {
    token: String,
    refresh_at: Instant,
    generation: u64,
}

pub struct TokenCache {
    client: reqwest::Client,
    url: String,
    auth: KuperAuth,
    cached: Mutex<Option<Cached>>,
    generations: std::sync::atomic::AtomicU64,
    /// The last failed fetch: callers queued behind it share its verdict for a moment instead
    /// of each waiting out the same timeout in turn.
    failed: Mutex<Option<(Instant, String)>>,
    /// Counts each request to the token endpoint by outcome, when set.
    requests: Option<Family<OutcomeLabel, Counter>>,
}

impl TokenCache {
    pub fn new(client: reqwest::Client, url: String, auth: KuperAuth) -> Self {
        Self {
            client,
            url,
            auth,
            cached: Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(0),
            failed: Mutex::new(None),
            requests: None,
        }
    }

    /// Counts every request to the token endpoint in `requests` by outcome (ok, refused,
    /// unreachable, malformed).
    pub fn counting(mut self, requests: Family<OutcomeLabel, Counter>) -> Self {
        self.requests = Some(requests);
        self
    }

    pub fn is_oauth(&self) -> bool {
        matches!(self.auth, KuperAuth::OAuth { .. })
    }

    /// A valid token and its generation.
    pub async fn get(&self) -> Result<(String, u64), TokenError> {
        self.obtain(None).await
    }

    /// Kuper refused the token of generation `refused`: fetch a new one unless another sender
    /// already did (then that one is returned). However many sends saw the refusal at once,
    /// one token request goes out.
    pub async fn refresh_after(&self, refused: u64) -> Result<(String, u64), TokenError> {
        self.obtain(Some(refused)).await
    }

    async fn obtain(&self, refused: Option<u64>) -> Result<(String, u64), TokenError> {
        let KuperAuth::OAuth { client_id, client_secret } = &self.auth else {
            return Err(TokenError::Malformed("client-token auth has no OAuth token".into()));
        };
        // Holding the lock across the request is the single flight: concurrent callers wait
        // for this fetch instead of starting their own.
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let refused_this_one = refused == Some(c.generation);
            if !refused_this_one && Instant::now() < c.refresh_at {
                return Ok((c.token.clone(), c.generation));
            }
            if refused_this_one {
                // Never hand out a token Kuper refused, even if the refresh fails.
                *cached = None;
            }
        }
        if let Some((at, why)) = self.failed.lock().await.as_ref() {
            if at.elapsed() < FAILURE_MEMORY {
                return Err(TokenError::Transport(format!("{why} (a moment ago)")));
            }
        }
        let result = self.fetch(client_id, client_secret).await;
        if let Some(requests) = &self.requests {
            let outcome = match &result {
                Ok(_) => "ok",
                Err(TokenError::Refused { .. }) => "refused",
                Err(TokenError::Transport(_)) => "unreachable",
                Err(TokenError::Malformed(_)) => "malformed",
            };
            requests.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
        }
        match &result {
            Ok((token, refresh_at)) => {
                *self.failed.lock().await = None;
                let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                *cached = Some(Cached { token: token.clone(), refresh_at: *refresh_at, generation });
                Ok((token.clone(), generation))
            }
            Err(e) => {
                *self.failed.lock().await = Some((Instant::now(), e.to_string()));
                Err(TokenError::Transport(e.to_string()))
            }
        }
    }

    async fn fetch(&self, client_id: &str, client_secret: &str) -> Result<(String, Instant), TokenError> {
        let form = [("client_id", client_id), ("client_secret", client_secret), ("grant_type", "client_credentials")];
        let resp =
            self.client.post(&self.url).form(&form).send().await.map_err(|e| TokenError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(TokenError::Refused { status });
        }
        let answer: TokenAnswer = resp.json().await.map_err(|e| TokenError::Malformed(e.to_string()))?;
        // An absurd expires_in must neither overflow the clock nor keep a token for ever.
        let ttl = Duration::from_secs(answer.expires_in.unwrap_or(300).clamp(10, 24 * 3600));
        // Refresh a little early so a token never expires in flight.
        let margin = (ttl / 10).max(Duration::from_secs(5)).min(ttl / 2);
        let refresh_at = Instant::now().checked_add(ttl - margin).unwrap_or_else(Instant::now);
        Ok((answer.access_token, refresh_at))
    }
}
