//! OAuth2 client-credentials token for Kuper's merchant-api, cached and refreshed
//! single-flight: however many sends need a token at once, one request goes out.

use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

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
}

pub struct TokenCache {
    client: reqwest::Client,
    url: String,
    auth: KuperAuth,
    cached: Mutex<Option<Cached>>,
}

impl TokenCache {
    pub fn new(client: reqwest::Client, url: String, auth: KuperAuth) -> Self {
        Self { client, url, auth, cached: Mutex::new(None) }
    }

    pub fn is_oauth(&self) -> bool {
        matches!(self.auth, KuperAuth::OAuth { .. })
    }

    /// A valid token; `force` skips the cache (after Kuper refused the cached one).
    pub async fn get(&self, force: bool) -> Result<String, TokenError> {
        let KuperAuth::OAuth { client_id, client_secret } = &self.auth else {
            return Err(TokenError::Malformed("client-token auth has no OAuth token".into()));
        };
        // Holding the lock across the request is the single-flight: concurrent callers wait
        // for this refresh instead of starting their own.
        let mut cached = self.cached.lock().await;
        if !force {
            if let Some(c) = cached.as_ref() {
                if Instant::now() < c.refresh_at {
                    return Ok(c.token.clone());
                }
            }
        }
        let form = [
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
            ("grant_type", "client_credentials"),
        ];
        let resp =
            self.client.post(&self.url).form(&form).send().await.map_err(|e| TokenError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(TokenError::Refused { status });
        }
        let answer: TokenAnswer = resp.json().await.map_err(|e| TokenError::Malformed(e.to_string()))?;
        let ttl = Duration::from_secs(answer.expires_in.unwrap_or(300));
        // Refresh a little early so a token never expires in flight.
        let margin = (ttl / 10).max(Duration::from_secs(5)).min(ttl / 2);
        *cached = Some(Cached { token: answer.access_token.clone(), refresh_at: Instant::now() + ttl - margin });
        Ok(answer.access_token)
    }

    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}
