//! Outbound webhooks: what Kuper POSTs to the merchant.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How the sim authenticates to the merchant (protocol.md §2, inbound side).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetAuth {
    /// `"user:pass"`, sent as HTTP Basic.
    Basic(String),
    Bearer(String),
    /// Sent in `Client-Token`.
    HeaderToken(String),
}

impl std::str::FromStr for TargetAuth {
    type Err = String;

    /// `basic:USER:PASS`, `bearer:TOKEN` or `header:TOKEN`, as the CLI's `--auth` takes them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, value) = text
            .split_once(':')
            .ok_or_else(|| format!("auth {text:?}: expected basic:USER:PASS, bearer:TOKEN or header:TOKEN"))?;
        if value.is_empty() {
            return Err(format!("auth {kind}: the credential is empty"));
        }
        match kind.to_ascii_lowercase().as_str() {
            "basic" if value.contains(':') => Ok(TargetAuth::Basic(value.to_owned())),
            "basic" => Err("auth basic: expected basic:USER:PASS".to_owned()),
            "bearer" => Ok(TargetAuth::Bearer(value.to_owned())),
            "header" | "header_token" | "client-token" => Ok(TargetAuth::HeaderToken(value.to_owned())),
            other => Err(format!("auth {other:?}: expected basic, bearer or header")),
        }
    }
}

/// The merchant's answer, or why there was none.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Answer {
    pub status: Option<u16>,
    /// JSON when the body parses as JSON, else the text, `null` when empty.
    pub body: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Long enough for a merchant that commits before answering, short enough that a wedged
/// merchant fails a test instead of hanging it.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Driver {
    client: reqwest::Client,
}

impl Driver {
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect from a webhook endpoint is a merchant bug to report, not to follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kuper-bridge-sim/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    pub async fn send(&self, target: &str, auth: Option<&TargetAuth>, body: Vec<u8>) -> Answer {
        let mut request = self.client.post(target).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        match auth {
            Some(TargetAuth::Basic(pair)) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
                request = request.header(reqwest::header::AUTHORIZATION, format!("Basic {encoded}"));
            }
            Some(TargetAuth::Bearer(token)) => {
                request = request.header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            Some(TargetAuth::HeaderToken(token)) => {
                request = request.header("Client-Token", token.as_str());
            }
            None => {}
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Answer { status: None, body: Value::Null, error: Some(format!("{error:#}")) },
        };
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(bytes) => Answer { status: Some(status), body: body_value(&bytes), error: None },
            Err(error) => {
                Answer { status: Some(status), body: Value::Null, error: Some(format!("reading the body: {error:#}")) }
            }
        }
    }
}

pub fn body_value(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_auth() {
        assert_eq!("basic:kuper:secret".parse(), Ok(TargetAuth::Basic("kuper:secret".into())));
        assert_eq!("bearer:t".parse(), Ok(TargetAuth::Bearer("t".into())));
        assert_eq!("header:t".parse(), Ok(TargetAuth::HeaderToken("t".into())));
        assert!("basic:nopass".parse::<TargetAuth>().is_err());
        assert!("bearer:".parse::<TargetAuth>().is_err());
        assert!("magic:x".parse::<TargetAuth>().is_err());
    }
}
