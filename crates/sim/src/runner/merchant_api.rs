//! kuper-bridge's merchant REST API (interfaces.md "Merchant REST API"), as the store staff
//! use it: one POST per action, answered `202` when the notification is committed.

use std::time::Duration;

use serde_json::Value;

use super::RunOptions;
use crate::driver::body_value;

/// Generous: an action commits to a database before it answers.
const ACTION_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) struct MerchantApi {
    http: reqwest::Client,
    /// `http://host:port/api/v1`
    base: String,
    key: String,
}

/// The API's answer: `status` is `None` when there was none (connection refused, timeout).
pub(super) struct ApiAnswer {
    pub status: Option<u16>,
    pub body: Value,
    pub error: Option<String>,
}

impl ApiAnswer {
    pub fn accepted(&self) -> bool {
        self.status == Some(202)
    }

    /// `202`, `409 invalid_transition`, or why there was no answer.
    pub fn summary(&self) -> String {
        match (self.status, &self.error) {
            (Some(status), _) => match self.body["error"]["code"].as_str() {
                Some(code) => format!("{status} {code}"),
                None => status.to_string(),
            },
            (None, Some(error)) => format!("no answer: {error}"),
            (None, None) => "no answer".to_owned(),
        }
    }
}

impl MerchantApi {
    /// `None` when the run has no REST API to drive (a foreign merchant).
    pub fn from_options(opts: &RunOptions) -> Result<Option<Self>, String> {
        let Some(api) = &opts.merchant_api else {
            return Ok(None);
        };
        let trimmed = api.trim_end_matches('/');
        let root = trimmed.strip_suffix("/api/v1").unwrap_or(trimmed);
        let http = reqwest::Client::builder()
            .timeout(ACTION_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build an HTTP client for the merchant API: {e}"))?;
        Ok(Some(Self { http, base: format!("{root}/api/v1"), key: opts.api_key.clone().unwrap_or_default() }))
    }

    /// The path shown in the exchange (without host, so transcripts compare across runs).
    pub fn action_path(reference: &str, action: &str) -> String {
        format!("/api/v1/orders/{reference}/{action}")
    }

    pub async fn act(&self, reference: &str, action: &str, body: &Value) -> ApiAnswer {
        let url = format!("{}/orders/{reference}/{action}", self.base);
        self.send(self.http.post(url).bearer_auth(&self.key).json(body)).await
    }

    /// `GET /orders/{ref}`: the order as the merchant runs it (its scheme, for one).
    pub async fn order(&self, reference: &str) -> ApiAnswer {
        let url = format!("{}/orders/{reference}", self.base);
        self.send(self.http.get(url).bearer_auth(&self.key)).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> ApiAnswer {
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return ApiAnswer { status: None, body: Value::Null, error: Some(format!("{error:#}")) },
        };
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(bytes) => ApiAnswer { status: Some(status), body: body_value(&bytes), error: None },
            Err(error) => ApiAnswer { status: Some(status), body: Value::Null, error: Some(format!("{error:#}")) },
        }
    }
}
